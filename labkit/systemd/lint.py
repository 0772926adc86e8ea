"""Find the mistakes people really make in unit files, with the fix for each.

Each :class:`Finding` names the file, line, rule, severity (error, warning, info), what is
wrong and how to fix it. Errors are what systemd rejects or silently ignores (an unknown
key does nothing at all); warnings are legal settings that hurt a training service (a
stop timeout too short to checkpoint, a kill mode that takes the data loaders down first).
Where ``systemd-analyze verify`` exists its findings are merged in: it reports most syntax
problems only as warnings on stderr with exit status 0, so its output is parsed, not its
exit status. Lint never raises on file content, only on a file it cannot read.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

from labkit.errors import BadArgument
from labkit.signals import parse_signal
from labkit.systemd import directives as known
from labkit.systemd.unitfile import UnitFile, load, parse_exec
from labkit.systemd import values

SEVERITIES = ("error", "warning", "info")
_BOOLEAN_WORDS = {"yes", "no", "true", "false", "on", "off", "1", "0", "y", "n", "t", "f"}
_SYSTEMD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"  # systemd.exec(5): fixed
_TRAINING = re.compile(r"train|torchrun|accelerate|deepspeed|lightning|fairseq|labkit\.trainer", re.IGNORECASE)
_VALIDATORS = {
    "timespan": values.parse_timespan,
    "bool": values.parse_bool,
    "size": values.parse_size,
    "memory": values.parse_memory_limit,
    "percent": values.parse_percent,
    "nice": values.parse_nice,
    "signal": parse_signal,
    "exit-status": values.parse_exit_statuses,
    "exec": parse_exec,
}


@dataclass(frozen=True)
class Finding:
    """One problem in a unit file, and how to fix it."""

    file: str
    line: int
    rule: str
    severity: str
    message: str
    fix: str = ""
    source: str = "labkit"

    def as_dict(self) -> dict:
        """The JSON object ``labkit unit lint --json`` prints."""
        return asdict(self)

    def __str__(self) -> str:
        fix = f" Fix: {self.fix}" if self.fix else ""
        return f"{self.file}:{self.line}: {self.severity}: [{self.rule}] {self.message}{fix}"


def lint_file(path: str | os.PathLike, use_systemd_analyze: bool = True) -> list[Finding]:
    """Lint one unit file (and merge ``systemd-analyze verify`` where it exists).

    Raises:
        BadArgument: the file cannot be read.
    """
    unit = load(path)
    findings = lint_unit(unit)
    if use_systemd_analyze and shutil.which("systemd-analyze"):
        findings += _merge(findings, systemd_analyze_verify(Path(path)))
    return sorted(findings, key=lambda f: (f.line, SEVERITIES.index(f.severity), f.rule))


def lint_unit(unit: UnitFile) -> list[Finding]:
    """labkit's own rules on a parsed unit."""
    checker = _Checker(unit)
    checker.run()
    return checker.findings


class _Checker:
    def __init__(self, unit: UnitFile) -> None:
        self.unit = unit
        self.file = str(unit.path or unit.name)
        self.findings: list[Finding] = []
        self.allowed_sections = known.SECTIONS_BY_TYPE.get(unit.type, ())

    def add(self, line: int, rule: str, severity: str, message: str, fix: str = "") -> None:
        self.findings.append(Finding(self.file, line, rule, severity, message, fix))

    def run(self) -> None:
        for problem in self.unit.problems:
            self.add(problem.line, "syntax", "error", problem.message, "write Key=Value lines inside a [Section]")
        if not self.unit.type:
            self.add(1, "unit-type", "error", f"{self.unit.name!r} has no unit type suffix",
                     "name the file NAME.service (or .timer, .socket, ...)")
        self._sections()
        for assignment in self.unit.assignments:
            self._assignment(assignment)
        self._duplicates()
        if self.unit.type == ".service":
            self._service()

    def _sections(self) -> None:
        seen = set()
        for assignment in self.unit.assignments:
            section = assignment.section
            if section in seen or section.startswith("X-"):
                continue
            seen.add(section)
            if self.allowed_sections and section not in self.allowed_sections:
                close = _closest(section, self.allowed_sections)
                hint = f"did you mean [{close}]?" if close else f"{self.unit.type} units have " + \
                    ", ".join(f"[{s}]" for s in self.allowed_sections)
                self.add(assignment.line, "unknown-section", "error",
                         f"[{section}] is not a section of a {self.unit.type} unit; systemd ignores it", hint)

    def _assignment(self, a) -> None:
        if a.section.startswith("X-") or a.key.startswith("X-"):
            return
        if self.allowed_sections and a.section not in self.allowed_sections:
            return  # reported once for the section
        kind = known.kind_of(a.section, a.key)
        if kind is None:
            self._unknown_key(a)
            return
        deprecated = known.DEPRECATED.get((a.section, a.key))
        if deprecated:
            self.add(a.line, "deprecated", "warning", deprecated, _replacement_fix(deprecated))
        if a.value == "":
            return  # an empty assignment resets the setting: always valid
        self._value(a, kind)

    def _unknown_key(self, a) -> None:
        elsewhere = [s for s in known.sections_with(a.key) if not self.allowed_sections or s in self.allowed_sections]
        if elsewhere:
            self.add(a.line, "wrong-section", "error", f"{a.key}= belongs in [{elsewhere[0]}], not [{a.section}]; "
                     f"systemd ignores it here", f"move {a.key}= to the [{elsewhere[0]}] section")
            return
        close = known.closest_keys(a.section, a.key)
        self.add(a.line, "unknown-key", "error", f"unknown key {a.key}= in [{a.section}]; systemd ignores the line",
                 f"did you mean {close[0]}=?" if close else "check the spelling in systemd.directives(7)")

    def _value(self, a, kind: str) -> None:
        enum = known.ENUMS.get((a.section, a.key))
        if kind == "enum" and enum:
            if not known.enum_accepts(a.section, a.key, a.value):
                takes_bool = (a.section, a.key) in known.ENUMS_ACCEPT_BOOL
                words = [v for v in enum if not (takes_bool and v in _BOOLEAN_WORDS)] + (["yes", "no"] if takes_bool else [])
                self.add(a.line, "invalid-value", "error", f"{a.key}={a.value} is not one of {', '.join(words)}",
                         f"use one of: {', '.join(words)}")
            return
        validate = _VALIDATORS.get(kind)
        if validate is None:
            return
        try:
            validate(a.value)
        except (values.InvalidValue, ValueError, BadArgument) as err:
            self.add(a.line, "invalid-value", "error", f"{a.key}={a.value}: {err}", _value_fix(kind))
            return
        if kind == "exec":
            self._exec(a)

    def _exec(self, a) -> None:
        command = parse_exec(a.value)
        program = command.path
        if program.startswith(("%", "$")):
            return  # resolved when the unit runs
        if "/" in program and not program.startswith("/"):
            self.add(a.line, "relative-path", "error", f"{a.key}= runs {program!r}, a relative path; systemd "
                     f"refuses it", f"use the absolute path, e.g. {os.path.abspath(program)}")
        elif "/" not in program:
            in_fixed_path = shutil.which(program, path=_SYSTEMD_PATH)
            if program.startswith("python") or not in_fixed_path:
                yours = shutil.which(program)
                self.add(a.line, "relative-path", "warning", f"{a.key}= names {program!r} without a path; systemd "
                         f"looks it up in its own fixed PATH ({_SYSTEMD_PATH}), not in yours, so a virtual "
                         "environment's program is not the one that runs",
                         f"use the absolute path{', e.g. ' + yours if yours else ''}")
        scripts = [arg for arg in command.argv[1:] if arg.endswith((".py", ".sh")) and not arg.startswith(("/", "%", "$"))]
        if scripts and not self.unit.get("Service", "WorkingDirectory"):
            self.add(a.line, "relative-path", "warning", f"{a.key}= uses {scripts[0]!r} relative to the working "
                     "folder, which is / for a system service", "set WorkingDirectory= or use an absolute path")

    def _duplicates(self) -> None:
        last: dict[tuple[str, str], int] = {}
        for a in self.unit.assignments:
            kind = known.kind_of(a.section, a.key)
            if kind in (None, "exec", "unit-list", "env", "string", "path") or a.value == "":
                continue
            if (a.section, a.key) in last:
                self.add(a.line, "duplicate-key", "info", f"{a.key}= is set again (first on line "
                         f"{last[(a.section, a.key)]}); the last value wins", "keep one assignment")
            last[(a.section, a.key)] = a.line

    def _service(self) -> None:
        unit, service_line = self.unit, self._line("Service")
        starts = unit.get_list("Service", "ExecStart")
        # without ExecStart= systemd makes Type= default to oneshot (systemd.service(5))
        kind = unit.get("Service", "Type", "simple" if starts else "oneshot")
        stops_or_acts = unit.get_list("Service", "ExecStop") or unit.get("Unit", "SuccessAction")
        if not starts and (kind != "oneshot" or not stops_or_acts):
            self.add(service_line, "missing-execstart", "error", "no ExecStart= in [Service]: systemd refuses to "
                     "load the unit (only Type=oneshot with ExecStop= or SuccessAction= may omit it)",
                     "add ExecStart=/absolute/path/to/program ARGS")
        restart = unit.get("Service", "Restart", "no")
        if kind == "oneshot" and restart in ("always", "on-success"):
            self.add(self._line("Service", "Restart"), "invalid-value", "error",
                     f"Restart={restart} is not allowed for Type=oneshot", "use Restart=on-failure or no")
        self._restart_policy(restart)
        self._network()
        if starts and _TRAINING.search(" ".join(starts)):
            self._training()
        if not unit.get("Service", "User") and not unit.get("Service", "DynamicUser"):
            self.add(service_line, "no-user", "warning", "no User=: a system service runs as root",
                     "add User= (and Group=) of an unprivileged account, or DynamicUser=yes")

    def _restart_policy(self, restart: str) -> None:
        if restart not in ("always", "on-failure", "on-abnormal", "on-abort"):
            return
        unit = self.unit
        interval = unit.get("Unit", "StartLimitIntervalSec") or unit.get("Service", "StartLimitInterval")
        burst = unit.get("Unit", "StartLimitBurst") or unit.get("Service", "StartLimitBurst")
        line = self._line("Service", "Restart")
        if interval in ("0", "infinity") or burst == "0":
            self.add(line, "restart-loop", "warning", f"Restart={restart} with the start limit disabled: a crashing "
                     "service restarts forever", "set StartLimitIntervalSec= and StartLimitBurst= in [Unit]")
        elif interval is None and burst is None and restart == "always":
            spacing = unit.get("Service", "RestartSec") or "100ms (the default)"
            self.add(line, "restart-loop", "warning", "Restart=always without StartLimitIntervalSec=/StartLimitBurst=: "
                     f"systemd's defaults (5 starts within 10 s) decide how a crash loop ends, with RestartSec={spacing}",
                     "choose RestartSec= and StartLimitIntervalSec=/StartLimitBurst= in [Unit] on purpose")

    def _network(self) -> None:
        after = " ".join(self.unit.get_list("Unit", "After")).split()
        wants = " ".join(self.unit.get_list("Unit", "Wants") + self.unit.get_list("Unit", "Requires")).split()
        if "network.target" in after and "network-online.target" not in after + wants:
            self.add(self._line("Unit", "After"), "network-online", "warning",
                     "After=network.target only orders after the network stack starts, not after the network is up",
                     "use Wants=network-online.target and After=network-online.target")

    def _training(self) -> None:
        timeout = self.unit.get("Service", "TimeoutStopSec") or self.unit.get("Service", "TimeoutSec")
        line = self._line("Service", "TimeoutStopSec") if timeout else self._line("Service")
        if timeout is None:
            self.add(line, "stop-timeout", "warning", "a training service without TimeoutStopSec=: on stop it gets "
                     "the default 90 s to checkpoint, then SIGKILL", "set TimeoutStopSec= to the worst-case "
                     "checkpoint time plus a margin (e.g. 300s)")
        else:
            try:
                seconds = values.parse_timespan(timeout)
            except (values.InvalidValue, ValueError):
                return
            if 0 < seconds < 30:
                self.add(line, "stop-timeout", "warning", f"TimeoutStopSec={timeout} is short for a training "
                         "service: a large checkpoint is cut by SIGKILL", "raise it above the worst-case save time")
        mode = self.unit.get("Service", "KillMode", "control-group")
        if mode in ("control-group", "process", "none"):
            effect = {"control-group": "SIGTERM reaches the data-loader workers at the same time as the trainer, "
                                       "so they can die while it still needs them to finish a step and save",
                      "process": "only the main process is signalled; workers are left running",
                      "none": "nothing is signalled at all"}[mode]
            self.add(self._line("Service", "KillMode") or self._line("Service"), "kill-mode", "warning",
                     f"KillMode={mode}: {effect}", "use KillMode=mixed: SIGTERM to the trainer only, SIGKILL to "
                     "everything left after TimeoutStopSec=")

    def _line(self, section: str, key: str | None = None) -> int:
        for a in self.unit.assignments:
            if a.section == section and (key is None or a.key == key):
                return a.line
        return 1 if key is None else 0


def systemd_analyze_verify(path: Path, timeout_s: float = 30.0) -> list[Finding]:
    """``systemd-analyze verify FILE`` as findings (its stderr lines about this file)."""
    try:
        done = subprocess.run(["systemd-analyze", "verify", "--man=no", str(path)], capture_output=True, text=True,
                              timeout=timeout_s, errors="replace")
    except (OSError, subprocess.TimeoutExpired) as err:
        return [Finding(str(path), 0, "systemd-analyze", "info", f"systemd-analyze verify did not run: {err}",
                        source="systemd-analyze")]
    findings = []
    for line in (done.stderr + done.stdout).splitlines():
        match = re.match(rf"^{re.escape(str(path))}:(\d+): (.*)$", line)
        if match:
            findings.append(Finding(str(path), int(match.group(1)), "systemd-analyze", "warning", match.group(2),
                                    source="systemd-analyze"))
        elif path.name in line and line.strip():
            severity = "error" if done.returncode != 0 else "warning"
            findings.append(Finding(str(path), 0, "systemd-analyze", severity, line.strip(), source="systemd-analyze"))
    return findings


def _merge(ours: list[Finding], theirs: list[Finding]) -> list[Finding]:
    """systemd-analyze's findings that say something ours do not (same line, same key: skipped)."""
    merged = []
    for finding in theirs:
        key = re.search(r"'([A-Za-z0-9_-]+)'", finding.message)
        if any(f.line == finding.line and f.line and (key is None or key.group(1) in f.message) for f in ours):
            continue
        merged.append(finding)
    return merged


def _closest(name: str, candidates) -> str | None:
    import difflib

    found = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    return found[0] if found else None


def _replacement_fix(message: str) -> str:
    match = re.search(r"use ([A-Za-z]+=)", message)
    return f"replace it with {match.group(1)}" if match else ""


def _value_fix(kind: str) -> str:
    return {
        "timespan": "a time span like 90s, 5min, 1h 30min or infinity",
        "bool": "yes or no",
        "size": "a size like 512M or 8G",
        "memory": "a size like 8G, a percentage like 50%, or infinity",
        "percent": "a percentage like 50% (200% = two CPUs)",
        "nice": "a number from -20 (highest priority) to 19 (lowest)",
        "signal": "a signal name like SIGTERM or SIGINT",
        "exit-status": "exit codes (0-255) and signal names, separated by spaces",
        "exec": "an absolute path and its arguments, quoted like a shell would",
    }.get(kind, "")


def has_errors(findings: list[Finding]) -> bool:
    """True if any finding is an error (``labkit unit lint`` then exits 1)."""
    return any(f.severity == "error" for f in findings)
