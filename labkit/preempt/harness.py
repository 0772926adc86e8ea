"""The test itself: a reference run, a chain of interrupted runs resumed until one finishes, the checks.

The chain: run 1 starts with the command, runs 2..N+1 with the resume command; runs 1..N get a stop
at a random moment (``random.Random(seed)``: the same seed, the same moments and kinds), the last
run goes to its end. Each moment is drawn in ``[min_s, max_s]`` after the run's start; by default
``max_s`` is the reference run's duration divided by N + 1, so N stops cannot reach the end of the
work even if every resume lost nothing, and the last run still has work to do.

Whatever happens, even an exception or a signal to labkit itself, the run in progress and all its
processes are killed before :func:`preempt_test` returns or raises.
"""

from __future__ import annotations

import random
import shutil
import signal
import tempfile
import threading
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from labkit.errors import BadArgument
from labkit.preempt import checks
from labkit.preempt.report import PASS, Report, RunRecord, failed, passed, skipped
from labkit.preempt.runner import Run
from labkit.preempt.stops import STOP_KINDS, stop

Progress = Callable[[str], None]


@dataclass
class Options:
    command: list[str]
    resume_command: list[str] | None = None
    interruptions: int = 3
    stops: tuple[str, ...] = ("term",)
    seed: int = 0
    grace_s: float = 30.0
    slurm_warning_s: float = 5.0
    min_s: float = 1.0
    max_s: float | None = None
    checkpoint: str | None = None
    verify_command: str | None = None
    result: str | None = None
    reference_digest: str | None = None
    compare_command: str | None = None
    stop_exit_codes: frozenset[int] = field(default_factory=lambda: frozenset({0}))
    settle_s: float = 1.0
    run_timeout_s: float = 3600.0
    work_dir: Path | None = None
    keep: bool = False

    def validate(self) -> None:
        """Raise :class:`BadArgument` on options that cannot make a test."""
        if not self.command:
            raise BadArgument("no command: `labkit preempt-test [options] -- python train.py {run}`")
        if self.interruptions < 1:
            raise BadArgument(f"--interruptions must be at least 1, got {self.interruptions}")
        unknown = [k for k in self.stops if k not in STOP_KINDS]
        if unknown or not self.stops:
            raise BadArgument(f"unknown stop kind {', '.join(unknown) or '(none)'}; choose from {', '.join(STOP_KINDS)}")
        for name in ("grace_s", "slurm_warning_s", "min_s", "settle_s", "run_timeout_s"):
            value = getattr(self, name)
            if not 0 <= value < float("inf"):
                raise BadArgument(f"--{name.replace('_', '-')} must be a number >= 0, got {value}")
        if self.max_s is not None and not self.min_s <= self.max_s < float("inf"):
            raise BadArgument(f"--max-s ({self.max_s}) must be a number >= --min-s ({self.min_s})")
        if self.reference_digest is not None:
            if self.result is None:
                raise BadArgument("--reference-digest needs --result FILE (the file whose sha256 it is)")
            if self.compare_command is not None:
                raise BadArgument("give either --reference-digest or --compare-command: the compare command needs a reference run")
            if self.max_s is None:
                raise BadArgument("--reference-digest skips the reference run, so give --max-s (the latest moment to stop)")
            digest = self.reference_digest.lower()
            if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
                raise BadArgument(f"--reference-digest must be a sha256 in hex (64 characters), got {self.reference_digest!r}")
        if self.verify_command is not None and self.checkpoint is None:
            raise BadArgument("--verify-command needs --checkpoint GLOB (which files to verify)")
        if any(code < 0 or code > 255 for code in self.stop_exit_codes):
            raise BadArgument("--stop-exit-codes are exit codes, 0 to 255")


class _Session:
    """The folders, the tag and the run in progress (the one to kill if anything goes wrong)."""

    def __init__(self, options: Options) -> None:
        self.options = options
        self.created = options.work_dir is None
        self.work = Path(tempfile.mkdtemp(prefix="labkit-preempt-")) if options.work_dir is None else options.work_dir
        self.work.mkdir(parents=True, exist_ok=True)
        self.tag = uuid.uuid4().hex
        self.current: Run | None = None
        self.count = 0

    def folder(self, name: str) -> Path:
        path = self.work / name
        if path.exists():
            shutil.rmtree(path)
        path.mkdir()
        return path

    def start(self, template: list[str], run_folder: Path, label: str) -> Run:
        self.count += 1
        command = [checks.fill(part, run_folder) for part in template]
        logs = self.work / "logs"
        logs.mkdir(exist_ok=True)
        try:
            with _signals_deferred():  # a stop of ours between fork and bookkeeping would leak the run
                self.current = Run(command, f"{self.tag}-{self.count}", run_folder, logs / f"run-{label}.log")
        except FileNotFoundError:
            raise BadArgument(f"command not found: {command[0]}") from None
        except PermissionError:
            raise BadArgument(f"command not executable: {command[0]}") from None
        return self.current

    def end(self) -> None:
        if self.current is not None:
            self.current.kill_all()
            self.current = None


@contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM for the block, then deliver them to the handlers that were there before.

    Not with ``pthread_sigmask``: a blocked mask is inherited through fork and exec (signal(7)), so the
    command under test would start deaf to the very signals it is tested with.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, frame: held.append(signum))
                for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if held:
            signal.raise_signal(held[0])


def preempt_test(options: Options, progress: Progress | None = None) -> Report:
    """Run the whole test and return its report (see the module's docstring)."""
    options.validate()
    note = progress or (lambda _text: None)
    session = _Session(options)
    resume = options.resume_command or options.command
    report = Report(command=options.command, resume_command=resume, interruptions=options.interruptions,
                    stops=list(options.stops), seed=options.seed, grace_s=options.grace_s, work_dir=str(session.work))
    try:
        reference_folder = None
        expected = options.reference_digest.lower() if options.reference_digest else None
        max_s = options.max_s
        if options.reference_digest is None:
            note("reference run")
            reference_folder = session.folder("reference")
            record = _reference(session, reference_folder, report)
            if record.checks["finished"].verdict != PASS:
                report.notes.append("the reference run did not finish cleanly: nothing to compare against")
                return report
            if options.result is not None:
                expected = checks.digest(checks.fill(options.result, reference_folder))
            duration = record.duration_s or 0.0
            max_s = max_s if max_s is not None else max(duration / (options.interruptions + 1), 0.01)
        assert max_s is not None
        low = min(options.min_s, max_s)
        if low < options.min_s:
            report.notes.append(f"stops drawn in [{low:.2f}, {max_s:.2f}] s: the window ends before --min-s "
                                f"{options.min_s:g} (a run of {max_s * (options.interruptions + 1):.2f} s, "
                                f"{options.interruptions} stops)")
        _chain(session, options, resume, report, random.Random(options.seed), low, max_s, note)
        last_folder = session.work / "interrupted"
        if options.compare_command is not None and reference_folder is not None:
            report.final["result"] = checks.result_by_command(options.compare_command, last_folder, reference_folder)
        elif options.result is not None:
            report.final["result"] = checks.result_by_digest(expected, checks.fill(options.result, last_folder))
        else:
            report.final["result"] = skipped("no --result or --compare-command: the result was not compared")
        return report
    finally:
        session.end()
        if session.created and not options.keep:
            if report.passed:
                shutil.rmtree(session.work, ignore_errors=True)
            else:
                report.notes.append(f"kept the runs' folders and logs for a look: {session.work}")


def _reference(session: _Session, folder: Path, report: Report) -> RunRecord:
    options = session.options
    run = session.start(options.command, folder, "ref")
    record = RunRecord(label="ref", command=run.command, log=str(run.log))
    report.reference = record
    ended = run.wait(options.run_timeout_s)
    record.duration_s = run.elapsed()
    if not ended:
        session.end()
        record.exit_code = run.exit_code
        record.checks["finished"] = failed(f"ran past --run-timeout-s {options.run_timeout_s:g}: killed")
        return record
    record.exit_code = run.exit_code
    left = checks.leftovers(run.settle(options.settle_s), options.settle_s)  # before the kill: names them
    session.end()
    record.checks["finished"] = passed(f"exit 0 in {record.duration_s:.2f} s") if record.exit_code == 0 else \
        failed(f"the uninterrupted run exited {record.exit_code}: see {run.log}")
    record.checks["leftovers"] = left
    return record


def _chain(session: _Session, options: Options, resume: list[str], report: Report, rng: random.Random,
           low: float, high: float, note: Progress) -> None:
    folder = session.folder("interrupted")
    pattern = checks.fill(options.checkpoint, folder) if options.checkpoint else None
    done = 0
    for index in range(options.interruptions):
        kind = options.stops[index % len(options.stops)]
        moment = rng.uniform(low, high)
        note(f"run {index + 1}: {kind} at {moment:.2f} s")
        run = session.start(options.command if index == 0 else resume, folder, str(index + 1))
        record = RunRecord(label=str(index + 1), command=run.command, stop=kind,
                           moment_s=round(moment, 3), log=str(run.log))
        report.runs.append(record)
        if run.wait(moment):
            record.ended_before_stop = True
            record.duration_s = run.elapsed()
            record.exit_code = run.exit_code
            record.checks["leftovers"] = checks.leftovers(run.settle(options.settle_s), options.settle_s)
            session.end()
            if record.exit_code != 0:
                record.checks["exit-code"] = failed(f"exited {record.exit_code} on its own {record.duration_s:.2f} s "
                                                    f"after its start, before the stop: see {run.log}")
                report.final["finished"] = failed(f"run {record.label} failed before its stop; the chain ends there")
                return
            report.final["finished"] = passed(f"run {record.label} finished before its stop (exit 0)")
            report.final["interruptions"] = failed(
                f"{done} of {options.interruptions} done: run {record.label} finished its work before the stop at "
                f"{moment:.2f} s (give --max-s smaller, or fewer --interruptions)")
            return
        before = checks.snapshot(pattern) if pattern else {}
        outcome = stop(run, kind, options.grace_s, options.slurm_warning_s)
        done += 1
        record.signals = outcome.signals
        record.escalated = outcome.escalated
        record.stop_to_exit_s = round(outcome.stop_to_exit_s, 3)
        record.duration_s = run.elapsed()
        record.exit_code = run.exit_code
        left = checks.leftovers(run.settle(options.settle_s), options.settle_s)
        session.end()
        after = checks.snapshot(pattern) if pattern else {}
        record.checks["exit-code"] = checks.exit_code(record.exit_code, kind, options.stop_exit_codes)
        record.checks["grace"] = checks.grace(outcome, kind, options.grace_s)
        record.checks["checkpoint"] = checks.checkpoint(before, after, kind, pattern)
        record.checks["intact"] = checks.intact(after, options.verify_command)
        record.checks["leftovers"] = left
    report.final["interruptions"] = passed(f"{done} of {options.interruptions} stops sent, each during a run")
    note("last run, to the end")
    run = session.start(resume, folder, "last")
    record = RunRecord(label="last", command=run.command, log=str(run.log))
    report.runs.append(record)
    ended = run.wait(options.run_timeout_s)
    record.duration_s = run.elapsed()
    record.exit_code = run.exit_code
    left = checks.leftovers(run.settle(options.settle_s) if ended else [], options.settle_s)
    session.end()
    if not ended:
        report.final["finished"] = failed(f"the last run ran past --run-timeout-s {options.run_timeout_s:g}: killed")
    elif record.exit_code == 0:
        report.final["finished"] = passed(f"the last run (resumed) exited 0 after {record.duration_s:.2f} s")
    else:
        report.final["finished"] = failed(f"the last run (resumed) exited {record.exit_code}: see {run.log}")
    record.checks["leftovers"] = left
