"""The trainer as a process: it learns, stops cleanly on signals, and resumes exactly."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time

import psutil
import pytest

from conftest import FAST, final_hash, log_text, metrics, run_trainer, wait_for, wait_for_step
from labkit import checkpoint

SLOW = ("--epochs", "2", "--steps-per-epoch", "15", "--step-time", "0.02", "--checkpoint-every", "5")


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The hash of an uninterrupted run with FAST settings."""
    run_dir = tmp_path_factory.mktemp("reference")
    done = run_trainer(run_dir, *FAST)
    assert done.returncode == 0, done.stderr
    return final_hash(run_dir)


def test_a_run_completes_and_the_loss_falls(tmp_path):
    done = run_trainer(tmp_path, "--epochs", "3", "--steps-per-epoch", "20", "--step-time", "0")
    assert done.returncode == 0, done.stderr
    final = json.loads((tmp_path / "final.json").read_text())
    assert final["status"] == "completed" and final["global_step"] == 60 and final["epoch"] == 3
    assert len(final["weights_sha256"]) == 64
    losses = [row["loss"] for row in metrics(tmp_path)]
    assert len(losses) == 60
    assert sum(losses[-10:]) / 10 < 0.6 * sum(losses[:10]) / 10
    assert (tmp_path / "heartbeat").exists()
    assert "completed" in log_text(tmp_path)


def test_same_seed_same_weights_other_seed_other_weights(tmp_path, reference):
    assert run_trainer(tmp_path / "a", *FAST).returncode == 0
    assert final_hash(tmp_path / "a") == reference
    assert run_trainer(tmp_path / "b", *FAST, "--seed", "1").returncode == 0
    assert final_hash(tmp_path / "b") != reference


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_stop_signal_checkpoints_exits_0_and_resume_is_exact(tmp_path, spawn, reference, sig):
    proc = spawn.trainer(tmp_path, *SLOW)
    wait_for_step(tmp_path, 7)
    proc.send_signal(sig)
    assert proc.wait(timeout=10) == 0
    log = log_text(tmp_path)
    stopped_at = int(log.split(f"stopping on {sig.name} at step ")[1].split()[0])
    assert checkpoint.load_latest(tmp_path / "checkpoints").checkpoint.step == stopped_at
    assert not (tmp_path / "final.json").exists()
    done = run_trainer(tmp_path, *FAST, "--resume")
    assert done.returncode == 0, done.stderr
    assert final_hash(tmp_path) == reference
    assert [row["step"] for row in metrics(tmp_path)] == list(range(1, 31))


def test_resume_after_repeated_sigkill_is_bitwise_exact(tmp_path, spawn, reference):
    rng = random.Random(3)
    for _ in range(4):
        saved = log_text(tmp_path).count(" saved (")
        proc = spawn.trainer(tmp_path, *SLOW, "--resume")
        # a kill at a random moment after the run's next checkpoint, however slow the machine (a
        # fixed 0.3-0.6 s came before any checkpoint at load 6.8 in CI)
        wait_for(lambda: log_text(tmp_path).count(" saved (") > saved, 60, "the run's next checkpoint")
        time.sleep(rng.uniform(0, 0.1))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert log_text(tmp_path).count("resume: from") >= 3, "every run after the first resumes from a checkpoint"
    done = run_trainer(tmp_path, *FAST, "--resume")
    assert done.returncode == 0, done.stderr
    assert final_hash(tmp_path) == reference


def test_workers_give_the_same_weights_as_no_workers(tmp_path, reference):
    done = run_trainer(tmp_path, *FAST, "--workers", "2")
    assert done.returncode == 0, done.stderr
    assert final_hash(tmp_path) == reference
    assert "started 2 data-loader workers" in log_text(tmp_path)


def test_sigint_to_the_whole_group_lets_the_trainer_save_before_workers_stop(tmp_path, spawn, reference):
    proc = spawn.trainer(tmp_path, *SLOW, "--workers", "2")
    wait_for_step(tmp_path, 6)
    workers = psutil.Process(proc.pid).children()
    assert len(workers) == 2
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
    assert proc.wait(timeout=10) == 0
    log = log_text(tmp_path)
    assert "stopping on SIGINT" in log and "died" not in log
    assert all(_exited(worker) for worker in workers)
    assert run_trainer(tmp_path, *FAST, "--workers", "2", "--resume").returncode == 0
    assert final_hash(tmp_path) == reference


def test_workers_exit_within_a_second_of_the_trainer_being_killed(tmp_path, spawn):
    proc = spawn.trainer(tmp_path, *SLOW, "--workers", "2")
    wait_for_step(tmp_path, 3)
    workers = psutil.Process(proc.pid).children()
    assert len(workers) == 2
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # A dead worker may linger as a zombie until init (or a subreaper) reaps it: it has exited.
    wait_for(lambda: all(_exited(worker) for worker in workers), 1.0, "workers to exit")


def _exited(proc: psutil.Process) -> bool:
    try:
        return proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_a_long_step_delays_the_stop_by_at_most_one_micro_batch(tmp_path, spawn):
    # One step takes 4 s in 8 micro-batches of 0.5 s: stopping must not wait for the step's end.
    proc = spawn.trainer(tmp_path, "--step-time", "4", "--micro-batches", "8")
    wait_for(lambda: "start:" in log_text(tmp_path), what="trainer start")
    time.sleep(1.2)
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0
    assert time.monotonic() - sent < 0.5 + 0.4
    assert "abandoned step 1" in log_text(tmp_path)


def test_sigusr1_logs_status_and_every_thread_stack_and_continues(tmp_path, spawn):
    proc = spawn.trainer(tmp_path, *SLOW)
    wait_for_step(tmp_path, 3)
    proc.send_signal(signal.SIGUSR1)
    wait_for(lambda: "status: step" in log_text(tmp_path), what="status line")
    log = log_text(tmp_path)
    assert "most recent call first" in log and "loop.py" in log
    step = metrics(tmp_path)[-1]["step"]
    wait_for_step(tmp_path, step + 3)
    assert proc.poll() is None
    proc.terminate()
    assert proc.wait(timeout=10) == 0


def test_sigusr2_checkpoints_now_and_continues(tmp_path, spawn):
    proc = spawn.trainer(tmp_path, *SLOW, "--checkpoint-every", "1000")
    wait_for_step(tmp_path, 3)
    proc.send_signal(signal.SIGUSR2)
    wait_for(lambda: "(SIGUSR2," in log_text(tmp_path), what="SIGUSR2 checkpoint")
    assert checkpoint.list_checkpoints(tmp_path / "checkpoints")
    step = metrics(tmp_path)[-1]["step"]
    wait_for_step(tmp_path, step + 2)
    assert proc.poll() is None
    proc.terminate()
    assert proc.wait(timeout=10) == 0


def test_resume_skips_a_corrupt_checkpoint_and_stays_exact(tmp_path, reference):
    assert run_trainer(tmp_path, "--epochs", "1", *FAST[2:]).returncode == 0  # steps 1..15
    newest = checkpoint.list_checkpoints(tmp_path / "checkpoints")[0][1]
    data = bytearray(newest.read_bytes())
    data[-20] ^= 0xFF  # one flipped bit pattern near the end
    newest.write_bytes(bytes(data))
    done = run_trainer(tmp_path, *FAST, "--resume")
    assert done.returncode == 0, done.stderr
    assert f"skipped {newest.name}: checksum mismatch" in log_text(tmp_path)
    assert final_hash(tmp_path) == reference


def test_resume_refuses_a_checkpoint_made_with_other_settings(tmp_path):
    assert run_trainer(tmp_path, *FAST).returncode == 0
    done = run_trainer(tmp_path, *FAST, "--resume", "--hidden", "32")
    assert done.returncode == 2
    assert "--hidden 64 (this run: 32)" in log_text(tmp_path)


def test_resume_without_checkpoints_starts_from_scratch(tmp_path, reference):
    done = run_trainer(tmp_path, *FAST, "--resume")
    assert done.returncode == 0
    assert "starting from scratch" in log_text(tmp_path)
    assert final_hash(tmp_path) == reference



def test_a_run_without_resume_starts_afresh_in_a_used_folder(tmp_path, spawn):
    """Re-running a lesson's cell: the second run's metrics, result and checkpoints are its own."""
    first = run_trainer(tmp_path, *FAST)  # 30 steps, checkpoints 20, 25, 30 kept
    assert first.returncode == 0, first.stderr
    short = ("--epochs", "1", "--steps-per-epoch", "12", "--step-time", "0", "--checkpoint-every", "5")
    second = spawn.trainer(tmp_path, *short, "--fault", "crash", "--fault-step", "12")  # dies before final.json
    second.wait(timeout=60)
    assert [row["step"] for row in metrics(tmp_path)] == list(range(1, 13))  # not 1..30 then 1..12
    assert not (tmp_path / "final.json").exists(), "the old run's final.json would say this one completed"
    log = log_text(tmp_path)
    assert log.count("start: pid") == 2 and "new run (no --resume)" in log.split("start: pid")[2]
    # the first run's checkpoints moved aside: this run's own (5, 10) were not pruned in their favour
    assert [step for step, _ in checkpoint.list_checkpoints(tmp_path / "checkpoints")] == [10, 5]
    assert [step for step, _ in checkpoint.list_checkpoints(tmp_path / "checkpoints.previous")] == [30, 25, 20]
    resumed = run_trainer(tmp_path, *short, "--resume")  # continues the second run, not the first
    assert resumed.returncode == 0, resumed.stderr
    assert "resume: from ckpt-00000010.lkc at step 10" in log_text(tmp_path)
    assert [row["step"] for row in metrics(tmp_path)] == list(range(1, 13))  # appended after step 10
    assert json.loads((tmp_path / "final.json").read_text())["global_step"] == 12

def test_memory_mb_holds_real_resident_memory(tmp_path, spawn):
    proc = spawn.trainer(tmp_path, *SLOW, "--memory-mb", "96")
    wait_for_step(tmp_path, 2)
    assert psutil.Process(proc.pid).memory_info().rss > 96 * 2**20
    proc.terminate()
    proc.wait(timeout=10)


def test_sigterm_during_startup_is_still_a_clean_stop(tmp_path, spawn):
    proc = spawn.trainer(tmp_path, *SLOW)
    wait_for(lambda: _catches_sigterm(proc.pid), 5, "the early handler")
    assert not (tmp_path / "train.log").exists()  # numpy is still loading: no training loop yet
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0
    assert "stopping on SIGTERM at step 0" in log_text(tmp_path)


def _catches_sigterm(pid: int) -> bool:
    status = open(f"/proc/{pid}/status").read()
    return bool(int(status.split("SigCgt:")[1].split()[0], 16) & (1 << (signal.SIGTERM - 1)))


# --- a full disk during a save (issue 17) ------------------------------------------------------
def _one_line_error(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "error:" in line]


def test_a_file_size_limit_during_the_first_save_is_one_line_and_exit_1(tmp_path):
    import shutil

    if shutil.which("prlimit") is None:
        pytest.skip("prlimit is not installed")
    run = tmp_path / "run"
    done = subprocess.run(["prlimit", "--fsize=20000", sys.executable, "-m", "labkit", "train", "--run-dir", str(run),
                           "--epochs", "1", "--step-time", "0.001"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr and "Traceback" not in (run / "train.log").read_text()
    errors = _one_line_error(done.stderr)
    assert len(errors) == 1 and "EFBIG" in errors[0] and "prlimit --fsize" in errors[0], done.stderr
    assert not list((run / "checkpoints").iterdir()), "no temporary file is left behind"


def test_a_full_disk_keeps_the_previous_checkpoint_and_says_so(tmp_path):
    import shutil

    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root to mount a small tmpfs")
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(disk)], check=True)
    try:
        run = disk / "run"
        trainer = subprocess.Popen([sys.executable, "-m", "labkit", "train", "--run-dir", str(run), "--epochs", "20",
                                    "--step-time", "0.05"], stderr=subprocess.PIPE, text=True)
        try:
            wait_for(lambda: list((run / "checkpoints").glob("*.lkc")), 30, "the first checkpoint")
            with open(disk / "filler", "wb") as filler:  # fill the disk to the last byte
                try:
                    while True:
                        filler.write(b"\0" * 65536)
                        filler.flush()
                except OSError:
                    pass
            _, stderr = trainer.communicate(timeout=60)
        finally:
            if trainer.poll() is None:
                trainer.kill()
                trainer.wait()
        assert trainer.returncode == 1, stderr
        assert "Traceback" not in stderr
        errors = _one_line_error(stderr)
        assert len(errors) == 1 and "ENOSPC" in errors[0] and "previous checkpoint (step 10) is kept" in errors[0], stderr
        from labkit import checkpoint

        kept = checkpoint.list_checkpoints(run / "checkpoints")
        assert [step for step, _ in kept] == [10] and checkpoint.load(kept[0][1]).step == 10
        assert not [p for p in (run / "checkpoints").iterdir() if p.name.startswith(".")], "a temporary file was left"
    finally:
        subprocess.run(["umount", str(disk)], check=True)
