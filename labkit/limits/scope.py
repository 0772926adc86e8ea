"""``systemd-run --user --scope``: systemd makes the cgroup and writes the limits for us.

The command runs in a transient scope unit whose properties are systemd's own knobs
(systemd.resource-control(5)): ``CPUQuota=`` (percent of one CPU), ``MemoryMax=`` and
``MemoryHigh=`` (bytes). systemd removes the scope's cgroup, counters included, once the
last process has left, so a SIGKILL (exit 137) under ``MemoryMax=`` is what tells an OOM kill
here. It needs a systemd user manager (``auto`` uses it only where no cgroup of our own is
writable) and holds only a command it starts: a running process cannot be put in a scope by
``systemd-run``.
"""

from __future__ import annotations

import os
import subprocess
import time

from labkit.errors import BadArgument
from labkit.limits.mechanism import Applied, Mechanism
from labkit.limits.spec import PREFIX, LimitSpec, size_text

__all__ = ["ScopeMechanism", "scope_command"]

#: what ``systemctl --user show`` reports for our properties (CPUQuota= is shown per second)
_SHOWN = ("CPUQuotaPerSecUSec", "MemoryMax", "MemoryHigh", "ControlGroup", "ActiveState")


def scope_command(command: list[str], spec: LimitSpec, cpu: bool, memory: bool, unit: str | None = None) -> list[str]:
    """``systemd-run --user --scope`` around ``command`` with the limits as properties.

    >>> scope_command(["python3", "train.py"], LimitSpec(cpu_quota=30), cpu=True, memory=False)
    ['systemd-run', '--user', '--scope', '--quiet', '-p', 'CPUQuota=30%', '--', 'python3', 'train.py']
    """
    properties: list[str] = []
    if cpu and spec.cpu_quota is not None:
        properties += ["-p", f"CPUQuota={spec.cpu_quota:g}%"]
    if memory:
        properties += ["-p", f"MemoryMax={spec.memory_max}"] if spec.memory_max else []
        properties += ["-p", f"MemoryHigh={spec.memory_high}"] if spec.memory_high else []
    named = [f"--unit={unit}"] if unit else []
    return ["systemd-run", "--user", "--scope", "--quiet", *named, *properties, "--", *command]


class ScopeMechanism(Mechanism):
    """A transient scope unit holding the command's tree (``cpu`` and/or ``memory`` limits)."""

    name = "scope"

    def __init__(self, spec: LimitSpec, cpu: bool, memory: bool) -> None:
        self.spec, self.cpu, self.memory = spec, cpu, memory
        self.unit = f"{PREFIX}{os.getpid()}-{time.monotonic_ns() % 10**9}.scope"
        self._env: dict[str, str] | None = None

    def describe(self) -> str:
        knobs = [name for name, wanted in (("CPUQuota=", self.cpu), ("MemoryMax=/MemoryHigh=", self.memory)) if wanted]
        return f"systemd scope {self.unit}: systemd's cgroup for the command ({', '.join(knobs)})"

    def applied(self) -> list[Applied]:
        found = []
        if self.cpu and self.spec.cpu_quota is not None:
            found.append(Applied("cpu quota", f"{self.spec.cpu_quota:g}%", "systemd-run --user --scope (CPUQuota=)",
                                 "systemd's cgroup for the command"))
        if self.memory and self.spec.memory_max:
            found.append(Applied("memory max", size_text(self.spec.memory_max),
                                 "systemd-run --user --scope (MemoryMax=)",
                                 "systemd's cgroup; beyond it the OOM killer sends SIGKILL"))
        if self.memory and self.spec.memory_high:
            found.append(Applied("memory high", size_text(self.spec.memory_high),
                                 "systemd-run --user --scope (MemoryHigh=)",
                                 "above it the kernel throttles and reclaims"))
        return found

    def prepare(self, command: list[str], env: dict[str, str] | None) -> tuple[list[str], dict[str, str] | None]:
        """Wrap the command; run it in the user manager's environment (labkit's own manager where one runs)."""
        from labkit.systemd.manager import user_environment

        self._env = user_environment(env)
        return scope_command(command, self.spec, self.cpu, self.memory, self.unit), self._env

    def apply(self, pid: int, launched: bool) -> None:
        """Raises BadArgument for a running process: systemd-run starts what its scope holds."""
        if not launched:
            raise BadArgument("a systemd scope holds only a command it starts (systemd-run); for a running pid "
                              "use --mechanism cgroup, throttle or rlimit")

    def verify(self, pid: int) -> dict[str, str]:
        """The scope's properties as systemd reports them (``systemctl --user show``); {} if it is gone."""
        try:
            shown = [f"--property={name}" for name in _SHOWN]
            done = subprocess.run(["systemctl", "--user", "show", self.unit, *shown],
                                  capture_output=True, text=True, timeout=10, env=self._env)
        except (OSError, subprocess.TimeoutExpired):
            return {}
        return dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)

    def oom_kills(self) -> int:
        return 0  # the scope's counters go with its cgroup: the process's exit (137) is the sign
