"""Find the mistakes people really make in unit files, with the cause and the fix for each.

Each :class:`Finding` names the file, the line (1-based, never 0), the rule, a severity
(error, warning, info), what systemd does with the line in plain words and how to fix it.
Errors are what systemd rejects, ignores or reads differently from what the author meant (an
unknown key does nothing at all; ``CPUQuota=400%  # 4 CPUs`` is no limit at all); warnings are
legal settings that hurt a service (a stop timeout too short to checkpoint, a restart loop the
start limit never ends).

labkit's own rules cover everything ``systemd-analyze verify`` (systemd 252) reports for the
unit files in ``tests/fixtures/lint/``, on the same line: the test suite checks it. Where
``systemd-analyze`` exists, :func:`lint_file` also runs it on a private copy of the file and
attaches its words to the finding on the same line (:attr:`Finding.systemd`); what it says
that no rule of ours covers is added as a finding of its own (rule ``systemd-analyze``), with
the line found from the key, command or specifier it names. It reports most problems only as
warnings on stderr with exit status 0, so its output is parsed, not its exit status.

Rules (ids): syntax, unit-type, unknown-section, unknown-key, wrong-section, deprecated,
invalid-value, trailing-comment, shell-syntax, command-separator, specifier, environment-quoting,
relative-path, missing-executable, missing-dependency, multiple-execstart, missing-execstart,
restart-loop, signal-execstop, timer-no-trigger, user-unit, network-online, stop-timeout,
kill-mode, no-user, duplicate-key.

Lint never raises on file content, only on a file it cannot read.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, overload

from labkit.errors import BadArgument
from labkit.signals import parse_signal
from labkit.systemd import directives as known
from labkit.systemd import values
from labkit.systemd.unitfile import UnitFile, load, parse_exec

SEVERITIES = ("error", "warning", "info")
_BOOLEAN_WORDS = {"yes", "no", "true", "false", "on", "off", "1", "0", "y", "n", "t", "f"}
_SYSTEMD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"  # systemd.exec(5): fixed
_TRAINING = re.compile(r"train|torchrun|accelerate|deepspeed|lightning|fairseq|labkit\.trainer", re.IGNORECASE)
_VALIDATORS: dict[str, Callable[[str], object]] = {
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

# systemd 252's start-limit and restart defaults: systemd-system.conf(5) DefaultStartLimitIntervalSec=10s,
# DefaultStartLimitBurst=5; systemd.service(5) RestartSec= "Defaults to 100ms".
_DEFAULT_INTERVAL_S, _DEFAULT_BURST, _DEFAULT_RESTART_S = 10.0, 5, 0.1

# --- specifiers -------------------------------------------------------------------------------
# systemd.unit(5) "Specifiers" for systemd 252. Measured with `systemd-analyze verify` 252 on
# `ExecStart=/bin/echo x%Xx` for every letter: these expand; %c %r %R expand with a deprecation
# warning; every other letter or digit fails ("Failed to resolve unit specifiers ...: Invalid
# slot"); a % before anything else (space, '-', '.', end of value) is kept as it is.
SPECIFIERS: dict[str, str] = {
    "a": "the architecture", "A": "the OS image version", "b": "the boot ID", "B": "the OS build ID",
    "C": "the cache directory root", "d": "the credentials directory", "E": "the configuration directory root",
    "f": "the unescaped file name", "g": "the user's group", "G": "the user's GID", "h": "the user's home directory",
    "H": "the host name", "i": "the instance name", "I": "the unescaped instance name",
    "j": "the last part of the prefix", "J": "the unescaped last part of the prefix", "l": "the short host name",
    "L": "the log directory root", "m": "the machine ID", "M": "the OS image identifier",
    "n": "the full unit name", "N": "the unit name without its type suffix", "o": "the OS ID",
    "p": "the prefix name", "P": "the unescaped prefix name", "q": "the pretty host name", "s": "the user's shell",
    "S": "the state directory root", "t": "the runtime directory root", "T": "the temporary directory",
    "u": "the user name", "U": "the user's UID", "v": "the kernel release",
    "V": "the directory for larger temporary files",
    "w": "the OS version ID", "W": "the OS variant ID", "y": "the unit file's path", "Y": "the unit file's directory",
}
DEPRECATED_SPECIFIERS = {"c": "the control group path", "r": "the manager's root control group",
                         "R": "the manager's root control group"}

# Keys whose value goes through specifier expansion, measured with `systemd-analyze verify` 252
# (`KEY=/x%Fx` for each key of the parser table that takes a string). [Install] keys are
# expanded by `systemctl enable` (systemd.unit(5) "[Install] Section Options").
_SPECIFIER_UNIT_KEYS = frozenset("""
After Before BindTo BindsTo Conflicts Description Documentation JobTimeoutRebootArgument JoinsNamespaceOf OnFailure
OnSuccess PartOf PropagateReloadFrom PropagateReloadTo PropagatesReloadTo PropagatesStopTo RebootArgument
ReloadPropagatedFrom Requires RequiresMountsFor RequiresOverridable Requisite RequisiteOverridable SourcePath
StopPropagatedFrom Upholds Wants""".split())
_SPECIFIER_EXEC_KEYS = frozenset("""
AllowedCPUs AllowedMemoryNodes AppArmorProfile BindPaths BindReadOnlyPaths BusName CPUAffinity CacheDirectory
ConfigurationDirectory DeviceAllow Environment EnvironmentFile ExecCondition ExecPaths ExecReload ExecSearchPath
ExecStart ExecStartPost ExecStartPre ExecStop ExecStopPost ExtensionDirectories ExtensionImages Group
IPCNamespacePath IPEgressFilterPath IPIngressFilterPath InaccessibleDirectories InaccessiblePaths LoadCredential
LoadCredentialEncrypted LogExtraFields LogNamespace LogsDirectory MountImages NetworkNamespacePath NoExecPaths
PAMName PIDFile PassEnvironment ReadOnlyDirectories ReadOnlyPaths ReadWriteDirectories ReadWritePaths
RebootArgument RootDirectory RootImage RootImageOptions RootVerity RuntimeDirectory SELinuxContext Slice
SmackProcessLabel Sockets StandardInputText StartupAllowedCPUs StartupAllowedMemoryNodes StateDirectory
SupplementaryGroups SyslogIdentifier TTYPath TemporaryFileSystem USBFunctionDescriptors USBFunctionStrings
UnsetEnvironment User UtmpIdentifier WorkingDirectory StandardOutput StandardError StandardInput""".split())
_SPECIFIER_INSTALL_KEYS = frozenset({"Alias", "Also", "DefaultInstance", "RequiredBy", "WantedBy", "UpheldBy"})
# Of those, the ones where a failed expansion makes systemd refuse the whole unit ("has a bad
# unit file setting"); elsewhere only the line is ignored. Measured the same way.
_SPECIFIER_FATAL_KEYS = frozenset("""
AppArmorProfile ExecCondition ExecReload ExecStart ExecStartPost ExecStartPre ExecStop ExecStopPost Group
RootDirectory RootImage RootVerity SELinuxContext SmackProcessLabel SupplementaryGroups User
WorkingDirectory""".split())

# --- trailing comments --------------------------------------------------------------------------
# systemd.syntax(7): only lines *starting* with # or ; are comments. What systemd 252 does with
# `KEY=VALUE  # a comment`, measured with `systemd-analyze verify` for every key of the parser
# table: values of these kinds (and keys) are parsed as a whole and rejected, so the line is
# ignored ("Invalid CPU quota '400%  # 4 CPUs', ignoring."); list-valued keys take each word
# as one more entry; the rest keep the comment as part of the value.
_REJECTING_KINDS = frozenset({"timespan", "bool", "size", "memory", "percent", "nice", "signal", "exit-status",
                              "int", "enum"})
_REJECTING_KEYS = frozenset("""
TasksMax CPUWeight StartupCPUWeight IOWeight StartupIOWeight UMask CPUAffinity AllowedCPUs StartupAllowedCPUs
AllowedMemoryNodes StartupAllowedMemoryNodes NUMAMask OOMScoreAdjust DeviceAllow IOReadBandwidthMax
IOWriteBandwidthMax IOReadIOPSMax IOWriteIOPSMax IODeviceWeight IODeviceLatencyTargetSec BlockIODeviceWeight
BlockIOReadBandwidth BlockIOWriteBandwidth Slice LogNamespace CoredumpFilter Personality CacheDirectoryMode
ConfigurationDirectoryMode LogsDirectoryMode RuntimeDirectoryMode StateDirectoryMode TimerSlackNSec
SystemCallErrorNumber StandardInputData""".split())
_WORD_LIST_KEYS = frozenset("""
PassEnvironment UnsetEnvironment ReadWritePaths ReadOnlyPaths InaccessiblePaths ExecPaths NoExecPaths BindPaths
BindReadOnlyPaths Delegate Documentation SupplementaryGroups DisableControllers RestrictAddressFamilies
RestrictNamespaces SystemCallFilter SystemCallArchitectures CapabilityBoundingSet AmbientCapabilities
ReadWriteDirectories ReadOnlyDirectories InaccessibleDirectories""".split())
# What the service gets instead when systemd ignores the line (systemd.resource-control(5),
# systemd.exec(5), systemd.service(5), systemd-system.conf(5) defaults).
_DEFAULT_MEANING = {
    "CPUQuota": "no CPU limit", "MemoryMax": "no memory limit", "MemoryLimit": "no memory limit",
    "MemoryHigh": "no memory throttling", "MemorySwapMax": "no swap limit",
    "TasksMax": "the default task limit (DefaultTasksMax=, 15% of the kernel's limit)",
    "LimitNOFILE": "the manager's default open-file limit (1024 soft)", "LimitNPROC": "the default process limit",
    "CPUAffinity": "all CPUs", "AllowedCPUs": "all CPUs", "Nice": "nice 0", "CPUWeight": "the default weight (100)",
    "IOWeight": "the default weight (100)", "Restart": "Restart=no: no restarts at all",
    "RestartSec": "the default 100ms", "TimeoutStopSec": "the default 90 s", "TimeoutStartSec": "the default 90 s",
    "Type": "Type=simple", "KillMode": "KillMode=control-group", "KillSignal": "SIGTERM",
    "StartLimitBurst": "the default of 5 starts", "StartLimitIntervalSec": "the default 10 s",
    "StartLimitInterval": "the default 10 s", "OOMScoreAdjust": "the manager's OOM score",
}
_KEPT_MEANING = {
    "WorkingDirectory": "the start fails with status 200/CHDIR (no such folder)",
    "User": "the start fails with status 217/USER (no such user)",
    "Group": "the start fails with status 216/GROUP (no such group)",
    "EnvironmentFile": "no such file: the start fails (with '-' in front, its variables are silently missing)",
    "PIDFile": "systemd waits for a PID file that never appears",
    "Description": "systemctl status shows the comment as part of the description",
    "SyslogIdentifier": "the journal tags every line with the comment",
}
_WARNING_ONLY_KEYS = frozenset({"Description", "SyslogIdentifier"})

# --- shell syntax ---------------------------------------------------------------------------------
_SHELLS = frozenset({"sh", "bash", "dash", "zsh", "ksh"})
_SHELL_OPERATORS = frozenset({"|", "||", "&&", "&", "|&", ";;"})
_REDIRECT = re.compile(r"^(?:[0-9]|&)?(?:>>?|<<?<?)(?:&[0-9-]|[^<>]*)$")
_BUILTINS = frozenset({"cd", "export", "source", ".", "set", "ulimit", "alias", "exec", "eval", "[[", "if", "for",
                       "while"})
_ENV_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=", re.ASCII)  # env_assignment_is_valid(): a name, then =
_KILLERS = frozenset({"kill", "pkill", "killall"})
_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v", "s": " "}


# Conditions and asserts that take an absolute path (systemd.unit(5) "Conditions and Asserts").
_PATH_CONDITIONS = frozenset(f"{kind}{what}" for kind in ("Condition", "Assert") for what in (
    "PathExists", "PathExistsGlob", "PathIsDirectory", "PathIsSymbolicLink", "PathIsMountPoint", "PathIsReadWrite",
    "PathIsEncrypted", "DirectoryNotEmpty", "FileNotEmpty", "FileIsExecutable"))
# Dependencies whose unit must exist for a start job to be made (measured with systemd-analyze
# verify 252: "Failed to create X/start: Unit Y not found"; Wants=, After=, PartOf= do not need one).
_HARD_DEPENDENCIES = ("Requires", "Requisite", "BindsTo")
# systemd.unit(5) "Unit File Load Path", the folders a unit is looked up in (without the
# transient and generator ones, which hold no installed files).
_SYSTEM_UNIT_PATH = ("/etc/systemd/system", "/run/systemd/system", "/usr/local/lib/systemd/system",
                     "/lib/systemd/system", "/usr/lib/systemd/system")
_USER_UNIT_PATH = ("~/.config/systemd/user", "/etc/systemd/user", "/run/systemd/user", "~/.local/share/systemd/user",
                   "/usr/local/lib/systemd/user", "/usr/local/share/systemd/user", "/usr/share/systemd/user",
                   "/usr/lib/systemd/user", "/lib/systemd/user")


@dataclass(frozen=True)
class Finding:
    """One problem in a unit file, and how to fix it.

    ``line`` is the 1-based line the problem is on (for systemd-analyze's findings without a
    line number, the line of the key, command or specifier it names). ``systemd`` holds what
    ``systemd-analyze verify`` said about the same line, in its words ('' if nothing or not run).
    """

    file: str
    line: int
    rule: str
    severity: str
    message: str
    fix: str = ""
    source: str = "labkit"
    systemd: str = ""

    def as_dict(self) -> dict:
        """The JSON object ``labkit unit lint --json`` prints (keys: file, line, rule, severity,
        message, fix, source, systemd)."""
        return asdict(self)

    def __str__(self) -> str:
        fix = f" Fix: {self.fix}" if self.fix else ""
        said = f" [systemd-analyze: {self.systemd}]" if self.systemd else ""
        return f"{self.file}:{self.line}: {self.severity}: [{self.rule}] {self.message}{fix}{said}"


def lint_file(path: str | os.PathLike, use_systemd_analyze: bool = True, user: bool | None = None) -> list[Finding]:
    """Lint one unit file (and compare with ``systemd-analyze verify`` where it exists).

    ``user``: lint it as a unit of a user manager (``systemctl --user``); None guesses from the
    path (a ``systemd/user`` folder). Beyond :func:`lint_unit`, checks what only this machine
    can answer: that each Exec command exists and is executable here.

    Returns the findings sorted by line, then severity.

    Raises:
        BadArgument: the file cannot be read.
    """
    unit = load(path)
    findings = lint_unit(unit, user=user, on_this_machine=True)
    if use_systemd_analyze and shutil.which("systemd-analyze"):
        theirs = systemd_analyze_verify(Path(path), user=_is_user_unit(unit, user))
        findings = _merge(findings, theirs)
    return sorted(findings, key=lambda f: (f.line, SEVERITIES.index(f.severity), f.rule))


def lint_unit(unit: UnitFile, user: bool | None = None, on_this_machine: bool = False) -> list[Finding]:
    """labkit's own rules on a parsed unit.

    ``user``: as in :func:`lint_file`. ``on_this_machine``: also check that each Exec
    command exists here (what ``systemd-analyze verify`` calls "not executable").
    """
    checker = _Checker(unit, _is_user_unit(unit, user), on_this_machine)
    checker.run()
    return checker.findings


def has_errors(findings: list[Finding]) -> bool:
    """True if any finding is an error (``labkit unit lint`` then exits 1)."""
    return any(f.severity == "error" for f in findings)


def _is_user_unit(unit: UnitFile, user: bool | None) -> bool:
    if user is not None:
        return user
    return unit.path is not None and "/systemd/user/" in unit.path.absolute().as_posix() + "/"


# --- words as systemd splits them -------------------------------------------------------------
@dataclass(frozen=True)
class _Word:
    text: str    # unquoted, escapes resolved
    raw: str     # as written
    quoted: bool  # any quote in it: shell-looking characters in it are meant literally
    start: int   # offset in the value


def _words(value: str) -> list[_Word] | None:
    """Split like systemd's extract_first_word(EXTRACT_UNQUOTE|EXTRACT_CUNESCAPE); None on an
    unbalanced quote or a trailing backslash (systemd: "Unbalanced quoting, ignoring")."""
    words: list[_Word] = []
    index, size = 0, len(value)
    while index < size:
        while index < size and value[index].isspace():
            index += 1
        if index >= size:
            break
        start, text, quote, quoted = index, [], None, False
        while index < size:
            char = value[index]
            if char == "\\":
                if index + 1 >= size:
                    return None
                text.append(_ESCAPES.get(value[index + 1], value[index + 1]))
                index += 2
                continue
            if quote:
                if char == quote:
                    quote = None
                else:
                    text.append(char)
            elif char in "\"'":
                quote, quoted = char, True
            elif char.isspace():
                break
            else:
                text.append(char)
            index += 1
        if quote:
            return None
        words.append(_Word("".join(text), value[start:index], quoted, start))
    return words


def _commands(words: list[_Word]) -> list[list[_Word]]:
    """Exec words split at lone ';' words: systemd 252 still reads those as command separators."""
    commands: list[list[_Word]] = [[]]
    for word in words:
        if word.raw == ";":
            commands.append([])
        else:
            commands[-1].append(word)
    return [c for c in commands if c]


def _program(command: list[_Word]) -> tuple[str, str, list[_Word]]:
    """(prefix characters, program, argument words) of one exec command."""
    first = command[0].text
    prefix = first[:len(first) - len(first.lstrip("@-:+!"))]
    program = first[len(prefix):]
    args = command[1:]
    if "@" in prefix and args:
        args = args[1:]  # the word after the program is argv[0]
    if not program and args:
        program, args = args[0].text, args[1:]
    return prefix, program, args


def _quote(text: str) -> str:
    """Quote a shell script as one Exec word. systemd resolves backslash escapes inside quotes
    too, so each backslash is doubled: the shell then sees the text as it was written."""
    text = text.replace("\\", "\\\\")
    if "'" not in text:
        return f"'{text}'"
    if '"' not in text:
        return f'"{text}"'
    return "'" + text.replace("'", "\\'") + "'"


def _runnable(word: str) -> bool:
    """A word systemd accepts as a command after ';': an absolute path or a name on its PATH."""
    name = word.lstrip("@-:+!")
    return name.startswith(("/", "%", "$")) or bool(shutil.which(name, path=_SYSTEMD_PATH))


def _comment_start(value: str, kind: str) -> int | None:
    """Offset of an end-of-line comment: a '#' or ';' word that systemd takes as part of the value."""
    if kind in ("exec", "env"):
        words = _words(value)
        if words is None:
            return None
        for index, word in enumerate(words):
            if index == 0 and kind == "exec":
                continue  # the program itself
            if word.raw.startswith("#"):
                return word.start
            if word.raw.startswith(";") and word.raw != ";":
                return word.start
            if word.raw == ";" and kind == "exec":
                following = words[index + 1] if index + 1 < len(words) else None
                if following is None or not _runnable(following.text):
                    return word.start
            if word.raw == ";" and kind == "env":
                return word.start
        return None
    match = re.search(r"(?:^|\s)([#;])", value)
    return match.start(1) if match else None


def _plural(items: list[str]) -> str:
    quoted = [f"'{i}'" for i in items]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " and " + quoted[-1]


def _seconds(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        return values.parse_timespan(text)
    except (values.InvalidValue, ValueError):
        return None


def _span(seconds: float) -> str:
    if math.isinf(seconds):
        return "infinity"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{int(seconds // 60)}min"
    return f"{seconds:g}s" if seconds >= 1 else f"{seconds * 1000:g}ms"


class _Checker:
    def __init__(self, unit: UnitFile, user: bool, on_this_machine: bool) -> None:
        self.unit = unit
        self.user = user
        self.on_this_machine = on_this_machine
        self.file = str(unit.path or unit.name)
        self.findings: list[Finding] = []
        self.allowed_sections = known.SECTIONS_BY_TYPE.get(unit.type, ())
        self.headers = _header_lines(unit)
        self.ignored: set[int] = set()     # lines systemd ignores (their value is rejected)
        self.clean: dict[int, str] = {}    # line -> value without its trailing comment

    def add(self, line: int, rule: str, severity: str, message: str, fix: str = "") -> None:
        self.findings.append(Finding(self.file, max(line, 1), rule, severity, message, fix))

    def run(self) -> None:
        for problem in self.unit.problems:
            if problem.message.startswith("bad section header"):
                self.add(problem.line, "syntax", "error", f"{problem.message}: systemd stops reading the file here "
                         "and refuses to load the unit ('Invalid section header')", "write the header as [Section]")
            else:
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
        if self.unit.type == ".timer":
            self._timer()
        if self.user:
            self._user_unit()
        if self.on_this_machine:
            self._dependencies()

    # -- values that systemd keeps or ignores ------------------------------------------------------
    @overload
    def value(self, section: str, key: str) -> str | None: ...
    @overload
    def value(self, section: str, key: str, default: str) -> str: ...
    @overload
    def value(self, section: str, key: str, default: str | None) -> str | None: ...

    def value(self, section: str, key: str, default: str | None = None) -> str | None:
        """The value systemd ends up with: the last assignment it accepts, comment removed."""
        for a in reversed(self.unit.assignments_of(section, key)):
            if a.line in self.ignored:
                continue
            return default if a.value == "" else self.clean.get(a.line, a.value)
        return default

    def last_of(self, *keys: tuple[str, str]) -> str | None:
        """The value of whichever of several spellings of one setting comes last in the file."""
        found = [a for a in self.unit.assignments if (a.section, a.key) in keys and a.line not in self.ignored]
        if not found:
            return None
        last = max(found, key=lambda a: a.line)
        return self.clean.get(last.line, last.value) or None

    def values_of(self, section: str, key: str) -> list[tuple[int, str]]:
        """(line, value) of a list-valued key as systemd accumulates it (an empty value resets)."""
        found: list[tuple[int, str]] = []
        for a in self.unit.assignments_of(section, key):
            if a.line in self.ignored:
                continue
            if a.value == "":
                found.clear()
            else:
                found.append((a.line, self.clean.get(a.line, a.value)))
        return found

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
                self.add(self.headers.get(section, assignment.line), "unknown-section", "error",
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
        value = self._trailing_comment(a, kind)
        self._specifiers(a, kind, value)
        self._value(a, kind, value)

    def _unknown_key(self, a) -> None:
        elsewhere = [s for s in known.sections_with(a.key) if not self.allowed_sections or s in self.allowed_sections]
        if elsewhere:
            self.add(a.line, "wrong-section", "error", f"{a.key}= belongs in [{elsewhere[0]}], not [{a.section}]; "
                     f"systemd ignores it here", f"move {a.key}= to the [{elsewhere[0]}] section")
            return
        close = known.closest_keys(a.section, a.key)
        self.add(a.line, "unknown-key", "error", f"unknown key {a.key}= in [{a.section}]; systemd ignores the line",
                 f"did you mean {close[0]}=?" if close else "check the spelling in systemd.directives(7)")

    def _trailing_comment(self, a, kind: str) -> str:
        """Report `KEY=VALUE  # comment`; return the value without the comment."""
        start = _comment_start(a.value, kind)
        if start is None:
            return a.value
        clean, comment = a.value[:start].rstrip(), a.value[start:]
        self.clean[a.line] = clean
        fix = f"put the comment on a line of its own above it ('{comment}', then '{a.key}={clean}'): only lines " \
              "that start with # or ; are comments (systemd.syntax(7))"
        head = f"{a.key}={a.value}: systemd has no end-of-line comments"
        extra = _split_words_or_none(comment) or [comment]
        severity = "warning" if a.key in _WARNING_ONLY_KEYS else "error"
        if kind == "exec":
            command = _commands(_words(clean) or [])
            program = _program(command[-1])[1] if command else "the command"
            if comment.startswith(";") and comment[1:2].isspace() or comment == ";":
                rest = _split_words_or_none(comment[1:]) or []
                what = f"a lone ';' ends the command, so systemd reads {_plural(rest)} as a second command" if rest \
                    else "a lone ';' at the end starts an empty second command"
                if a.key == "ExecStart":
                    what += "; for ExecStart= that is two commands, which systemd refuses except for Type=oneshot"
                self.add(a.line, "trailing-comment", "error", f"{head}; {what}", fix)
            else:
                self.add(a.line, "trailing-comment", "error", f"{head}, so the words {_plural(extra)} become "
                         f"more arguments of {program}", fix)
        elif kind == "env":
            assignments = [w for w in extra if _ENV_ASSIGNMENT.match(w)]
            effect = f"{_plural([w for w in extra if w not in assignments])} are ignored as invalid assignments " \
                     "('Invalid environment assignment, ignoring')" if len(assignments) < len(extra) else ""
            if assignments:
                effect += ("; " if effect else "") + f"{_plural(assignments)} are set as variables"
            self.add(a.line, "trailing-comment", severity, f"{head}; Environment= splits its value into words, "
                     f"so {effect}", fix)
        elif kind in _REJECTING_KINDS or a.key in _REJECTING_KEYS or a.key.startswith("Limit"):
            self.ignored.add(a.line)
            instead = _DEFAULT_MEANING.get(a.key, f"its default (or the value of an earlier {a.key}= line)")
            self.add(a.line, "trailing-comment", severity, f"{head}, so it reads {a.value!r} as the value, rejects "
                     f"it and ignores the line: the service gets {instead}", fix)
        elif kind == "unit-list" or a.key in _WORD_LIST_KEYS:
            self.add(a.line, "trailing-comment", severity, f"{head}; {a.key}= takes a list, so the words "
                     f"{_plural(extra)} become more entries (systemd rejects the ones that are not valid)", fix)
        else:
            effect = _KEPT_MEANING.get(a.key) or (
                "the condition tests that text" if a.key.startswith(("Condition", "Assert")) else "")
            self.add(a.line, "trailing-comment", severity, f"{head}, so it keeps {a.value!r}, comment included, "
                     f"as the value{': ' + effect if effect else ''}", fix)
        return clean

    def _specifiers(self, a, kind: str, value: str) -> None:
        keys = {"Unit": _SPECIFIER_UNIT_KEYS, "Install": _SPECIFIER_INSTALL_KEYS}.get(a.section, _SPECIFIER_EXEC_KEYS)
        if a.key not in keys and kind != "exec":
            return
        fatal = kind == "exec" or a.key in _SPECIFIER_FATAL_KEYS
        unknown, deprecated, expanded = [], [], []
        index = 0
        while index < len(value) - 1:
            if value[index] != "%":
                index += 1
                continue
            letter = value[index + 1]
            if letter == "%":
                pass
            elif letter in SPECIFIERS:
                expanded.append((index, letter))
            elif letter in DEPRECATED_SPECIFIERS:
                deprecated.append(letter)
            elif letter.isascii() and letter.isalnum():
                unknown.append(letter)
            index += 2
        if unknown:
            consequence = "systemd refuses to load the unit ('Failed to resolve unit specifiers ...: Invalid slot')" \
                if fatal else "systemd ignores the line ('Failed to resolve specifiers ..., ignoring')"
            if a.section == "Install":
                consequence = "`systemctl enable` fails on it"
            names = ", ".join(f"%{u}" for u in dict.fromkeys(unknown))
            self.add(a.line, "specifier", "error", f"{a.key}= contains {names}: systemd expands %-specifiers in this "
                     f"setting (systemd.unit(5) \"Specifiers\") and {names} is not one, so {consequence}",
                     "write %% for a literal %: " + a.key + "=" + re.sub(
                         "%([" + "".join(dict.fromkeys(unknown)) + "])", r"%%\1", value.replace("%%", "\0")
                     ).replace("\0", "%%"))
        if deprecated:
            names = ", ".join(f"%{d}" for d in dict.fromkeys(deprecated))
            self.add(a.line, "specifier", "warning", f"{a.key}= contains {names}: a deprecated specifier "
                     f"({DEPRECATED_SPECIFIERS[deprecated[0]]}) that systemd 252 warns does not work as intended",
                     "write %% for a literal %, or drop it")
        if expanded and _looks_like_format(kind, value):
            letters = list(dict.fromkeys(letter for _, letter in expanded))
            meaning = "; ".join(f"%{x} is {SPECIFIERS[x]}" for x in letters[:4])
            self.add(a.line, "specifier", "warning", f"{a.key}= has {' '.join('%' + x for x in letters)} in what "
                     f"looks like a date or printf format, but systemd expands those itself before the program "
                     f"runs ({meaning})", "write %% for each % the program should see: " + a.key + "=" +
                     " ".join(_double_percent(chunk) if _FORMAT.search(chunk) else chunk for chunk in value.split(" ")))

    def _value(self, a, kind: str, value: str) -> None:
        if a.line in self.ignored:
            return  # already reported as a comment that makes systemd reject the value
        enum = known.ENUMS.get((a.section, a.key))
        if kind == "enum" and enum:
            if not known.enum_accepts(a.section, a.key, value):
                takes_bool = (a.section, a.key) in known.ENUMS_ACCEPT_BOOL
                words = [v for v in enum if not (takes_bool and v in _BOOLEAN_WORDS)] + (["yes", "no"] if takes_bool else [])
                self.ignored.add(a.line)
                self.add(a.line, "invalid-value", "error", f"{a.key}={value} is not one of {', '.join(words)}; "
                         "systemd ignores the line", f"use one of: {', '.join(words)}")
            return
        if kind == "env":
            self._environment(a, value)
            return
        if a.key in ("WorkingDirectory", "EnvironmentFile", "RootDirectory"):
            self._path_value(a, value)
            return
        if a.section == "Unit" and a.key in _PATH_CONDITIONS:
            path = value.lstrip("|!")
            if not path.startswith(("/", "%")):
                self.add(a.line, "relative-path", "error", f"{a.key}={value} is a relative path: systemd ignores the "
                         f"line ('{a.key}= path is not absolute, ignoring')", f"use an absolute path, e.g. "
                         f"{a.key}={value[:len(value) - len(path)]}/srv/app/{path}")
            return
        if (a.section, a.key) == ("Timer", "OnCalendar"):
            try:
                values.CalendarSpec.parse(value)
            except (values.InvalidValue, ValueError) as err:
                self.ignored.add(a.line)
                self.add(a.line, "invalid-value", "error", f"OnCalendar={value}: {err}; systemd ignores the line "
                         "('Failed to parse calendar specification')", "a calendar event like daily, Mon *-*-* 03:00 "
                         "or *-*-* 02:30:00; try it with `systemd-analyze calendar`")
            return
        validate = _VALIDATORS.get(kind)
        if validate is None:
            return
        try:
            validate(value)
        except (values.InvalidValue, ValueError, BadArgument) as err:
            if kind != "exec":
                self.ignored.add(a.line)
            self.add(a.line, "invalid-value", "error", f"{a.key}={value}: {err}", _value_fix(kind))
            return
        if kind == "exec":
            self._exec(a, value)

    def _environment(self, a, value: str) -> None:
        words = _words(value)
        if words is None:
            self.ignored.add(a.line)
            self.add(a.line, "environment-quoting", "error", f"Environment={value}: unbalanced quotes; systemd "
                     "ignores the whole line ('Invalid syntax, ignoring')", "close the quote")
            return
        bad = [w.text for w in words if not _ENV_ASSIGNMENT.match(w.text)]
        if not bad:
            return
        groups: list[list[str]] = []
        for word in words:
            if _ENV_ASSIGNMENT.match(word.text) or not groups:
                groups.append([word.text])
            else:
                groups[-1].append(word.text)
        fixed = " ".join('"' + " ".join(g).replace("\\", "\\\\").replace('"', '\\"') + '"' for g in groups)
        kept = [w.text for w in words if _ENV_ASSIGNMENT.match(w.text)]
        sets = f"sets {_plural(kept)} and " if kept else ""
        self.add(a.line, "environment-quoting", "error", f"Environment={value}: systemd splits the value at spaces "
                 f"into NAME=VALUE words, so it {sets}ignores {_plural(bad)} ('Invalid environment assignment, "
                 "ignoring')", f"quote each assignment that contains spaces: Environment={fixed}")

    def _path_value(self, a, value: str) -> None:
        optional = value.startswith("-")
        path = value[1:] if optional else value
        # systemd.exec(5): WorkingDirectory= also takes "~" alone (the home folder), not "~/x"
        if path.startswith(("/", "%")) or (a.key == "WorkingDirectory" and path == "~"):
            return
        if a.key == "EnvironmentFile":
            effect = "systemd ignores the line ('EnvironmentFile= path is not absolute, ignoring'), so none of its " \
                     "variables are set"
        elif optional:
            effect = f"systemd ignores the line ('{a.key}= path is not absolute, ignoring')"
        else:
            effect = f"systemd refuses to load the unit ('{a.key}= path is not absolute')"
        self.ignored.add(a.line)
        example = "%h/" + path[2:] if path.startswith("~/") else os.path.normpath("/srv/app/" + path)
        self.add(a.line, "relative-path", "error", f"{a.key}={value} is a relative path: {effect}",
                 f"use an absolute path, e.g. {a.key}={'-' if optional else ''}{example}"
                 + (" (or ~ alone for the home folder)" if a.key == "WorkingDirectory" else ""))

    def _exec(self, a, value: str) -> None:
        words = _words(value) or []
        commands = _commands(words)
        for number, command in enumerate(commands):
            prefix, program, args = _program(command)
            if program.startswith(("%", "$")) or not program:
                continue
            if number > 0 and not program.startswith("/"):
                # systemd 252 still reads a lone ';' as "run another command", and looks a bare
                # name up on its PATH: `; make the run folder` runs make.
                text = " ".join(w.text for w in command)
                self.add(a.line, "command-separator", "warning", f"{a.key}=: a lone ';' separates commands, so "
                         f"systemd runs {text!r} as a second command after the first one ends", "if that is a "
                         "comment, put it on a line of its own; if it is a command, give its absolute path "
                         "(or use one ExecStartPre= line per command)")
            self._program(a, prefix, program, args, number)
            self._shell(a, command, prefix, program, args)
        if a.key == "ExecStop" and len(commands) == 1:
            self._signal_stop(a, commands[0])

    def _program(self, a, prefix: str, program: str, args: list[_Word], number: int) -> None:
        which = f"{a.key}=" if number == 0 else f"the command after ';' in {a.key}="
        if "/" in program and not program.startswith("/"):
            hint = "%h/" + program[2:] if program.startswith("~/") else os.path.normpath("/srv/app/" + program)
            self.add(a.line, "relative-path", "error", f"{which} runs {program!r}, a relative path: systemd refuses "
                     f"to load the unit ('Neither a valid executable name nor an absolute path')",
                     f"use the absolute path, e.g. {hint}")
        elif "/" not in program:
            in_fixed_path = shutil.which(program, path=_SYSTEMD_PATH)
            if program.startswith("python") or not in_fixed_path:
                yours = shutil.which(program)
                self.add(a.line, "relative-path", "warning", f"{which} names {program!r} without a path; systemd "
                         f"looks it up in its own fixed PATH ({_SYSTEMD_PATH}), not in yours, so a virtual "
                         "environment's program is not the one that runs" +
                         ("" if in_fixed_path else f", and {program!r} is not on it: the start fails with 203/EXEC"),
                         f"use the absolute path{', e.g. ' + yours if yours else ''}")
        elif self.on_this_machine and "-" not in prefix and not os.access(program, os.X_OK):
            why = "does not exist" if not os.path.exists(program) else "is not executable"
            self.add(a.line, "missing-executable", "warning", f"{which} runs {program}, which {why} on this "
                     "machine: the start fails with status 203/EXEC", "install it, fix the path, or put '-' in front "
                     "to make its failure harmless (systemd.service(5))")
        scripts = [w.text for w in args if w.text.endswith((".py", ".sh"))
                   and not w.text.startswith(("/", "%", "$", "-")) and "=" not in w.text]
        if scripts and not self.value("Service", "WorkingDirectory"):
            home = "the user's home folder" if self.user else "/"
            self.add(a.line, "relative-path", "warning", f"{a.key}= uses {scripts[0]!r} relative to the working "
                     f"folder, which is {home} when WorkingDirectory= is not set",
                     "set WorkingDirectory= or use an absolute path")

    def _shell(self, a, command: list[_Word], prefix: str, program: str, args: list[_Word]) -> None:
        """Shell syntax in an Exec line: systemd runs no shell, so it arrives as arguments."""
        problems: list[str] = []
        operators: list[str] = []
        is_shell = os.path.basename(program) in _SHELLS
        script_index = None
        if is_shell:
            for index, word in enumerate(args):
                if word.text == "-c" or (word.text.startswith("-") and not word.text.startswith("--")
                                         and "c" in word.text[1:]):
                    script_index = index + 1
                    break
        if _ENV_ASSIGNMENT.match(program):
            problems.append(f"'{program}' is a shell variable assignment, but systemd takes it as the program name")
        elif program in _BUILTINS:
            problems.append(f"'{program}' is a shell builtin, not a program systemd can run")
        first_operator = None
        for index, word in enumerate(args):
            if index == script_index:
                continue  # the script of sh -c: a shell reads it
            text = word.text
            if not word.quoted and (text in _SHELL_OPERATORS or _REDIRECT.match(text) or "&&" in text or "||" in text
                                    or (len(word.raw) > 1 and word.raw.endswith(";") and not word.raw.endswith("\\;"))):
                operators.append(text)
                first_operator = index if first_operator is None else first_operator
            elif "$(" in text or "`" in text:
                problems.append(f"{text!r} is passed as it is: no shell runs the command substitution")
            elif not word.quoted and text.startswith("~") and not is_shell:
                problems.append(f"{text!r} keeps its '~': only a shell expands it (systemd has %h for the home folder)")
        if operators:
            passed = [w.text for w in args[first_operator:]]
            problems.insert(0, f"{_plural(operators)} {'is' if len(operators) == 1 else 'are'} shell syntax, but "
                               f"no shell runs this command: systemd passes {_plural(passed)} to "
                               f"{os.path.basename(program)} as "
                               f"{'one more argument' if len(passed) == 1 else str(len(passed)) + ' more arguments'}")
        if not problems:
            return
        raw = " ".join(w.raw for w in command)
        raw = raw[len(prefix):] if raw.startswith(prefix) else raw
        if is_shell and script_index is not None and script_index <= len(args):
            head = " ".join(w.raw for w in command[:script_index + 1 + (1 if "@" in prefix else 0)])
            script = " ".join(w.raw for w in args[script_index:])
            fix = f"{a.key}={head} {_quote(script)}"
        else:
            fix = f"{a.key}={prefix}/bin/sh -c {_quote(raw)}"
        if program == "cd":
            fix += " (or set WorkingDirectory=)"
        elif _ENV_ASSIGNMENT.match(program):
            fix = f"set the variable with Environment={program} and run the program itself"
        self.add(a.line, "shell-syntax", "error", f"{a.key}=: " + "; ".join(problems) +
                 " (systemd.service(5) \"Command lines\")", fix)

    def _signal_stop(self, a, command: list[_Word]) -> None:
        """ExecStop= that only sends a signal: systemd.service(5) ExecStop= warns against it."""
        _, program, args = _program(command)
        words = [w.text for w in args]
        if os.path.basename(program) in _SHELLS and "-c" in words:
            script = words[words.index("-c") + 1] if words.index("-c") + 1 < len(words) else ""
            inner = _split_words_or_none(script) or []
            if not inner or os.path.basename(inner[0]) not in _KILLERS \
                    or re.search(r"[;&|]|\bwait\b|\bwhile\b", script):
                return  # a script that also waits is what systemd.service(5) asks for
            program, words = inner[0], inner[1:]
        if os.path.basename(program) not in _KILLERS:
            return
        signal = "SIGTERM"
        for index, word in enumerate(words):
            name = None
            if word in ("-s", "-n", "--signal") and index + 1 < len(words):
                name = words[index + 1]
            elif word.startswith("-") and len(word) > 1 and not word.startswith("--") and word[1:] not in ("s", "n"):
                name = word[1:]
            if name:
                try:
                    signal = parse_signal(name).name
                except BadArgument:
                    pass
                break
        try:
            kill_signal = parse_signal(self.value("Service", "KillSignal", "SIGTERM")).name
        except BadArgument:
            kill_signal = "SIGTERM"
        fix = "delete the ExecStop= line: on stop systemd already sends KillSignal= to the service and waits up " \
              "to TimeoutStopSec=" + (f"; to stop it with {signal}, set KillSignal={signal}" if signal != kill_signal
                                      else "")
        self.add(a.line, "signal-execstop", "warning", f"ExecStop= only sends {signal} and does not wait for the "
                 f"service to stop: as soon as it returns, systemd sends KillSignal= ({kill_signal}) to what is left "
                 "(systemd.service(5) ExecStop=), so the service gets two signals at once (measured with systemd 252: "
                 "`kill -TERM $MAINPID` gave two SIGTERMs 0 ms apart) and a program that takes the second one as "
                 "'quit now' loses its clean shutdown", fix)

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

    # -- the service as a whole --------------------------------------------------------------------
    def _service(self) -> None:
        starts = self.values_of("Service", "ExecStart")
        # without ExecStart= systemd makes Type= default to oneshot (systemd.service(5))
        kind = self.value("Service", "Type", "simple" if starts else "oneshot")
        stops_or_acts = self.values_of("Service", "ExecStop") or self.value("Unit", "SuccessAction")
        service_line = self.headers.get("Service", self._line("Service"))
        if not starts and (kind != "oneshot" or not stops_or_acts):
            self.add(service_line, "missing-execstart", "error", "no ExecStart= in [Service]: systemd refuses to "
                     "load the unit (only Type=oneshot with ExecStop= or SuccessAction= may omit it)",
                     "add ExecStart=/absolute/path/to/program ARGS")
        self._multiple_starts(starts, kind)
        restart = self.value("Service", "Restart", "no")
        if kind == "oneshot" and restart in ("always", "on-success"):
            self.add(self._line("Service", "Restart"), "invalid-value", "error",
                     f"Restart={restart} is not allowed for Type=oneshot: systemd refuses to load the unit "
                     "('Service has Restart= set to either always or on-success, which isn't allowed for "
                     "Type=oneshot services')", "use Restart=on-failure or no")
        self._restart_policy(restart)
        self._network()
        if starts and _TRAINING.search(" ".join(v for _, v in starts)):
            self._training()
        if not self.user and not self.value("Service", "User") and not self.value("Service", "DynamicUser"):
            self.add(service_line, "no-user", "warning", "no User=: a system service runs as root",
                     "add User= (and Group=) of an unprivileged account, or DynamicUser=yes")

    def _timer(self) -> None:
        triggers = ("OnCalendar", "OnActiveSec", "OnBootSec", "OnStartupSec", "OnUnitActiveSec", "OnUnitInactiveSec",
                    "OnClockChange", "OnTimezoneChange")
        if not any(self.values_of("Timer", key) for key in triggers):
            self.add(self.headers.get("Timer", self._line("Timer")), "timer-no-trigger", "error",
                     "no OnCalendar= or On*Sec= that systemd accepts in [Timer]: systemd refuses to load the timer "
                     "('Timer unit lacks value setting. Refusing.')", "add OnCalendar= (e.g. daily) or OnBootSec=")

    def _multiple_starts(self, starts: list[tuple[int, str]], kind: str) -> None:
        if kind == "oneshot":
            return
        commands = [(line, c) for line, value in starts for c in _commands(_words(value) or [])]
        if len(commands) < 2:
            return
        lines = sorted({line for line, _ in commands})
        where = f"lines {', '.join(map(str, lines))}" if len(lines) > 1 else f"line {lines[0]}, separated by ';'"
        self.add(commands[1][0], "multiple-execstart", "error", f"{len(commands)} ExecStart= commands ({where}) in a "
                 f"Type={kind} service: systemd refuses to load the unit ('Service has more than one ExecStart= "
                 "setting, which is only allowed for Type=oneshot services. Refusing.')",
                 "keep one ExecStart=; run preparation steps with ExecStartPre=, or make a sequence of commands "
                 "Type=oneshot")

    def _restart_policy(self, restart: str) -> None:
        if restart not in ("always", "on-failure", "on-abnormal", "on-abort", "on-watchdog"):
            return
        # [Unit] StartLimitIntervalSec= and the old spellings (StartLimitInterval=, and both keys in
        # [Service]) set the same thing: the last accepted one wins
        interval_text = self.last_of(("Unit", "StartLimitIntervalSec"), ("Unit", "StartLimitInterval"),
                                     ("Service", "StartLimitInterval"))
        burst_text = self.last_of(("Unit", "StartLimitBurst"), ("Service", "StartLimitBurst"))
        interval = _seconds(interval_text) if interval_text else _DEFAULT_INTERVAL_S
        try:
            burst = int(burst_text) if burst_text else _DEFAULT_BURST
        except ValueError:
            burst = _DEFAULT_BURST
        spacing_text = self.value("Service", "RestartSec")
        spacing = _seconds(spacing_text) if spacing_text else _DEFAULT_RESTART_S
        line = self._line("Service", "Restart")
        if interval is None or spacing is None:
            return  # an invalid value, reported on its own line
        if interval == 0 or burst == 0:
            self.add(line, "restart-loop", "warning", f"Restart={restart} with the start limit disabled: a crashing "
                     "service restarts forever", "set StartLimitIntervalSec= and StartLimitBurst= in [Unit]")
            return
        limits = f"{burst} starts within {_span(interval)}"
        if not (burst_text or interval_text):
            limits += ", systemd's defaults"
        if burst * spacing >= interval:
            # The limit is hit when burst+1 starts fall within the interval, i.e. when burst gaps of
            # RestartSec + run time fit in it (measured on systemd 252: RestartSec=700ms with 3 in 2 s
            # restarted 17 times in 13 s; 200ms failed after 3 restarts).
            suggested = max(60.0, math.ceil(burst * (spacing + 60) / 60) * 60)
            self.add(line, "restart-loop", "warning", f"Restart={restart} restarts a crashing service forever: the "
                     f"start limit ({limits}) ends a crash loop only when {burst} restarts fit in "
                     f"{_span(interval)}, but with RestartSec={spacing_text or '100ms (the default)'}, {burst} "
                     f"restarts take {burst} x ({_span(spacing)} + run time), at least {_span(burst * spacing)}",
                     f"put StartLimitIntervalSec= above StartLimitBurst= x (RestartSec= + run time) in [Unit], e.g. "
                     f"StartLimitIntervalSec={_span(suggested)} with StartLimitBurst={burst} (ends a loop of runs "
                     f"shorter than {_span(suggested / burst - spacing)})")
        elif not interval_text and not burst_text and restart == "always":
            self.add(line, "restart-loop", "warning", "Restart=always without StartLimitIntervalSec=/StartLimitBurst=: "
                     f"systemd's defaults (5 starts within 10 s) decide how a crash loop ends, with "
                     f"RestartSec={spacing_text or '100ms (the default)'}",
                     "choose RestartSec= and StartLimitIntervalSec=/StartLimitBurst= in [Unit] on purpose")

    def _network(self) -> None:
        after = " ".join(self.unit.get_list("Unit", "After")).split()
        wants = " ".join(self.unit.get_list("Unit", "Wants") + self.unit.get_list("Unit", "Requires")).split()
        if "network.target" in after and "network-online.target" not in after + wants:
            self.add(self._line("Unit", "After"), "network-online", "warning",
                     "After=network.target only orders after the network stack starts, not after the network is up",
                     "use Wants=network-online.target and After=network-online.target")

    def _training(self) -> None:
        timeout = self.value("Service", "TimeoutStopSec") or self.value("Service", "TimeoutSec")
        service_line = self.headers.get("Service", self._line("Service"))
        line = self._line("Service", "TimeoutStopSec") if timeout else service_line
        if timeout is None:
            self.add(line, "stop-timeout", "warning", "a training service without TimeoutStopSec=: on stop it gets "
                     "the default 90 s to checkpoint, then SIGKILL", "set TimeoutStopSec= to the worst-case "
                     "checkpoint time plus a margin (e.g. 300s)")
        else:
            seconds = _seconds(timeout)
            if seconds is not None and 0 < seconds < 30:
                self.add(line, "stop-timeout", "warning", f"TimeoutStopSec={timeout} is short for a training "
                         "service: a large checkpoint is cut by SIGKILL", "raise it above the worst-case save time")
        mode = self.value("Service", "KillMode", "control-group")
        if mode in ("control-group", "process", "none"):
            effect = {"control-group": "SIGTERM reaches the data-loader workers at the same time as the trainer, "
                                       "so they can die while it still needs them to finish a step and save",
                      "process": "only the main process is signalled; workers are left running",
                      "none": "nothing is signalled at all"}[mode]
            self.add(self._line("Service", "KillMode"),
                     "kill-mode", "warning", f"KillMode={mode}: {effect}", "use KillMode=mixed: SIGTERM to the "
                     "trainer only, SIGKILL to everything left after TimeoutStopSec=")

    def _user_unit(self) -> None:
        for key in ("User", "Group"):
            for a in self.unit.assignments_of("Service", key):
                if a.value:
                    self.add(a.line, "user-unit", "warning", f"{key}={a.value} in a user unit: a user manager "
                             "(systemctl --user) runs services as its own user and cannot switch to another; "
                             "systemd.exec(5) User=: 'the only valid setting is the same user the user's service "
                             f"manager is running as', any other fails the start with status "
                             f"{'217/USER' if key == 'User' else '216/GROUP'}",
                             f"delete {key}=, or install the unit as a system unit (/etc/systemd/system)")
        for a in self.unit.assignments_of("Install", "WantedBy") + self.unit.assignments_of("Install", "RequiredBy"):
            if "multi-user.target" in a.value.split() or "graphical.target" in a.value.split():
                self.add(a.line, "user-unit", "warning", f"{a.key}={a.value} in a user unit: a user manager has no "
                         "multi-user.target, so `systemctl --user enable` links it to a target that never starts",
                         f"use {a.key}=default.target")

    def _dependencies(self) -> None:
        """Requires=/Requisite=/BindsTo= on a unit that is not installed: the start job cannot be made."""
        folders = [Path(os.path.expanduser(p)) for p in (_USER_UNIT_PATH if self.user else _SYSTEM_UNIT_PATH)]
        if self.user and os.environ.get("XDG_CONFIG_HOME"):
            folders.append(Path(os.environ["XDG_CONFIG_HOME"]) / "systemd" / "user")
        if self.unit.path is not None and self.unit.path.parent.as_posix().endswith(("systemd/user", "systemd/system")):
            folders.append(self.unit.path.parent)  # installed beside its dependencies
        for key in _HARD_DEPENDENCIES:
            for line, value in self.values_of("Unit", key):
                for name in value.split():
                    # device, mount, swap, slice and scope units are made by systemd, not installed as files
                    if "%" in name or Path(name).suffix not in (".service", ".socket", ".timer", ".path", ".target"):
                        continue
                    template = re.sub(r"@[^.]*\.", "@.", name, count=1)
                    if any((folder / name).exists() or (folder / template).exists() for folder in folders):
                        continue
                    manager = "user manager" if self.user else "system"
                    self.add(line, "missing-dependency", "warning", f"{key}={name}: no {name} is installed where the "
                             f"{manager} looks for units (systemd.unit(5) \"Unit File Load Path\"), so starting "
                             f"this unit fails ('Unit {name} not found')",
                             f"install {name}, or use Wants= if this unit can run without it")

    def _line(self, section: str, key: str | None = None) -> int:
        for a in reversed(self.unit.assignments) if key else self.unit.assignments:
            if a.section == section and (key is None or a.key == key):
                return a.line
        return self.headers.get(section, 1)


def _split_words_or_none(text: str) -> list[str] | None:
    words = _words(text)
    return None if words is None else [w.text for w in words]


# date +%Y..., and %Y-%m-%d, %H:%M, %Y%m%d: formats, not specifiers the author meant. Both sides of
# a pair must be date letters: %m.%i in LogsDirectory=journal/%m.%i is the machine ID and instance.
_FORMAT = re.compile(r"(?:^|[\s'\"=(])\+%[A-Za-z]|%[YmdHMS][-:_./T]?%[YmdHMS]")


def _double_percent(text: str) -> str:
    return re.sub(r"%(?!%)", "%%", text.replace("%%", "\0")).replace("\0", "%%")


def _looks_like_format(kind: str, value: str) -> bool:
    """A % in a date or printf format rather than a specifier the author meant."""
    if _FORMAT.search(value):
        return True
    if kind == "exec":
        words = _split_words_or_none(value) or []
        names = {os.path.basename(w.lstrip("@-:+!")) for w in words}
        return bool(names & {"date", "printf", "strftime"}) or bool(re.search(r"\b(printf|date)\b", value))
    return False


def _header_lines(unit: UnitFile) -> dict[str, int]:
    """Line of the first [Section] header of each section, read from the file (empty without one)."""
    if unit.path is None:
        return {}
    try:
        text = unit.path.read_text(errors="replace")
    except OSError:
        return {}
    found: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), 1):
        match = re.match(r"^\s*\[([^\[\]]+)\]\s*$", line)
        if match:
            found.setdefault(match.group(1), number)
    return found


# --- systemd-analyze verify ---------------------------------------------------------------------
def systemd_analyze_verify(path: Path, timeout_s: float = 30.0, user: bool = False) -> list[Finding]:
    """``systemd-analyze verify`` on a private copy of the file, as findings with line numbers.

    The copy is named like the file (``.service`` added if the name has no unit type), so
    neighbouring units and drop-ins do not change the answer; ``SYSTEMD_LOG_LEVEL=warning``.
    ``user``: verify it as a user unit (``--user``). Messages without a line number get the
    line of the key, command or specifier they name (see :func:`locate`); lines about other
    units are left out.
    """
    path = Path(path)
    try:
        text = path.read_text(errors="replace")
    except OSError as err:
        return [Finding(str(path), 1, "systemd-analyze", "info", f"systemd-analyze verify did not run: {err}",
                        source="systemd-analyze")]
    name = path.name if Path(path.name).suffix in known.SECTIONS_BY_TYPE else path.name + ".service"
    with tempfile.TemporaryDirectory(prefix="labkit-verify-") as folder:
        copy = Path(folder) / name
        copy.write_text(text)
        env = {**os.environ, "SYSTEMD_LOG_LEVEL": "warning", "SYSTEMD_PAGER": "", "SYSTEMD_COLORS": "0"}
        if user:
            runtime = Path(folder) / "runtime"
            runtime.mkdir(mode=0o700)
            env["XDG_RUNTIME_DIR"] = str(runtime)  # --user needs one to start its lookup (measured)
        try:
            done = subprocess.run(["systemd-analyze", *(["--user"] if user else []), "verify", "--man=no", f"./{name}"],
                                  capture_output=True, text=True, timeout=timeout_s, errors="replace", cwd=folder,
                                  env=env)
        except (OSError, subprocess.TimeoutExpired) as err:
            return [Finding(str(path), 1, "systemd-analyze", "info", f"systemd-analyze verify did not run: {err}",
                            source="systemd-analyze")]
    unit = load(path)
    findings: list[Finding] = []
    previous = 0
    for line in (done.stderr + done.stdout).splitlines():
        line = line.strip()
        match = re.match(rf"^(?:\S*/)?{re.escape(name)}:(\d+): (.*)$", line)
        if match:
            previous = int(match.group(1))
            findings.append(Finding(str(path), previous, "systemd-analyze", "warning", match.group(2),
                                    source="systemd-analyze"))
            continue
        if not re.search(rf"(?:^|[\s/]){re.escape(name)}(?:[:\s]|$)", line):
            continue  # about another unit, or the tool itself
        message = re.sub(rf"^{re.escape(name)}: ", "", line)
        number = previous = locate(message, unit, previous)
        severity = "error" if done.returncode != 0 else "warning"
        findings.append(Finding(str(path), number, "systemd-analyze", severity, message, source="systemd-analyze"))
    return findings


def locate(message: str, unit: UnitFile, previous: int = 0) -> int:
    """The line a systemd message without a line number is about (1 if nothing points anywhere).

    ``previous``: the line of the last numbered message, which the summaries ("has a bad unit
    file setting", "failed to load properly") repeat.
    """
    assignments = unit.assignments
    if "more than one ExecStart" in message:
        starts = [a for a in assignments if a.section == "Service" and a.key == "ExecStart"]
        after_reset = starts[max((i for i, a in enumerate(starts) if a.value == ""), default=-1) + 1:]
        if len(after_reset) > 1:
            return after_reset[1].line
        if after_reset:
            return after_reset[0].line
    refused = {"Service": ("has no ExecStart=", "no ExecStart=, ExecStop="), "Timer": ("Timer unit lacks value",)}
    for section, phrases in refused.items():
        if any(phrase in message for phrase in phrases):
            return _header_lines(unit).get(section) or next((a.line for a in assignments if a.section == section), 1)
    command = re.search(r"Command (\S+) is not executable", message)
    if command:
        for a in assignments:
            if known.kind_of(a.section, a.key) == "exec" and a.value:
                words = _split_words_or_none(a.value) or []
                programs = [w.lstrip("@-:+!") for w in words[:1]] + \
                           [words[i + 1].lstrip("@-:+!") for i, w in enumerate(words[:-1]) if w == ";"]
                if command.group(1) in programs:
                    return a.line
    specifier = re.search(r"'(%.)'", message)
    if specifier:
        for a in assignments:
            if specifier.group(1) in a.value:
                return a.line
    if re.search(r"bad unit file setting|failed to load properly|fatal error", message) and previous:
        return previous
    missing = re.search(r"Unit (\S+) not found", message)
    if missing:
        for a in sorted(assignments, key=lambda a: a.key not in _HARD_DEPENDENCIES):
            if missing.group(1) in a.value.split():
                return a.line
    for key in re.findall(r"\b([A-Z][A-Za-z]+)=", message):
        lines = [a.line for a in assignments if a.key == key]
        if lines:
            return lines[-1]
    for quoted in re.findall(r"'([^']+)'", message):
        for a in assignments:
            if quoted in a.value or quoted == a.key:
                return a.line
    return 1


def _merge(ours: list[Finding], theirs: list[Finding]) -> list[Finding]:
    """Ours, each with systemd-analyze's words for its line attached; plus what it says on a
    line none of ours covers."""
    merged = list(ours)
    extra = []
    for finding in theirs:
        same = [i for i, f in enumerate(merged) if f.line == finding.line]
        if not same:
            extra.append(finding)
            continue
        best = min(same, key=lambda i: SEVERITIES.index(merged[i].severity))
        said = merged[best].systemd
        if finding.message not in said:
            merged[best] = replace(merged[best], systemd=f"{said}; {finding.message}" if said else finding.message)
    return merged + extra


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
