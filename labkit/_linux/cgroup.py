"""The cgroup layout as the kernel shows it: mounts (v1, v2, hybrid), our folder in each hierarchy, its
writability and controllers, and a process's freezer state
(Documentation/admin-guide/cgroup-v1/freezer-subsystem.rst; cgroup-v2.rst "cgroup.freeze")."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import NamedTuple

from labkit._linux.proc import PROC, mount_table


class FreezerState(NamedTuple):
    """A process's cgroup freezer: ``state`` FROZEN, FREEZING or THAWED; ``folder`` the cgroup's
    directory; ``control`` the file that thaws it (freezer.state on v1, cgroup.freeze on v2)."""

    state: str
    folder: str
    control: str
    version: str  #: "v1" or "v2"


def mounts() -> list[tuple[str, str, set[str]]]:
    """(mount point, fstype, options) of every cgroup and cgroup2 mount, from /proc/self/mounts."""
    return [(point, kind, set(options)) for point, kind, options in mount_table() if kind in ("cgroup", "cgroup2")]


def memberships(pid: int) -> dict[str, str]:
    """{controller or "" for cgroup2: path} from /proc/PID/cgroup; {} if it is gone."""
    found: dict[str, str] = {}
    try:
        with open(f"{PROC}/{pid}/cgroup") as handle:
            for line in handle:
                parts = line.rstrip("\n").split(":", 2)
                if len(parts) == 3:
                    for controller in parts[1].split(",") if parts[1] else [""]:
                        found[controller] = parts[2]
    except OSError:
        pass
    return found


def freezer_state(pid: int) -> FreezerState | None:
    """The freezer holding ``pid`` if it is frozen or freezing, else None (thawed, or no freezer)."""
    member = memberships(pid)
    for point, fstype, options in mounts():
        if fstype == "cgroup" and "freezer" in options and "freezer" in member:
            folder = Path(point) / member["freezer"].lstrip("/")
            state = _read(folder / "freezer.state")
            if state in ("FROZEN", "FREEZING"):
                return FreezerState(state, str(folder), str(folder / "freezer.state"), "v1")
        if fstype == "cgroup2" and "" in member:
            folder = Path(point) / member[""].lstrip("/")
            events = dict(line.split(" ", 1) for line in _read(folder / "cgroup.events").splitlines() if " " in line)
            if events.get("frozen") == "1" or _read(folder / "cgroup.freeze") == "1":
                state = "FROZEN" if events.get("frozen") == "1" else "FREEZING"
                return FreezerState(state, str(folder), str(folder / "cgroup.freeze"), "v2")
    return None


def freezer_writable() -> bool:
    """Whether a cgroup freezer can be written here: a writable v1 ``freezer`` mount, or a
    writable cgroup2 mount (whose non-root cgroups have ``cgroup.freeze``)."""
    for point, fstype, options in mounts():
        if fstype == "cgroup" and "freezer" in options and os.access(point, os.W_OK):
            return True
        if fstype == "cgroup2" and os.access(os.path.join(point, "cgroup.procs"), os.W_OK):
            return True
    return False


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


# ---------------------------------------------------------------------------------------------
# The layout: which hierarchies are mounted, where our own cgroup is in each, what it offers.
# doctor and limits both read it here, so they cannot disagree about the same machine.

V1_CONTROLLERS = frozenset({"blkio", "cpu", "cpuacct", "cpuset", "devices", "freezer", "hugetlb", "memory",
                            "misc", "net_cls", "net_prio", "perf_event", "pids", "rdma"})
#: the file a limit is written to, per controller, in v1 and v2
LIMIT_FILES = {"v1": {"memory": "memory.limit_in_bytes", "cpu": "cpu.cfs_quota_us"},
               "v2": {"memory": "memory.max", "cpu": "cpu.max"}}
PROBE_PREFIX = "labkit-doctor-"


class Layout(NamedTuple):
    """``version`` "v2" (unified only), "hybrid" (v1 controllers and a v2 mount), "v1" or "none";
    ``v2`` our folder in the unified hierarchy (or None); ``v1`` {controller: our folder}."""

    version: str
    v2: str | None
    v1: dict[str, str]


class Controller(NamedTuple):
    """Whether a child cgroup of ours gets a writable ``ctrl`` limit: ``hierarchy`` is "v2" or the v1
    controller's name, ``folder`` our folder there (the parent of the child to make)."""

    ok: bool
    detail: str
    hierarchy: str | None = None
    folder: str | None = None


def parse_layout(mountinfo: str, self_cgroup: str) -> Layout:
    """The layout from the text of /proc/self/mountinfo and /proc/self/cgroup (see proc(5))."""
    paths: dict[str, str] = {}  # controller -> our path in its hierarchy; "" is the v2 hierarchy
    for parts in (line.split(":", 2) for line in self_cgroup.splitlines()):
        if len(parts) == 3:
            paths.update(dict.fromkeys(parts[1].split(","), parts[2]))  # "0::/x" gives key ""
    v2_dir: str | None = None
    v1_dirs: dict[str, str] = {}
    for line in mountinfo.splitlines():  # v1 controllers are among the super options
        left, _, right = line.partition(" - ")
        a, b = left.split(), right.split()
        if len(a) < 6 or len(b) < 3 or b[0] not in ("cgroup", "cgroup2"):
            continue
        point, root = (re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), x) for x in (a[4], a[3]))
        root = root.rstrip("/")
        for ctrl in [""] if b[0] == "cgroup2" else sorted(set(b[2].split(",")) & V1_CONTROLLERS):
            # Without a cgroup namespace a container sees the host path (/docker/<id>) in
            # /proc/self/cgroup but only its own subtree under the mount: strip the mount's root.
            path = paths.get(ctrl, "/")
            if root and (path == root or path.startswith(root + "/")):
                path = path[len(root):]
            elif root:
                continue  # our cgroup lies outside what this mount shows: no folder of ours here
            own = os.path.normpath(os.path.join(point, path.lstrip("/")))
            if ctrl:
                v1_dirs.setdefault(ctrl, own)
            elif v2_dir is None:
                v2_dir = own
    has_v2 = v2_dir is not None
    return Layout("hybrid" if v1_dirs and has_v2 else "v1" if v1_dirs else "v2" if has_v2 else "none",
                  v2_dir, v1_dirs)


def layout(proc: str | None = None) -> Layout:
    """This process's cgroup layout, read from ``proc`` (default /proc)/self/mountinfo and cgroup."""
    proc = PROC if proc is None else proc
    return parse_layout(_read(Path(proc, "self", "mountinfo")), _read(Path(proc, "self", "cgroup")))


def offered(folder: str | None) -> list[str]:
    """The v2 controllers a folder's parent gives it (its cgroup.controllers)."""
    return _read(Path(folder, "cgroup.controllers")).split() if folder else []


def writable_folders(found: Layout, wanted: tuple[str, ...]) -> dict[str, str]:
    """{"v2" or v1 controller in ``wanted``: our folder} where we may create child cgroups."""
    candidates = {ctrl: folder for ctrl, folder in found.v1.items() if ctrl in wanted}
    if found.v2 is not None:
        candidates["v2"] = found.v2
    return {name: folder for name, folder in candidates.items() if os.access(folder, os.W_OK)}


def probe_child(parent: str, needed: str, prefix: str = PROBE_PREFIX) -> tuple[bool, str]:
    """Create and remove a uniquely named child cgroup of ``parent``; is ``needed`` writable in it?"""
    child = os.path.join(parent, f"{prefix}{os.getpid()}-{time.monotonic_ns()}")
    try:
        os.mkdir(child)
    except OSError as exc:
        return False, f"cannot create a child of {parent}: {exc.strerror}"
    ok = os.access(os.path.join(child, needed), os.W_OK)  # returns False rather than raising
    try:
        os.rmdir(child)  # a cgroup without processes or children goes, control files and all
    except OSError as exc:
        return False, f"made {child} but could not remove it ({exc.strerror}); please rmdir it"
    return ok, f"children of {parent} get {'a' if ok else 'no'} writable {needed}"


def controller(ctrl: str, found: Layout | None = None) -> Controller:
    """Can a child cgroup of ours limit ``ctrl`` ("cpu" or "memory")? Proven by a real mkdir: v2 first
    (if our folder is offered ``ctrl``), then v1. The one verdict doctor and limits both give."""
    found = layout() if found is None else found
    reasons = []
    if found.v2 is not None:
        if ctrl in (have := offered(found.v2)):
            ok, why = probe_child(found.v2, LIMIT_FILES["v2"][ctrl])
            if ok:
                return Controller(True, f"v2: {why}", "v2", found.v2)
            # children get the controller only if it is in our cgroup.subtree_control; a probe won't change that
            reasons.append(f"v2: {why} (is {ctrl} in cgroup.subtree_control?)")
        else:
            reasons.append(f"v2: {found.v2} offers only {', '.join(have) or 'no controllers'}")
    if ctrl in found.v1:
        ok, why = probe_child(found.v1[ctrl], LIMIT_FILES["v1"][ctrl])
        if ok:
            return Controller(True, f"v1: {why}", ctrl, found.v1[ctrl])
        reasons.append(f"v1: {why}")
    else:
        reasons.append(f"v1: no {ctrl} hierarchy mounted")
    return Controller(False, "; ".join(reasons))
