"""The cgroup layout, read once in the kernel layer: recorded machines (v1, v2, hybrid, a container)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from labkit import cgroups
from labkit._linux import cgroup as _cgroup

MACHINES = Path(__file__).parent / "fixtures" / "cgroup"


def recorded(machine: str) -> _cgroup.Layout:
    return _cgroup.parse_layout((MACHINES / machine / "mountinfo").read_text(),
                                (MACHINES / machine / "cgroup").read_text())


@pytest.mark.parametrize("machine, version, v2, v1", [
    ("v2", "v2", "/sys/fs/cgroup/user.slice/user-1000.slice/user@1000.service/app.slice/jupyter.service", {}),
    ("v1", "v1", None, {"cpu": "/sys/fs/cgroup/cpu,cpuacct/user.slice",
                        "cpuacct": "/sys/fs/cgroup/cpu,cpuacct/user.slice",
                        "memory": "/sys/fs/cgroup/memory/user.slice/user-1000.slice/session-3.scope",
                        "pids": "/sys/fs/cgroup/pids/user.slice/user-1000.slice/session-3.scope",
                        "freezer": "/sys/fs/cgroup/freezer"}),
    ("hybrid", "hybrid", "/sys/fs/cgroup/unified",
     {"blkio": "/sys/fs/cgroup/blkio", "cpu": "/sys/fs/cgroup/cpu", "cpuacct": "/sys/fs/cgroup/cpuacct",
      "cpuset": "/sys/fs/cgroup/cpuset", "devices": "/sys/fs/cgroup/devices", "freezer": "/sys/fs/cgroup/freezer",
      "memory": "/sys/fs/cgroup/memory/process_api/966d1b676755dee1f2842c86fc747bb5", "pids": "/sys/fs/cgroup/pids"}),
    # no cgroup namespace: the mount's root is our cgroup's host path, so our folder is the mount point
    ("container-v1", "v1", None, {"cpu": "/sys/fs/cgroup/cpu,cpuacct", "cpuacct": "/sys/fs/cgroup/cpu,cpuacct",
                                  "memory": "/sys/fs/cgroup/memory"}),
])
def test_recorded_machines_give_their_layout(machine, version, v2, v1):
    assert recorded(machine) == (version, v2, v1)


def test_a_mount_that_does_not_show_our_cgroup_gives_no_folder():
    mountinfo = "50 40 0:31 /docker/f00 /sys/fs/cgroup/memory ro - cgroup cgroup ro,memory\n"
    assert _cgroup.parse_layout(mountinfo, "4:memory:/elsewhere\n") == ("none", None, {})


def test_no_cgroup_filesystem_is_none(tmp_path):
    assert _cgroup.layout(str(tmp_path / "no-proc")) == ("none", None, {})


def fake_v2(tmp_path: Path, offered: str) -> _cgroup.Layout:
    (tmp_path / "cgroup.controllers").write_text(offered + "\n")
    return _cgroup.Layout("v2", str(tmp_path), {})


def test_a_v2_controller_not_offered_is_refused_with_what_is_offered(tmp_path):
    verdict = _cgroup.controller("memory", fake_v2(tmp_path, "cpu pids"))
    assert not verdict.ok and f"{tmp_path} offers only cpu, pids" in verdict.detail
    assert "v1: no memory hierarchy mounted" in verdict.detail


def test_an_offered_controller_is_proven_by_a_child_and_the_child_is_removed(tmp_path):
    verdict = _cgroup.controller("cpu", fake_v2(tmp_path, "cpu"))  # a plain folder: its child has no cpu.max
    assert not verdict.ok and "get no writable cpu.max" in verdict.detail and "subtree_control" in verdict.detail
    assert [p.name for p in tmp_path.iterdir()] == ["cgroup.controllers"]


def test_own_folders_are_the_writable_ones_of_the_shared_reading(monkeypatch, tmp_path):
    (tmp_path / "mem").mkdir()
    layout = _cgroup.Layout("hybrid", str(tmp_path / "missing"), {"memory": str(tmp_path / "mem"),
                                                                   "cpu": str(tmp_path / "cpu")})
    monkeypatch.setattr(_cgroup, "layout", lambda proc=None: layout)
    assert cgroups.own_folders(("cpu", "memory")) == {"memory": tmp_path / "mem"}


def _writable_v1(hierarchy: str):
    return cgroups.own_folders((hierarchy,)).get(hierarchy)


@pytest.mark.parametrize("hierarchy", ["pids", "freezer"])
def test_a_process_in_a_child_cgroup_is_a_member_and_is_killed(hierarchy, spawn, tmp_path):
    """A workload may make cgroups of its own under ours: procs() and kill() cover the whole subtree,
    and kill() goes on until it is empty even while a member keeps forking."""
    import signal
    import sys

    parent = _writable_v1(hierarchy)
    if parent is None:
        pytest.skip(f"no writable v1 {hierarchy} cgroup here")
    top = parent / f"labkit-test-{os.getpid()}-{hierarchy}"
    child = top / "inner" / "deeper"
    child.mkdir(parents=True)
    group = cgroups.CgroupSet({hierarchy: top})
    forker = ("import os, time\n"
              "for _ in range(8):\n"  # a chain: each generation forks the next 50 ms after it starts
              "    time.sleep(0.05)\n"
              "    if os.fork():\n        break\n"
              "time.sleep(300)\n")
    enter = f"echo $$ > {child}/cgroup.procs && exec {sys.executable} -c \"$0\""
    try:
        outer = spawn.popen(["sleep", "300"])
        (top / "cgroup.procs").write_text(str(outer.pid))
        inner = spawn.popen(["sh", "-c", enter, forker])
        wait_for_members = [outer.pid, inner.pid]
        deadline = time.monotonic() + 10
        while not (set(wait_for_members) <= group.procs() and len(group.procs()) >= 4):
            assert time.monotonic() < deadline, f"members never showed: {group.procs()}"
            time.sleep(0.01)
        assert inner.pid in {int(p) for p in (child / "cgroup.procs").read_text().split()}  # the child's, not top's
        assert group.kill(timeout_s=10) == 0
        assert group.procs() == set()
        assert outer.wait(timeout=5) == -signal.SIGKILL and inner.wait(timeout=5) == -signal.SIGKILL
    finally:
        group.kill(timeout_s=5)
        group.remove()
    assert not top.exists()
