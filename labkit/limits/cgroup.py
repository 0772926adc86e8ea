"""A cgroup of our own (v1 or v2) under this process's cgroup: the strongest mechanism.

Knobs (Documentation/admin-guide/cgroup-v2.rst, cgroup-v1/memory.rst, scheduler/sched-bwc.rst):

=======  ======================================  =====================================================
limit    v2                                      v1
=======  ======================================  =====================================================
CPU      ``cpu.max`` = "QUOTA PERIOD" (us)       ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` (us)
memory   ``memory.max``, ``memory.high`` (bytes) ``memory.limit_in_bytes`` (bytes)
swap     ``memory.swap.max`` = 0                 ``memory.memsw.limit_in_bytes`` = the limit
OOM      ``memory.events`` oom_kill              ``memory.oom_control`` oom_kill
=======  ======================================  =====================================================

Membership is inherited across fork, so the whole tree is held, children born later included;
past the memory limit the kernel's OOM killer sends SIGKILL (exit 137), counted in the OOM
counter that :meth:`CgroupMechanism.oom_kills` reads (never the message text).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from labkit import cgroups
from labkit._linux import cgroup as _cgroup
from labkit.errors import PermissionDenied
from labkit.limits.mechanism import Applied, Mechanism
from labkit.limits.spec import PERIOD_US, PREFIX, LimitSpec, size_text

__all__ = ["CgroupMechanism"]


class CgroupMechanism(Mechanism):
    """A child cgroup in each hierarchy the shared verdict (:func:`labkit._linux.cgroup.controller`) chose.

    Args:
        spec: the limits; only ``cpu_quota`` (if ``cpu``) and the memory limits (if ``memory``) are ours.
        verdicts: {"cpu"/"memory": the kernel layer's verdict} for the controllers to use.
    """

    name = "cgroup"

    def __init__(self, spec: LimitSpec, verdicts: dict[str, _cgroup.Controller]) -> None:
        self.spec, self.verdicts = spec, verdicts
        self.group = cgroups.CgroupSet()
        self._launched = False

    # -- what it is ------------------------------------------------------------------

    def describe(self) -> str:
        knobs = []
        if "cpu" in self.verdicts:
            knobs.append("cpu.max" if self._v2("cpu") else "cpu.cfs_quota_us")
        if "memory" in self.verdicts:
            knobs.append("memory.max" if self._v2("memory") else "memory.limit_in_bytes")
        return f"cgroup {self._version()}: a cgroup of our own for the whole tree ({', '.join(knobs)})"

    def applied(self) -> list[Applied]:
        spec, found = self.spec, []
        if "cpu" in self.verdicts and spec.cpu_quota is not None:
            where = "cgroup v2 (cpu.max)" if self._v2("cpu") else "cgroup v1 (cpu.cfs_quota_us)"
            found.append(Applied("cpu quota", f"{spec.cpu_quota:g}%", where,
                                 f"{self._quota_us()} us of CPU per {PERIOD_US} us"))
        if "memory" in self.verdicts:
            where = "cgroup v2 (memory.max)" if self._v2("memory") else "cgroup v1 (memory.limit_in_bytes)"
            if spec.memory_max:
                found.append(Applied("memory max", size_text(spec.memory_max), where,
                                     "the whole tree; beyond it the kernel's OOM killer sends SIGKILL"))
            if spec.memory_high:
                found.append(Applied("memory high", size_text(spec.memory_high), "cgroup v2 (memory.high)",
                                     "above it the kernel throttles and reclaims"))
        return found

    # -- its life ----------------------------------------------------------------------

    def prepare(self, command: list[str], env: dict[str, str] | None) -> tuple[list[str], dict[str, str] | None]:
        """Make the folders and write the limits.

        Raises:
            PermissionDenied: the kernel refused a limit file (the folders are removed again).
        """
        name = f"{PREFIX}{os.getpid()}-{time.monotonic_ns() % 10**9}"
        for verdict in self.verdicts.values():
            if verdict.hierarchy is None or verdict.folder is None or verdict.hierarchy in self.group.folders:
                continue  # v2: one child holds both limits
            parent = Path(verdict.folder)
            cgroups.remove_stale(parent, PREFIX)
            try:
                (parent / name).mkdir()
            except OSError as err:
                self.clean_up()
                raise PermissionDenied(f"creating cgroup {parent / name}", err.strerror or str(err)) from err
            self.group.folders[verdict.hierarchy] = parent / name
        try:
            self._write_cpu()
            self._write_memory()
        except PermissionDenied:
            self.clean_up()
            raise
        return command, env

    def in_child(self) -> None:
        for folder in self.group.folders.values():  # before exec: every child inherits it
            with open(folder / "cgroup.procs", "w") as handle:
                handle.write(str(os.getpid()))

    def apply(self, pid: int, launched: bool) -> None:
        """A launched command joined in ``in_child``; a running one is moved (all its threads).

        Raises:
            PermissionDenied: the kernel refused the move.
        """
        self._launched = launched
        if not launched:
            for problem in self.group.add(pid):
                raise PermissionDenied(problem)

    def verify(self, pid: int) -> dict[str, str]:
        """The limit files read back, and whether ``pid`` is a member (from /proc/PID/cgroup)."""
        found: dict[str, str] = {}
        for hierarchy, folder in self.group.folders.items():
            for knob in _KNOBS[hierarchy if hierarchy == "v2" else "v1"]:
                try:
                    found[f"{hierarchy}:{knob}"] = (folder / knob).read_text().strip()
                except OSError:
                    continue  # that controller is not ours in this hierarchy
        members = _cgroup.memberships(pid)
        for hierarchy, folder in self.group.folders.items():
            key = "" if hierarchy == "v2" else hierarchy
            found[f"{hierarchy}:member"] = str(members.get(key, "").endswith("/" + folder.name)).lower()
        return found

    def oom_kills(self) -> int:
        return self.group.oom_kills()

    def clean_up(self) -> None:
        """Remove the folders; for a command we launched, what it left behind in them is killed first."""
        if not self.group.folders:
            return
        if self._launched:
            self.group.kill(timeout_s=2.0)
            self.group.remove()
        else:
            self.group.remove(timeout_s=0.1)  # a running pid limited from outside keeps running
        self.group.folders = {}

    # -- the writes --------------------------------------------------------------------

    def _write_cpu(self) -> None:
        if "cpu" not in self.verdicts or self.spec.cpu_quota is None:
            return
        quota, folder = self._quota_us(), self._folder("cpu")
        if folder is None:
            ok = False
        elif self._v2("cpu"):
            ok = cgroups.write(folder / "cpu.max", f"{quota} {PERIOD_US}")
        else:
            ok = cgroups.write(folder / "cpu.cfs_period_us", str(PERIOD_US)) and \
                cgroups.write(folder / "cpu.cfs_quota_us", str(quota))
        if not ok:
            raise PermissionDenied("setting the CPU quota", "the cgroup refused cpu.cfs_quota_us / cpu.max")

    def _write_memory(self) -> None:
        if "memory" not in self.verdicts:
            return
        limit, high = self.spec.memory_max, self.spec.memory_high
        folder = self._folder("memory")
        if folder is None:
            ok = False
        elif self._v2("memory"):
            ok = (not limit or cgroups.write(folder / "memory.max", str(limit))) and \
                 (not high or cgroups.write(folder / "memory.high", str(high)))
            cgroups.write(folder / "memory.swap.max", "0")  # no escape into swap (absent without swap accounting)
        else:
            ok = not limit or cgroups.write(folder / "memory.limit_in_bytes", str(limit))
            if limit:
                cgroups.write(folder / "memory.memsw.limit_in_bytes", str(limit))  # the same, swap included
        if not ok:
            raise PermissionDenied("setting the memory limit", "the cgroup refused memory.limit_in_bytes / memory.max")

    def _quota_us(self) -> int:
        """The CPU quota in microseconds of CPU per :data:`PERIOD_US`."""
        return int((self.spec.cpu_quota or 0) / 100 * PERIOD_US)

    def _folder(self, ctrl: str) -> Path | None:
        hierarchy = self.verdicts[ctrl].hierarchy
        return None if hierarchy is None else self.group.folders.get(hierarchy)

    def _v2(self, ctrl: str) -> bool:
        return self.verdicts[ctrl].hierarchy == "v2"

    def _version(self) -> str:
        kinds = {"v2" if verdict.hierarchy == "v2" else "v1" for verdict in self.verdicts.values()}
        return "/".join(sorted(kinds))


#: the files :meth:`CgroupMechanism.verify` reads back, per hierarchy kind
_KNOBS = {"v1": ("cpu.cfs_quota_us", "cpu.cfs_period_us", "memory.limit_in_bytes"),
          "v2": ("cpu.max", "memory.max", "memory.high")}
