"""Refusal checks in a stand-in: the learner's function can signal nothing, and is judged on it."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import psutil
import pytest

from labkit.checks import CheckFailed
from labkit.course.standin import call_guarded, expect_refusal


def guarded(pid, grace_s=1.0):
    if pid <= 1 or pid == os.getpid():
        raise ValueError(f"refusing to stop pid {pid}")
    os.kill(pid, signal.SIGTERM)
    return "sent"


def unguarded(pid, grace_s=1.0):
    psutil.Process(pid).terminate()
    return "sent"


def through_kill_command(pid, grace_s=1.0):
    subprocess.run(["kill", "-TERM", str(pid)], capture_output=True)
    return "asked kill(1)"


def guard_after_signalling(pid, grace_s=1.0):
    os.kill(pid, signal.SIGTERM)
    raise ValueError("too late")


def test_a_guarded_function_refuses_pid_1_and_its_own_process():
    assert "refuses pid 1: ValueError" in expect_refusal(guarded, 1)
    assert "refuses this notebook's own process" in expect_refusal(guarded, "self")


@pytest.mark.parametrize("func", [unguarded, through_kill_command, guard_after_signalling])
@pytest.mark.parametrize("target", [1, "self"])
def test_a_function_that_signals_fails_and_nothing_is_delivered(func, target):
    me = psutil.Process()
    init = psutil.Process(1).create_time()
    with pytest.raises(CheckFailed):
        expect_refusal(func, target)
    assert psutil.Process(1).create_time() == init and me.is_running()


def test_the_attempt_is_recorded_and_the_kernel_refused_it():
    call = call_guarded(unguarded, "self")
    assert call.blocked and call.raised in ("AccessDenied", "PermissionError")
    assert [name for _, name in call.signals] == ["SIGTERM"]


def test_a_signal_to_a_process_of_the_checks_own_is_blocked_too(spawn):
    sleeper = spawn.popen(["sleep", "30"])
    call = call_guarded(guarded, sleeper.pid)
    assert call.raised == "PermissionError" and call.signals == ((sleeper.pid, "SIGTERM"),)
    assert sleeper.poll() is None


def test_a_function_that_hangs_is_cut_off():
    started = time.monotonic()
    with pytest.raises(CheckFailed, match="still running after 0.5 s"):
        call_guarded(lambda pid: time.sleep(30), 1, timeout_s=0.5)
    assert time.monotonic() - started < 5
