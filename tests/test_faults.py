"""Each --fault puts the trainer in the state it claims, as the kernel reports it."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import psutil
import pytest

from conftest import log_text, metrics, wait_for, wait_for_step

RUN = ("--epochs", "100", "--steps-per-epoch", "20", "--step-time", "0.01", "--fault-step", "3")


def wchan(pid: int) -> str:
    return Path(f"/proc/{pid}/wchan").read_text()


def stalled(run_dir: Path, seconds: float = 0.5) -> bool:
    before = metrics(run_dir)[-1]["step"]
    time.sleep(seconds)
    return metrics(run_dir)[-1]["step"] == before


def start_faulty(spawn, run_dir: Path, fault: str, *extra: str) -> psutil.Process:
    proc = spawn.trainer(run_dir, *RUN, "--fault", fault, *extra)
    wait_for(lambda: f"fault {fault}: starting" in log_text(run_dir), 20, f"fault {fault}")
    return psutil.Process(proc.pid)


def test_hang_io_blocks_in_a_pipe_read(tmp_path, spawn):
    proc = start_faulty(spawn, tmp_path, "hang-io")
    wait_for(lambda: proc.status() == psutil.STATUS_SLEEPING and "pipe" in wchan(proc.pid), 5, "pipe_read")
    assert stalled(tmp_path)
    proc.send_signal(signal.SIGTERM)  # the flag is set but never read: a hang needs SIGKILL
    time.sleep(0.3)
    assert proc.is_running()


def test_deadlock_leaves_two_threads_waiting_on_futexes(tmp_path, spawn):
    proc = start_faulty(spawn, tmp_path, "deadlock")
    wait_for(lambda: proc.num_threads() == 2, 5, "the second thread")
    time.sleep(0.3)
    waits = [Path(f"/proc/{proc.pid}/task/{t.id}/wchan").read_text() for t in proc.threads()]
    assert all("futex" in w for w in waits), waits
    assert stalled(tmp_path)


def test_busy_loop_spins_without_progress(tmp_path, spawn):
    proc = start_faulty(spawn, tmp_path, "busy-loop")
    cpu_before = sum(proc.cpu_times()[:2])
    assert stalled(tmp_path, 0.8)
    # Always runnable (state R), whatever else the machine runs: a share of CPU time would depend
    # on the load, the state does not. A process that waits would show S.
    states = []
    for _ in range(50):
        states.append(proc.status())
        time.sleep(0.01)
    assert states.count(psutil.STATUS_RUNNING) >= 45, states
    assert sum(proc.cpu_times()[:2]) > cpu_before


def test_memory_leak_grows_resident_memory(tmp_path, spawn):
    proc = start_faulty(spawn, tmp_path, "memory-leak")
    before = proc.memory_info().rss
    time.sleep(0.5)
    assert proc.memory_info().rss > before + 20 * 2**20


def test_crash_exits_1_with_the_traceback_in_the_log(tmp_path, spawn):
    proc = spawn.trainer(tmp_path, *RUN, "--fault", "crash")
    assert proc.wait(timeout=20) == 1
    log = log_text(tmp_path)
    assert "Traceback" in log and "RuntimeError: simulated crash" in log


def test_zombie_worker_is_a_real_zombie_until_the_trainer_exits(tmp_path, spawn):
    proc = start_faulty(spawn, tmp_path, "zombie-worker")
    wait_for(lambda: any(c.status() == psutil.STATUS_ZOMBIE for c in proc.children()), 5, "a zombie child")
    wait_for_step(tmp_path, 6)  # the trainer itself keeps training
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0
    assert "never reaped" in log_text(tmp_path)


def test_orphan_workers_outlive_the_trainer_in_its_process_group(tmp_path, spawn):
    popen = spawn.trainer(tmp_path, *RUN, "--fault", "orphan-workers")
    assert popen.wait(timeout=20) == 1
    time.sleep(0.2)
    orphans = [p for p in psutil.process_iter() if _pgid(p.pid) == popen.pid]
    assert len(orphans) == 2
    assert all(p.ppid() != popen.pid for p in orphans)


def test_ignore_sigterm_keeps_running_but_sigint_still_stops(tmp_path, spawn):
    proc = spawn.trainer(tmp_path, *RUN, "--fault", "ignore-sigterm")
    wait_for_step(tmp_path, 2)
    proc.send_signal(signal.SIGTERM)
    wait_for(lambda: "received SIGTERM and ignored it" in log_text(tmp_path), 5, "the ignore line")
    assert proc.poll() is None
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=10) == 0


def test_slow_shutdown_outlasts_a_short_grace_period(tmp_path, spawn):
    proc = spawn.trainer(tmp_path, *RUN, "--fault", "slow-shutdown")
    wait_for_step(tmp_path, 2)
    proc.send_signal(signal.SIGTERM)
    time.sleep(1.0)
    assert proc.poll() is None
    assert "fault slow-shutdown: flushing" in log_text(tmp_path)


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except OSError:
        return None


@pytest.mark.parametrize("fault", ["hang-io", "deadlock", "busy-loop"])
def test_sigusr1_dumps_stacks_even_when_the_trainer_is_stuck(tmp_path, spawn, fault):
    proc = start_faulty(spawn, tmp_path, fault)
    time.sleep(0.3)
    proc.send_signal(signal.SIGUSR1)
    wait_for(lambda: "most recent call first" in log_text(tmp_path), 5, "a stack dump")
    assert "faults.py" in log_text(tmp_path)


def test_shutdown_seconds_sets_how_long_slow_shutdown_takes_before_it_saves(tmp_path, spawn):
    proc = spawn.trainer(tmp_path, *RUN, "--fault", "slow-shutdown", "--shutdown-seconds", "0.8")
    wait_for_step(tmp_path, 2)
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0
    assert 0.7 <= time.monotonic() - started < 5
    assert "flushing for 0.8 s before saving" in log_text(tmp_path)
