"""The leak check itself: a test that leaves a process behind fails the run, naming it."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

LEAKY = '''
import subprocess, sys
def test_leaks():
    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)  # leaked-on-purpose"],
                     start_new_session=True)
'''

CLEAN = '''
import subprocess, sys
def test_cleans_up():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    proc.kill(); proc.wait()
'''

LEAKY_TMUX = '''
import os, subprocess
def test_leaks_a_session():
    subprocess.run(["tmux", "-L", os.environ["LABKIT_TMUX_SOCKET"], "new-session", "-d", "-s", "forgotten",
                    "sleep 60"], check=True)
'''


def run_inner(tmp_path: Path, source: str) -> subprocess.CompletedProcess:
    (tmp_path / "test_inner.py").write_text(source)
    own = ("LABKIT_TEST_TAG", "LABKIT_HOME", "LABKIT_TMUX_SOCKET")  # a tag, home and socket of its own
    env = {k: v for k, v in os.environ.items() if k not in own}
    env["PYTHONPATH"] = str(Path(__file__).parent)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "leakcheck", "-p", "no:cacheprovider", "-c", os.devnull,
         "--rootdir", str(tmp_path), str(tmp_path / "test_inner.py")],
        capture_output=True, text=True, env=env, timeout=60,
    )


def test_a_leaked_process_fails_the_run_and_is_killed(tmp_path):
    done = run_inner(tmp_path, LEAKY)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "LEAKED PROCESSES" in done.stderr and "leaked-on-purpose" in done.stderr
    survivors = subprocess.run(["pgrep", "-f", "leaked-on-purpose"], capture_output=True, text=True)
    assert survivors.stdout.strip() == ""


def test_a_clean_run_passes(tmp_path):
    done = run_inner(tmp_path, CLEAN)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "LEAKED" not in done.stderr


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_a_leaked_tmux_session_fails_the_run_and_is_ended(tmp_path):
    done = run_inner(tmp_path, LEAKY_TMUX)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "LEAKED TERMINAL SESSIONS" in done.stderr and "forgotten" in done.stderr
    socket = re.search(r"tmux -L (\S+): forgotten", done.stderr).group(1)
    listing = subprocess.run(["tmux", "-L", socket, "list-sessions"], capture_output=True, text=True)
    assert listing.returncode != 0, listing.stdout
