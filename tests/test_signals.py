"""Signal names, explanations, and the refusal to signal protected processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import psutil
import pytest

from labkit import signals
from labkit.errors import BadArgument, ProtectedProcess


@pytest.mark.parametrize("text", ["SIGTERM", "TERM", "term", "sigterm", "15", 15, signal.SIGTERM])
def test_parse_signal_accepts_every_usual_spelling(text):
    assert signals.parse_signal(text) is signal.SIGTERM


@pytest.mark.parametrize("text", ["SIGFOO", "", "0", "999", "-9"])
def test_unknown_signals_are_bad_arguments(text):
    with pytest.raises(BadArgument, match="unknown signal"):
        signals.parse_signal(text)


def test_exit_codes_are_explained_shell_style():
    assert signals.explain_exit_code(0) == "0: success"
    assert "killed by SIGKILL" in signals.explain_exit_code(137)
    assert "killed by SIGTERM" in signals.explain_exit_code(-15)
    assert "143" in signals.explain_exit_code(-15)
    assert "error of its own" in signals.explain_exit_code(1)
    assert "still running" in signals.explain_exit_code(None)


def test_describe_says_whether_a_signal_can_be_caught():
    assert "cannot be caught" in signals.describe("KILL")
    assert "checkpoints" in signals.describe("USR2")


@pytest.mark.parametrize("pid", [1, 0, -1])
def test_pid_1_and_group_pids_are_refused(pid):
    with pytest.raises(ProtectedProcess):
        signals.send_signal(pid, "SIGCONT")


def test_self_and_ancestors_are_refused():
    with pytest.raises(ProtectedProcess, match="this process"):
        signals.send_signal(os.getpid(), "SIGCONT")
    # SIGCONT: harmless should the protection ever regress (it must not take the test runner down)
    # A child asks to signal its parent (this test process, never PID 1): refused as an ancestor.
    code = ("from labkit import signals, errors\nimport os\n"
            "try:\n    signals.send_signal(os.getppid(), 'SIGCONT')\n"
            "except errors.ProtectedProcess as err:\n    print(err)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout
    assert f"refusing to signal pid {os.getpid()}" in out and "ancestor" in out
    with pytest.raises(ProtectedProcess, match="process group"):
        signals.send_group_signal(os.getpgrp(), "SIGCONT")


def test_a_child_can_be_signalled_and_a_dead_pid_is_reported(spawn):
    child = spawn.popen([sys.executable, "-c", "import time; time.sleep(60)"])
    assert signals.send_signal(child.pid, "TERM") is signal.SIGTERM
    assert child.wait(timeout=5) == -signal.SIGTERM
    unused = max(psutil.pids()) + 100_000  # beyond any live pid, so never someone else's
    with pytest.raises(psutil.NoSuchProcess):
        signals.send_signal(unused, "CONT")
    with pytest.raises(psutil.NoSuchProcess):
        signals.send_group_signal(unused, "CONT")


IGNORES_TERM = "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nprint('ready', flush=True)\ntime.sleep(60)"


def test_terminate_group_escalates_only_when_needed(spawn):
    polite = spawn.popen([sys.executable, "-c", "import time; time.sleep(60)"])
    started = psutil.Process(polite.pid).create_time()
    polite.send_signal(signal.SIGSTOP)  # stopped: only SIGCONT lets it act on SIGTERM
    escalated, seconds = signals.terminate_group(polite.pid, started, grace_s=5)
    assert (escalated, polite.wait(timeout=5)) == (False, -signal.SIGTERM) and seconds < 2

    stubborn = spawn.popen([sys.executable, "-c", IGNORES_TERM], stdout=subprocess.PIPE)
    assert stubborn.stdout.readline().strip() == b"ready"
    escalated, seconds = signals.terminate_group(stubborn.pid, psutil.Process(stubborn.pid).create_time(), 0.5)
    assert (escalated, stubborn.wait(timeout=5)) == (True, -signal.SIGKILL) and 0.5 <= seconds < 3
