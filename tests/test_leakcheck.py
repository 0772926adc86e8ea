"""The leak check itself: a test that leaves a process behind fails the run, naming it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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


def run_inner(tmp_path: Path, source: str) -> subprocess.CompletedProcess:
    (tmp_path / "test_inner.py").write_text(source)
    env = {k: v for k, v in os.environ.items() if k != "LABKIT_TEST_TAG"}  # a tag of its own
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
