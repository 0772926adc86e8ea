"""How long labkit's own stop path adds to a process's exit: ``Job.stop`` against the floor.

Run: python bench/bench_job_stop.py [--stops 20] [--exit-after-ms 50]

A detached job (``labkit.jobs.start``, a waiter as its parent, its own process group) runs a
Python program that, on SIGTERM, sleeps ``--exit-after-ms`` and exits 0, as a trainer finishing
its micro-batch would. ``Job.stop`` sends SIGTERM and returns once the group is empty; the time
from the call to the return is what an operator waits for. Side by side, in the same run, the
floor: the same program as a direct child, SIGTERM, then ``waitpid`` (the kernel tells the parent
at once: no polling). The difference is what labkit's detection costs (polling intervals, reading
the process table, the waiter's exit record). Also timed: a job that ignores SIGTERM, stopped with
a 0.2 s grace, so SIGKILL follows: grace + the same detection cost.

Target: ``Job.stop`` p50 <= floor p50 + 25 ms, for both the clean and the escalated stop.
Medians, because the machines are shared and noisy. Run it against an older tree by putting that
tree first on PYTHONPATH to compare the detection cost before and after a change.
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_MS = 25.0
PROGRAM = """
import signal, sys, time
def stop(signum, frame):
    time.sleep({delay})
    sys.exit(0)
signal.signal(signal.SIGTERM, {handler})
print("ready", flush=True)
while True:
    time.sleep(1)
"""


def program(delay_s: float, ignore: bool) -> list[str]:
    handler = "signal.SIG_IGN" if ignore else "stop"
    return [sys.executable, "-c", PROGRAM.format(delay=delay_s, handler=handler)]


def wait_ready(log: Path, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not (log.exists() and "ready" in log.read_text(errors="replace")):
        if time.monotonic() > deadline:
            raise RuntimeError(f"the program did not start (log {log})")
        time.sleep(0.005)


def floor_ms(delay_s: float, stops: int) -> list[float]:
    times = []
    for _ in range(stops):
        proc = subprocess.Popen(program(delay_s, False), stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
            started = time.perf_counter()
            proc.send_signal(signal.SIGTERM)
            proc.wait()
            times.append((time.perf_counter() - started) * 1000)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return times


def job_stop_ms(home: Path, delay_s: float, stops: int, ignore: bool, grace_s: float) -> list[float]:
    from labkit import jobs

    times = []
    for trial in range(stops):
        name = f"bench-{'ignore' if ignore else 'clean'}-{trial}"
        job = jobs.start(name, program(delay_s, ignore), home=home)
        try:
            wait_ready(job.log_path)
            started = time.perf_counter()
            result = job.stop(grace_s)  # positional: older trees spell it timeout_s
            times.append((time.perf_counter() - started) * 1000)
            if result.escalated != ignore:
                raise RuntimeError(f"{name}: escalated={result.escalated}, expected {ignore}")
        finally:
            if job.members():
                job.stop(0.1)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stops", type=int, default=20)
    parser.add_argument("--exit-after-ms", type=float, default=50.0)
    args = parser.parse_args()
    delay_s, grace_s = args.exit_after_ms / 1000, 0.2
    import labkit

    with tempfile.TemporaryDirectory(prefix="labkit-bench-stop-") as tmp:
        home = Path(tmp)
        os.environ["LABKIT_HOME"] = str(home)
        floor = statistics.median(floor_ms(delay_s, args.stops))
        clean = statistics.median(job_stop_ms(home, delay_s, args.stops, False, grace_s))
        escalated = statistics.median(job_stop_ms(home, delay_s, max(3, args.stops // 2), True, grace_s))
    print(f"machine: {platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    print(f"labkit from {Path(labkit.__file__).parent}")
    print(f"floor (direct child: SIGTERM, {args.exit_after_ms:g} ms handler, waitpid): p50 {floor:.1f} ms")
    print(f"Job.stop, clean exit: p50 {clean:.1f} ms (detection cost {clean - floor:+.1f} ms)")
    print(f"Job.stop, SIGTERM ignored, grace {grace_s * 1000:.0f} ms then SIGKILL: p50 {escalated:.1f} ms "
          f"(detection cost {escalated - grace_s * 1000:+.1f} ms over the grace)")
    ok_clean, ok_escalated = clean - floor <= TARGET_MS, escalated - grace_s * 1000 <= TARGET_MS
    print(f"target clean stop <= floor + {TARGET_MS:g} ms: {'PASS' if ok_clean else 'FAIL'}")
    print(f"target escalated stop <= grace + {TARGET_MS:g} ms: {'PASS' if ok_escalated else 'FAIL'}")
    return 0 if ok_clean and ok_escalated else 1


if __name__ == "__main__":
    sys.exit(main())
