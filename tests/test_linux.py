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


# -- waits (wait.py) --------------------------------------------------------------------------------

import time  # noqa: E402

from labkit._linux import wait  # noqa: E402


@pytest.fixture(params=["pidfd", "poll"])
def mechanism(request, monkeypatch):
    """Run a wait test twice: through pidfds, and with them forced off (the /proc polling fallback)."""
    if request.param == "pidfd" and not wait.USE_PIDFD:
        pytest.skip("no pidfd_open here (Linux < 5.3, or refused by a seccomp filter)")
    monkeypatch.setattr(wait, "USE_PIDFD", request.param == "pidfd")
    fd = wait.open_pidfd(os.getpid())
    assert (fd is not None) == (request.param == "pidfd")  # the mechanism under test is the one used
    if fd is not None:
        os.close(fd)
    return request.param


def test_wait_for_returns_the_true_value_at_once_and_the_false_one_after_the_timeout():
    calls = []
    assert wait.wait_for(lambda: calls.append(1) or "yes", timeout_s=5) == "yes" and len(calls) == 1
    started = time.monotonic()
    assert wait.wait_for(lambda: calls.append(1) and None, timeout_s=0.2) is None
    elapsed = time.monotonic() - started
    assert 0.2 <= elapsed < 1.0
    assert 4 < len(calls) < 40  # backed off: not a busy loop, not one sleep


def test_wait_for_sees_a_condition_soon_after_it_comes_true():
    ready_at = time.monotonic() + 0.1
    assert wait.wait_for(lambda: time.monotonic() >= ready_at, timeout_s=5, max_interval_s=0.01)
    assert time.monotonic() - ready_at < 0.1  # pauses capped at 10 ms (a loaded machine oversleeps)


def test_a_process_exit_is_seen_promptly_and_a_timeout_says_false(spawn, mechanism):
    import threading

    child = spawn.popen(["sleep", "30"])
    started = time.monotonic()
    assert wait.wait_exited(child.pid, timeout_s=0.1) is False
    assert time.monotonic() - started >= 0.1
    killed_at = []
    killer = threading.Timer(0.2, lambda: (killed_at.append(time.monotonic()), child.send_signal(signal.SIGKILL)))
    killer.start()
    try:
        assert wait.wait_exited(child.pid, timeout_s=10) is True
        seen_after = time.monotonic() - killed_at[0]
    finally:
        killer.join()
    # pidfd: woken by the exit itself (well under a millisecond idle); the fallback: its next
    # /proc read, 50 ms apart at most. Both bounds leave room for a loaded, shared machine.
    assert seen_after < (0.1 if mechanism == "pidfd" else 0.2)
    assert child.poll() == -signal.SIGKILL  # never reaped by the wait: its exit status is still ours


def test_a_zombie_counts_as_exited_and_stays_for_its_parent(spawn, mechanism):
    child = spawn.popen([sys.executable, "-c", "pass"])
    wait_for(lambda: tree.process_table().get(child.pid, (0, ""))[1] == "Z", what="a zombie")
    assert wait.wait_exited(child.pid, timeout_s=1) is True
    assert wait.exited(child.pid)
    assert tree.process_table()[child.pid][1] == "Z"  # still unreaped
    assert child.wait() == 0


def test_waiting_for_several_returns_those_still_running(spawn, mechanism):
    quick = [spawn.popen(["sleep", "0.05"]) for _ in range(3)]
    slow = spawn.popen(["sleep", "30"])
    started = time.monotonic()
    left = wait.wait_all_exited([p.pid for p in quick] + [slow.pid], timeout_s=0.5)
    assert left == {slow.pid} and time.monotonic() - started >= 0.5
    assert wait.wait_all_exited([p.pid for p in quick], timeout_s=0) == set()
    slow.kill()
    assert wait.wait_all_exited([slow.pid], timeout_s=5) == set()


def test_a_recycled_pid_counts_as_exited_when_the_start_time_differs(spawn, mechanism):
    child = spawn.popen(["sleep", "30"])
    ticks = int(tree.read_stat_fields(child.pid)[tree.STARTTIME])
    assert wait.wait_exited(child.pid, timeout_s=0.05, starttime_ticks=ticks) is False
    assert wait.wait_exited(child.pid, timeout_s=0.05, starttime_ticks=ticks - 1) is True  # not "ours"


def test_a_reaped_pid_is_exited_at_once(spawn, mechanism):
    child = spawn.popen(["true"])
    child.wait()
    started = time.monotonic()
    assert wait.wait_exited(child.pid, timeout_s=5) and time.monotonic() - started < 0.1


RESPAWNER = """
import os, sys, time
for _ in range(int(sys.argv[1])):   # a chain: each generation forks the next 50 ms after it starts
    time.sleep(0.05)
    if os.fork():
        break
time.sleep(300)
"""


def test_kill_until_empty_empties_a_tree_that_keeps_forking(spawn, mechanism):
    root = spawn.popen([sys.executable, "-c", RESPAWNER, "10"])

    def tree_pids():  # the root's group: its forks stay in it, re-parented or not
        return [pid for pid, fields in _group_table(root.pid).items()]

    wait_for(lambda: len(tree_pids()) >= 3, what="a few generations")  # and more on their way
    started = time.monotonic()
    assert wait.kill_until_empty(tree_pids, timeout_s=10) == []
    assert time.monotonic() - started < 5
    assert root.wait() == -signal.SIGKILL


def _group_table(pgid: int) -> dict[int, str]:
    """Live (non-zombie) members of process group ``pgid``."""
    found = {}
    for pid in tree.pids():
        try:
            fields = tree.read_stat_fields(pid)
        except OSError:
            continue
        if int(fields[tree.PGRP]) == pgid and fields[tree.STATE] not in tree.DEAD_STATES:
            found[pid] = fields[tree.STATE].decode()
    return found


def test_kill_until_empty_never_signals_init_itself_or_a_group(spawn, monkeypatch):
    sent = []
    monkeypatch.setattr(os, "kill", lambda pid, sig: sent.append(pid))
    monkeypatch.setattr(signal, "pidfd_send_signal", lambda fd, sig: sent.append(fd))
    me = os.getpid()
    started = time.monotonic()
    assert wait.kill_until_empty(lambda: [1, me, 0, -1], timeout_s=5) == [-1, 0, 1, me]
    assert sent == [] and time.monotonic() - started < 0.5  # nothing else left: no point waiting
    for pid in (1, me, 0, -5):
        with pytest.raises(ValueError):
            wait.send(pid, signal.SIGKILL)


def test_kill_until_empty_calls_the_hooks_each_round_and_reports_survivors(spawn):
    child = spawn.popen(["sleep", "30"])
    rounds = []
    left = wait.kill_until_empty(lambda: [child.pid], timeout_s=0.2, sig=0,  # signal 0: nobody dies
                                 before=lambda pids: rounds.append(("before", pids)),
                                 after=lambda pids: rounds.append(("after", pids)))
    assert left == [child.pid] and len(rounds) >= 4 and rounds[:2] == [("before", [child.pid]), ("after", [child.pid])]


def test_wait_until_empty_returns_when_the_last_member_exits(spawn, mechanism):
    children = [spawn.popen(["sleep", str(t)]) for t in (0.1, 0.2)]
    pids = [c.pid for c in children]
    started = time.monotonic()
    assert wait.wait_until_empty(lambda: [p for p in pids if not wait.exited(p)], timeout_s=5) == []
    assert 0.18 < time.monotonic() - started < 1.5
    assert wait.wait_until_empty(lambda: [os.getppid()], timeout_s=0.05) == [os.getppid()]


def test_the_sandbox_loads_the_waits_by_path():
    """wait.py must work where labkit is not importable (``python -I -S``), finding tree.py by path."""
    code = ("import importlib.util, os, sys; spec = importlib.util.spec_from_file_location('w', sys.argv[1]);"
            "w = importlib.util.module_from_spec(spec); spec.loader.exec_module(w);"
            "print(w.wait_exited(os.getpid(), 0.01), w.exited(os.getppid()), w.kill_until_empty(lambda: [], 1))")
    done = subprocess.run([sys.executable, "-I", "-S", "-c", code, wait.__file__],
                          capture_output=True, text=True, timeout=30, cwd="/")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "False", "[]"]


def test_the_async_wait_wakes_the_event_loop_when_the_process_exits(spawn, mechanism):
    import asyncio

    child = spawn.popen(["sleep", "30"])

    async def scenario():
        ticks = 0

        async def ticker():  # the loop stays free while the wait sleeps on the pidfd
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        other = asyncio.ensure_future(ticker())
        assert await wait.wait_exited_async(child.pid, 0.1) is False
        asyncio.get_running_loop().call_later(0.1, child.kill)
        started = time.monotonic()
        assert await wait.wait_exited_async(child.pid, 10) is True
        other.cancel()
        return ticks, time.monotonic() - started

    ticks, elapsed = asyncio.run(scenario())
    assert ticks >= 5 and 0.09 < elapsed < 1.0
    assert child.wait() == -signal.SIGKILL


def test_nr_open_is_the_kernels_ceiling_for_open_files():
    ceiling = proc.nr_open()
    assert ceiling >= 1024  # the kernel refuses a smaller fs.nr_open (BITS_PER_LONG minimum aside)
    import resource

    assert resource.getrlimit(resource.RLIMIT_NOFILE)[1] <= ceiling


def test_a_wait_lists_again_when_a_member_leaves_the_listing_alive(spawn, mechanism):
    """A process that leaves a group (setsid) stays alive: the wait must see the group empty anyway."""
    child = spawn.popen(["sleep", "30"])
    listed = [child.pid]
    threading_timer = __import__("threading").Timer(0.1, listed.clear)  # it "left the group", still running
    threading_timer.start()
    started = time.monotonic()
    try:
        assert wait.wait_until_empty(lambda: list(listed), timeout_s=10) == []
        assert time.monotonic() - started < 1.0  # re-listed within RELIST_S, not after the child's 30 s
    finally:
        threading_timer.cancel()


def test_after_runs_even_when_signalling_is_interrupted(spawn):
    """A freezer frozen in ``before`` must be thawed in ``after`` whatever happens in between."""
    child = spawn.popen(["sleep", "30"])
    rounds = []

    def refuse(pid: int, sig: int) -> bool:
        raise KeyboardInterrupt

    original = wait.send
    wait.send = refuse
    try:
        with pytest.raises(KeyboardInterrupt):
            wait.kill_until_empty(lambda: [child.pid], timeout_s=1, before=lambda p: rounds.append("before"),
                                  after=lambda p: rounds.append("after"))
    finally:
        wait.send = original
    assert rounds == ["before", "after"]
