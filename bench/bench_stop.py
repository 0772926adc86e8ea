"""SIGTERM -> exit latency of the trainer, and bitwise-exact resume after random SIGKILLs.

Run: python bench/bench_stop.py [--stops 30] [--kills 20] [--framework numpy|torch]

Part 1 starts the trainer with a ~10 MiB state (weights + momentum), sends SIGTERM at a
random moment, and times signal -> process exit (the trainer finishes its micro-batch,
checkpoints, joins its loader and exits). Side by side, in the same run, it times the floor:
saving the very same checkpoint alone (encode, checksum, write, fsync, rename, folder fsync).
Target: p50 <= one micro-batch + 1.5 x the floor's p50.

Part 2 kills the trainer with SIGKILL at random moments (often mid-save), resumes each time,
and checks the final weights are bit-identical to an uninterrupted run's.

With ``--framework torch`` both parts run the torch trainer (``labkit train --framework torch``),
and the floor is ``torch.save`` of the same checkpoint's payload + fsync + rename + folder fsync.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from labkit import checkpoint

STEP_TIME_S = 0.02
MICRO_BATCHES = 4
HIDDEN = 768  # two 768-wide hidden layers: ~0.62 M parameters, ~10 MiB with momentum
STOP_ARGS = ["--epochs", "1000", "--step-time", str(STEP_TIME_S), "--micro-batches", str(MICRO_BATCHES),
             "--hidden", str(HIDDEN), "--checkpoint-every", "1000"]
ENV = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
FRAMEWORK: list[str] = []  # ["--framework", "torch"] with --framework torch


def trainer(run_dir: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "labkit.trainer", *FRAMEWORK, "--run-dir", str(run_dir), *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)


def wait_for_steps(run_dir: Path, steps: int, timeout_s: float = 30) -> None:
    metrics = run_dir / "metrics.jsonl"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if metrics.exists() and sum(1 for _ in metrics.open()) >= steps:
            return
        time.sleep(0.005)
    raise RuntimeError(f"the trainer in {run_dir} made no progress")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def logged_at(run_dir: Path, marker: str) -> float:
    """Wall-clock time of the last train.log line containing ``marker`` (the log's ms stamps)."""
    line = [l for l in (run_dir / "train.log").read_text().splitlines() if marker in l][-1]
    stamp, millis = line.split()[0].split(".")
    return time.mktime(time.strptime(stamp, "%Y-%m-%dT%H:%M:%S")) + int(millis) / 1000


def measure_stops(root: Path, stops: int, rng: random.Random) -> tuple[list[float], list[float], Path]:
    """SIGTERM -> process exit, and SIGTERM -> "stopped cleanly" logged (before the process's teardown)."""
    latencies, logged = [], []
    for trial in range(stops):
        run_dir = root / f"stop{trial}"
        proc = trainer(run_dir, *STOP_ARGS)
        try:
            wait_for_steps(run_dir, 3)
            time.sleep(rng.uniform(0, STEP_TIME_S))  # land anywhere inside a step
            sent, sent_wall = time.perf_counter(), time.time()
            proc.send_signal(signal.SIGTERM)
            code = proc.wait()
            latencies.append(time.perf_counter() - sent)
            logged.append(logged_at(run_dir, "stopped cleanly") - sent_wall)
        finally:  # an error or Ctrl-C must not leave a 1000-epoch trainer behind
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if code != 0:
            raise RuntimeError(f"trial {trial}: exit code {code}")
    return latencies, logged, run_dir


def measure_floor(saved: Path, repeats: int) -> tuple[list[float], int]:
    ckpt = checkpoint.load(checkpoint.list_checkpoints(saved / "checkpoints")[0][1])
    times = []
    with tempfile.TemporaryDirectory(dir=saved) as folder:
        for _ in range(repeats):
            started = time.perf_counter()
            path = checkpoint.save(folder, ckpt.step, ckpt.arrays, ckpt.meta)
            times.append(time.perf_counter() - started)
        size = path.stat().st_size
    return times, size


def measure_torch_floor(saved: Path, repeats: int) -> tuple[list[float], int]:
    """torch.save of the newest checkpoint's payload to a temporary file, fsync, rename, folder fsync."""
    import torch

    from labkit._atomic import fsync_directory
    from labkit.trainer.torch import ckpt as torch_ckpt

    torch.set_num_threads(1)
    path = torch_ckpt.list_checkpoints(saved / "checkpoints")[0][1]
    payload = torch.load(path, map_location="cpu", weights_only=True)
    times = []
    with tempfile.TemporaryDirectory(dir=saved) as folder:
        target = Path(folder) / path.name
        for _ in range(repeats):
            started = time.perf_counter()
            temp = target.with_name(".tmp-" + target.name)
            with open(temp, "wb") as handle:
                torch.save(payload, handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp, target)
            fsync_directory(folder)
            times.append(time.perf_counter() - started)
        size = target.stat().st_size
    return times, size


def wait_until_training(run_dir: Path, pid: int, timeout_s: float = 120) -> None:
    """Wait until trainer ``pid`` has resumed and completed a step of its own."""
    log, metrics = run_dir / "train.log", run_dir / "metrics.jsonl"
    deadline = time.monotonic() + timeout_s
    size = None
    while time.monotonic() < deadline:
        if size is None and log.exists() and f"[pid {pid}] resume:" in log.read_text():
            size = metrics.stat().st_size if metrics.exists() else 0  # after the resume's truncation
        elif size is not None and metrics.exists() and metrics.stat().st_size > size:
            return
        time.sleep(0.002)
    raise RuntimeError(f"the trainer in {run_dir} did not start training")


def exact_resume(root: Path, kills: int, rng: random.Random, workers: int) -> dict:
    args = ["--epochs", "6", "--steps-per-epoch", "50", "--step-time", "0.004", "--hidden", str(HIDDEN),
            "--checkpoint-every", "1", "--workers", str(workers)]  # saving most of the time
    reference, resumed = root / f"ref-w{workers}", root / f"killed-w{workers}"
    subprocess.run([sys.executable, "-m", "labkit.trainer", *FRAMEWORK, "--run-dir", str(reference), *args],
                   check=True, capture_output=True, env=ENV)
    for _ in range(kills):
        proc = trainer(resumed, *args, "--resume")
        try:
            wait_until_training(resumed, proc.pid)
            time.sleep(rng.uniform(0.0, 0.15))  # land anywhere in training, which is mostly saving here
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        if (resumed / "final.json").exists():
            raise RuntimeError("the run finished before all kills were made; make it longer")
    subprocess.run([sys.executable, "-m", "labkit.trainer", *FRAMEWORK, "--run-dir", str(resumed), *args, "--resume"],
                   check=True, capture_output=True, env=ENV)
    want = json.loads((reference / "final.json").read_text())["weights_sha256"]
    got = json.loads((resumed / "final.json").read_text())["weights_sha256"]
    log = (resumed / "train.log").read_text()
    return {"kills": kills, "workers": workers, "exact": want == got,
            "corrupt_skipped": log.count("resume: skipped"),
            "killed_mid_save": log.count("left by a save that was interrupted")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stops", type=int, default=30)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--framework", choices=("numpy", "torch"), default="numpy",
                        help="the trainer to measure (torch: needs the [torch] extra)")
    args = parser.parse_args()
    if args.framework == "torch":
        FRAMEWORK[:] = ["--framework", "torch"]
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="labkit-bench-") as tmp:
        root = Path(tmp)
        latencies, logged, last_run = measure_stops(root, args.stops, rng)
        if args.framework == "torch":
            floor, size = measure_torch_floor(last_run, args.stops)
        else:
            floor, size = measure_floor(last_run, args.stops)
        micro_ms = STEP_TIME_S / MICRO_BATCHES * 1000
        p50, p95, floor50 = (percentile(latencies, 0.5) * 1000, percentile(latencies, 0.95) * 1000,
                             statistics.median(floor) * 1000)
        target = micro_ms + 1.5 * floor50
        print(f"machine: {platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
        if args.framework == "torch":
            import torch

            print(f"trainer: --framework torch, torch {torch.__version__}; floor: torch.save + fsync + rename")
        print(f"checkpoint size: {size / 2**20:.1f} MiB; step {STEP_TIME_S * 1000:.0f} ms in "
              f"{MICRO_BATCHES} micro-batches of {micro_ms:.0f} ms")
        print(f"SIGTERM -> exit, {args.stops} stops: p50 {p50:.1f} ms, p95 {p95:.1f} ms")
        print(f"SIGTERM -> 'stopped cleanly' logged (saved; before the process's teardown): "
              f"p50 {percentile(logged, 0.5) * 1000:.1f} ms, p95 {percentile(logged, 0.95) * 1000:.1f} ms")
        print(f"floor (save the same checkpoint alone): p50 {floor50:.1f} ms, "
              f"p95 {percentile(floor, 0.95) * 1000:.1f} ms")
        print(f"ratio p50 / floor p50: {p50 / floor50:.2f}; target p50 <= {micro_ms:.0f} + 1.5 x floor = "
              f"{target:.1f} ms: {'PASS' if p50 <= target else 'FAIL'}")
        results = [exact_resume(root, args.kills, rng, workers) for workers in (0, 2)]
        for result in results:
            print(f"exact resume after {result['kills']} random SIGKILLs, workers {result['workers']}: "
                  f"{'PASS' if result['exact'] else 'FAIL'} ({result['killed_mid_save']} kills left a half-written "
                  f"temp file; corrupt checkpoints found on resume: {result['corrupt_skipped']})")
        ok = p50 <= target and all(r["exact"] for r in results)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
