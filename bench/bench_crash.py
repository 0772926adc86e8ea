"""Which checkpoint writers survive SIGKILL at random moments, and SIGTERM -> exit of the trainer.

Run: python bench/bench_crash.py [--kills 1000] [--stops 15] [--size-mb 4] [--quick]

Part 1 (labkit.crashtest) starts each writer (careful: labkit.checkpoint.save; naive: np.save
onto the final name; rename-no-fsync: temp file + os.replace, no fsync) as a child saving in a
loop, SIGKILLs it after a delay drawn uniformly within one save's time (measured first), and
verifies every file left. Target: the careful writer leaves 0 corrupt checkpoints over all
kills; the naive writer's corrupt share is reported, as is rename-no-fsync's (0 expected under
SIGKILL: it is only unsafe against a power loss, which no kill test shows). It also makes one
save fail part-way with RLIMIT_FSIZE (a full disk) for each writer and prints what each left.
--quick: 100 kills per writer.

Part 2 is a baseline for the shutdown work: the trainer (--epochs 1000 --step-time 0.02
--checkpoint-every 1000, so that the stop itself must save) is started, trains 20 steps, gets
SIGTERM at a random moment of a step, and the time to process exit is measured; side by side,
the floor: saving the same checkpoint alone. Target: p50 <= 1.5 x floor p50 + one step. With
4 ranks too, when the trainer has --ranks.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from labkit import crashtest

STEP_TIME_S = 0.02
# No periodic checkpoint (as in bench_stop.py): every stop must save, so it compares with the floor.
STOP_ARGS = ["--epochs", "1000", "--step-time", str(STEP_TIME_S), "--checkpoint-every", "1000"]
STEPS_BEFORE_STOP = 20
RANKS = 4
ENV = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


# --- part 1: random kills -------------------------------------------------------------------

def kill_writers(root: Path, kills: int, size_mb: float, seed: int) -> list[crashtest.CrashReport]:
    reports = []
    for offset, writer in enumerate(crashtest.WRITERS):
        started = time.monotonic()
        reports.append(crashtest.kill_at_random(writer, kills, root / writer, size_mb, seed + offset))
        print(f"  {writer}: {kills} kills in {time.monotonic() - started:.0f} s", flush=True)
    return reports


def print_kills(reports: list[crashtest.CrashReport]) -> bool:
    print(f"{'writer':<16} {'kills':>6} {'in a write':>10} {'corrupt':>8} {'share':>7} {'temps':>6} "
          f"{'missing':>7} {'save ms':>8}  verdict")
    verdicts = {"careful": lambda r: "PASS" if r.corrupt == 0 and r.missing == 0 else "FAIL",
                "naive": lambda r: "reported (expected > 0)",
                "rename-no-fsync": lambda r: "reported (0 expected under SIGKILL)"}
    for r in reports:
        print(f"{r.writer:<16} {r.kills:>6} {r.mid_write:>10} {r.corrupt:>8} {r.corrupt_share:>7.1%} "
              f"{r.temporaries:>6} {r.missing:>7} {r.save_ms:>8.1f}  {verdicts[r.writer](r)}")
    for r in reports:
        for reason, count in sorted(r.reasons.items(), key=lambda item: -item[1]):
            print(f"  {r.writer} corrupt because {reason}: {count}")
    careful = next(r for r in reports if r.writer == "careful")
    return careful.corrupt == 0 and careful.missing == 0


def disk_full(root: Path, size_mb: float) -> None:
    limit = int(size_mb * 2**20) // 2  # the second save fails half-way
    for writer in crashtest.WRITERS:
        words = crashtest.save_with_disk_limit(writer, limit, root / f"full-{writer}", size_mb)
        print(f"disk full ({limit} B limit): {words}")


# --- part 2: SIGTERM -> exit ----------------------------------------------------------------

def has_ranks() -> bool:
    done = subprocess.run([sys.executable, "-m", "labkit.trainer", "--help"], capture_output=True, text=True,
                          env=ENV, timeout=60)
    return "--ranks" in done.stdout


def trained_steps(run_dir: Path) -> int:
    metrics = run_dir / "metrics.jsonl"
    return sum(1 for _ in metrics.open()) if metrics.exists() else 0


def stop_once(run_dir: Path, extra: list[str], rng: random.Random) -> float:
    # A session of its own: with ranks, the group holds the launcher's children too.
    proc = subprocess.Popen([sys.executable, "-m", "labkit.trainer", "--run-dir", str(run_dir), *STOP_ARGS, *extra],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while trained_steps(run_dir) < STEPS_BEFORE_STOP:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"the trainer in {run_dir} made no progress (exit code {proc.poll()})")
            time.sleep(0.005)
        time.sleep(rng.uniform(0, STEP_TIME_S))  # land anywhere inside a step
        # A blocking wait: Popen.wait(timeout=...) polls with growing sleeps (0.5, 1, 2 ... 50 ms) and
        # would round every latency up to its next poll; a watchdog covers a stop that never ends.
        watchdog = threading.Timer(60, lambda: os.killpg(proc.pid, signal.SIGKILL))
        watchdog.start()
        sent = time.perf_counter()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait()
        latency = time.perf_counter() - sent
        watchdog.cancel()
    finally:  # an error or Ctrl-C must not leave a 1000-epoch trainer (or its ranks) behind
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
    if code != 0:
        raise RuntimeError(f"{run_dir}: exit code {code}")
    if "saved (SIGTERM" not in (run_dir / "train.log").read_text():
        raise RuntimeError(f"{run_dir}: the stop saved no checkpoint, so it cannot be compared with the floor")
    return latency


from bench_stop import measure_floor  # noqa: E402  (the same floor: save the stopped run's checkpoint alone)


def measure_stops(root: Path, stops: int, extra: list[str], label: str, rng: random.Random) -> bool:
    latencies = [stop_once(root / f"{label}-{trial}", extra, rng) for trial in range(stops)]
    floor, size = measure_floor(root / f"{label}-{stops - 1}", stops)
    p50, p95 = percentile(latencies, 0.5) * 1000, percentile(latencies, 0.95) * 1000
    floor50 = statistics.median(floor) * 1000
    target = 1.5 * floor50 + STEP_TIME_S * 1000
    ok = p50 <= target
    print(f"{label}: SIGTERM -> exit, {stops} stops after {STEPS_BEFORE_STOP} steps: p50 {p50:.1f} ms, "
          f"p95 {p95:.1f} ms")
    print(f"{label}: floor (save the same {size / 1024:.0f} KiB checkpoint alone): p50 {floor50:.1f} ms, "
          f"p95 {percentile(floor, 0.95) * 1000:.1f} ms")
    print(f"{label}: target p50 <= 1.5 x floor + one step ({STEP_TIME_S * 1000:.0f} ms) = {target:.1f} ms: "
          f"{'PASS' if ok else 'FAIL'} (p50 - floor p50 = {p50 - floor50:.1f} ms)")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=1000)
    parser.add_argument("--stops", type=int, default=15)
    parser.add_argument("--size-mb", type=float, default=4.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="100 kills per writer")
    args = parser.parse_args()
    kills = 100 if args.quick else args.kills
    rng = random.Random(args.seed)
    print(f"machine: {platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    with tempfile.TemporaryDirectory(prefix="labkit-bench-") as tmp:
        root = Path(tmp)
        print(f"random SIGKILLs during saves of a {args.size_mb:g} MiB checkpoint, {kills} per writer:", flush=True)
        ok = print_kills(kill_writers(root, kills, args.size_mb, args.seed))
        disk_full(root, args.size_mb)
        ok = measure_stops(root, args.stops, [], "1 process", rng) and ok
        if has_ranks():
            ok = measure_stops(root, args.stops, ["--ranks", str(RANKS)], f"{RANKS} ranks", rng) and ok
        else:
            print(f"{RANKS} ranks: pending (this trainer has no --ranks yet)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
