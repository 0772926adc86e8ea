"""The cgroup layout as the kernel shows it: mounts (v1, v2, hybrid) and a process's freezer state
(Documentation/admin-guide/cgroup-v1/freezer-subsystem.rst; cgroup-v2.rst "cgroup.freeze")."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from labkit._linux.proc import PROC


class FreezerState(NamedTuple):
    """A process's cgroup freezer: ``state`` FROZEN, FREEZING or THAWED; ``folder`` the cgroup's
    directory; ``control`` the file that thaws it (freezer.state on v1, cgroup.freeze on v2)."""

    state: str
    folder: str
    control: str
    version: str  #: "v1" or "v2"


def mounts() -> list[tuple[str, str, set[str]]]:
    """(mount point, fstype, options) of every cgroup and cgroup2 mount, from /proc/self/mounts."""
    found = []
    try:
        with open(f"{PROC}/self/mounts") as handle:
            for line in handle:
                parts = line.split()
                if len(parts) >= 4 and parts[2] in ("cgroup", "cgroup2"):
                    found.append((parts[1], parts[2], set(parts[3].split(","))))
    except OSError:
        pass
    return found


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


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""
