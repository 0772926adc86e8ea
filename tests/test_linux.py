"""The kernel layer, labkit/_linux: readers against a recorded /proc tree and against live processes."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import wait_for

from labkit import _linux
from labkit._linux import proc, tree

RECORDED = Path(__file__).parent / "fixtures" / "proc"
ODD = 3768  # comm "a) b (c"
NESTED = 3779  # NSpid 3779 3 1
HIDDEN_WCHAN = 4242  # wchan "0"


@pytest.fixture
def recorded(monkeypatch):
    """Point every reader of the kernel layer at the recorded tree."""
    monkeypatch.setattr(tree, "PROC", str(RECORDED))
    monkeypatch.setattr(proc, "PROC", str(RECORDED))
    return RECORDED


# -- recorded ---------------------------------------------------------------------------------------

def test_a_comm_with_spaces_and_parentheses_is_read_whole(recorded):
    stat = _linux.read_stat(ODD)
    assert (stat.pid, stat.comm, stat.state, stat.ppid, stat.pgrp, stat.session) == (ODD, "a) b (c", "S", 1, 3763, 31832)
    assert (stat.tty_nr, stat.tpgid, stat.starttime_ticks) == (0, -1, 1657014)
    assert not stat.in_background  # no terminal at all


def test_the_raw_fields_agree_with_the_parsed_stat(recorded):
    fields = tree.stat_fields(tree.read_stat_bytes(ODD))
    assert tree.read_stat_fields(ODD) == fields
    stat = _linux.read_stat(ODD)
    assert fields[tree.STATE] == b"S" and int(fields[tree.PPID]) == stat.ppid and int(fields[tree.PGRP]) == stat.pgrp
    assert int(fields[tree.STARTTIME]) == stat.starttime_ticks
    assert int(fields[tree.NUM_THREADS]) == 1 and int(fields[tree.FLAGS]) & tree.PF_EXITING == 0


def test_a_thread_is_read_from_task(recorded):
    assert proc.tids(ODD) == [ODD]
    assert _linux.read_stat(ODD, ODD).comm == "a) b (c"
    assert _linux.wchan(ODD, ODD) == "hrtimer_nanosleep"


def test_status_fields_and_signal_masks(recorded):
    status = _linux.read_status(ODD)
    assert status["Name"] == "a) b (c"
    assert int(status["SigIgn"], 16) == (1 << (signal.SIGINT - 1)) | (1 << (signal.SIGQUIT - 1))  # a shell's & job
    assert status["CapBnd"] == "000001fffeffffff"


def test_nspid_of_a_nested_namespace_lists_each_level_outermost_first(recorded):
    assert _linux.nspid(NESTED) == [NESTED, 3, 1]
    assert _linux.nspid(ODD) == [ODD]
    assert _linux.nspid(99999) == [99999]  # gone (or a kernel without NSpid): itself


def test_syscall_and_wchan_of_a_sleeper(recorded):
    calls = _linux.syscall(ODD)
    assert calls[0] == "230" and len(calls) == 9  # clock_nanosleep, 6 arguments, sp, pc
    assert _linux.wchan(ODD) == "hrtimer_nanosleep"


def test_a_zero_wchan_is_running_unless_the_kernel_hides_it(recorded, monkeypatch):
    assert _linux.wchan(HIDDEN_WCHAN) == ""  # its exe link reads (here: is absent): "0" means running
    monkeypatch.setattr(proc, "_may_read", lambda pid: False)  # what EACCES on /proc/PID/exe gives
    assert _linux.wchan(HIDDEN_WCHAN) == _linux.HIDDEN


def test_a_syscall_file_we_may_not_read_is_hidden_not_empty(recorded, monkeypatch):
    real_open = open

    def denied(path, *args, **kwargs):
        if str(path).endswith("/syscall"):
            raise PermissionError(1, "Operation not permitted", path)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr("builtins.open", denied)
    assert _linux.syscall(ODD) == _linux.HIDDEN
    monkeypatch.undo()
    assert _linux.syscall(99999) == []  # gone


def test_fd_links(recorded):
    assert proc.fd_target(ODD, 0) == "/dev/null"
    assert proc.fd_targets(ODD) == {0: "/dev/null", 3: "pipe:[2620173]", 4: "/dev/pts/0"}
    with pytest.raises(OSError):
        proc.fd_target(ODD, 7)


def test_io_statm_environ_cmdline(recorded):
    fds = [proc.open_file(ODD, name) for name in ("stat", "statm", "io", "environ")]
    try:
        fields, resident, io_bytes = proc.pread_usage(fds[0], fds[1], fds[2])
        assert (fields[tree.STATE], int(fields[tree.NUM_THREADS]), resident, io_bytes) == (b"S", 1, 461, (0, 0))
        assert proc.pread_usage(fds[0], fds[1], fds[3])[2] is None  # io text without the counters: not ours
    finally:
        for fd in fds:
            os.close(fd)
    assert b"PATH=/usr/bin:/bin" in proc.environ(ODD).split(b"\0")
    assert not proc.cmdline_empty(ODD)
    assert proc.comm(ODD) == "a) b (c"


def test_the_process_table_and_its_tree(recorded):
    assert sorted(tree.pids()) == [ODD, NESTED, HIDDEN_WCHAN]
    table = tree.process_table()
    assert table[ODD] == (1, "S") and table[NESTED][1] == "S"
    assert sorted(tree.children_of(table)[1]) == [ODD, HIDDEN_WCHAN]
    assert tree.path(ODD, "fd", 3) == f"{recorded}/{ODD}/fd/3"


# -- live -------------------------------------------------------------------------------------------

@pytest.fixture
def odd_sleeper(spawn, tmp_path):
    """A sleeping child whose comm holds spaces and parentheses, its stdin a pipe we hold."""
    program = tmp_path / "x) y (z"
    shutil.copy(shutil.which("sleep") or "/bin/sleep", program)
    read_end, write_end = os.pipe()
    child = spawn.popen([str(program), "300"], stdin=read_end)
    os.close(read_end)
    wait_for(lambda: _linux.read_stat(child.pid).state == "S" and proc.comm(child.pid) == "x) y (z", what="asleep")
    yield child
    os.close(write_end)


def test_live_stat_status_and_tree(odd_sleeper):
    pid = odd_sleeper.pid
    stat = _linux.read_stat(pid)
    assert (stat.comm, stat.ppid, stat.pgrp, stat.session) == ("x) y (z", os.getpid(), pid, pid)
    assert tree.stat_fields(tree.read_stat_bytes(pid))[tree.PPID] == str(os.getpid()).encode()
    assert _linux.read_status(pid)["Name"] == "x) y (z"
    assert _linux.nspid(pid)[0] == pid
    table = tree.process_table()
    assert table[pid] == (os.getpid(), "S") and pid in tree.children_of(table)[os.getpid()]
    assert pid in tree.pids() and str(pid) in tree.pid_names() and proc.exists(pid)
    assert proc.tids(pid) == [pid]
    assert proc.exe_name(pid) == "x) y (z"


def test_live_sleeper_shows_where_it_sleeps(odd_sleeper):
    calls = _linux.syscall(odd_sleeper.pid)
    assert calls != _linux.HIDDEN and calls and calls[0] != "running"
    assert _linux.wchan(odd_sleeper.pid) not in ("", _linux.HIDDEN)


def test_live_fds_environ_and_cmdline(odd_sleeper):
    pid = odd_sleeper.pid
    assert proc.fd_target(pid, 0).startswith("pipe:[")
    assert proc.fd_targets(pid)[0] == proc.fd_target(pid, 0)
    assert f"LABKIT_TEST_TAG={os.environ['LABKIT_TEST_TAG']}".encode() in proc.environ(pid).split(b"\0")
    assert not proc.cmdline_empty(pid)


def test_an_open_file_stays_bound_to_its_process(odd_sleeper):
    pid = odd_sleeper.pid
    fds = [proc.open_file(pid, name) for name in ("stat", "statm", "io")]
    try:
        assert tree.stat_fields(proc.pread_all(fds[0]))[tree.STATE] == b"S"
        assert proc.pread_all(fds[0], chunk=16) == proc.pread_all(fds[0])  # several reads give the same text
        assert proc.pread_usage(*fds)[0][tree.STATE] == b"S"
        odd_sleeper.kill()
        odd_sleeper.wait()
        with pytest.raises(OSError):
            proc.pread_all(fds[0])  # ESRCH: never a recycled pid's
        with pytest.raises(OSError):
            proc.pread_usage(*fds)
    finally:
        for fd in fds:
            os.close(fd)
    assert not proc.exists(pid)
    with pytest.raises(OSError):
        tree.read_stat_bytes(pid)
    assert _linux.read_status(pid) == {} and _linux.syscall(pid) == [] and _linux.wchan(pid) == ""


def test_a_zombie_is_read_as_one(spawn):
    child = spawn.popen([sys.executable, "-c", "pass"])
    wait_for(lambda: tree.process_table().get(child.pid, (0, ""))[1] == "Z", what="a zombie")
    assert tree.stat_fields(tree.read_stat_bytes(child.pid))[tree.STATE] in tree.DEAD_STATES
    try:
        assert proc.environ(child.pid) == b""  # no memory left to read it from
    except ProcessLookupError:
        pass  # or refused outright (ESRCH), as Linux 6.x does
    child.wait()


def test_this_process_io_statm_and_threads():
    me = os.getpid()
    fds = [proc.open_file(me, name) for name in ("stat", "statm", "io")]
    try:
        fields, resident, io_bytes = proc.pread_usage(*fds)
        assert fields[tree.STATE] == b"R" and int(fields[tree.NUM_THREADS]) >= 1 and resident > 0
        assert io_bytes is not None and min(io_bytes) >= 0
    finally:
        for fd in fds:
            os.close(fd)
    assert me in proc.tids(me)
    assert tree.tasks_of_user(os.getuid()) >= len(proc.tids(me))


def test_machine_wide_files():
    assert any(point == "/proc" and kind == "proc" for point, kind, _ in proc.mount_table())
    assert len(proc.boot_id()) == 36
    assert proc.comm(os.getpid())
    assert proc.children_file_exists() == os.path.exists(f"/proc/{os.getpid()}/task/{os.getpid()}/children")
    read_end, write_end = os.pipe()
    try:
        assert os.readlink(tree.self_fd_path(read_end)).startswith("pipe:[")
    finally:
        os.close(read_end)
        os.close(write_end)


def test_the_grader_sandbox_loads_the_process_table_by_path():
    """_sandbox.py runs as ``python -I -S`` (labkit not importable) and loads tree.py by its path."""
    import labkit.course._isolation as isolation

    code = ("import runpy, os, sys; ns = runpy.run_path(sys.argv[1]); t = ns['_tree'];"
            "print(os.getppid() in t.process_table(), ns['descendants'](os.getpid()))")
    done = subprocess.run([sys.executable, "-I", "-S", "-c", code, str(isolation.SANDBOX)],
                          capture_output=True, text=True, timeout=30, cwd="/")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "[]"]


def test_io_counters_are_found_by_name_when_the_order_differs(tmp_path):
    files = {"stat": (RECORDED / str(ODD) / "stat").read_bytes(), "statm": b"730 461 433 5 0 89 0\n",
             "io": b"read_bytes: 7\nwrite_bytes: 9\nrchar: 1\nwchar: 2\nsyscr: 3\nsyscw: 4\ncancelled_write_bytes: 0\n"}
    fds = []
    for name, text in files.items():
        (tmp_path / name).write_bytes(text)
        fds.append(os.open(tmp_path / name, os.O_RDONLY))
    try:
        assert proc.pread_usage(*fds)[1:] == (461, (7, 9))
    finally:
        for fd in fds:
            os.close(fd)
