"""cgroups found, created and emptied without assuming a layout (v1, v2, hybrid, none writable).

A workload's cgroups are created under this process's *own* cgroup in every hierarchy where
that is writable. What each controller gives:

    v1 memory   memory.limit_in_bytes (and memsw); OOM kills counted in memory.oom_control
    v1 cpu      cpu.cfs_quota_us / cpu.cfs_period_us: a CPU quota for the whole group
    v1 pids     pids.max: a fork bomb fails with EAGAIN, even as root; refused forks counted
    v1 freezer  freeze, kill, thaw: nothing can fork while it is being killed
    v2          memory.max, memory.high, cpu.max, pids.max, memory.events, cgroup.freeze when
                the controllers are enabled for the child, and cgroup.kill (Linux 5.14) always

Even without any controller a cgroup lists its members: a process that escaped the process
tree is still found through ``cgroup.procs``. Membership is inherited by every child process.

On v2 a child gets a controller only once its parent lists it in ``cgroup.subtree_control``,
and a non-root cgroup that holds processes cannot enable one there (the kernel's "no internal
process constraint", Documentation/admin-guide/cgroup-v2.rst: the write fails with EBUSY).
:func:`delegate_v2` does what a container's init or systemd's ``Delegate=yes`` does: it moves
the folder's own processes into a leaf child, then enables the controllers.
"""

from __future__ import annotations

import errno
import os
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from labkit._linux import cgroup as _cgroup, wait as _wait
from labkit._linux.tree import path as _proc_path


@dataclass
class CgroupSet:
    """Cgroups holding one workload, one folder per hierarchy (``"v2"`` for the unified one)."""

    folders: dict[str, Path] = field(default_factory=dict)
    limits: list[str] = field(default_factory=list)  #: limits in force, in words

    def procs(self) -> set[int]:
        """Pids of every process in any of the folders or the cgroups under them (a delegated
        folder's workload may make its own child cgroups: their members are ours too)."""
        found: set[int] = set()
        for folder in self.folders.values():
            try:
                walk = list(os.walk(folder))
            except OSError:
                continue
            for parent, _, files in walk:
                if "cgroup.procs" not in files:
                    continue
                try:
                    found.update(int(line) for line in (Path(parent) / "cgroup.procs").read_text().split())
                except (OSError, ValueError):
                    continue
        return found

    def oom_kills(self) -> int:
        """How many processes the kernel's OOM killer ended inside the memory limit."""
        total = 0
        for name, stat in (("memory", "memory.oom_control"), ("v2", "memory.events")):
            total += counter(self.folders.get(name), stat, "oom_kill")
        return total

    def forks_refused(self) -> int:
        """How many forks ``pids.max`` refused."""
        return counter(self.folders.get("pids"), "pids.events", "max") + \
            counter(self.folders.get("v2"), "pids.events", "max")

    def kill(self, timeout_s: float = 5.0) -> int:
        """SIGKILL every member, child cgroups included, until none is left; return how many survived
        ``timeout_s`` (processes in state D). Each round also writes v2's ``cgroup.kill`` (the whole
        subtree, Linux 5.14) and holds the v1 freezer frozen while it signals, so nothing forks
        meanwhile (a v1 freezer state applies to the cgroups under it too)."""
        v2 = self.folders.get("v2")
        freezer = self.folders.get("freezer")
        frozen = False

        def before(_: list[int]) -> None:
            nonlocal frozen
            if v2 is not None and (v2 / "cgroup.kill").exists():
                write(v2 / "cgroup.kill", "1")
            frozen = freezer is not None and write(freezer / "freezer.state", "FROZEN")

        def after(_: list[int]) -> None:
            if frozen and freezer is not None:
                write(freezer / "freezer.state", "THAWED")  # a frozen task dies once thawed

        return len(_wait.kill_until_empty(self.procs, timeout_s, before=before, after=after))

    def remove(self, timeout_s: float = 2.0) -> None:
        """Remove the folders (empty once their last member has exited); one still busy after
        ``timeout_s`` (a process stuck in state D) is left for the next run's :func:`remove_stale`."""
        deadline = time.monotonic() + timeout_s
        for folder in self.folders.values():
            _wait.wait_for(partial(_removed, folder), deadline - time.monotonic(), max_interval_s=0.01)

    def add(self, pid: int) -> list[str]:
        """Move process ``pid`` (all its threads) into every folder; return the problems, in words."""
        problems = []
        for hierarchy, folder in self.folders.items():
            try:
                with open(folder / "cgroup.procs", "w") as handle:
                    handle.write(str(pid))
            except OSError as err:
                problems.append(f"cannot move pid {pid} into {hierarchy} cgroup {folder}: {err.strerror}")
        return problems


def own_folders(wanted: tuple[str, ...]) -> dict[str, Path]:
    """Where this process's own cgroup is, in each writable hierarchy of ``wanted`` (v1 names) and v2.

    The layout is the kernel layer's one reading (:func:`labkit._linux.cgroup.layout`), the one
    ``labkit doctor`` and ``labkit limit`` use."""
    return {name: Path(folder) for name, folder in _cgroup.writable_folders(_cgroup.layout(), wanted).items()}


LEAF = "leaf"  #: the child that holds a delegated v2 folder's own processes (see :func:`delegate_v2`)


def delegate_v2(folder: Path, controllers: tuple[str, ...], leaf: str = LEAF,
                max_rounds: int = 20) -> tuple[Path, dict[str, str]]:
    """Let child cgroups of a v2 ``folder`` get ``controllers`` ("cpu", "memory"...), as delegation does.

    Writes ``+CTRL`` into ``cgroup.subtree_control``. Where that fails with EBUSY (the folder holds
    processes: the no-internal-process constraint of cgroup v2), every process of the folder is
    moved into its child ``leaf`` (made if needed; processes forked meanwhile are moved in later
    rounds, up to ``max_rounds``) and the write is tried again. A ``folder`` that is itself such a
    leaf (this process was moved there by an earlier call) stands for its parent, so calling this
    again never nests leaves. The root cgroup is exempt from the constraint: nothing moves there.

    Args:
        folder: a v2 cgroup folder, normally this process's own (``own_folders(...)["v2"]``).
        controllers: v2 controller names wanted in the children.
    Returns:
        (the folder whose new children get the controllers, {controller: why not, one line} for
        each one that could not be enabled: not offered by the cgroup above, or a write refused).
    Source: Documentation/admin-guide/cgroup-v2.rst, "Top-down constraint", "No internal process
    constraint" and "Delegation".
    """
    base = folder
    if folder.name == leaf:  # our own earlier leaf: its parent is the folder that was delegated
        wanted = _offered(folder.parent) & set(controllers)
        if wanted and wanted <= _controls(folder.parent):
            base = folder.parent
    offered = _offered(base)
    why_not = {ctrl: (f"{base} is not given {ctrl} by the cgroup above it (its cgroup.controllers lists "
                      f"{', '.join(sorted(offered)) or 'nothing'}): ask for a cgroup with Delegate=yes, e.g. "
                      f"systemd-run --user --scope -p Delegate=yes")
               for ctrl in controllers if ctrl not in offered}
    moved = False
    for ctrl in controllers:
        if ctrl in why_not or ctrl in _controls(base):
            continue
        try:
            _kernel_write(base / "cgroup.subtree_control", f"+{ctrl}")
            continue
        except OSError as err:
            refused = err
        if refused.errno == errno.EBUSY and not moved:
            moved = True
            problem = _move_members(base, base / leaf, max_rounds)
            if problem is None:
                try:
                    _kernel_write(base / "cgroup.subtree_control", f"+{ctrl}")
                    continue
                except OSError as err:
                    refused = err
            else:
                why_not[ctrl] = problem
                continue
        why_not[ctrl] = f"cannot enable {ctrl} in {base / 'cgroup.subtree_control'}: {refused.strerror}"
    return base, why_not


def _move_members(folder: Path, leaf: Path, max_rounds: int) -> str | None:
    """Move every process of ``folder`` into ``leaf``; None when done, else why not, in words."""
    try:
        leaf.mkdir(exist_ok=True)
    except OSError as err:
        return f"cannot make {leaf} to hold the processes of {folder}: {err.strerror}"
    for _ in range(max_rounds):
        try:
            pids = (folder / "cgroup.procs").read_text().split()
        except OSError as err:
            return f"cannot list {folder / 'cgroup.procs'}: {err.strerror}"
        if not pids:
            return None
        for pid in pids:
            try:
                _kernel_write(leaf / "cgroup.procs", pid)
            except ProcessLookupError:
                continue  # it exited meanwhile
            except OSError as err:
                return f"cannot move pid {pid} from {folder} into {leaf}: {err.strerror}"
    return f"{folder} still holds processes after {max_rounds} rounds of moving them into {leaf}"


def _offered(folder: Path) -> set[str]:
    return set(_cgroup.offered(str(folder)))


def _controls(folder: Path) -> set[str]:
    """The controllers a v2 folder's children get (its cgroup.subtree_control)."""
    try:
        return set((folder / "cgroup.subtree_control").read_text().split())
    except OSError:
        return set()


def _kernel_write(path: Path, text: str) -> None:
    """One write(2) to a cgroup control file; the kernel's refusal is raised as OSError (errno kept)."""
    with open(path, "w") as handle:
        handle.write(text)


def lesson_parents(controllers: tuple[str, ...] = ("cpu", "memory")) -> tuple[dict[str, Path], dict[str, str]]:
    """Where a learner can make a cgroup limiting each of ``controllers`` ("cpu", "memory"), and why not.

    A v1 hierarchy of the controller whose folder of ours is writable, or our v2 folder once
    :func:`delegate_v2` enabled the controller for its children; each found folder is proven by
    a real child that gets the limit file (``cpu.max``/``cpu.cfs_quota_us``, ``memory.max``/
    ``memory.limit_in_bytes``), as ``labkit doctor`` proves it.

    Returns:
        ({controller: the folder to make child cgroups in}, {controller: why none, one line}).
    """
    found = _cgroup.layout()
    folders: dict[str, Path] = {}
    why: dict[str, str] = {}
    for ctrl in controllers:
        verdict = _cgroup.controller(ctrl, found)
        if verdict.ok and verdict.folder is not None:
            folders[ctrl] = Path(verdict.folder)
            continue
        why[ctrl] = verdict.detail
    left = tuple(ctrl for ctrl in controllers if ctrl not in folders)
    if left and found.v2 is not None and os.access(found.v2, os.W_OK):
        parent, refused = delegate_v2(Path(found.v2), left)
        for ctrl in left:
            if ctrl in refused:
                why[ctrl] = refused[ctrl]
                continue
            ok, detail = _cgroup.probe_child(str(parent), _cgroup.LIMIT_FILES["v2"][ctrl])
            if ok:
                folders[ctrl] = parent
                why.pop(ctrl, None)
            else:
                why[ctrl] = f"v2: {detail}"
    elif left and found.v2 is not None:
        for ctrl in left:
            why[ctrl] += f"; v2: {found.v2} is not writable by this user (root, or a cgroup delegated to it)"
    return folders, why


def remove_stale(folder: Path, prefix: str) -> None:
    """Remove empty cgroups named PREFIX<pid>-... whose owner (that pid) is gone."""
    try:
        entries = [entry for entry in os.scandir(folder) if entry.name.startswith(prefix)]
    except OSError:
        return
    for entry in entries:
        owner = entry.name[len(prefix):].split("-", 1)[0]
        if owner.isdigit() and not os.path.exists(_proc_path(owner)):
            discard(Path(entry.path))


def discard(folder: Path) -> None:
    """Remove an (empty) cgroup folder, and the empty cgroups under it, if possible."""
    _remove_children(folder)
    try:
        folder.rmdir()
    except OSError:
        pass


def _removed(folder: Path) -> bool:
    """Remove ``folder`` and its child cgroups; True once it is gone."""
    _remove_children(folder)
    try:
        folder.rmdir()
    except FileNotFoundError:
        pass
    except OSError:
        return False
    return True


def _remove_children(folder: Path) -> None:
    """Remove the cgroups made under ``folder`` (a delegated one: by the workload), deepest first."""
    try:
        walk = list(os.walk(folder, topdown=False))
    except OSError:
        return
    for parent, dirs, _ in walk:
        for name in dirs:
            try:
                os.rmdir(os.path.join(parent, name))
            except OSError:
                pass


def write(path: Path, text: str) -> bool:
    """Write a cgroup file; False if the kernel refused."""
    try:
        with open(path, "w") as handle:
            handle.write(text)
        return True
    except OSError:
        return False


def counter(folder: Path | None, name: str, key: str) -> int:
    """The value of ``key`` in a flat-keyed cgroup file (memory.events, ...); 0 if absent."""
    if folder is None:
        return 0
    try:
        for line in (folder / name).read_text().splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[0] == key:
                return int(parts[1])
    except (OSError, ValueError):
        pass
    return 0


def mib(size: int) -> str:
    """A byte count in MiB, for messages."""
    return f"{size / 2**20:g} MiB"
