"""What a learner asks for: the limits (:class:`LimitSpec`), checked before anything starts, and sizes.

Names mirror systemd's knobs where the limit is the same idea: ``cpu_quota`` is ``CPUQuota=``
(percent of one CPU), ``memory_max`` is ``MemoryMax=`` and ``memory_high`` is ``MemoryHigh=``
(bytes), see systemd.resource-control(5). Sizes are written as systemd writes them (``200M``,
``1.5G``: powers of 1024).
"""

from __future__ import annotations

import os
import resource
from dataclasses import dataclass, field

from labkit._linux import proc as _proc
from labkit.errors import BadArgument

__all__ = ["MECHANISMS", "RLIMITS", "PREFIX", "PERIOD_US", "LimitSpec", "parse_size", "size_text", "nofile_ceiling"]

MECHANISMS = ("auto", "cgroup", "scope", "rlimit", "throttle", "cpulimit")
RLIMITS = {"nofile": resource.RLIMIT_NOFILE, "as": resource.RLIMIT_AS, "nproc": resource.RLIMIT_NPROC,
           "fsize": resource.RLIMIT_FSIZE, "core": resource.RLIMIT_CORE, "cpu": resource.RLIMIT_CPU}
PREFIX = "labkit-limit-"  #: our cgroups (and scopes) are named PREFIX<our pid>-<token>
PERIOD_US = 100_000  #: the CFS period we write with a quota: 100 ms, the kernel's default


@dataclass
class LimitSpec:
    """The limits to apply; None (or an empty dict) means "leave as it is".

    Attributes:
        cpu_quota: percent of one CPU, like systemd's ``CPUQuota=`` (150 = one and a half CPUs).
        memory_max: bytes, like ``MemoryMax=``: the hard limit (cgroup: OOM kill; rlimit: MemoryError).
        memory_high: bytes, like ``MemoryHigh=``: where the kernel throttles and reclaims (cgroup v2 only).
        nice: -20 (first) .. 19 (last), setpriority(2).
        cpus: CPU numbers the command may run on, sched_setaffinity(2).
        rlimits: {name in :data:`RLIMITS`: value}, soft = hard, in the rlimit's own unit
            (bytes for ``as``/``fsize``/``core``, seconds for ``cpu``, a count for ``nofile``/``nproc``).
        mechanism: one of :data:`MECHANISMS`; ``auto`` picks the strongest this machine allows, per limit.
    """

    cpu_quota: float | None = None
    memory_max: int | None = None
    memory_high: int | None = None
    nice: int | None = None
    cpus: list[int] | None = None
    rlimits: dict[str, int] = field(default_factory=dict)
    mechanism: str = "auto"

    @property
    def wants_memory(self) -> bool:
        """A memory limit (hard or high) was asked for."""
        return self.memory_max is not None or self.memory_high is not None

    def check(self) -> None:
        """Refuse a value no mechanism accepts, before anything starts.

        Raises:
            BadArgument: an unknown mechanism or rlimit, a quota not above 0 or above all CPUs, a
                memory size under 1M, nice outside -20..19, CPUs this process may not use, a
                negative rlimit, or ``nofile`` above the kernel's ceiling (fs.nr_open).
        """
        if self.mechanism not in MECHANISMS:
            raise BadArgument(f"unknown mechanism {self.mechanism!r}; choose one of {', '.join(MECHANISMS)}")
        most = 100 * (os.cpu_count() or 1)
        if self.cpu_quota is not None and not 0 < self.cpu_quota <= most:  # NaN fails too
            raise BadArgument(f"--cpu-quota must be above 0 and at most {most} (100 = one CPU), got {self.cpu_quota:g}")
        for name, value in (("--memory-max", self.memory_max), ("--memory-high", self.memory_high)):
            if value is not None and value < 1 << 20:
                raise BadArgument(f"{name} must be at least 1M, got {value} bytes")
        if self.nice is not None and not -20 <= self.nice <= 19:
            raise BadArgument(f"--nice must be from -20 to 19, got {self.nice}")
        if self.cpus is not None:
            allowed = os.sched_getaffinity(0)
            if not self.cpus or not set(self.cpus) <= allowed:
                raise BadArgument(f"--cpus {self.cpus} is not a subset of the CPUs this process may use "
                                  f"({sorted(allowed)})")
        for name, value in self.rlimits.items():
            self._check_rlimit(name, value)

    @staticmethod
    def _check_rlimit(name: str, value: int) -> None:
        if name not in RLIMITS:
            raise BadArgument(f"unknown rlimit {name!r}; choose from {', '.join(RLIMITS)}")
        if value < 0:
            raise BadArgument(f"rlimit {name} must be 0 or more, got {value}")
        if name == "nofile":
            ceiling = nofile_ceiling()
            if ceiling is not None and value > ceiling:
                raise BadArgument(f"--nofile {value} is above this kernel's ceiling of {ceiling} open files "
                                  f"(sysctl fs.nr_open); setrlimit(2) refuses it even for root")


def nofile_ceiling() -> int | None:
    """The most open files any process may be allowed: ``fs.nr_open`` (1048576 by default), or None
    if it cannot be read. proc_sys_fs(5): RLIMIT_NOFILE above it fails with EPERM."""
    try:
        return _proc.nr_open()
    except (OSError, ValueError):
        return None


def parse_size(text: str) -> int:
    """``200M``, ``1.5G``, ``4096`` (bytes) -> bytes, as systemd and docker write sizes (powers of 1024).

    Raises:
        BadArgument: not a size, or ``infinity`` (no limit: leave the option out).
    """
    from labkit.systemd.values import InvalidValue
    from labkit.systemd.values import parse_size as systemd_size

    try:
        value = systemd_size(text)
    except (InvalidValue, ValueError) as err:
        raise BadArgument(f"bad size {text!r}: {err}") from None
    if value is None:
        raise BadArgument("a limit of 'infinity' is no limit; leave the option out")
    return value


def size_text(value_bytes: int | None) -> str:
    """Bytes as a short size for messages: 209715200 -> ``200M``; ``-`` for None."""
    if value_bytes is None:
        return "-"
    for unit, factor in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if value_bytes % factor == 0:
            return f"{value_bytes // factor}{unit}"
    return f"{value_bytes}B"
