"""What ``labkit preempt-test`` found: a verdict per check, per run; the table and the JSON report.

Plain data, no process handling: :mod:`labkit.preempt.harness` fills it, the CLI prints it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

PASS, FAIL, SKIP = "pass", "fail", "skip"

# Per interrupted run, in the table's order (the names are the JSON keys and the table's columns).
RUN_CHECKS = ("exit-code", "grace", "checkpoint", "intact", "leftovers")
# Once per test, on the last (uninterrupted) run and on the whole chain.
FINAL_CHECKS = ("finished", "interruptions", "result")


@dataclass
class Check:
    """One verdict: ``pass``, ``fail`` or ``skip`` (not applicable, or not asked for), and why."""

    verdict: str
    detail: str

    @property
    def failed(self) -> bool:
        return self.verdict == FAIL


def passed(detail: str) -> Check:
    return Check(PASS, detail)


def failed(detail: str) -> Check:
    return Check(FAIL, detail)


def skipped(detail: str) -> Check:
    return Check(SKIP, detail)


@dataclass
class RunRecord:
    """One start of the command: the reference run, an interrupted run, or the last run."""

    label: str                       # "ref", "1", "2", ..., "last"
    command: list[str]
    stop: str | None = None          # the stop kind, for an interrupted run
    moment_s: float | None = None    # when the stop began, from the start
    signals: list[str] = field(default_factory=list)  # "SIGTERM@0.41", in order
    exit_code: int | None = None     # as a shell shows it: 128 + n for a death by signal n
    duration_s: float | None = None  # from the start to the exit
    stop_to_exit_s: float | None = None
    escalated: bool = False          # SIGKILL had to end it
    ended_before_stop: bool = False  # exited on its own before its stop came
    log: str | None = None
    checks: dict[str, Check] = field(default_factory=dict)


@dataclass
class Report:
    command: list[str]
    resume_command: list[str]
    interruptions: int
    stops: list[str]
    seed: int
    grace_s: float
    work_dir: str
    reference: RunRecord | None = None
    runs: list[RunRecord] = field(default_factory=list)
    final: dict[str, Check] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def failures(self) -> list[str]:
        """``"run 2: grace"`` for each failed check."""
        found = [f"reference run: {name}" for name, c in (self.reference.checks if self.reference else {}).items()
                 if c.failed]
        for record in self.runs:
            found += [f"run {record.label}: {name}" for name, c in record.checks.items() if c.failed]
        found += [f"end: {name}" for name, c in self.final.items() if c.failed]
        return found

    @property
    def passed(self) -> bool:
        return not self.failures()

    def to_json(self) -> dict:
        data = asdict(self)
        data["passed"] = self.passed
        data["failures"] = self.failures()
        return data


def _cell(value: object, width: int) -> str:
    return str(value)[:width].ljust(width)


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def table(report: Report) -> str:
    """The human summary: one row per run, a verdict per check, the failures explained, a verdict line."""
    columns = ["run", "stop", "at_s", "exit", "stop->exit_s"] + list(RUN_CHECKS)
    widths = [4, 9, 5, 4, 12] + [max(len(c), 4) for c in RUN_CHECKS]
    lines = ["  ".join(_cell(c, w) for c, w in zip(columns, widths)).rstrip()]
    records = ([report.reference] if report.reference else []) + report.runs
    for record in records:
        cells = [record.label, record.stop or "-", _seconds(record.moment_s),
                 "-" if record.exit_code is None else record.exit_code, _seconds(record.stop_to_exit_s)]
        cells += [record.checks[name].verdict if name in record.checks else "" for name in RUN_CHECKS]
        lines.append("  ".join(_cell(c, w) for c, w in zip(cells, widths)).rstrip())
    lines.append("")
    for name in FINAL_CHECKS:
        if name in report.final:
            check = report.final[name]
            lines.append(f"{name + ':':15}{check.verdict:5} {check.detail}")
    problems = [(f"run {r.label}", name, c) for r in records for name, c in r.checks.items() if c.failed]
    if problems:
        lines.append("")
        lines += [f"{where} {name}: {check.detail}" for where, name, check in problems]
    lines += [""] + [f"note: {note}" for note in report.notes]
    failures = report.failures()
    verdict = "PASS: every check passed" if not failures else \
        f"FAIL: {len(failures)} failed check(s): " + ", ".join(failures)
    lines.append(verdict)
    return "\n".join(line for i, line in enumerate(lines) if line or (i and lines[i - 1]))


def write_json(path: str | Path, report: Report) -> None:
    """Write the report atomically (a reader sees the previous file or the whole new one)."""
    from labkit._atomic import write_json_atomic

    write_json_atomic(path, report.to_json())


def dumps(report: Report) -> str:
    return json.dumps(report.to_json(), indent=2, sort_keys=True)
