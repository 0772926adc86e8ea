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


# --- v2 delegation: a stand-in cgroup tree with the kernel's rules -----------------------------------
# This machine's cgroup2 mount has no cpu or memory controller, so the v2 logic is tested against
# folders shaped like the kernel's (cgroup.procs, cgroup.controllers, cgroup.subtree_control) and a
# stand-in for write(2) that enforces the rules of Documentation/admin-guide/cgroup-v2.rst.

class StandInV2:
    """write(2) on a stand-in v2 tree: EBUSY for +CTRL on a non-root cgroup holding processes (the
    no-internal-process constraint) and for a pid written into a cgroup whose children have
    controllers; ENOENT for a controller its parent does not give it; ESRCH for a pid nobody has."""

    def __init__(self, root: Path, offered: str = "cpu memory pids") -> None:
        self.root = root
        self.writes: list[tuple[str, str]] = []
        self.gone: set[str] = set()  # pids that exit just before they are moved
        self.refuse_moves = False
        self.forks_per_move = 0  # a member that forks each time it is moved
        self._next_pid = 5000
        self.make(root, offered)

    def make(self, folder: Path, offered: str) -> None:
        folder.mkdir(exist_ok=True)
        for name, text in (("cgroup.procs", ""), ("cgroup.controllers", offered), ("cgroup.subtree_control", "")):
            if not (folder / name).exists():
                (folder / name).write_text(text)

    def procs(self, folder: Path) -> list[str]:
        return (folder / "cgroup.procs").read_text().split()

    def write(self, path: Path, text: str) -> None:
        import errno

        folder, name = path.parent, path.name
        self.writes.append((str(path.relative_to(self.root)), text))
        if name == "cgroup.procs":
            self.make(folder, (folder.parent / "cgroup.subtree_control").read_text())  # a new mkdir'd cgroup
            if self.refuse_moves:
                raise PermissionError(errno.EACCES, "Permission denied")
            if text in self.gone:  # it exits now: the kernel lists it no more, and the write fails
                for procs in self.root.rglob("cgroup.procs"):
                    procs.write_text("\n".join(p for p in procs.read_text().split() if p != text))
                raise ProcessLookupError(errno.ESRCH, "No such process")
            if folder != self.root and (folder / "cgroup.subtree_control").read_text().split():
                raise OSError(errno.EBUSY, "Device or resource busy")
            for procs in self.root.rglob("cgroup.procs"):
                members = procs.read_text().split()
                if text in members:
                    procs.write_text("\n".join(p for p in members if p != text))
                    break
            else:
                raise ProcessLookupError(errno.ESRCH, "No such process")
            (folder / "cgroup.procs").write_text("\n".join([*self.procs(folder), text]))
            for _ in range(self.forks_per_move):  # a new child, born in the cgroup we are emptying
                self._next_pid += 1
                source = folder.parent
                (source / "cgroup.procs").write_text("\n".join([*self.procs(source), str(self._next_pid)]))
        elif name == "cgroup.subtree_control":
            ctrl = text.lstrip("+")
            if ctrl not in (folder / "cgroup.controllers").read_text().split():
                raise FileNotFoundError(errno.ENOENT, "No such file or directory")
            if folder != self.root and self.procs(folder):
                raise OSError(errno.EBUSY, "Device or resource busy")
            enabled = (folder / "cgroup.subtree_control").read_text().split()
            (folder / "cgroup.subtree_control").write_text(" ".join([*enabled, ctrl]))
            for child in folder.iterdir():
                if child.is_dir() and (child / "cgroup.controllers").exists():
                    offered = (child / "cgroup.controllers").read_text().split()
                    (child / "cgroup.controllers").write_text(" ".join([*offered, ctrl]))
        else:
            raise AssertionError(f"unexpected write to {path}")


@pytest.fixture
def v2_tree(tmp_path, monkeypatch):
    """A delegated v2 cgroup (the kernel's own: it holds the kernel and the Jupyter server) under a
    root; returns (the stand-in, the folder)."""
    kernel = StandInV2(tmp_path / "root")
    own = tmp_path / "root" / "app.slice" / "jupyter.service"
    for folder, offered in ((own.parent, "cpu memory pids"), (own, "cpu memory pids")):
        kernel.make(folder, offered)
    (own / "cgroup.procs").write_text("4100\n4101\n")
    monkeypatch.setattr(cgroups, "_kernel_write", kernel.write)
    return kernel, own


def test_v2_delegation_moves_our_processes_into_a_leaf_then_enables_the_controllers(v2_tree):
    kernel, own = v2_tree
    parent, why_not = cgroups.delegate_v2(own, ("cpu", "memory"))
    assert (parent, why_not) == (own, {})
    assert kernel.procs(own) == [] and kernel.procs(own / "leaf") == ["4100", "4101"]
    assert (own / "cgroup.subtree_control").read_text().split() == ["cpu", "memory"]
    # the first +cpu was refused (EBUSY: processes inside), then the moves, then the writes again
    assert kernel.writes[0] == ("app.slice/jupyter.service/cgroup.subtree_control", "+cpu")
    assert [text for _, text in kernel.writes[1:3]] == ["4100", "4101"]
    # a sibling the learner makes now would get cpu.max: the kernel gives it the controllers
    kernel.make(own / "cap-4100", (own / "cgroup.subtree_control").read_text())
    assert set((own / "cap-4100" / "cgroup.controllers").read_text().split()) == {"cpu", "memory"}


def test_v2_delegation_run_again_from_the_leaf_reuses_the_parent_and_moves_nothing(v2_tree):
    kernel, own = v2_tree
    cgroups.delegate_v2(own, ("cpu", "memory"))
    writes = len(kernel.writes)
    # the notebook's own cgroup is now the leaf: a re-run set-up cell starts from there
    assert cgroups.delegate_v2(own / "leaf", ("cpu", "memory")) == (own, {})
    assert len(kernel.writes) == writes and not (own / "leaf" / "leaf").exists()


def test_v2_delegation_says_in_one_line_what_the_cgroup_above_did_not_give(v2_tree):
    kernel, own = v2_tree
    (own / "cgroup.controllers").write_text("memory pids")
    parent, why_not = cgroups.delegate_v2(own, ("cpu", "memory"))
    assert parent == own and set(why_not) == {"cpu"}
    assert "is not given cpu" in why_not["cpu"] and "Delegate=yes" in why_not["cpu"] and "\n" not in why_not["cpu"]
    assert (own / "cgroup.subtree_control").read_text().split() == ["memory"]


def test_v2_delegation_skips_a_process_that_exited_meanwhile(v2_tree):
    kernel, own = v2_tree
    kernel.gone.add("4100")
    assert cgroups.delegate_v2(own, ("cpu",)) == (own, {})
    assert kernel.procs(own / "leaf") == ["4101"] and kernel.procs(own) == []


def test_v2_delegation_that_cannot_move_a_process_says_why_and_enables_nothing(v2_tree):
    kernel, own = v2_tree
    kernel.refuse_moves = True
    parent, why_not = cgroups.delegate_v2(own, ("cpu", "memory"))
    assert set(why_not) == {"cpu", "memory"}
    assert "cannot move pid 4100" in why_not["cpu"] and "Permission denied" in why_not["cpu"]
    assert "EBUSY" not in why_not["memory"] and "Device or resource busy" in why_not["memory"]
    assert (own / "cgroup.subtree_control").read_text() == "" and kernel.procs(own) == ["4100", "4101"]


def test_v2_delegation_gives_up_on_a_folder_that_keeps_filling(v2_tree):
    kernel, own = v2_tree
    kernel.forks_per_move = 1
    _, why_not = cgroups.delegate_v2(own, ("cpu",), max_rounds=3)
    assert "still holds processes after 3 rounds" in why_not["cpu"]


def test_the_root_cgroup_enables_controllers_without_moving_anyone(v2_tree):
    kernel, _ = v2_tree
    (kernel.root / "cgroup.procs").write_text("1\n77\n")  # the root is exempt from the constraint
    assert cgroups.delegate_v2(kernel.root, ("cpu", "memory")) == (kernel.root, {})
    assert kernel.procs(kernel.root) == ["1", "77"] and not (kernel.root / "leaf").exists()


def test_lesson_parents_on_pure_v2_delegates_and_proves_the_limit_file(v2_tree, monkeypatch):
    kernel, own = v2_tree
    monkeypatch.setattr(_cgroup, "layout", lambda proc=None: _cgroup.Layout("v2", str(own), {}))

    def probe(parent: str, needed: str, prefix: str = "p") -> tuple[bool, str]:  # mkdir: what the kernel makes
        ok = Path(parent) == own and needed.split(".")[0] in (own / "cgroup.subtree_control").read_text().split()
        return ok, f"children of {parent} get {'a' if ok else 'no'} writable {needed}"

    monkeypatch.setattr(_cgroup, "probe_child", probe)
    folders, why = cgroups.lesson_parents(("cpu", "memory"))
    assert folders == {"cpu": own, "memory": own} and why == {}
    assert kernel.procs(own / "leaf") == ["4100", "4101"]


def test_lesson_parents_where_nothing_is_writable_gives_one_line_per_controller(monkeypatch, tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    (folder / "cgroup.controllers").write_text("cpu memory\n")
    monkeypatch.setattr(_cgroup, "layout", lambda proc=None: _cgroup.Layout("v2", str(folder), {}))
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    folders, why = cgroups.lesson_parents(("cpu", "memory"))
    assert folders == {} and set(why) == {"cpu", "memory"}
    assert all("not writable by this user" in line and "\n" not in line for line in why.values())


def test_lesson_parents_here_gives_folders_whose_children_take_a_limit():
    """The real machine: each folder found takes a child with its limit file (v1 here), removed after."""
    folders, why = cgroups.lesson_parents(("cpu", "memory"))
    if not folders:
        pytest.skip(f"no writable cpu or memory cgroup here: {why}")
    for ctrl, parent in folders.items():
        child = parent / f"labkit-test-{os.getpid()}-{ctrl}"
        child.mkdir()
        try:
            limit = {"cpu": ("cpu.cfs_quota_us", "25000", "cpu.max", "25000 100000"),
                     "memory": ("memory.limit_in_bytes", str(300 * 2**20), "memory.max", str(300 * 2**20))}[ctrl]
            name, value = limit[:2] if (child / limit[0]).exists() else limit[2:]
            (child / name).write_text(value)
            assert (child / name).read_text().split()[0] == value.split()[0]
        finally:
            child.rmdir()
    assert set(folders) | set(why) == {"cpu", "memory"}


def test_04_exercise_1_without_a_cpu_cgroup_says_so_and_awards_nothing(monkeypatch, tmp_path, capsys):
    """Lesson 04's own cells where no cpu cgroup can be made: the set-up names why, and each check
    of exercise 1 raises NotCheckable with that reason (a check that cannot run never passes)."""
    import json

    from labkit.errors import NotCheckable

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", os.environ["PATH"])  # setup() edits PATH
    reason = "v2: /sys/fs/cgroup/x is not given cpu by the cgroup above it"
    monkeypatch.setattr(cgroups, "lesson_parents", lambda controllers: ({}, {c: reason for c in controllers}))
    notebook = Path(__file__).resolve().parent.parent / "solutions" / "04_limits.ipynb"
    cells = {cell["metadata"].get("nbgrader", {}).get("grade_id"): "".join(cell["source"])
             for cell in json.loads(notebook.read_text())["cells"]}
    scope: dict = {}
    for grade_id in ("setup", "check_tools", "ex1_answer"):
        exec(cells[grade_id], scope)
    assert f"cpu    none: {reason}" in capsys.readouterr().out
    for grade_id in ("ex1_capped", "ex1_workers", "ex1_keeps_training"):
        with pytest.raises(NotCheckable) as raised:
            exec(cells[grade_id], scope)
        assert str(raised.value) == f"not checkable here: this machine lets no one here make a cpu cgroup: {reason}"
        assert capsys.readouterr().out == ""
    assert scope["STARTED"] == []  # nothing was started for a check that cannot run


def test_04_ex1_workers_fails_a_job_whose_threads_escape_even_when_a_busy_machine_starved_it():
    """What the kernel holds (every thread's cgroup) decides, not the share alone: on a loaded
    machine (--jobs 16 on 2 cores) v1's tasks-file answer used under 30% and passed this check."""
    import json

    notebook = Path(__file__).resolve().parent.parent / "solutions" / "04_limits.ipynb"
    cells = {cell["metadata"].get("nbgrader", {}).get("grade_id"): "".join(cell["source"])
             for cell in json.loads(notebook.read_text())["cells"]}
    visible = cells["ex1_workers"].split("### BEGIN HIDDEN TESTS")[0]
    group = Path("/sys/fs/cgroup/cpu/lesson/cap-100")

    def proc(pid, outside=(), folder=group):
        return {"pid": pid, "share": 6.0, "quota": 25.0, "folder": folder, "threads_outside": list(outside)}

    def run(trainer, workers):
        seen = {"trainer": trainer, "workers": workers, "total": 18.0}
        scope = {"CGROUP_PARENT": {"cpu": group.parent}, "checks": None, "observe_cap": lambda answer: seen,
                 "cap_cpu": None, "is_capped": lambda p: p["quota"] is not None and p["quota"] <= 25,
                 "describe": lambda p: f"pid {p['pid']}"}
        exec(visible, scope)

    run(proc(100), [proc(101), proc(102)])  # all held in one group: passes
    with pytest.raises(AssertionError, match=r"threads \{100: \[103, 104\]\} .* outside the group"):
        run(proc(100, outside=[103, 104]), [proc(101), proc(102)])  # the tasks file moved one thread
    with pytest.raises(AssertionError, match="different groups"):
        run(proc(100), [proc(101, folder=group.parent / "cap-101"), proc(102)])
