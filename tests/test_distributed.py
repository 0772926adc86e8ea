"""Distributed runs: a launcher, ranks that all-reduce, agree to stop, survive nothing silently."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from conftest import wait_for, wait_for_step

ARGS = ("--epochs", "6", "--steps-per-epoch", "20", "--step-time", "0.02", "--checkpoint-every", "10")


def command(run_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "labkit.trainer", "--run-dir", str(run_dir), *ARGS, *extra]


def final_hash(run_dir: Path) -> str:
    return json.loads((run_dir / "final.json").read_text())["weights_sha256"]


def rank_pids(launcher: subprocess.Popen, world: int) -> list[int]:
    def ranks() -> dict[int, int]:  # a child still between fork and exec has no --rank yet
        found = {}
        for child in psutil.Process(launcher.pid).children():
            try:
                command = child.cmdline()
            except psutil.Error:  # exited meanwhile (a zombie has no command line): not a running rank
                continue
            if "--rank" in command:
                found[int(command[command.index("--rank") + 1])] = child.pid
        return found

    wait_for(lambda: len(ranks()) == world, 10, f"{world} ranks")
    found = ranks()
    return [found[r] for r in range(world)]


def rank_logs(run_dir: Path, world: int) -> list[str]:
    return [(run_dir / "train.log").read_text()] + [(run_dir / "ranks" / str(r) / "train.log").read_text()
                                                      for r in range(1, world)]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> str:
    """The weights of a 2-rank run never stopped."""
    run_dir = tmp_path_factory.mktemp("reference")
    done = subprocess.run(command(run_dir, "--ranks", "2"), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return final_hash(run_dir)


def test_the_result_does_not_depend_on_how_many_ranks_computed_it(reference, tmp_path):
    done = subprocess.run(command(tmp_path, "--ranks", "3"), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "every rank exited 0" in done.stderr
    assert final_hash(tmp_path) == reference


def test_sigterm_to_the_launcher_is_forwarded_ranks_agree_on_the_step_and_resume_is_exact(spawn, reference, tmp_path):
    launcher = spawn.popen(command(tmp_path, "--ranks", "2"), start_new_session=True)
    rank_pids(launcher, 2)
    wait_for_step(tmp_path, 25)
    launcher.send_signal(signal.SIGTERM)
    assert launcher.wait(timeout=20) == 0
    log = (tmp_path / "launcher.log").read_text()
    assert "forwarded SIGTERM to ranks [0, 1]" in log
    steps = [re.search(r"stopping on \S+ at step (\d+)", text).group(1) for text in rank_logs(tmp_path, 2)]
    assert len(set(steps)) == 1, f"the ranks stopped at different steps: {steps}"
    assert f"ckpt-{int(steps[0]):08d}.lkc saved (SIGTERM" in (tmp_path / "train.log").read_text()
    assert not (tmp_path / "ranks" / "1" / "checkpoints").exists()  # only rank 0 writes checkpoints
    resumed = subprocess.run(command(tmp_path, "--ranks", "2", "--resume"), capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0 and final_hash(tmp_path) == reference


def test_a_stop_signal_to_one_rank_stops_them_all_at_the_same_step(spawn, tmp_path):
    launcher = spawn.popen(command(tmp_path, "--ranks", "3"), start_new_session=True)
    pids = rank_pids(launcher, 3)
    wait_for_step(tmp_path, 15)
    psutil.Process(pids[2]).send_signal(signal.SIGINT)
    assert launcher.wait(timeout=20) == 0
    logs = rank_logs(tmp_path, 3)
    assert "stopping on SIGINT" in logs[2]
    assert "another rank was asked to stop" in logs[0] and "another rank was asked to stop" in logs[1]
    steps = {re.search(r"stopping on .* at step (\d+)", text).group(1) for text in logs}
    assert len(steps) == 1


def test_a_killed_rank_stops_the_job_naming_it_and_resume_is_still_exact(spawn, reference, tmp_path):
    launcher = spawn.popen(command(tmp_path, "--ranks", "2"), start_new_session=True)
    pids = rank_pids(launcher, 2)
    wait_for_step(tmp_path, 25)
    killed_at = time.monotonic()
    psutil.Process(pids[1]).kill()
    assert launcher.wait(timeout=20) == 1
    assert time.monotonic() - killed_at < 5, "the job must notice a dead rank within seconds"
    log = (tmp_path / "launcher.log").read_text()
    assert "rank 1" in log and "SIGKILL" in log and "job failed because of rank 1" in log
    assert "rank 1 disconnected" in (tmp_path / "train.log").read_text()
    resumed = subprocess.run(command(tmp_path, "--ranks", "2", "--resume"), capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0 and final_hash(tmp_path) == reference


def test_a_crash_in_rank_0_fails_the_job_naming_rank_0(tmp_path):
    done = subprocess.run(command(tmp_path, "--ranks", "2", "--fault", "crash", "--fault-step", "7"),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "job failed because of rank 0" in (tmp_path / "launcher.log").read_text()
    assert "rank 0 ended the job" in (tmp_path / "ranks" / "1" / "train.log").read_text() or \
        "rank 0 disconnected" in (tmp_path / "ranks" / "1" / "train.log").read_text()


def test_a_hung_rank_times_out_and_the_grace_period_ends_in_sigkill(tmp_path):
    started = time.monotonic()
    done = subprocess.run(command(tmp_path, "--ranks", "2", "--fault", "hang-io", "--fault-step", "5",
                                  "--rank-timeout", "1.5", "--grace-period", "1"),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and time.monotonic() - started < 20
    assert "did not answer within 1.5 s" in (tmp_path / "ranks" / "1" / "train.log").read_text()
    log = (tmp_path / "launcher.log").read_text()
    assert "job failed because of rank 1" in log and "ranks [0] ignored SIGTERM for 1 s (--grace-period): SIGKILL" in log


def test_rank_without_a_launcher_is_a_clear_error(tmp_path):
    done = subprocess.run(command(tmp_path, "--rank", "0"), capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "start a distributed run with --ranks N" in done.stderr
