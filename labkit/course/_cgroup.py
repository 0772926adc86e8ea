"""Per-submission cgroups for the grader: memory and task limits, members, a sure kill.

Built on :mod:`labkit.cgroups` (which explains what each controller gives); this module only
decides the grader's limits and names (``labkit-grade-<pid>-<token>``).
"""

from __future__ import annotations

import os

from labkit._linux.wait import wait_for
from labkit.cgroups import CgroupSet, discard, mib, own_folders, remove_stale, write

Cgroups = CgroupSet  # the grader's name for it
_WANTED_V1 = ("memory", "pids", "freezer", "cpu")  # cpu: delegated to the sandbox user, for lesson 04
PREFIX = "labkit-grade-"


def create(name: str, memory_max_bytes: int | None, max_processes: int | None) -> CgroupSet:
    """Create ``labkit-grade-NAME`` in every writable hierarchy; limits where controllers allow.

    Returns an empty :class:`Cgroups` (no folders) where nothing is writable.
    """
    result = CgroupSet()
    folders = own_folders(_WANTED_V1)
    for hierarchy, folder in sorted(folders.items(), key=lambda item: item[0] == "v2"):  # v1 first
        remove_stale(folder, PREFIX)
        child = folder / f"{PREFIX}{os.getpid()}-{name}"
        try:
            child.mkdir()
        except FileExistsError:
            pass
        except OSError:
            continue
        if hierarchy == "memory" and memory_max_bytes:
            if not write(child / "memory.limit_in_bytes", str(memory_max_bytes)):
                discard(child)
                continue
            write(child / "memory.memsw.limit_in_bytes", str(memory_max_bytes))  # no swapping around it
            result.limits.append(f"memory {mib(memory_max_bytes)} (cgroup v1)")
        elif hierarchy == "pids" and max_processes:
            if not write(child / "pids.max", str(max_processes)):
                discard(child)
                continue
            result.limits.append(f"{max_processes} tasks (cgroup v1 pids)")
        elif hierarchy == "v2":
            if memory_max_bytes and "memory" not in result.folders and \
                    write(child / "memory.max", str(memory_max_bytes)):
                write(child / "memory.swap.max", "0")
                result.limits.append(f"memory {mib(memory_max_bytes)} (cgroup v2)")
            if max_processes and "pids" not in result.folders and write(child / "pids.max", str(max_processes)):
                result.limits.append(f"{max_processes} tasks (cgroup v2 pids)")
        result.folders[hierarchy] = child
    return result


def student_freezer(groups: CgroupSet) -> CgroupSet:
    """A child cgroup of the run's for the student kernel alone, where the run has a freezer
    (cgroup v1 ``freezer``, or v2's ``cgroup.freeze``): the grader freezes the learner's
    processes while the judge collects evidence, so nothing of theirs can write a file the
    judge is about to read. Empty where no freezer is writable."""
    result = CgroupSet()
    for hierarchy, control in (("freezer", "freezer.state"), ("v2", "cgroup.freeze")):
        parent = groups.folders.get(hierarchy)
        if parent is None:
            continue
        child = parent / "student"
        try:
            child.mkdir(exist_ok=True)
        except OSError:
            continue
        if (child / control).exists():
            result.folders[hierarchy] = child
            return result
        discard(child)
    return result


def set_frozen(student: CgroupSet, frozen: bool, timeout_s: float = 2.0) -> bool:
    """Freeze (or thaw) the student cgroup; True once the kernel reports it done."""
    v1, v2 = student.folders.get("freezer"), student.folders.get("v2")
    if v1 is not None:
        wanted = "FROZEN" if frozen else "THAWED"
        if not write(v1 / "freezer.state", wanted):
            return False
        return _settled(lambda: (v1 / "freezer.state").read_text().strip() == wanted, timeout_s)
    if v2 is not None:
        if not write(v2 / "cgroup.freeze", "1" if frozen else "0"):
            return False
        return _settled(lambda: f"frozen {int(frozen)}" in (v2 / "cgroup.events").read_text(), timeout_s)
    return False


def _settled(done, timeout_s: float) -> bool:
    """Poll ``done()`` every millisecond (the grader waits on this for every cell) until it is true;
    False on timeout, or at once when the cgroup file cannot be read (the cgroup is gone)."""
    def check() -> str | None:
        try:
            return "done" if done() else None
        except OSError:
            return "unreadable"

    return wait_for(check, timeout_s, first_interval_s=0.001, max_interval_s=0.001) == "done"
