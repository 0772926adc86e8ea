"""SIGTERM -> exit latency of the trainer, and bitwise-exact resume after random SIGKILLs.

Run: python bench/bench_stop.py [--stops 30] [--kills 20] [--framework numpy|torch]
     [--cli-stops 5] [--torchrun-stops 3]

Part 1 starts the trainer with a ~10 MiB state (weights + momentum), sends SIGTERM at a
random moment, and times signal -> process exit (the trainer finishes its micro-batch,
checkpoints, joins its loader and exits). Side by side, in the same run, it times the floor:
saving the very same checkpoint alone (encode, checksum, write, fsync, rename, folder fsync).
Target: p50 <= one micro-batch + 1.5 x the floor's p50.

Part 2 kills the trainer with SIGKILL at random moments (often mid-save), resumes each time,
and checks the final weights are bit-identical to an uninterrupted run's.

With ``--framework torch`` both parts run the torch trainer (``labkit train --framework torch``;
its float32 state is ~5 MiB), and the floor is ``torch.save`` of the same checkpoint's payload +
fsync + rename + folder fsync. More figures come side by side in the same run, each with its
ratio against the same target: the teardown floor (the kernel's exit of an idle process that
imported torch and holds the same model and optimizer: ``os._exit`` -> its parent's ``wait``
returns); ``torchrun --nproc-per-node N`` for N = 2 and 4 (``--torchrun-stops`` rounds each):
SIGTERM to torchrun -> rank 0 logged "stopped cleanly", -> every rank gone (seen on pidfds),
-> torchrun's exit, every rank having agreed on the step; and (``--cli-stops``, default 5 with
torch) the same trainer started as ``labkit train``, the command learners type, whose
interpreter ends differently from ``python -m labkit.trainer``'s.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import select
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import psutil

from labkit import checkpoint

STEP_TIME_S = 0.02
MICRO_BATCHES = 4
HIDDEN = 768  # two 768-wide hidden layers: ~0.62 M parameters, ~10 MiB with momentum
STOP_ARGS = ["--epochs", "1000", "--step-time", str(STEP_TIME_S), "--micro-batches", str(MICRO_BATCHES),
             "--hidden", str(HIDDEN), "--checkpoint-every", "1000"]
ENV = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
FRAMEWORK: list[str] = []  # ["--framework", "torch"] with --framework torch


def trainer(run_dir: Path, *args: str, via_cli: bool = False) -> subprocess.Popen:
    """The trainer as ``python -m labkit.trainer``, or (``via_cli``) as the ``labkit train`` command."""
    entry = ["-m", "labkit", "train"] if via_cli else ["-m", "labkit.trainer"]
    return subprocess.Popen([sys.executable, *entry, *FRAMEWORK, "--run-dir", str(run_dir), *args],
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


def measure_stops(root: Path, stops: int, rng: random.Random, via_cli: bool = False,
                  between: Callable[[], None] | None = None) -> tuple[list[float], list[float], Path]:
    """SIGTERM -> process exit, and SIGTERM -> "stopped cleanly" logged (before the process's teardown).

    ``between`` runs after each stop: a baseline measured interleaved with the stops sees the same
    load on a shared machine.
    """
    latencies, logged = [], []
    for trial in range(stops):
        if between is not None and trial:
            between()
        run_dir = root / f"{'cli' if via_cli else 'stop'}{trial}"
        proc = trainer(run_dir, *STOP_ARGS, via_cli=via_cli)
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


TEARDOWN = """
import os, sys
import torch
from labkit.trainer.torch.loop import build_model
torch.set_num_threads(1)
model = build_model({hidden})
optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
model(torch.zeros(8, model[0].in_features)).sum().backward()
optimizer.step()  # momentum buffers exist, as in the trainer
print("ready", flush=True)
sys.stdin.readline()
os._exit(0)  # what the trainer does once its checkpoint is durable
"""


def measure_teardown_floor(times: list[float]) -> None:
    """Append the seconds from telling an idle torch process to ``os._exit`` to its parent's ``wait`` returning.

    Nothing but the kernel's teardown of the process (unmapping what ``import torch`` mapped,
    freeing its memory) lies between the two: the part of a stop that no trainer code can shorten.
    """
    proc = subprocess.Popen([sys.executable, "-c", TEARDOWN.format(hidden=HIDDEN)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=ENV)
    try:
        assert proc.stdin is not None and proc.stdout is not None
        if proc.stdout.readline().strip() != "ready":
            raise RuntimeError("the teardown probe did not start")
        time.sleep(0.05)
        started = time.perf_counter()
        proc.stdin.write("go\n")
        proc.stdin.flush()
        proc.wait()
        times.append(time.perf_counter() - started)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _kill_tree(proc: subprocess.Popen) -> None:
    """Kill torchrun and every process under it (its ranks run in sessions of their own)."""
    try:
        tree = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        tree = []
    for member in tree:
        try:
            member.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(tree, timeout=10)
    proc.wait()


def _rank_pids(proc: subprocess.Popen, nproc: int, timeout_s: float = 30) -> list[int]:
    """The pids of torchrun's ``nproc`` rank processes (its children running the trainer)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        ranks = [child.pid for child in psutil.Process(proc.pid).children()
                 if "labkit.trainer" in " ".join(child.cmdline())]
        if len(ranks) == nproc:
            return ranks
        time.sleep(0.05)
    raise RuntimeError(f"torchrun did not start {nproc} ranks")


def measure_torchrun(root: Path, nproc: int, stops: int,
                     rng: random.Random) -> tuple[list[float], list[float], list[float]]:
    """SIGTERM to ``torchrun --nproc-per-node nproc`` -> (torchrun's exit, the last rank's exit, rank 0's
    "stopped cleanly" logged), seconds. Exits are seen through pidfds (poll(2) wakes when a process
    ends, child of ours or not), so nothing polls in a loop beside the job."""
    latencies, ranks_gone, logged = [], [], []
    for trial in range(stops):
        run_dir = root / f"torchrun{nproc}-{trial}"
        run_dir.mkdir()
        with open(run_dir / "torchrun.out", "w") as out:
            proc = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
                                     str(nproc), "-m", "labkit.trainer", *FRAMEWORK, "--run-dir", str(run_dir),
                                     *STOP_ARGS], stdout=out, stderr=subprocess.STDOUT, env=ENV, start_new_session=True)
        fds: dict[int, str] = {}
        try:
            wait_for_steps(run_dir, 3, timeout_s=180)
            fds = {os.pidfd_open(pid): "rank" for pid in _rank_pids(proc, nproc)}
            fds[os.pidfd_open(proc.pid)] = "torchrun"
            poller = select.poll()
            for fd in fds:
                poller.register(fd, select.POLLIN)
            time.sleep(rng.uniform(0, STEP_TIME_S))
            sent, sent_wall = time.perf_counter(), time.time()
            proc.send_signal(signal.SIGTERM)
            ended: dict[int, float] = {}
            while len(ended) < len(fds):
                events = poller.poll(120_000)
                if not events:
                    raise RuntimeError(f"torchrun x{nproc}, trial {trial}: still running 120 s after SIGTERM")
                for fd, _ in events:
                    ended[fd] = time.perf_counter() - sent
                    poller.unregister(fd)
            proc.wait(timeout=30)
            latencies.append(max(t for fd, t in ended.items() if fds[fd] == "torchrun"))
            ranks_gone.append(max(t for fd, t in ended.items() if fds[fd] == "rank"))
            logged.append(logged_at(run_dir, "stopped cleanly") - sent_wall)
        finally:
            for fd in fds:
                os.close(fd)
            if proc.poll() is None:
                _kill_tree(proc)
        logs = [run_dir / "train.log", *[run_dir / "ranks" / str(r) / "train.log" for r in range(1, nproc)]]
        clean = sum("stopped cleanly" in log.read_text() for log in logs if log.exists())
        if clean != nproc or "forcefully" in (run_dir / "torchrun.out").read_text():
            raise RuntimeError(f"torchrun x{nproc}, trial {trial}: {clean} of {nproc} ranks stopped cleanly "
                               f"(see {run_dir})")
    return latencies, ranks_gone, logged


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


def ms(values: list[float], q: float) -> float:
    """The q-quantile of ``values`` (seconds) in milliseconds."""
    return percentile(values, q) * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stops", type=int, default=30)
    parser.add_argument("--kills", type=int, default=20, help="0 skips the exact-resume part")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--framework", choices=("numpy", "torch"), default="numpy",
                        help="the trainer to measure (torch: needs the [torch] extra)")
    parser.add_argument("--cli-stops", type=int, default=None,
                        help="stops of the same trainer started as `labkit train`, the command learners type "
                             "(default: 5 with --framework torch, 0 with numpy)")
    parser.add_argument("--torchrun-stops", type=int, default=3,
                        help="with --framework torch: stops of torchrun with 2 and with 4 ranks (0: none)")
    args = parser.parse_args()
    if args.framework == "torch":
        FRAMEWORK[:] = ["--framework", "torch"]
    if args.cli_stops is None:
        args.cli_stops = 5 if args.framework == "torch" else 0
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="labkit-bench-") as tmp:
        root = Path(tmp)
        teardown: list[float] = []  # with torch: one probe after each stop, interleaved
        probe = (lambda: measure_teardown_floor(teardown)) if args.framework == "torch" else None
        latencies, logged, last_run = measure_stops(root, args.stops, rng, between=probe)
        cli = measure_stops(root, args.cli_stops, rng, via_cli=True)[0] if args.cli_stops else []
        torchrun: dict[int, tuple[list[float], list[float], list[float]]] = {}
        if args.framework == "torch":
            floor, size = measure_torch_floor(last_run, args.stops)
            for nproc in ((2, 4) if args.torchrun_stops else ()):
                torchrun[nproc] = measure_torchrun(root, nproc, args.torchrun_stops, rng)
        else:
            floor, size = measure_floor(last_run, args.stops)
        micro_ms = STEP_TIME_S / MICRO_BATCHES * 1000
        p50, p95, floor50 = ms(latencies, 0.5), ms(latencies, 0.95), statistics.median(floor) * 1000
        target = micro_ms + 1.5 * floor50
        print(f"machine: {platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
        if args.framework == "torch":
            import torch

            print(f"trainer: --framework torch, torch {torch.__version__}; floor: torch.save + fsync + rename")
        print(f"checkpoint size: {size / 2**20:.1f} MiB; step {STEP_TIME_S * 1000:.0f} ms in "
              f"{MICRO_BATCHES} micro-batches of {micro_ms:.0f} ms")
        print(f"SIGTERM -> exit, {args.stops} stops: p50 {p50:.1f} ms, p95 {p95:.1f} ms")
        print(f"SIGTERM -> 'stopped cleanly' logged (saved; before the process's teardown): "
              f"p50 {ms(logged, 0.5):.1f} ms, p95 {ms(logged, 0.95):.1f} ms")
        print(f"floor (save the same checkpoint alone): p50 {floor50:.1f} ms, p95 {ms(floor, 0.95):.1f} ms")
        if teardown:
            print(f"teardown floor (os._exit of an idle process holding torch, the model and its optimizer -> "
                  f"reaped), {len(teardown)} runs between the stops: p50 {ms(teardown, 0.5):.1f} ms, p95 {ms(teardown, 0.95):.1f} ms")
        print(f"ratio p50 / floor p50: {p50 / floor50:.2f}; target p50 <= {micro_ms:.0f} + 1.5 x floor = "
              f"{target:.1f} ms: {'PASS' if p50 <= target else 'FAIL'}")
        if teardown:
            print(f"  of which the kernel's teardown (teardown floor p50): {ms(teardown, 0.5):.1f} ms; "
                  f"p50 without it {p50 - ms(teardown, 0.5):.1f} ms against the target {target:.1f} ms "
                  f"(ratio {(p50 - ms(teardown, 0.5)) / target:.2f})")
        if cli:
            print(f"the same, started as `labkit train` ({len(cli)} stops): SIGTERM -> exit p50 {ms(cli, 0.5):.1f} ms, "
                  f"p95 {ms(cli, 0.95):.1f} ms: ratio p50 / target {ms(cli, 0.5) / target:.2f}: "
                  f"{'PASS' if ms(cli, 0.5) <= target else 'FAIL'}")
        for nproc, (times, gone, done) in torchrun.items():
            run50, gone50 = ms(times, 0.5), ms(gone, 0.5)
            print(f"torchrun --nproc-per-node {nproc}, {len(times)} stops: SIGTERM -> rank 0 'stopped cleanly' p50 "
                  f"{ms(done, 0.5):.1f} ms; -> every rank gone p50 {gone50:.1f} ms, p95 {ms(gone, 0.95):.1f} ms "
                  f"(ratio to target {gone50 / target:.2f}); -> torchrun's exit p50 {run50:.1f} ms, "
                  f"p95 {ms(times, 0.95):.1f} ms: ratio p50 / target {run50 / target:.2f}: "
                  f"{'PASS' if run50 <= target else 'FAIL'}")
        results = [exact_resume(root, args.kills, rng, workers) for workers in ((0, 2) if args.kills else ())]
        for result in results:
            print(f"exact resume after {result['kills']} random SIGKILLs, workers {result['workers']}: "
                  f"{'PASS' if result['exact'] else 'FAIL'} ({result['killed_mid_save']} kills left a half-written "
                  f"temp file; corrupt checkpoints found on resume: {result['corrupt_skipped']})")
        ok = (p50 <= target and all(r["exact"] for r in results) and (not cli or ms(cli, 0.5) <= target)
              and all(ms(t, 0.5) <= target for t, _, _ in torchrun.values()))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
