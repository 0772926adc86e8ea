"""The diagnoser on real processes built to be in each state (Python and not), tools missing, pids gone."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from conftest import wait_for, wait_for_step
from labkit import diagnose as diag
from labkit.jobs import trainer_command

SAMPLE_S = 0.6


def settled(proc: subprocess.Popen, state: str = "sleeping", timeout_s: float = 10.0) -> int:
    wait_for(lambda: psutil.Process(proc.pid).status() == state, timeout_s, f"pid {proc.pid} to be {state}")
    time.sleep(0.1)
    return proc.pid


def check(pid: int, verdict: str, *words: str, tools: bool = False) -> diag.Diagnosis:
    result = diag.diagnose(pid, SAMPLE_S, use_tools=tools)
    assert result.verdict == verdict, result.report()
    text = " ".join(result.evidence)
    for word in words:
        assert word in text, f"{word!r} not in the evidence:\n{result.report()}"
    assert result.next_steps, "every verdict says what to do next"
    return result


@pytest.mark.parametrize("command", [[sys.executable, "-c", "while True: pass"], ["sh", "-c", "while :; do :; done"]],
                         ids=["python", "shell"])
def test_a_busy_loop_is_cpu_bound(spawn, command):
    proc = spawn.popen(command)
    time.sleep(0.3)
    result = check(proc.pid, "cpu-bound", "of a core")
    assert result.cpu_percent > 50 and result.state.startswith("R")


def test_a_read_from_a_pipe_nobody_writes_is_blocked_io_naming_the_other_end(spawn):
    read_end, write_end = os.pipe()
    proc = spawn.popen(["cat"], stdin=read_end, stdout=subprocess.DEVNULL)
    os.close(read_end)
    try:
        result = check(settled(proc), "blocked-io", "fd 0 is a pipe/FIFO", f"pid {os.getpid()}")
        assert result.syscall == "read(fd 0)" and "pipe" in result.wchan
    finally:
        os.close(write_end)


def test_opening_a_fifo_without_a_writer_is_blocked_io(spawn, tmp_path):
    fifo = tmp_path / "queue"
    os.mkfifo(fifo)
    proc = spawn.popen(["cat", str(fifo)], stdout=subprocess.DEVNULL)
    check(settled(proc), "blocked-io", "opening a FIFO")


def test_a_server_waiting_in_accept_is_blocked_io_on_a_socket(spawn):
    code = ("import socket\ns = socket.socket()\ns.bind(('127.0.0.1', 0))\ns.listen()\n"
            "print(s.getsockname()[1], flush=True)\ns.accept()")
    proc = spawn.popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    port = int(proc.stdout.readline())
    result = check(settled(proc), "blocked-io", "is a socket")
    assert any(str(port) in c and "LISTEN" in c for c in result.connections), result.connections


def test_two_threads_taking_two_locks_in_opposite_order_are_a_lock_wait_deadlock(spawn):
    code = ("import threading, time\na, b = threading.Lock(), threading.Lock()\n"
            "def one():\n    with a:\n        time.sleep(0.2)\n        with b: pass\n"
            "def two():\n    with b:\n        time.sleep(0.2)\n        with a: pass\n"
            "x = threading.Thread(target=one); y = threading.Thread(target=two); x.start(); y.start(); x.join()")
    proc = spawn.popen([sys.executable, "-c", code])
    time.sleep(0.6)
    result = check(settled(proc), "lock-wait", "futex", "deadlock", tools=True)
    assert len(result.threads) == 3
    if not result.tools.get("py-spy", "not run").startswith("not run"):
        assert "with b: pass" in result.tools["py-spy"] or "one" in result.tools["py-spy"]


def test_a_file_lock_held_by_another_process_is_a_lock_wait_outside_python(spawn, tmp_path):
    lock = tmp_path / "lock"
    holder = spawn.popen(["flock", str(lock), "sleep", "60"])
    wait_for(lambda: psutil.Process(holder.pid).children(), 5, "flock to run its command")
    waiter = spawn.popen(["flock", str(lock), "true"])
    check(settled(waiter), "lock-wait", "file lock")


@pytest.mark.parametrize("command, call", [(["sleep", "60"], "nanosleep"),
                                           ([sys.executable, "-c", "import selectors; selectors.DefaultSelector()"
                                             ".select()"], "epoll")], ids=["sleep", "event-loop"])
def test_sleeping_on_purpose_is_idle_sleep(spawn, command, call):
    proc = spawn.popen(command)
    result = check(settled(proc), "idle-sleep", call)
    assert result.cpu_percent < 5


def test_a_stopped_process_is_stopped_and_told_to_continue(spawn):
    proc = spawn.popen(["sleep", "60"])
    proc.send_signal(signal.SIGSTOP)
    result = check(settled(proc, "stopped"), "stopped", "state T")
    assert any(f"kill -CONT {proc.pid}" in step for step in result.next_steps)


def test_a_zombie_names_its_parent_and_the_parent_names_its_zombie(spawn):
    parent = spawn.popen([sys.executable, "-c", "import os, time\npid = os.fork()\n"
                          "if pid == 0: os._exit(3)\nprint(pid, flush=True)\ntime.sleep(60)"], stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    wait_for(lambda: psutil.Process(child).status() == psutil.STATUS_ZOMBIE, 5, "the child to be a zombie")
    result = check(child, "zombie", f"parent pid {parent.pid}")
    assert any("cannot be killed" in step for step in result.next_steps)
    check(parent.pid, "idle-sleep", f"[{child}] are zombies")


def test_a_pid_that_does_not_exist_or_exits_is_gone_without_a_traceback():
    proc = subprocess.Popen(["true"])
    proc.wait()
    result = diag.diagnose(proc.pid, SAMPLE_S)
    assert result.verdict == "gone" and "does not exist" in result.evidence[0]
    short = subprocess.Popen(["sleep", "0.2"])
    try:  # it exits while watched; until we reap it, it is our zombie
        exited = diag.diagnose(short.pid, 1.0, use_tools=False)
        assert exited.verdict == "zombie" and f"parent pid {os.getpid()}" in exited.evidence[0]
    finally:
        short.wait()


def test_a_trainer_that_trains_is_progressing_and_a_hung_one_says_why(spawn, tmp_path):
    ok = spawn.popen(trainer_command(tmp_path / "ok", "--epochs", "100"), stderr=subprocess.DEVNULL)
    stuck = spawn.popen(trainer_command(tmp_path / "stuck", "--epochs", "100", "--fault", "hang-io", "--fault-step", "3"),
                        stderr=subprocess.DEVNULL)
    wait_for_step(tmp_path / "ok", 5)
    wait_for_step(tmp_path / "stuck", 3)
    time.sleep(0.3)
    progressing = diag.diagnose(ok.pid, 1.0, use_tools=False)
    assert progressing.verdict == "progressing" and "steps" in progressing.evidence[0]
    hung = check(stuck.pid, "hung", "no new step", "pipe")
    assert hung.cause == "blocked-io" and any("--resume" in s for s in hung.next_steps)


def test_missing_tools_are_reported_and_the_verdict_still_stands(spawn, monkeypatch):
    monkeypatch.setattr("labkit.doctor.find_tool", lambda name: None)
    proc = spawn.popen(["sleep", "60"])
    result = check(settled(proc), "idle-sleep", tools=True)
    assert result.tools["strace"] == "not run: strace is not installed"
    assert set(result.tools) >= {"strace", "lsof", "gdb"}


def test_the_tools_add_their_view_where_they_exist(spawn):
    proc = spawn.popen(["sleep", "60"])
    result = diag.diagnose(settled(proc), SAMPLE_S)
    for tool in ("strace", "lsof"):
        if not result.tools[tool].startswith("not run"):
            assert str(proc.pid) in result.tools[tool] or "sleep" in result.tools[tool], result.tools[tool]
    assert "verdict" in result.as_dict() and "IDLE-SLEEP" in result.report()


def test_the_command_prints_json_and_exits_1_for_a_gone_pid(spawn):
    proc = spawn.popen(["sleep", "60"])
    settled(proc)
    done = subprocess.run([sys.executable, "-m", "labkit", "diagnose", str(proc.pid), "--sample", "0.5", "--json",
                           "--no-tools"], capture_output=True, text=True, timeout=60)
    data = json.loads(done.stdout)
    assert done.returncode == 0 and data["verdict"] == "idle-sleep"
    assert {"pid", "verdict", "state", "wchan", "syscall", "cpu_percent", "evidence", "next_steps"} <= set(data)
    gone = subprocess.run([sys.executable, "-m", "labkit", "diagnose", "999999999"], capture_output=True, text=True)
    assert gone.returncode == 1 and "GONE" in gone.stdout
    bad = subprocess.run([sys.executable, "-m", "labkit", "diagnose", "1", "--sample", "0"], capture_output=True,
                         text=True)
    assert bad.returncode == 2 and len(bad.stderr.splitlines()) == 1
