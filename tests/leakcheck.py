"""A pytest plugin that fails the run if any process started by the tests outlives them.

Every process the suite starts (directly, through a job's waiter, or from a notebook's
kernel under nbval) inherits ``LABKIT_TEST_TAG`` from the environment set here. When the
session ends, any process still carrying the tag is killed and the run fails, naming it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psutil
import pytest

TAG = "LABKIT_TEST_TAG"
_CREATED_HOME = [""]  #: the LABKIT_HOME this run made, removed at its end


def _default_stop_signals() -> None:
    """Undo SIG_IGN inherited for SIGINT, SIGQUIT and SIGHUP.

    A run started in the background of a non-interactive shell (``cmd &``) ignores SIGINT and
    SIGQUIT, and one under ``nohup`` ignores SIGHUP; every process the tests start would inherit
    that through exec, and the tests that send those signals (Ctrl-C to a group, a hang-up, the
    dispositions read from /proc) would measure the launcher, not labkit.
    """
    import signal

    for sig, handler in ((signal.SIGINT, signal.default_int_handler), (signal.SIGQUIT, signal.SIG_DFL),
                         (signal.SIGHUP, signal.SIG_DFL)):
        if signal.getsignal(sig) == signal.SIG_IGN:
            signal.signal(sig, handler)


def pytest_configure(config) -> None:
    _default_stop_signals()
    os.environ.setdefault(TAG, uuid.uuid4().hex)
    if "LABKIT_HOME" not in os.environ:  # never touch the user's own jobs
        import tempfile

        # Not under /tmp: the lessons' runs live in LABKIT_HOME, and a service with PrivateTmp=yes
        # (03 exercise 4 on the real user manager) cannot see /tmp, so the checks would fall back
        # to labkit's runner. Removed when the run ends (pytest_unconfigure).
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "labkit-tests"
        try:
            base.mkdir(parents=True, exist_ok=True)
        except OSError:
            base = Path(tempfile.gettempdir())
        home = tempfile.mkdtemp(prefix="labkit-test-home-", dir=base)
        os.environ["LABKIT_HOME"] = _CREATED_HOME[0] = home
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    # jobs in tmux mode use a socket of this run's own, never a learner's `tmux -L labkit`
    os.environ.setdefault("LABKIT_TMUX_SOCKET", f"labkit-test-{os.environ[TAG][:12]}")


def tagged_processes() -> list[psutil.Process]:
    """Live processes other than this one that carry this session's tag."""
    tag, me, found = os.environ[TAG], os.getpid(), []
    for proc in psutil.process_iter(["pid"]):
        if proc.pid == me:
            continue
        try:
            seen = proc.environ().get(TAG, "")
            # tag-corpus: the wrong-answer corpus's background grader (tests/test_wrong_answers.py)
            if (seen == tag or seen.startswith(tag + "-")) and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except psutil.Error:
            continue
    return found


def leftover_terminal_sessions() -> list[str]:
    """tmux sessions on this run's socket and screen sessions in its LABKIT_HOME, ended now."""
    found = []
    socket = os.environ["LABKIT_TMUX_SOCKET"]
    if shutil.which("tmux"):
        listing = subprocess.run(["tmux", "-L", socket, "list-sessions", "-F", "#{session_name}"],
                                 capture_output=True, text=True, timeout=10)
        if listing.returncode == 0 and listing.stdout.strip():
            found += [f"tmux -L {socket}: {name}" for name in listing.stdout.split()]
            subprocess.run(["tmux", "-L", socket, "kill-server"], capture_output=True, timeout=10)
    screen_dir = Path(os.environ["LABKIT_HOME"]) / "screen"
    if shutil.which("screen") and screen_dir.is_dir():
        env = {**os.environ, "SCREENDIR": str(screen_dir)}
        listing = subprocess.run(["screen", "-ls"], capture_output=True, text=True, env=env, timeout=10)
        for name in re.findall(r"^\s+\d+\.(\S+)", listing.stdout, re.MULTILINE):
            found.append(f"screen in {screen_dir}: {name}")
            subprocess.run(["screen", "-S", name, "-X", "quit"], capture_output=True, env=env, timeout=10)
    return found


def pytest_sessionfinish(session, exitstatus) -> None:
    deadline = time.monotonic() + 3.0  # let waiters write exit.json and exit on their own
    leaked = tagged_processes()
    while leaked and time.monotonic() < deadline:
        time.sleep(0.1)
        leaked = tagged_processes()
    sessions = leftover_terminal_sessions()
    if sessions:
        print("\nLEAKED TERMINAL SESSIONS (ended now):\n  " + "\n  ".join(sessions), file=sys.stderr)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    if not leaked:
        return
    names = []
    for proc in leaked:
        try:
            names.append(f"pid {proc.pid}: {' '.join(proc.cmdline())[:120]}")
            proc.kill()
        except psutil.Error:
            pass
    print("\nLEAKED PROCESSES (killed now):\n  " + "\n  ".join(names), file=sys.stderr)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_unconfigure(config) -> None:
    if _CREATED_HOME[0]:
        shutil.rmtree(_CREATED_HOME[0], ignore_errors=True)
