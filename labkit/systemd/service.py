"""What the runner needs from a ``.service`` unit, with systemd's defaults filled in.

:meth:`ServiceSpec.from_unit` reads the keys systemd.service(5), systemd.kill(5) and
systemd.exec(5) define for running a service, checks their values, and fills in the
defaults systemd uses (DefaultTimeoutStopSec=90s, RestartSec=100ms,
StartLimitIntervalSec=10s, StartLimitBurst=5, KillMode=control-group, ...).

As systemd does when it loads the unit, specifiers (``%n``, ``%I``, ``%h``, ``%%``...,
systemd.unit(5) "Specifiers") are resolved in the Exec lines, ``Environment=``,
``EnvironmentFile=`` and ``WorkingDirectory=``; a unit systemd refuses to load (an Exec path
that is neither absolute nor a plain file name, an unknown specifier) raises
:class:`UnitRefused` with systemd's own words (measured with systemd 252).
"""

from __future__ import annotations

import dataclasses
import math
import os
import platform
import pwd
import re
import signal
import socket
from dataclasses import dataclass, field
from pathlib import Path

from labkit._linux import proc as _proc
from labkit.errors import BadArgument
from labkit.signals import parse_signal
from labkit.systemd.unitfile import ExecCommand, UnitFile, parse_exec, split_commands, split_words
from labkit.systemd.values import InvalidValue, parse_bool, parse_exit_statuses, parse_nice, parse_timespan

TYPES = ("simple", "exec", "oneshot", "forking")
SIMILAR_TYPES = {"notify": "simple", "notify-reload": "simple", "idle": "simple", "dbus": "simple"}
RESTARTS = ("no", "always", "on-success", "on-failure", "on-abnormal", "on-abort", "on-watchdog")
KILL_MODES = ("control-group", "mixed", "process", "none")
EXEC_PHASES = ("ExecStartPre", "ExecStart", "ExecStartPost", "ExecStop", "ExecStopPost")
RLIMITS = {"LimitNOFILE": "RLIMIT_NOFILE", "LimitNPROC": "RLIMIT_NPROC", "LimitCORE": "RLIMIT_CORE",
           "LimitAS": "RLIMIT_AS", "LimitFSIZE": "RLIMIT_FSIZE", "LimitCPU": "RLIMIT_CPU",
           "LimitSTACK": "RLIMIT_STACK", "LimitDATA": "RLIMIT_DATA", "LimitMEMLOCK": "RLIMIT_MEMLOCK"}
CGROUP_LIMITS = ("MemoryMax", "MemoryHigh", "MemorySwapMax", "CPUQuota", "CPUWeight", "TasksMax", "IOWeight")


@dataclass
class ServiceSpec:
    """A service as the runner runs it: commands, restart policy, stop policy, environment."""

    name: str
    type: str = "simple"
    commands: dict[str, list[ExecCommand]] = field(default_factory=dict)
    restart: str = "no"
    restart_sec: float = 0.1
    start_limit_interval_s: float = 10.0
    start_limit_burst: int = 5
    success_codes: frozenset[int] = frozenset()
    success_signals: frozenset[int] = frozenset()
    prevent_codes: frozenset[int] = frozenset()
    prevent_signals: frozenset[int] = frozenset()
    force_codes: frozenset[int] = frozenset()
    force_signals: frozenset[int] = frozenset()
    remain_after_exit: bool = False
    timeout_start_s: float = 90.0
    timeout_stop_s: float = 90.0
    kill_mode: str = "control-group"
    kill_signal: signal.Signals = signal.SIGTERM
    final_kill_signal: signal.Signals = signal.SIGKILL
    send_sigkill: bool = True
    send_sighup: bool = False
    environment: dict[str, str] = field(default_factory=dict)
    environment_files: list[tuple[str, bool]] = field(default_factory=list)  # (path, required)
    working_directory: tuple[str, bool] | None = None  # (path, required)
    user: str | None = None
    nice: int | None = None
    rlimits: dict[str, tuple[int, int]] = field(default_factory=dict)
    cgroup_limits: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # what was approximated, for the run's first event

    @classmethod
    def from_unit(cls, unit: UnitFile) -> "ServiceSpec":
        """Resolve a parsed ``.service`` unit.

        Raises:
            UnitRefused: systemd would refuse to load the unit; the message is systemd's, e.g.
                ``x.service:3: Neither a valid executable name nor an absolute path: ./x.sh;
                x.service: Unit configuration has fatal error, unit will not be started.``
            BadArgument: a value systemd would reject, or no ExecStart=; the message names the key
                and suggests ``labkit unit lint``.
        """
        spec = cls(name=unit.name)
        spec._check_loadable(unit)
        try:
            spec._read(unit)
        except UnitRefused:
            raise
        except (InvalidValue, BadArgument, ValueError) as err:
            raise BadArgument(f"{unit.name}: {err} (`labkit unit lint {unit.path or unit.name}` lists every "
                              f"problem)") from None
        return spec

    def _read(self, unit: UnitFile) -> None:
        def get(key: str, default: str) -> str:
            return unit.get("Service", key, default)

        kind = get("Type", "simple")
        if kind in SIMILAR_TYPES:
            self.notes.append(f"Type={kind} runs as Type={SIMILAR_TYPES[kind]} here (no sd_notify/D-Bus)")
            kind = SIMILAR_TYPES[kind]
        if kind not in TYPES:
            raise InvalidValue("", f"Type={kind} is not supported by labkit's runner (use simple, exec, oneshot or forking)")
        self.type = kind
        for phase in EXEC_PHASES:
            self.commands[phase] = [self._resolved_exec(part) for v in unit.get_list("Service", phase)
                                    for part in split_commands(v)]
        starts = self.commands["ExecStart"]
        if not starts:
            raise InvalidValue("", "no ExecStart= in [Service]: there is nothing to run")
        if len(starts) > 1 and kind != "oneshot":  # systemd: "Service has more than one ExecStart= setting"
            raise InvalidValue("", f"{len(starts)} ExecStart= commands (lines, or parts separated by a lone ';'); "
                                   "only Type=oneshot may have more than one")
        self.restart = _choice("Restart", get("Restart", "no"), RESTARTS)
        self.restart_sec = parse_timespan(get("RestartSec", "100ms"))
        interval = unit.get("Unit", "StartLimitIntervalSec") or unit.get("Service", "StartLimitInterval") or "10s"
        self.start_limit_interval_s = parse_timespan(interval)
        self.start_limit_burst = int(unit.get("Unit", "StartLimitBurst") or unit.get("Service", "StartLimitBurst") or 5)
        self.success_codes, self.success_signals = parse_exit_statuses(" ".join(unit.get_list("Service", "SuccessExitStatus")))
        self.prevent_codes, self.prevent_signals = parse_exit_statuses(
            " ".join(unit.get_list("Service", "RestartPreventExitStatus")))
        self.force_codes, self.force_signals = parse_exit_statuses(
            " ".join(unit.get_list("Service", "RestartForceExitStatus")))
        self.remain_after_exit = parse_bool(get("RemainAfterExit", "no"))
        timeout = unit.get("Service", "TimeoutSec")
        self.timeout_start_s = parse_timespan(get("TimeoutStartSec", timeout or ("infinity" if kind == "oneshot" else "90s")))
        self.timeout_stop_s = parse_timespan(get("TimeoutStopSec", timeout or "90s"))
        self.timeout_start_s = self.timeout_start_s or math.inf  # 0 disables the timeout
        self.timeout_stop_s = self.timeout_stop_s or math.inf
        self.kill_mode = _choice("KillMode", get("KillMode", "control-group"), KILL_MODES)
        if self.kill_mode == "none":  # systemd 252 warns so when it loads the unit
            self.notes.append("Unit uses KillMode=none. This is unsafe, as it disables systemd's process lifecycle "
                              "management for the service. Please update the service to use a safer KillMode=, such "
                              "as 'mixed' or 'control-group'. Support for KillMode=none is deprecated and will "
                              "eventually be removed.")
        self.kill_signal = parse_signal(get("KillSignal", "SIGTERM"))
        self.final_kill_signal = parse_signal(get("FinalKillSignal", "SIGKILL"))
        self.send_sigkill = parse_bool(get("SendSIGKILL", "yes"))
        self.send_sighup = parse_bool(get("SendSIGHUP", "no"))
        self._read_exec_context(unit)

    def _read_exec_context(self, unit: UnitFile) -> None:
        def get(key: str) -> str | None:
            return unit.get("Service", key)

        for value in unit.get_list("Service", "Environment"):
            for word in split_words(value):
                word = self.specifiers(word)  # per word, after splitting, as config_parse_environ()
                name, sep, content = word.partition("=")
                if not sep or not name:
                    raise InvalidValue("", f"Environment={value}: {word!r} is not NAME=VALUE")
                self.environment[name] = content
        for value in unit.get_list("Service", "EnvironmentFile"):
            self.environment_files.append((self.specifiers(value.lstrip("-")), not value.startswith("-")))
        directory = get("WorkingDirectory")
        if directory:
            path = directory.lstrip("-")
            self.working_directory = (path if path == "~" else self.specifiers(path), not directory.startswith("-"))
        self.user = get("User")
        if (nice := get("Nice")) is not None:
            self.nice = parse_nice(nice)
        for key, name in RLIMITS.items():
            if (setting := get(key)) is not None:
                self.rlimits[name] = _rlimit(key, setting)
        for key in CGROUP_LIMITS:
            if (setting := get(key)) is not None:
                self.cgroup_limits[key] = setting

    # --- what systemd checks when it loads the unit ------------------------------------------
    def _check_loadable(self, unit: UnitFile) -> None:
        """Refuse, in systemd's words, what makes systemd refuse the whole unit (config_parse_exec())."""
        where = str(unit.path or unit.name)
        for phase in EXEC_PHASES:
            values: list = []
            for assignment in unit.assignments_of("Service", phase):
                values = [] if assignment.value == "" else values + [assignment]
            for assignment, part in ((a, part) for a in values for part in split_commands(a.value)):
                try:
                    command = parse_exec(part)
                except BadArgument:
                    continue  # a quoting problem: _read() says which key
                problem = None
                try:
                    words = [self.specifiers(word) for word in command.argv]
                except InvalidValue as err:
                    problem = str(err)
                else:
                    if not (words[0].startswith("/") or _valid_filename(words[0])):
                        problem = f"Neither a valid executable name nor an absolute path: {words[0]}"
                if problem:
                    raise UnitRefused(f"{where}:{assignment.line}: {problem}; {unit.name}: Unit configuration has "
                                      "fatal error, unit will not be started.")

    def _resolved_exec(self, value: str) -> ExecCommand:
        command = parse_exec(value)
        return dataclasses.replace(command, argv=tuple(self.specifiers(word) for word in command.argv))

    def specifiers(self, text: str) -> str:
        """``text`` with systemd.unit(5)'s specifiers resolved for this unit, as a user manager does.

        Raises:
            InvalidValue: an unknown specifier (systemd: "Failed to resolve unit specifiers in
                TEXT: Invalid slot", and it refuses the unit).
        """
        if "%" not in text:
            return text
        table = self._specifier_table()

        def one(match: re.Match) -> str:
            key = match.group(1)
            if key not in table:
                raise InvalidValue(text, f"Failed to resolve unit specifiers in {text}: Invalid slot")
            value = table[key]
            return value() if callable(value) else value

        return re.sub(r"%(.?)", one, text, flags=re.S)

    def _specifier_table(self) -> dict:
        stem, _, _suffix = self.name.rpartition(".")
        prefix, at, instance = stem.partition("@")
        account = self._account()
        runtime = os.environ.get("XDG_RUNTIME_DIR") or f"/run/user/{account.pw_uid}"
        home = account.pw_dir
        config = os.environ.get("XDG_CONFIG_HOME") or f"{home}/.config"
        state = os.environ.get("XDG_STATE_HOME") or f"{home}/.local/state"
        last = prefix.rsplit("-", 1)[-1]
        return {
            "n": self.name, "N": stem, "p": prefix, "P": unescape_unit_name(prefix), "i": instance,
            "I": unescape_unit_name(instance), "j": last, "J": unescape_unit_name(last),
            "f": "/" + unescape_unit_name(instance if at else prefix).lstrip("/"),
            "h": home, "u": account.pw_name, "U": str(account.pw_uid), "g": _group_name(account.pw_gid),
            "G": str(account.pw_gid), "s": account.pw_shell, "t": runtime, "S": state,
            "C": os.environ.get("XDG_CACHE_HOME") or f"{home}/.cache", "L": f"{state}/log", "E": config,
            "T": os.environ.get("TMPDIR") or "/tmp", "V": os.environ.get("TMPDIR") or "/var/tmp",
            "d": f"{runtime}/credentials/{self.name}", "H": socket.gethostname(),
            "l": socket.gethostname().split(".")[0], "q": socket.gethostname(), "v": platform.release(),
            "a": _architecture(), "m": lambda: _read_id("/etc/machine-id"),
            "b": _boot_id,
            "o": lambda: _os_release("ID"), "w": lambda: _os_release("VERSION_ID"),
            "B": lambda: _os_release("BUILD_ID"), "W": lambda: _os_release("VARIANT_ID"),
            "M": lambda: _os_release("IMAGE_ID"), "A": lambda: _os_release("IMAGE_VERSION"),
            "%": "%",
        }

    def resolved_environment(self) -> dict[str, str]:
        """The services's environment: a minimal base, EnvironmentFile= files, then Environment=.

        Lines of an EnvironmentFile= that systemd ignores (``export X=1``: not a variable name)
        are ignored here too, each with a warning in :attr:`notes`.

        Raises:
            BadArgument: a required EnvironmentFile= is missing.
        """
        env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
               "LANG": os.environ.get("LANG", "C.UTF-8")}
        env.update({k: v for k, v in os.environ.items() if k.startswith(("LABKIT_", "OPENBLAS", "OMP_", "MKL_"))})
        user = self._account()
        env.update({"HOME": user.pw_dir, "USER": user.pw_name, "LOGNAME": user.pw_name, "SHELL": user.pw_shell})
        for path, required in self.environment_files:
            try:
                env.update(read_environment_file(Path(path), self.notes))
            except FileNotFoundError:
                if required:
                    raise BadArgument(f"EnvironmentFile={path} does not exist (prefix it with '-' to make it optional)")
        env.update(self.environment)
        return env

    def _account(self) -> pwd.struct_passwd:
        try:
            return pwd.getpwnam(self.user) if self.user else pwd.getpwuid(os.getuid())
        except KeyError:
            raise BadArgument(f"User={self.user}: no such user on this machine") from None


class UnitRefused(BadArgument):
    """systemd would refuse to load the unit; the message is systemd's own (one line)."""


def read_environment_file(path: Path, warnings: list[str] | None = None) -> dict[str, str]:
    """Read an EnvironmentFile= as systemd's parse_env_file() does (src/basic/env-file.c).

    ``KEY=VALUE`` lines; ``#``/``;`` comment lines; whitespace around the key and an unquoted
    value dropped; ``'...'`` taken literally; in ``"..."`` a backslash escapes ``" \\ ` $``
    only; outside quotes a backslash escapes any character; a backslash at the end of a line
    continues the value on the next one; ``#`` inside a value is part of it. A line whose key is
    not a valid variable name (``export X=1``) is ignored, with a warning appended to ``warnings``.

    Raises:
        FileNotFoundError: no such file.
    """
    text = path.read_text(errors="replace")
    env: dict[str, str] = {}
    key: list[str] = []
    value: list[str] = []
    state, line, key_line = "pre_key", 1, 1
    trailing = 0  # whitespace at the end of an unquoted value, dropped if nothing follows it

    def push() -> None:
        name = "".join(key).rstrip(" \t")
        content = "".join(value)
        if trailing:
            content = content[:-trailing]
        if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            env[name] = content
        elif warnings is not None:
            warnings.append(f'{path}:{key_line}: invalid variable name "{name}", ignoring.')

    for char in text + "\n":
        newline = char in "\n\r"
        if state == "pre_key":
            if char in "#;":
                state = "comment"
            elif not char.isspace():
                state, key, key_line = "key", [char], line
        elif state == "key":
            if newline:
                state = "pre_key"  # no '=': the line is dropped
            elif char == "=":
                state, value, trailing = "pre_value", [], 0
            else:
                key.append(char)
        elif state == "pre_value":
            if newline:
                push()
                state = "pre_key"
            elif char == "'":
                state = "single"
            elif char == '"':
                state = "double"
            elif char == "\\":
                state = "value_escape"
            elif not char.isspace():
                state, trailing = "value", 0
                value.append(char)
        elif state == "value":
            if newline:
                push()
                state = "pre_key"
            elif char == "\\":
                state, trailing = "value_escape", 0
            else:
                value.append(char)
                trailing = trailing + 1 if char.isspace() else 0
        elif state == "value_escape":
            if not newline:  # a backslash-newline continues the value
                value.append(char)
            state = "value"
        elif state == "single":
            if char == "'":
                state = "pre_value"
            else:
                value.append(char)
        elif state == "double":
            if char == '"':
                state = "pre_value"
            elif char == "\\":
                state = "double_escape"
            else:
                value.append(char)
        elif state == "double_escape":
            if char in '"\\`$':
                value.append(char)
            elif not newline:
                value += ["\\", char]
            state = "double"
        elif state == "comment":
            if char == "\\":
                state = "comment_escape"
            elif newline:
                state = "pre_key"
        elif state == "comment_escape":
            state = "comment"
        if char == "\n":
            line += 1
    return env


def unescape_unit_name(text: str) -> str:
    """As unit_name_unescape(): ``\\xNN`` is the byte NN and ``-`` is ``/`` (``a\\x2db`` -> ``a-b``)."""
    out = re.sub(r"-", "/", text)
    return re.sub(r"\\x([0-9a-fA-F]{2})", lambda m: chr(int(m.group(1), 16)), out)


def _valid_filename(name: str) -> bool:
    """filename_is_valid(): a plain file name (no '/', not '.' or '..'), looked up in a fixed PATH."""
    return bool(name) and "/" not in name and name not in (".", "..") and len(name) <= 255


def _group_name(gid: int) -> str:
    import grp

    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def _architecture() -> str:
    machine = platform.machine()
    return {"x86_64": "x86-64", "aarch64": "arm64", "i686": "x86", "i386": "x86"}.get(machine, machine)


def _read_id(path: str) -> str:
    try:
        return Path(path).read_text().strip().replace("-", "")
    except OSError:
        return ""


def _boot_id() -> str:
    try:
        return _proc.boot_id().replace("-", "")
    except OSError:
        return ""


def _os_release(key: str) -> str:
    for candidate in ("/etc/os-release", "/usr/lib/os-release"):
        try:
            text = Path(candidate).read_text()
        except OSError:
            continue
        for line in text.splitlines():
            name, _, value = line.partition("=")
            if name == key:
                return value.strip().strip('"')
        return ""
    return ""


def _choice(key: str, value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise InvalidValue("", f"{key}={value} is not one of {', '.join(allowed)}")
    return value


def _rlimit(key: str, value: str) -> tuple[int, int]:
    import resource

    def number(text: str) -> int:
        if text == "infinity":
            return resource.RLIM_INFINITY
        if not text.isdigit():
            raise InvalidValue("", f"{key}={value}: expected a number or infinity")
        return int(text)

    soft, _, hard = value.partition(":")
    return number(soft), number(hard or soft)
