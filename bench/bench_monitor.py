"""Cost and accuracy of labkit.monitor's TreeSampler, against polling `ps` in the same run.

Run: python bench/bench_monitor.py [--seconds 2] [--rounds 3]

Cost: sample a 5-process tree (sh + 4 sleeping children) at 10 Hz and 50 Hz and count this
process's CPU time over wall time. Side by side, in the same rounds and with the same pacing
loop, poll `ps -o pid,ppid,pcpu,rss,nlwp,stat -p ROOT --ppid ROOT` at the same rates and count
its CPU as RUSAGE_CHILDREN (the ps processes) plus RUSAGE_SELF (fork, exec, reading the output).
For comparison, the sampler's portable psutil-only path is measured too (no target).
Each figure is the median over ROUNDS rounds.
Tick: how long one sample() takes (p99 over every tick of the sampler's cost rounds).
Accuracy: trees of two processes using half of a known share of a core each (25, 50, 100 %
in all, held in CPU time actually used); the median tree CPU over 2 s at 0.2 s ticks.

Targets: sampler < 1 % of a core at 10 Hz; >= 10x cheaper than ps at each rate; tick p99 < 5 ms;
every accuracy case within 10 points. Prints PASS/FAIL per target and exits 1 on any FAIL.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import signal
import statistics
import subprocess
import sys
import time
from typing import Callable

import psutil

from labkit import monitor

TREE = "sleep 600 & sleep 600 & sleep 600 & sleep 600 & wait"
# Use the share of a core given last on the command line, measured in CPU time actually used.
BURN = """
import sys, time
duty = float(sys.argv[-1])
start, used0 = time.monotonic(), time.process_time()
while True:
    owed = duty * (time.monotonic() - start) - (time.process_time() - used0)
    if owed > 0:  # spin off what is owed, 5 ms at a time
        stop = time.monotonic() + min(owed, 0.005)
        while time.monotonic() < stop:
            pass
    else:  # ahead: sleep until the share catches up
        time.sleep(-owed / duty if duty else 0.1)
"""
# Start a child running BURN (argv: BURN, DUTY), then run BURN here too.
PARENT = "import subprocess, sys; subprocess.Popen([sys.executable, '-c', *sys.argv[1:]]); exec(sys.argv[1])"
RATES_HZ = (10, 50)
DUTIES = (0.25, 0.5, 1.0)
# "sampler": labkit's default reader; "psutil": its portable path (psutil oneshot + psutil's process
# scan), shown for comparison; "ps": one `ps` run per tick.
METHODS = ("sampler", "psutil", "ps")
PROCFS = monitor._PROCFS


def start_group(command: list[str]) -> subprocess.Popen:
    return subprocess.Popen(command, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the whole session: children too
    except ProcessLookupError:
        pass
    proc.wait()


def wait_for_children(pid: int, count: int, timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while len(psutil.Process(pid).children(recursive=True)) < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"pid {pid} did not start {count} children")
        time.sleep(0.02)


def paced(rate_hz: float, seconds: float, tick: Callable[[], object]) -> tuple[float, list[float]]:
    """Call ``tick`` at ``rate_hz`` for ``seconds``; return (CPU of self + reaped children / wall, tick times)."""
    interval, durations = 1.0 / rate_hz, []
    self0, kids0 = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.monotonic()
    n = 0
    while True:
        n = max(n + 1, int((time.monotonic() - start) / interval) + 1)  # the same grid as monitor()
        due = start + n * interval
        if due > start + seconds:
            break
        time.sleep(max(0.0, due - time.monotonic()))
        began = time.perf_counter()
        tick()
        durations.append(time.perf_counter() - began)
    wall = time.monotonic() - start
    self1, kids1 = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    used = sum(getattr(after, f) - getattr(before, f) for before, after in ((self0, self1), (kids0, kids1))
               for f in ("ru_utime", "ru_stime"))
    return used / wall, durations


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def measure_cost(seconds: float, rounds: int) -> tuple[dict[tuple[str, int], float], list[float]]:
    """Median CPU share of each way of polling the tree, per rate, and the sampler's tick times."""
    tree = start_group(["sh", "-c", TREE])
    ps = ["ps", "-o", "pid,ppid,pcpu,rss,nlwp,stat", "-p", str(tree.pid), "--ppid", str(tree.pid)]
    costs: dict[tuple[str, int], list[float]] = {}
    ticks: list[float] = []
    try:
        wait_for_children(tree.pid, 4)
        for _ in range(rounds):  # interleaved, so every method meets the same background noise
            for hz in RATES_HZ:
                for method in METHODS:
                    if method == "ps":
                        cost, _ = paced(hz, seconds, lambda: subprocess.run(ps, stdout=subprocess.PIPE, check=True))
                    else:
                        monitor._PROCFS = PROCFS and method == "sampler"
                        with monitor.TreeSampler(tree.pid) as sampler:
                            assert sampler.sample().num_children == 4
                            cost, durations = paced(hz, seconds, sampler.sample)
                        monitor._PROCFS = PROCFS
                        ticks += durations if method == "sampler" else []
                    costs.setdefault((method, hz), []).append(cost)
        return {key: statistics.median(values) for key, values in costs.items()}, ticks
    finally:
        monitor._PROCFS = PROCFS
        stop_group(tree)


def measure_accuracy(duty: float) -> tuple[float, float]:
    """Median tree CPU % of a parent and a child using duty/2 of a core each, and the kernel's figure."""
    tree = start_group([sys.executable, "-c", PARENT, BURN, str(duty / 2)])
    try:
        wait_for_children(tree.pid, 1)
        time.sleep(0.3)  # past the child's interpreter start-up
        procs = [psutil.Process(tree.pid), *psutil.Process(tree.pid).children()]
        used0, wall0 = sum(sum(p.cpu_times()[:2]) for p in procs), time.monotonic()
        readings = []
        with monitor.TreeSampler(tree.pid) as sampler:
            for _ in range(10):
                time.sleep(0.2)
                readings.append(sampler.sample().cpu_percent)
        kernel = 100 * (sum(sum(p.cpu_times()[:2]) for p in procs) - used0) / (time.monotonic() - wall0)
        return statistics.median(readings), kernel
    finally:
        stop_group(tree)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="length of each cost measurement")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(f"machine: {platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
          f"psutil {psutil.__version__}; sampler reads {'open /proc files' if PROCFS else 'through psutil'}")
    cost, ticks = measure_cost(args.seconds, args.rounds)
    verdicts = []

    def verdict(ok: bool) -> str:
        verdicts.append(ok)
        return "PASS" if ok else "FAIL"

    print(f"CPU of polling a 5-process tree, % of a core, median of {args.rounds} rounds of {args.seconds:g} s:")
    for hz in RATES_HZ:
        ratio = cost["ps", hz] / cost["sampler", hz]
        print(f"  {hz:2d} Hz: sampler {100 * cost['sampler', hz]:.2f}, ps {100 * cost['ps', hz]:.1f} "
              f"(psutil-only path {100 * cost['psutil', hz]:.2f}); ps / sampler = {ratio:.1f}x "
              f"(target >= 10x): {verdict(ratio >= 10)}")
    print(f"sampler at 10 Hz: {100 * cost['sampler', 10]:.2f} % of a core (target < 1 %): "
          f"{verdict(cost['sampler', 10] < 0.01)}")
    p50, p99 = percentile(ticks, 0.5) * 1000, percentile(ticks, 0.99) * 1000
    print(f"sampler tick over {len(ticks)} ticks: p50 {p50:.2f} ms, p99 {p99:.2f} ms (target p99 < 5 ms): "
          f"{verdict(p99 < 5)}")
    for duty in DUTIES:
        read, kernel = measure_accuracy(duty)
        print(f"accuracy: parent + child using {100 * duty:.0f} % of a core in all: read {read:.1f} % "
              f"(kernel: {kernel:.1f} %; target within 10 points of {100 * duty:.0f}): "
              f"{verdict(abs(read - 100 * duty) <= 10)}")
    print("ALL PASS" if all(verdicts) else "SOME TARGETS FAILED")
    return 0 if all(verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())
