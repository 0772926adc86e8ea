"""Per-submission cgroups for the grader: limits, the list of members, a sure kill.

A child cgroup is created under the grader's *own* cgroup in every hierarchy where that is
writable, and nothing is assumed: machines differ (cgroup v1, v2, hybrid, nothing writable,
a container that mounts cgroups read-only). What each controller gives:

    v1 memory   memory.limit_in_bytes (and memsw) for the whole submission; OOM kills counted
    v1 pids     pids.max: a fork bomb fails with EAGAIN, even as root (RLIMIT_NPROC is not
                enforced for root); refused forks counted
    v1 freezer  freeze, kill, thaw: nothing can fork while it is being killed
    v2          the same files (memory.max, pids.max, memory.events, cgroup.freeze) when the
                controllers are enabled for the child, and cgroup.kill (Linux 5.14) always

Even without any controller a cgroup lists its members: a process that escaped the process
tree (its supervisor was killed) is still found through ``cgroup.procs``. Membership is
inherited by every child process and cannot be left without writing to another cgroup.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

_WANTED_V1 = ("memory", "pids", "freezer")
PREFIX = "labkit-grade-"


@dataclass
class Cgroups:
    """The cgroups of one submission, one folder per hierarchy (``"v2"`` for the unified one)."""

    folders: dict[str, Path] = field(default_factory=dict)
    limits: list[str] = field(default_factory=list)  #: limits in force, in words

    def procs(self) -> set[int]:
        """Pids of every process in any of the folders."""
        found: set[int] = set()
        for folder in self.folders.values():
            try:
                found.update(int(line) for line in (folder / "cgroup.procs").read_text().split())
            except (OSError, ValueError):
                continue
        return found

    def oom_kills(self) -> int:
        """How many processes the kernel's OOM killer ended inside the memory limit."""
        total = 0
        for name, stat in (("memory", "memory.oom_control"), ("v2", "memory.events")):
            total += _counter(self.folders.get(name), stat, "oom_kill")
        return total

    def forks_refused(self) -> int:
        """How many forks ``pids.max`` refused."""
        return _counter(self.folders.get("pids"), "pids.events", "max") + \
            _counter(self.folders.get("v2"), "pids.events", "max")

    def kill(self, timeout_s: float = 5.0) -> int:
        """SIGKILL every member until none is left; return how many survived ``timeout_s``."""
        deadline, pause = time.monotonic() + timeout_s, 0.001
        while True:
            members = self.procs()
            if not members or time.monotonic() > deadline:
                return len(members)
            v2 = self.folders.get("v2")
            if v2 is not None and (v2 / "cgroup.kill").exists():
                _write(v2 / "cgroup.kill", "1")
            freezer = self.folders.get("freezer")
            frozen = freezer is not None and _write(freezer / "freezer.state", "FROZEN")
            for pid in members:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            if frozen:
                _write(freezer / "freezer.state", "THAWED")  # type: ignore[operator]  # a frozen task dies once thawed
            time.sleep(pause)
            pause = min(pause * 2, 0.05)

    def remove(self, timeout_s: float = 2.0) -> None:
        """Remove the folders (empty once their last member has exited)."""
        deadline = time.monotonic() + timeout_s
        for folder in self.folders.values():
            while True:
                try:
                    folder.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        break  # a process stuck in state D; the folder is removed with the next run
                    time.sleep(0.01)


def create(name: str, memory_max_bytes: int | None, max_processes: int | None) -> Cgroups:
    """Create ``labkit-grade-NAME`` in every writable hierarchy; limits where controllers allow.

    Returns an empty :class:`Cgroups` (no folders) where nothing is writable.
    """
    result = Cgroups()
    folders = _own_cgroup_folders()
    for hierarchy, folder in sorted(folders.items(), key=lambda item: item[0] == "v2"):  # v1 first
        _remove_stale(folder)
        child = folder / f"{PREFIX}{os.getpid()}-{name}"
        try:
            child.mkdir()
        except FileExistsError:
            pass
        except OSError:
            continue
        if hierarchy == "memory" and memory_max_bytes:
            if not _write(child / "memory.limit_in_bytes", str(memory_max_bytes)):
                _discard(child)
                continue
            _write(child / "memory.memsw.limit_in_bytes", str(memory_max_bytes))  # no swapping around it
            result.limits.append(f"memory {_mib(memory_max_bytes)} (cgroup v1)")
        elif hierarchy == "pids" and max_processes:
            if not _write(child / "pids.max", str(max_processes)):
                _discard(child)
                continue
            result.limits.append(f"{max_processes} tasks (cgroup v1 pids)")
        elif hierarchy == "v2":
            if memory_max_bytes and "memory" not in result.folders and \
                    _write(child / "memory.max", str(memory_max_bytes)):
                _write(child / "memory.swap.max", "0")
                result.limits.append(f"memory {_mib(memory_max_bytes)} (cgroup v2)")
            if max_processes and "pids" not in result.folders and _write(child / "pids.max", str(max_processes)):
                result.limits.append(f"{max_processes} tasks (cgroup v2 pids)")
        result.folders[hierarchy] = child
    return result


def _own_cgroup_folders() -> dict[str, Path]:
    """Where this process's own cgroup is, for the hierarchies the grader can use."""
    try:
        own = [line.split(":", 2) for line in Path("/proc/self/cgroup").read_text().splitlines()]
        mounts = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return {}
    paths = {}
    for number, controllers, path in own:
        if number == "0" and not controllers:
            paths["v2"] = path
        for controller in controllers.split(","):
            if controller in _WANTED_V1:
                paths[controller] = path
    found = {}
    for line in mounts:
        left, _, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if len(fields) < 5 or len(tail) < 3 or tail[0] not in ("cgroup", "cgroup2"):
            continue
        root, mount_point = fields[3], fields[4]
        names = ["v2"] if tail[0] == "cgroup2" else [o for o in tail[2].split(",") if o in _WANTED_V1]
        for hierarchy in names:
            path = paths.get(hierarchy)
            if path is None or not (path + "/").startswith(root.rstrip("/") + "/"):
                continue  # our cgroup is not visible under this mount
            folder = Path(mount_point) / path[len(root.rstrip("/")):].lstrip("/")
            if os.access(folder, os.W_OK):
                found[hierarchy] = folder
    return found


def _remove_stale(folder: Path) -> None:
    """Remove empty cgroups left by an earlier grader that was killed (its pid is gone)."""
    try:
        entries = [entry for entry in os.scandir(folder) if entry.name.startswith(PREFIX)]
    except OSError:
        return
    for entry in entries:
        owner = entry.name[len(PREFIX):].split("-", 1)[0]
        if owner.isdigit() and not Path(f"/proc/{owner}").exists():
            _discard(Path(entry.path))


def _discard(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:
        pass


def _write(path: Path, text: str) -> bool:
    try:
        with open(path, "w") as handle:
            handle.write(text)
        return True
    except OSError:
        return False


def _counter(folder: Path | None, name: str, key: str) -> int:
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


def _mib(size: int) -> str:
    return f"{size / 2**20:g} MiB"
