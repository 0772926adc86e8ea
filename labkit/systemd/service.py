"""What the runner needs from a ``.service`` unit, with systemd's defaults filled in.

:meth:`ServiceSpec.from_unit` reads the keys systemd.service(5), systemd.kill(5) and
systemd.exec(5) define for running a service, checks their values, and fills in the
defaults systemd uses (DefaultTimeoutStopSec=90s, RestartSec=100ms,
StartLimitIntervalSec=10s, StartLimitBurst=5, KillMode=control-group, ...).
"""

from __future__ import annotations

import math
import os
import pwd
import signal
from dataclasses import dataclass, field
from pathlib import Path

from labkit.errors import BadArgument
from labkit.signals import parse_signal
from labkit.systemd.unitfile import ExecCommand, UnitFile, parse_exec, split_words
from labkit.systemd.values import InvalidValue, parse_bool, parse_exit_statuses, parse_nice, parse_timespan

TYPES = ("simple", "exec", "oneshot")
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
    start_limit_interval: float = 10.0
    start_limit_burst: int = 5
    success_codes: frozenset[int] = frozenset()
    success_signals: frozenset[int] = frozenset()
    prevent_codes: frozenset[int] = frozenset()
    prevent_signals: frozenset[int] = frozenset()
    force_codes: frozenset[int] = frozenset()
    force_signals: frozenset[int] = frozenset()
    remain_after_exit: bool = False
    timeout_start: float = 90.0
    timeout_stop: float = 90.0
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
            BadArgument: a value systemd would reject, or no ExecStart=; the message names the key
                and suggests ``labkit unit lint``.
        """
        spec = cls(name=unit.name)
        try:
            spec._read(unit)
        except (InvalidValue, BadArgument, ValueError) as err:
            raise BadArgument(f"{unit.name}: {err} (`labkit unit lint {unit.path or unit.name}` lists every "
                              f"problem)") from None
        return spec

    def _read(self, unit: UnitFile) -> None:
        get = lambda key, default=None: unit.get("Service", key, default)  # noqa: E731
        kind = get("Type", "simple")
        if kind in SIMILAR_TYPES:
            self.notes.append(f"Type={kind} runs as Type={SIMILAR_TYPES[kind]} here (no sd_notify/D-Bus)")
            kind = SIMILAR_TYPES[kind]
        if kind not in TYPES:
            raise InvalidValue("", f"Type={kind} is not supported by labkit's runner (use simple, exec or oneshot)")
        self.type = kind
        for phase in EXEC_PHASES:
            self.commands[phase] = [parse_exec(v) for v in unit.get_list("Service", phase)]
        starts = self.commands["ExecStart"]
        if not starts:
            raise InvalidValue("", "no ExecStart= in [Service]: there is nothing to run")
        if len(starts) > 1 and kind != "oneshot":
            raise InvalidValue("", f"{len(starts)} ExecStart= lines; only Type=oneshot may have more than one")
        self.restart = _choice("Restart", get("Restart", "no"), RESTARTS)
        self.restart_sec = parse_timespan(get("RestartSec", "100ms"))
        interval = unit.get("Unit", "StartLimitIntervalSec") or get("StartLimitInterval") or "10s"
        self.start_limit_interval = parse_timespan(interval)
        self.start_limit_burst = int(unit.get("Unit", "StartLimitBurst") or get("StartLimitBurst") or 5)
        self.success_codes, self.success_signals = parse_exit_statuses(" ".join(unit.get_list("Service", "SuccessExitStatus")))
        self.prevent_codes, self.prevent_signals = parse_exit_statuses(
            " ".join(unit.get_list("Service", "RestartPreventExitStatus")))
        self.force_codes, self.force_signals = parse_exit_statuses(
            " ".join(unit.get_list("Service", "RestartForceExitStatus")))
        self.remain_after_exit = parse_bool(get("RemainAfterExit", "no"))
        timeout = get("TimeoutSec")
        self.timeout_start = parse_timespan(get("TimeoutStartSec", timeout or ("infinity" if kind == "oneshot" else "90s")))
        self.timeout_stop = parse_timespan(get("TimeoutStopSec", timeout or "90s"))
        self.timeout_start = self.timeout_start or math.inf  # 0 disables the timeout
        self.timeout_stop = self.timeout_stop or math.inf
        self.kill_mode = _choice("KillMode", get("KillMode", "control-group"), KILL_MODES)
        self.kill_signal = parse_signal(get("KillSignal", "SIGTERM"))
        self.final_kill_signal = parse_signal(get("FinalKillSignal", "SIGKILL"))
        self.send_sigkill = parse_bool(get("SendSIGKILL", "yes"))
        self.send_sighup = parse_bool(get("SendSIGHUP", "no"))
        self._read_exec_context(unit)

    def _read_exec_context(self, unit: UnitFile) -> None:
        get = lambda key, default=None: unit.get("Service", key, default)  # noqa: E731
        for value in unit.get_list("Service", "Environment"):
            for word in split_words(value):
                name, sep, content = word.partition("=")
                if not sep or not name:
                    raise InvalidValue("", f"Environment={value}: {word!r} is not NAME=VALUE")
                self.environment[name] = content
        for value in unit.get_list("Service", "EnvironmentFile"):
            self.environment_files.append((value.lstrip("-"), not value.startswith("-")))
        directory = get("WorkingDirectory")
        if directory:
            self.working_directory = (directory.lstrip("-"), not directory.startswith("-"))
        self.user = get("User")
        if get("Nice") is not None:
            self.nice = parse_nice(get("Nice"))
        for key, name in RLIMITS.items():
            if get(key) is not None:
                self.rlimits[name] = _rlimit(key, get(key))
        for key in CGROUP_LIMITS:
            if get(key) is not None:
                self.cgroup_limits[key] = get(key)

    def resolved_environment(self) -> dict[str, str]:
        """The services's environment: a minimal base, EnvironmentFile= files, then Environment=.

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
                env.update(read_environment_file(Path(path)))
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


def read_environment_file(path: Path) -> dict[str, str]:
    """Read an EnvironmentFile=: KEY=VALUE lines, # or ; comments, optional quotes."""
    env = {}
    for line in path.read_text(errors="replace").splitlines():
        line = line.strip()
        if not line or line[0] in "#;" or "=" not in line:
            continue
        name, value = (part.strip() for part in line.split("=", 1))
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        env[name] = value
    return env


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
