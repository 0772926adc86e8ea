"""GPU memory around a stop, measured where an NVIDIA GPU exists (lesson 06 section 9 and its myth).

Run: python bench/bench_gpu.py [--rounds 5] [--mib 512] [--json OUT]

Without NVML (no GPU, or nvidia-ml-py missing) it says why and exits 0: there is nothing to measure.

Part 1, release: the trainer holds ``--gpu-mb`` MiB through the CUDA driver API; it gets SIGTERM or
SIGKILL; the time from its exit (waitpid returned) until the device's used memory is back to what
it was before the trainer started. The claim under test: the driver frees a process's memory
however it exits (cuda-c-programming-guide: a context is destroyed with its process).

Part 2, the holder: a parent allocates through the CUDA driver, then forks a child that only
sleeps (what a DataLoader worker forked after CUDA was initialised is); the parent is SIGKILLed.
Does the device's used memory come back while the child lives, and does NVML or /proc name the
child as holding the device open? Then the child is killed, and the used memory read again.

Part 3, the torch trainer: SIGTERM -> exit p50 with a CUDA ballast (torch.cuda) against the same
run without it, side by side: what CUDA's own teardown adds to a stop.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from labkit import gpu

ENV = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def used_bytes() -> int:
    """Bytes in use on GPU 0, as NVML reports them (nvmlDeviceGetMemoryInfo)."""
    import pynvml

    return int(pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(0)).used)


def nvml_pids() -> list[int]:
    """The pids NVML lists as compute processes on GPU 0 (in a container, maybe the host's pids)."""
    import pynvml

    handle = pynvml.nvmlDeviceGetHandleByIndex(0)
    return sorted(proc.pid for proc in pynvml.nvmlDeviceGetComputeRunningProcesses(handle))


def holders_by_proc() -> list[int]:
    """Pids with /dev/nvidia* open, read from /proc/PID/fd (what ``fuser -v /dev/nvidia*`` reports)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fds = os.listdir(f"/proc/{entry}/fd")
            if any(os.readlink(f"/proc/{entry}/fd/{fd}").startswith("/dev/nvidia") for fd in fds):
                found.append(int(entry))
        except OSError:
            continue
    return sorted(found)


def wait_used(target_bytes: int, above: bool, timeout_s: float) -> float | None:
    """Seconds until used memory is >= (above) or <= target; None on timeout."""
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        used = used_bytes()
        if (used >= target_bytes) if above else (used <= target_bytes):
            return time.monotonic() - start
        time.sleep(0.005)
    return None


def part_release(rounds: int, mib: int) -> dict:
    results: dict = {}
    for sig in (signal.SIGTERM, signal.SIGKILL):
        times, leftovers = [], []
        for _ in range(rounds):
            baseline = used_bytes()
            with tempfile.TemporaryDirectory() as tmp:
                proc = subprocess.Popen([sys.executable, "-m", "labkit.trainer", "--run-dir", tmp, "--epochs", "1000",
                                         "--step-time", "0.01", "--gpu-mb", str(mib)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
                if wait_used(baseline + (mib << 20), True, 60) is None:
                    proc.kill()
                    proc.wait()
                    raise SystemExit(f"the trainer never held {mib} MiB: {(Path(tmp) / 'train.log').read_text()[-400:]}")
                time.sleep(0.2)
                proc.send_signal(sig)
                proc.wait(60)
                back = wait_used(baseline + (16 << 20), False, 30)
                times.append(back if back is not None else float("nan"))
                leftovers.append((used_bytes() - baseline) >> 20)
        results[sig.name] = {"release_after_exit_ms_p50": round(statistics.median(times) * 1000, 2),
                             "release_after_exit_ms_max": round(max(times) * 1000, 2),
                             "left_in_use_mib": leftovers}
    return results


_HOLDER = r"""
import os, signal, sys, time
from labkit.gpu import GpuMemory
held = GpuMemory(int(sys.argv[1]))
child = os.fork()
if child == 0:
    time.sleep(120)   # a worker forked after CUDA was initialised: it never touches CUDA itself
    os._exit(0)
print(child, flush=True)
time.sleep(120)
"""


def part_holder(mib: int) -> dict:
    baseline = used_bytes()
    parent = subprocess.Popen([sys.executable, "-c", _HOLDER, str(mib)], stdout=subprocess.PIPE, text=True, env=ENV)
    child = int(parent.stdout.readline())
    held_s = wait_used(baseline + (mib << 20), True, 60)
    during = {"used_mib": (used_bytes() - baseline) >> 20, "nvml_pids": nvml_pids(),
              "proc_fd_holders": holders_by_proc(), "parent": parent.pid, "child": child}
    parent.send_signal(signal.SIGKILL)
    parent.wait(30)
    back = wait_used(baseline + (16 << 20), False, 5)
    after_parent = {"used_mib": (used_bytes() - baseline) >> 20, "released_within_5s": back is not None,
                    "nvml_pids": nvml_pids(), "proc_fd_holders": holders_by_proc(),
                    "child_alive": os.path.exists(f"/proc/{child}")}
    try:
        os.kill(child, signal.SIGKILL)
    except ProcessLookupError:
        pass
    gone = wait_used(baseline + (16 << 20), False, 10)
    after_child = {"used_mib": (used_bytes() - baseline) >> 20,
                   "released_ms": None if gone is None else round(gone * 1000, 1)}
    return {"held_after_s": held_s, "during": during, "after_parent_sigkill": after_parent,
            "after_child_sigkill": after_child}


def part_torch(rounds: int, mib: int) -> dict:
    try:
        import torch
    except ImportError:
        return {"skipped": "torch is not installed"}
    if not torch.cuda.is_available():
        return {"skipped": "torch sees no CUDA device"}
    found: dict = {"torch": torch.__version__}
    for label, extra in (("cpu_only", []), ("cuda_ballast", ["--gpu-mb", str(mib)])):
        times = []
        for _ in range(rounds):
            with tempfile.TemporaryDirectory() as tmp:
                proc = subprocess.Popen([sys.executable, "-m", "labkit.trainer", "--framework", "torch",
                                         "--run-dir", tmp, "--epochs", "1000", "--step-time", "0.01", *extra],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
                metrics = Path(tmp) / "metrics.jsonl"
                deadline = time.monotonic() + 120
                while time.monotonic() < deadline and (not metrics.exists() or metrics.read_text().count("\n") < 5):
                    time.sleep(0.02)
                start = time.monotonic()
                proc.send_signal(signal.SIGTERM)
                code = proc.wait(60)
                times.append(time.monotonic() - start)
                if code != 0:
                    found.setdefault("bad_exits", []).append((label, code))
        found[label] = {"sigterm_to_exit_ms_p50": round(statistics.median(times) * 1000, 1),
                        "max_ms": round(max(times) * 1000, 1)}
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--mib", type=int, default=512)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    why = gpu.nvml_unavailable()
    if why:
        print(f"bench_gpu: nothing to measure: {why}")
        return 0
    import pynvml

    handle = pynvml.nvmlDeviceGetHandleByIndex(0)
    report = {"gpu": str(pynvml.nvmlDeviceGetName(handle)), "driver": str(pynvml.nvmlSystemGetDriverVersion()),
              "release": part_release(args.rounds, args.mib), "holder": part_holder(args.mib),
              "torch": part_torch(args.rounds, args.mib)}
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
