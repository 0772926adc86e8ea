"""Checks on live state: what they confirm, and the feedback they give when they fail."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import FAST, run_trainer
from labkit import checks

SLEEPER = [sys.executable, "-c", "import time; time.sleep(60)"]
HANDLER = [sys.executable, "-c", "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
           "signal.signal(signal.SIGUSR1, lambda *a: None)\nprint('ready', flush=True)\ntime.sleep(60)"]


def test_exited_reads_shell_style_codes_and_explains_mismatches(spawn):
    proc = spawn.popen(SLEEPER)
    assert checks.expect_alive(proc).startswith(f"pid {proc.pid} is alive")
    proc.send_signal(signal.SIGTERM)
    assert "143 = 128 + 15" in checks.expect_exited(proc, sig="SIGTERM")
    with pytest.raises(checks.CheckFailed) as failed:
        checks.expect_exited(proc, code=0)
    assert "killed by SIGTERM" in failed.value.seen and "128" in failed.value.hint
    with pytest.raises(AssertionError):  # nbgrader test cells fail on it
        checks.expect_alive(proc)


def test_gone_fails_with_the_state_seen(spawn):
    proc = spawn.popen(SLEEPER)
    with pytest.raises(checks.CheckFailed, match="still there after 0.2 s"):
        checks.expect_gone(proc, timeout_s=0.2)


def test_dispositions_come_from_proc_status(spawn):
    proc = spawn.popen(HANDLER, stdout=subprocess.PIPE)
    assert proc.stdout.readline().strip() == b"ready"
    assert checks.signal_disposition(proc.pid, "TERM") == "ignored"
    assert checks.signal_disposition(proc.pid, "USR1") == "caught"
    assert checks.signal_disposition(proc.pid, "HUP") == "default"
    assert "SIGTERM is ignored" in checks.expect_disposition(proc, "SIGTERM", "ignored")
    with pytest.raises(checks.CheckFailed, match="treats SIGUSR1 as 'caught'"):
        checks.expect_disposition(proc, "SIGUSR1", "ignored")


def test_stopped_state_is_seen(spawn):
    proc = spawn.popen(SLEEPER)
    proc.send_signal(signal.SIGSTOP)
    time.sleep(0.2)
    assert checks.expect_state(proc, "stopped") == f"pid {proc.pid} is stopped"
    proc.send_signal(signal.SIGCONT)


def test_run_files_checks(tmp_path):
    since = time.time()
    assert run_trainer(tmp_path, *FAST).returncode == 0
    assert "completed at step 30" in checks.expect_completed(tmp_path)
    assert checks.last_logged_step(tmp_path) == 30
    assert checks.newest_checkpoint_step(tmp_path) == 30
    assert checks.steps_lost(tmp_path) == 0
    assert "step 30" in checks.expect_checkpoint_after(tmp_path, since)
    with pytest.raises(checks.CheckFailed, match="no checkpoint"):
        checks.expect_checkpoint_after(tmp_path, time.time() + 60)
    with pytest.raises(checks.CheckFailed, match="stopped cleanly on SIGTERM"):
        checks.expect_clean_stop(tmp_path)
    with pytest.raises(checks.CheckFailed, match="final.json does not exist"):
        checks.expect_completed(tmp_path / "nothing")


def _cells_of_00(*grade_ids: str) -> list[str]:
    import json
    from pathlib import Path

    notebook = Path(__file__).resolve().parent.parent / "solutions" / "00_welcome.ipynb"
    cells = {cell["metadata"].get("nbgrader", {}).get("grade_id"): "".join(cell["source"])
             for cell in json.loads(notebook.read_text())["cells"]}
    return [cells[grade_id] for grade_id in grade_ids]


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT", "SIGKILL"])
def test_the_welcome_stop_checks_pass_every_stop_the_exercise_allows_and_fail_sigkill(sig, tmp_path, monkeypatch):
    """00 exercise 2 as a learner in JupyterLab does it: the kernel ignores SIGINT (ipykernel), and the
    Popen'd trainer inherits that; the trainer still stops cleanly on it. The exercise's own cells run here."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", os.environ["PATH"])  # setup() edits PATH: monkeypatch restores it
    setup, answer, exits_0, clean_stop, cleanup = _cells_of_00("setup", "ex2_answer", "ex2_exits_0",
                                                               "ex2_clean_stop", "cleanup")
    answer = answer.replace("signal.SIGTERM)", f"signal.{sig})")
    scope: dict = {}
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        exec(setup, scope)
        exec(answer, scope)
        if sig == "SIGKILL":
            for check in (exits_0, clean_stop):
                with pytest.raises(AssertionError):
                    exec(check, scope)
        else:
            exec(exits_0, scope)
            exec(clean_stop, scope)
            assert f"stopped cleanly on {sig}" in checks.expect_clean_stop(scope["RUNS"] / "ex2", sig=None)
    finally:
        signal.signal(signal.SIGINT, previous)
        exec(cleanup, scope)
