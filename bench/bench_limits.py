"""How closely each CPU mechanism of labkit.limits holds a quota, what the throttle costs, how fast a memory limit acts.

Run: python bench/bench_limits.py [--quick] [--reps 3] [--window 3] [--runs 5]

CPU: for each CPU mechanism this machine has (cgroup, throttle, cpulimit) and each requested quota
(10, 30, 50, 70, 90 % of one CPU), a single-threaded busy loop (`python -c "while True: pass"`) runs
under ``run_limited``; after 0.5 s to settle, its share of one CPU is read from the kernel's counters
(psutil cpu_times, user + system) over a WINDOW s window. Each (mechanism, quota) is measured REPS
times, each time on a fresh process, the rounds interleaved so that every mechanism meets the same
background noise; the figure is the median. Targets: cgroup within 5 points of the request at every
quota, throttle within 8; cpulimit (the tool the throttle stands in for) is reported for comparison.
In the same slot of each round a busy loop with no limit is measured too: the share the machine
gave at that moment, the ceiling any limited figure was measured under (2 CPUs, shared).

Cost: labkit's Throttle run directly on a busy loop at 30 % for 5 s: its thread's own CPU time
(``own_cpu_seconds``) over wall time, % of one core. Target < 1 %. For comparison, in the same rounds,
the CPU of the cpulimit process that labkit starts (``cpulimit -p PID -l 30 -z``: one process; labkit
hands a process tree to its throttle) on a busy loop
for as long, read from /proc/PID/task/*/schedstat (ns; its use is below psutil's 10 ms ticks).
Median of REPS rounds.

Memory: a child allocates memory at a steady 10 MiB every 10 ms (ten 1 MiB bytearrays back to back,
each zero-filled so every page is touched, then a pause to the next 10 ms tick) under a 200M limit.
It writes a CLOCK_MONOTONIC timestamp line (the clock this process reads too) to a pipe at the start
of each tick and after each 1 MiB, so its last line marks the start of the allocation that crossed
the limit. cgroup: from that line to the child's death by the OOM killer (exit 137, ``oom_killed``),
as this process's blocking wait() sees it. Where /dev/kmsg is readable and writable (root), the
kernel's own log splits that time: a marker written just before each run aligns the log's clock with
ours, then "invoked oom-killer" and "Killed process PID" are found in it. The same again with the
child's lines written to a file on disk instead of a pipe (the page cache of a job that writes logs or
checkpoints is charged to its cgroup too). Floor: SIGKILL sent by us to a process holding the same
200 MiB, to reaped. rlimit (RLIMIT_AS): from the last line to the MemoryError the child catches (it
writes a line and exits 42), and to its exit. Median of RUNS runs each, interleaved. No target.

Every process started is killed (try/finally) and, at the end, the benchmark checks that none is
left and that no labkit-limit-* cgroup of this process remains. Exits 1 on any FAIL.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Iterator

import psutil

from labkit import cgroups, limits
from labkit._throttle import Throttle
from labkit.limits import LimitSpec

BUSY = [sys.executable, "-c", "while True: pass"]
QUOTAS, QUICK_QUOTAS = (10, 30, 50, 70, 90), (30, 70)
# mechanism -> (key in limits.available(), target: max error in points, None = comparison only)
CPU_MECHANISMS = {"cgroup": ("cgroup-cpu", 5.0), "throttle": ("throttle", 8.0), "cpulimit": ("cpulimit", None)}
SETTLE_S = 0.5
NO_LIMIT = "no limit"
COST_PERCENT = 30
COST_TARGET = 1.0  # % of one core
MEMORY_LIMIT = 200 * 2**20
MEMORY_CAP = 2**30  # the child stops by itself here, should no limit stop it
PAGE = os.sysconf("SC_PAGE_SIZE")
NAN = float("nan")

# argv: CAP (bytes), then "hold" to wait to be killed at the cap (else exit 3 there).
# Lines: KIND MONOTONIC SIZE RESIDENT SHARED (pages, /proc/self/statm); B = a tick starts,
# P = 1 MiB more allocated and touched, E = MemoryError caught, C = the cap reached.
ALLOCATE = r"""
import os, sys, time
PIECE, PIECES, TICK, CAP = 1 << 20, 10, 0.010, int(sys.argv[1])
pieces = []
def line(kind):
    now = time.monotonic()
    with open("/proc/self/statm", "rb") as statm:
        size, resident, shared = statm.read().split()[:3]
    os.write(1, b"%s %.6f %s %s %s\n" % (kind, now, size, resident, shared))
start = time.monotonic()
try:
    for tick in range(CAP // (PIECE * PIECES)):
        time.sleep(max(0.0, start + tick * TICK - time.monotonic()))
        line(b"B")
        for _ in range(PIECES):
            pieces.append(bytearray(PIECE))  # its own mmap, zero-filled: every page touched
            line(b"P")
except MemoryError:
    line(b"E")
    sys.exit(42)
line(b"C")
if sys.argv[2:] == ["hold"]:
    time.sleep(60)
sys.exit(3)
"""


@contextlib.contextmanager
def limited(command: list[str], spec: LimitSpec, **popen_kwargs) -> Iterator[limits.LimitedProcess]:
    """run_limited, and whatever happens the process killed, reaped and its helpers and cgroup gone."""
    run = limits.run_limited(command, spec, **popen_kwargs)
    try:
        yield run
    finally:
        # the whole tree (its process group, its cgroup): SIGTERM then at once SIGKILL; reaps; stops the
        # throttle or cpulimit; removes the cgroup
        run.stop(grace_s=0)
        if run.popen.stdout is not None:
            run.popen.stdout.close()


def cpu_seconds(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return times.user + times.system


def cpu_share(pid: int, seconds: float) -> float:
    """Percent of one CPU process ``pid`` used over ``seconds``, from the kernel's counters."""
    proc = psutil.Process(pid)
    before, started = cpu_seconds(proc), time.monotonic()
    time.sleep(seconds)
    return (cpu_seconds(proc) - before) / (time.monotonic() - started) * 100


def precise_cpu_seconds(pid: int) -> float:
    """CPU time of every thread of ``pid`` in ns resolution (/proc/PID/task/*/schedstat), not clock ticks."""
    try:
        return sum(int(Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[0])
                   for tid in os.listdir(f"/proc/{pid}/task")) / 1e9
    except (OSError, ValueError, IndexError):
        return cpu_seconds(psutil.Process(pid))


def unlimited_share(window: float) -> float:
    """The share the machine gives a busy loop with no limit now: the ceiling any limit is measured under."""
    proc = subprocess.Popen(BUSY, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(SETTLE_S)
        return cpu_share(proc.pid, window)
    finally:
        proc.kill()
        proc.wait()


def measure_cpu(mechanisms: list[str], quotas: tuple[int, ...], reps: int, window: float) -> dict:
    """Median share per (mechanism, quota), and per ("no limit", quota): a busy loop alone in the same slot."""
    shares: dict[tuple[str, int], list[float]] = {}
    for rep in range(reps):
        for quota in quotas:
            for mechanism in [*mechanisms, NO_LIMIT]:
                if mechanism == NO_LIMIT:
                    share = unlimited_share(window)
                else:
                    with limited(BUSY, LimitSpec(cpu_quota=quota, mechanism=mechanism),
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as run:
                        time.sleep(SETTLE_S)
                        share = cpu_share(run.pid, window)
                shares.setdefault((mechanism, quota), []).append(share)
                progress(f"cpu round {rep + 1}/{reps}: {mechanism} at {quota} %: {share:.1f} %")
    return {key: statistics.median(values) for key, values in shares.items()}


def throttle_cost(seconds: float) -> tuple[float, float, float]:
    """(own CPU % of a core, the busy loop's share from the kernel, the throttle's own estimate)."""
    proc = subprocess.Popen(BUSY, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        busy = psutil.Process(proc.pid)
        busy0, started = cpu_seconds(busy), time.monotonic()
        throttle = Throttle(proc.pid, COST_PERCENT).start()
        try:
            time.sleep(seconds)
        finally:
            throttle.stop()
        wall = time.monotonic() - started
        share = (cpu_seconds(busy) - busy0) / wall * 100
        return 100 * throttle.own_cpu_seconds / wall, share, throttle.achieved_percent
    finally:
        proc.kill()
        proc.wait()


def cpulimit_cost(seconds: float) -> tuple[float, float]:
    """(CPU % of a core of the cpulimit process labkit starts, the busy loop's share)."""
    with limited(BUSY, LimitSpec(cpu_quota=COST_PERCENT, mechanism="cpulimit"),
                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as run:
        started = time.monotonic()
        helpers = [c for c in psutil.Process().children() if c.name() == "cpulimit"]
        if len(helpers) != 1:
            raise RuntimeError(f"expected one cpulimit child of this process, found {len(helpers)}")
        busy = psutil.Process(run.pid)
        busy0 = cpu_seconds(busy)
        time.sleep(seconds)
        used = precise_cpu_seconds(helpers[0].pid)  # since it started, as the throttle's own_cpu_seconds
        wall = time.monotonic() - started
        share = (cpu_seconds(busy) - busy0) / wall * 100
    return 100 * used / wall, share


class KernelLog:
    """The OOM killer's messages in the kernel log, with their times on this process's CLOCK_MONOTONIC.

    ``mark()`` before a run: it opens the log at its end and writes a marker, whose log time and our
    time (taken around the write) align the two clocks. ``oom_times(pid)`` after the run.
    """

    def __init__(self) -> None:
        self.fd: int | None = None
        self.mark_time = 0.0
        self.tag = ""

    @staticmethod
    def usable() -> str | None:
        """None if /dev/kmsg can be read and written, else why not."""
        if not os.access("/dev/kmsg", os.R_OK | os.W_OK):
            return "no read and write access to /dev/kmsg (needs root)"
        return None

    def mark(self, tag: str) -> None:
        self.close()
        self.fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
        os.lseek(self.fd, 0, os.SEEK_END)  # only records from now on
        self.tag = f"labkit bench_limits {os.getpid()} {tag}"
        before = time.monotonic()
        with open("/dev/kmsg", "w") as kmsg:
            kmsg.write(self.tag + "\n")
        self.mark_time = (before + time.monotonic()) / 2

    def records(self) -> list[tuple[float, str]]:
        found = []
        while self.fd is not None:
            try:
                raw = os.read(self.fd, 8192)
            except OSError as err:
                if err.errno == errno.EPIPE:  # a record was overwritten before we read it
                    continue
                break  # EAGAIN: nothing more
            header, _, text = raw.decode(errors="replace").partition(";")
            fields = header.split(",")
            if len(fields) >= 3:
                found.append((int(fields[2]) / 1e6, text.split("\n", 1)[0]))
        return found

    def oom_times(self, pid: int) -> tuple[float, float] | None:
        """(OOM killer invoked, SIGKILL sent) for victim ``pid``, on our clock; None if not found."""
        records = self.records()
        self.close()
        marker = next((t for t, text in records if text == self.tag), None)
        killed = next((t for t, text in records if f"Killed process {pid} (" in text), None)
        summary = next((i for i, (_, text) in enumerate(records) if f",pid={pid}," in text
                        and text.startswith("oom-kill:")), None)
        if marker is None or killed is None or summary is None:
            return None
        invoked = [t for t, text in records[:summary] if "invoked oom-killer" in text]
        if not invoked:
            return None
        offset = self.mark_time - marker
        return invoked[-1] + offset, killed + offset

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def parse_lines(data: bytes) -> list[tuple[str, float, int, int]]:
    """(kind, time, address space, anonymous resident memory) per line of ALLOCATE."""
    parsed = []
    for raw in data.decode().splitlines():
        kind, stamp, size, resident, shared = raw.split()
        parsed.append((kind, float(stamp), int(size) * PAGE, (int(resident) - int(shared)) * PAGE))
    return parsed


def memory_run(mechanism: str, to_file: bool = False, log: KernelLog | None = None) -> dict:
    """One allocation under a 200M limit; times in ms from the start of the allocation that crossed it."""
    spec = LimitSpec(memory_max=MEMORY_LIMIT, mechanism=mechanism)
    command = [sys.executable, "-c", ALLOCATE, str(MEMORY_CAP)]
    log = log if mechanism == "cgroup" else None
    if log is not None:
        log.mark(f"{mechanism} {time.monotonic_ns()}")
    chunks: list[bytes] = []
    with contextlib.ExitStack() as stack:
        sink = stack.enter_context(tempfile.TemporaryFile()) if to_file else subprocess.PIPE
        run = stack.enter_context(limited(command, spec, stdout=sink))
        if not to_file:  # read by a thread, so that this one can block in wait()
            reader = threading.Thread(target=lambda: chunks.append(run.popen.stdout.read()), daemon=True)
            reader.start()
        # a blocking wait: Popen.wait(timeout) polls, sleeping up to 50 ms between looks
        watchdog = threading.Timer(30, run.popen.kill)  # a limit that never acts ends the run too
        watchdog.start()
        try:
            run.popen.wait()
            ended = time.monotonic()
        finally:
            watchdog.cancel()
        if to_file:
            sink.seek(0)
            chunks.append(sink.read())
        else:
            reader.join(5)
    lines = parse_lines(b"".join(chunks))
    moving = [item for item in lines if item[0] in ("B", "P")]
    code, errors = run.returncode, [item for item in lines if item[0] == "E"]
    ok = (code == 137 and run.oom_killed) if mechanism == "cgroup" else (code == 42 and bool(errors))
    result: dict = {"code": code, "oom": run.oom_killed, "ok": ok}
    if not moving:
        return result
    last = moving[-1]
    pieces = [b[1] - a[1] for a, b in zip(moving, moving[1:]) if b[0] == "P"]
    first = next(t for kind, t, _, _ in moving if kind == "B")
    allocated = sum(1 for item in moving if item[0] == "P")
    result.update(to_exit_ms=(ended - last[1]) * 1000, vm_mib=last[2] / 2**20, anon_mib=last[3] / 2**20,
                  piece_ms=statistics.median(pieces) * 1000 if pieces else NAN,
                  rate_mib_s=allocated / (last[1] - first) if last[1] > first else NAN)
    if errors:
        result["to_error_ms"] = (errors[0][1] - last[1]) * 1000
    if log is not None:
        times = log.oom_times(run.pid)
        if times is not None:
            invoked, killed = times
            result.update(to_oom_ms=(invoked - last[1]) * 1000, oom_to_kill_ms=(killed - invoked) * 1000,
                          kill_to_reaped_ms=(ended - killed) * 1000)
    return result


def kill_floor() -> dict:
    """SIGKILL from us to a process holding 200 MiB (touched), to reaped: what any kill of it costs."""
    proc = subprocess.Popen([sys.executable, "-c", ALLOCATE, str(MEMORY_LIMIT), "hold"], stdout=subprocess.PIPE)
    try:
        for raw in proc.stdout:
            if raw.startswith(b"C "):
                break
        else:
            return {"ok": False}
        sent = time.monotonic()
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        return {"ok": True, "kill_to_reaped_ms": (time.monotonic() - sent) * 1000}
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()


def leftovers() -> tuple[list[str], list[str], list[psutil.Process]]:
    """(this process's labkit-limit-* cgroups, other owners' ones, processes of ours still alive)."""
    mine, others = [], []
    for folder in cgroups.own_folders(("cpu", "memory")).values():
        for path in folder.glob(f"{limits.PREFIX}*"):
            (mine if path.name.startswith(f"{limits.PREFIX}{os.getpid()}-") else others).append(str(path))
    return mine, others, psutil.Process().children(recursive=True)


def cpulimit_version() -> str:
    try:
        usage = subprocess.run(["cpulimit", "--help"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return "no cpulimit"
    first = (usage.stdout + usage.stderr).strip().splitlines()
    return first[0] if first else "cpulimit"


def filesystem(path: str) -> str:
    best = max((p for p in psutil.disk_partitions(all=True) if (path + "/").startswith(p.mountpoint.rstrip("/") + "/")),
               key=lambda p: len(p.mountpoint), default=None)
    return best.fstype if best else "?"


def progress(text: str) -> None:
    print(f"  .. {text}", file=sys.stderr, flush=True)


def median_of(runs: list[dict], key: str) -> float:
    values = [r[key] for r in runs if key in r]
    return statistics.median(values) if values else NAN


def listed(runs: list[dict], key: str, digits: int) -> str:
    return ", ".join(f"{r[key]:.{digits}f}" if key in r else "-" for r in runs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="quotas 30 and 70, 1 repetition, 2 s cost runs, 2 memory runs (~40 s)")
    parser.add_argument("--reps", type=int, default=None, help="rounds of CPU windows and cost runs; default 3")
    parser.add_argument("--window", type=float, default=3.0, help="seconds of each CPU window")
    parser.add_argument("--runs", type=int, default=None, help="memory runs per case; default 5")
    args = parser.parse_args()
    quotas = QUICK_QUOTAS if args.quick else QUOTAS
    reps = args.reps or (1 if args.quick else 3)
    runs = args.runs or (2 if args.quick else 5)
    cost_s = 2.0 if args.quick else 5.0
    began = time.monotonic()
    can = limits.available()
    verdicts: list[bool] = []

    def verdict(ok: bool) -> str:
        verdicts.append(ok)
        return "PASS" if ok else "FAIL"

    print(f"machine: {platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
          f"psutil {psutil.__version__}, cgroups {limits.cgroup_version()}, {cpulimit_version()}; "
          f"load average {os.getloadavg()[0]:.2f} at the start, {len(psutil.pids())} processes")
    mechanisms = []
    for mechanism, (key, _) in CPU_MECHANISMS.items():
        if can.get(key) is None:
            mechanisms.append(mechanism)
        else:
            print(f"skipped CPU quotas under {mechanism}: {can.get(key, 'not known to limits.available()')}")
    try:
        shares = measure_cpu(mechanisms, quotas, reps, args.window) if mechanisms else {}

        own: list[tuple[float, float, float]] = []
        other: list[tuple[float, float]] = []
        for rep in range(reps):
            if can.get("throttle") is None:
                own.append(throttle_cost(cost_s))
            if can.get("cpulimit") is None:
                other.append(cpulimit_cost(cost_s))
            progress(f"cost round {rep + 1}/{reps}")

        cases = []  # (name, mechanism, to_file)
        for mechanism, key in (("cgroup", "cgroup-memory"), ("rlimit", "rlimit")):
            if can.get(key) is not None:
                print(f"skipped memory under {mechanism}: {can.get(key)}")
            else:
                cases.append((mechanism, mechanism, False))
        if ("cgroup", "cgroup", False) in cases:
            cases.insert(1, ("cgroup, lines to a file", "cgroup", True))
            cases.append(("floor: SIGKILL from us", "floor", False))
        log = KernelLog() if KernelLog.usable() is None else None
        if log is None and any(c[1] == "cgroup" for c in cases):
            print(f"no OOM breakdown from the kernel log: {KernelLog.usable()}")
        memory: dict[str, list[dict]] = {}
        for run_number in range(runs):
            for name, mechanism, to_file in cases:
                result = kill_floor() if mechanism == "floor" else memory_run(mechanism, to_file, log)
                memory.setdefault(name, []).append(result)
                progress(f"memory run {run_number + 1}/{runs}: {name}: "
                         f"{result.get('to_exit_ms', result.get('kill_to_reaped_ms', NAN)):.1f} ms")
    finally:
        for proc in psutil.Process().children(recursive=True):  # never leave one, even after an error
            with contextlib.suppress(psutil.Error):
                proc.kill()

    # -- the figures ---------------------------------------------------------------------------
    if mechanisms:
        print(f"\nCPU share of one core for a busy loop, median of {reps} window(s) of {args.window:g} s "
              f"after {SETTLE_S:g} s to settle (error in points):")
        print("  quota " + "".join(f"{m:>18}" for m in mechanisms) + f"{NO_LIMIT:>12}")
        for quota in quotas:
            cells = "".join(f"{shares[m, quota]:>10.1f} ({shares[m, quota] - quota:+5.1f})" for m in mechanisms)
            print(f"  {quota:>3} % {cells}{shares[NO_LIMIT, quota]:>12.1f}")
        print(f"  ({NO_LIMIT}: a busy loop alone in the same slot of each round, the share the machine gave)")
        for mechanism in mechanisms:
            worst = max(abs(shares[mechanism, q] - q) for q in quotas)
            target = CPU_MECHANISMS[mechanism][1]
            if target is None:
                print(f"{mechanism}: worst error {worst:.1f} points (comparison, no target)")
            else:
                print(f"{mechanism}: worst error {worst:.1f} points (target within {target:g} at every quota): "
                      f"{verdict(worst <= target)}")
    if own:
        cost = statistics.median(o[0] for o in own)
        print(f"throttle's own CPU at {COST_PERCENT} %, median of {len(own)} runs of {cost_s:g} s: {cost:.2f} % "
              f"of a core (runs: {', '.join(f'{o[0]:.2f}' for o in own)}; busy loop held at "
              f"{statistics.median(o[1] for o in own):.1f} %, the throttle's estimate "
              f"{statistics.median(o[2] for o in own):.1f} %) (target < {COST_TARGET:g} %): "
              f"{verdict(cost < COST_TARGET)}")
    if other:
        used = statistics.median(o[0] for o in other)
        ratio = f"; cpulimit / throttle = {used / cost:.2f}x" if own and cost > 0 else ""
        print(f"cpulimit process's CPU at {COST_PERCENT} %, same runs: {used:.2f} % of a core "
              f"(runs: {', '.join(f'{o[0]:.2f}' for o in other)}; busy loop held at "
              f"{statistics.median(o[1] for o in other):.1f} %){ratio} (comparison, no target)")
    for name, results in memory.items():
        expected = sum(r["ok"] for r in results)
        if name.startswith("floor"):
            print(f"{name} to a process holding 200 MiB -> reaped: median "
                  f"{median_of(results, 'kill_to_reaped_ms'):.1f} ms (runs: {listed(results, 'kill_to_reaped_ms', 1)})")
            continue
        where = f"lines to a file in {tempfile.gettempdir()} ({filesystem(tempfile.gettempdir())})" if "file" in name \
            else "lines to a pipe"
        print(f"memory under a 200M {name.split(',')[0]} limit, {where}: {len(results)} runs at "
              f"{median_of(results, 'rate_mib_s'):.0f} MiB/s (1 MiB every {median_of(results, 'piece_ms'):.2f} ms):")
        if name == "rlimit":
            print(f"  start of the allocation that crossed -> MemoryError caught: median "
                  f"{median_of(results, 'to_error_ms'):.2f} ms (runs: {listed(results, 'to_error_ms', 2)})")
        print(f"  start of the allocation that crossed -> process gone (reaped): median "
              f"{median_of(results, 'to_exit_ms'):.1f} ms (runs: {listed(results, 'to_exit_ms', 1)})")
        if any("to_oom_ms" in r for r in results):
            print(f"  of which, from the kernel log: -> OOM killer invoked {median_of(results, 'to_oom_ms'):.1f} ms "
                  f"(runs: {listed(results, 'to_oom_ms', 1)}), invoked -> SIGKILL "
                  f"{median_of(results, 'oom_to_kill_ms'):.2f} ms, SIGKILL -> reaped "
                  f"{median_of(results, 'kill_to_reaped_ms'):.1f} ms")
        print(f"  reached before the limit acted: anonymous memory {median_of(results, 'anon_mib'):.0f} MiB, "
              f"address space {median_of(results, 'vm_mib'):.0f} MiB")
        what = "OOM-killed: exit 137, oom_killed" if name.startswith("cgroup") else "MemoryError, exit 42"
        print(f"  ended as expected ({what}): {expected}/{len(results)}: {verdict(expected == len(results))}")

    deadline = time.monotonic() + 3  # a cgroup folder goes once its last member is reaped
    mine, others, alive = leftovers()
    while (mine or alive) and time.monotonic() < deadline:
        time.sleep(0.05)
        mine, others, alive = leftovers()
    print(f"left behind: {len(alive)} processes of ours, {len(mine)} labkit-limit-* cgroups of ours"
          + (f" ({', '.join(mine)})" if mine else "")
          + (f"; {len(others)} of other owners ({', '.join(others)})" if others else "")
          + f": {verdict(not mine and not alive)}")
    for proc in alive:  # never leave them, even after a FAIL
        with contextlib.suppress(psutil.Error):
            proc.kill()
    print(f"took {time.monotonic() - began:.0f} s")
    print("ALL PASS" if all(verdicts) else "SOME TARGETS FAILED")
    return 0 if all(verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())
