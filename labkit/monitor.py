"""Watch a process tree over time: CPU, memory, threads, children, state and I/O.

A :class:`TreeSampler` reads a process and its descendants; :func:`monitor` samples one
every ``interval_s`` into a list of :class:`Sample`; :func:`write_csv` / :func:`read_csv`
store them (the columns of ``labkit monitor --csv``); :mod:`labkit.liveplot` draws them
next to a trainer's loss. CPU is the whole tree's, 100 = one core busy.

>>> samples = monitor(4242, interval_s=0.5, duration_s=10)   # doctest: +SKIP
>>> liveplot.plot(samples, "run.png", run_dir="runs/demo")   # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, NamedTuple, Sequence

import psutil

from labkit._atomic import write_atomic
from labkit._linux import proc as _proc, tree as _tree
from labkit.errors import BadArgument, LabkitError, PermissionDenied

COLUMNS = ("t", "pid", "cpu_percent", "rss_bytes", "num_threads", "num_children", "status",
           "read_bytes", "write_bytes")
ENDED = ("gone", "zombie", "dead")  # statuses after which a process does no more work
_MIB = 2**20


@dataclass(frozen=True)
class Sample:
    """One reading of a process tree; its fields are the CSV columns."""

    t: float  # wall clock (time.time()), the same clock as metrics.jsonl's "time"
    pid: int
    cpu_percent: float
    rss_bytes: int
    num_threads: int
    num_children: int
    status: str
    read_bytes: int | None = None  # None: the kernel would not say (another user's process, macOS)
    write_bytes: int | None = None

    @property
    def ended(self) -> bool:
        """True once the root process has exited (zombie or gone)."""
        return self.status in ENDED

    def as_row(self) -> dict[str, object]:
        """The sample as ``{column: value}`` in CSV column order."""
        return {name: getattr(self, name) for name in COLUMNS}


class _Reading(NamedTuple):
    cpu_s: float
    rss: int
    threads: int
    status: str
    io: tuple[int, int] | None


class TreeSampler:
    """Sample a process and (by default) all its descendants as one tree.

    The first ``sample()`` covers the time since construction, later ones the time since
    the previous call. What each process needs is kept between ticks: on Linux its /proc
    files, left open; elsewhere its ``psutil.Process``. ``close()`` (or ``with``) frees them.

    >>> with TreeSampler(os.getpid()) as sampler:
    ...     sampler.sample().pid == os.getpid()
    True
    """

    def __init__(self, pid: int, include_children: bool = True) -> None:
        self.root = psutil.Process(pid)  # NoSuchProcess reaches the caller: nothing to watch
        self.pid = self.root.pid
        self.include_children = include_children
        self.ended = False
        self._members: dict[object, _ProcFiles | _PsutilProcess] = {}
        self._cpu_s: dict[object, float] = {}
        self._last: Sample | None = None
        try:
            self._cpu_s = {key: r.cpu_s for key, r in self._read_tree()[0].items()}
        except psutil.NoSuchProcess:
            pass  # exited already: the first sample() reports it
        self._wall = time.monotonic()

    def sample(self) -> Sample | None:
        """Read the tree now; once the root has ended, return that state once, then None."""
        if self.ended:
            return None
        now, wall = time.time(), time.monotonic()
        try:
            readings, children = self._read_tree()
        except psutil.NoSuchProcess as err:  # a gone process holds no CPU, memory or threads
            self.close()
            last = self._last
            status = "zombie" if isinstance(err, psutil.ZombieProcess) else "gone"
            return Sample(round(now, 3), self.pid, 0.0, 0, 0, 0, status,
                          last.read_bytes if last else None, last.write_bytes if last else None)
        # CPU is the growth of each process's own user+system time since the last tick. A new
        # process has no baseline yet, so it counts from its second sample; a dead one's time
        # is dropped with it (its parent's "children" times are not added: they would double-count).
        busy_s = sum(max(0.0, r.cpu_s - self._cpu_s[key]) for key, r in readings.items() if key in self._cpu_s)
        elapsed = wall - self._wall
        root = readings[self._root_key]
        read_bytes = write_bytes = None
        if root.io is not None:  # a child we may not read is left out rather than hiding the tree's I/O
            read_bytes, write_bytes = (sum(r.io[i] for r in readings.values() if r.io is not None) for i in (0, 1))
        sample = Sample(round(now, 3), self.pid, round(100.0 * busy_s / elapsed, 1) if elapsed > 0 else 0.0,
                        sum(r.rss for r in readings.values()), sum(r.threads for r in readings.values()),
                        children, root.status, read_bytes, write_bytes)
        self._cpu_s = {key: r.cpu_s for key, r in readings.items()}
        self._wall, self._last = wall, sample
        if sample.ended:
            self.close()
        return sample

    def close(self) -> None:
        """Stop sampling and free what is kept per process (open /proc files)."""
        self.ended = True
        for member in self._members.values():
            member.close()
        self._members = {}

    def __enter__(self) -> TreeSampler:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_members", None):
            self.close()

    @property
    def _root_key(self) -> object:
        return self.pid if _PROCFS else _key(self.root)

    def _read_tree(self) -> tuple[dict[object, _Reading], int]:
        """Read the root (its errors propagate), then each descendant still alive; count them."""
        old = self._members
        members: dict[object, _ProcFiles | _PsutilProcess] = {}
        readings: dict[object, _Reading] = {}
        todo: list[int | psutil.Process] = [self.pid if _PROCFS else self.root]
        try:
            while todo:
                handle = todo.pop()
                key = _key(handle)
                known = old.get(key)
                try:
                    member = known or (_ProcFiles(handle) if isinstance(handle, int) else _PsutilProcess(handle))
                    reading: _Reading | None = member.read()
                except psutil.NoSuchProcess:
                    if key == self._root_key:
                        raise
                    continue  # exited between the listing and the reading
                except psutil.AccessDenied:
                    if key == self._root_key:
                        raise
                    reading = None  # counted, but its numbers are not ours to read
                members[key] = member
                if reading is not None:
                    readings[key] = reading
                if not self.include_children:
                    break
                if isinstance(member, _ProcFiles):
                    todo += member.child_pids(reading.threads if reading else 0)
                elif not isinstance(handle, int) and handle is self.root:  # portable, but psutil reads
                    todo += handle.children(recursive=True)  # every process on the machine
        finally:
            for key, member in old.items():
                if members.get(key) is not member:
                    member.close()  # it left the tree
            self._members = members
        return readings, len(members) - 1


def _key(handle: int | psutil.Process) -> object:
    # pid + start time names one process: a pid alone can be recycled. An open /proc file
    # needs no such check: it stays bound to its process (reads fail once it is gone).
    if isinstance(handle, int):
        return handle
    try:
        return handle.pid, handle.create_time()
    except psutil.Error:
        return handle.pid, 0.0


class _PsutilProcess:
    """One process read through psutil (any OS psutil supports)."""

    def __init__(self, proc: psutil.Process) -> None:
        self.proc = proc

    def read(self) -> _Reading:
        proc = self.proc
        with proc.oneshot():  # the stat and status files are read once for all the values below
            times = proc.cpu_times()
            rss, threads, status = proc.memory_info().rss, proc.num_threads(), proc.status()
            try:
                counters = proc.io_counters()
                io_bytes = (counters.read_bytes, counters.write_bytes)
            except (psutil.Error, AttributeError, NotImplementedError, OSError):
                io_bytes = None  # /proc/PID/io needs ptrace rights; macOS has no io_counters at all
        return _Reading(times.user + times.system, rss, threads, status, io_bytes)

    def close(self) -> None:
        pass


class _ProcFiles:
    """One process read through its /proc files, opened once and re-read with pread (Linux).

    psutil opens, reads and closes four files per process on every call; one pread per kept
    file costs about a third of that (bench/bench_monitor.py).
    """

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._fds: list[int] = []
        try:  # /proc/PID/io opens for anyone; reading it needs ptrace rights (checked per read)
            self._stat, self._statm, self._children, self._io = (
                self._open(name) for name in ("stat", "statm", f"task/{pid}/children", "io"))
        except OSError:
            self.close()
            raise psutil.NoSuchProcess(pid) from None

    def _open(self, name: str) -> int:
        self._fds.append(_proc.open_file(self.pid, name))
        return self._fds[-1]

    def read(self) -> _Reading:
        try:  # statm, not stat's rss field: the figure ps, top and psutil show (stat's is approximate)
            fields, resident, io_bytes = _pread_usage(self._stat, self._statm, self._io)
        except OSError:  # ESRCH: the process is gone (and reaped)
            raise psutil.NoSuchProcess(self.pid) from None
        # Fields after "(name)": state, utime, stime (clock ticks), num_threads; see proc(5).
        state = fields[_STATE].decode()
        return _Reading((int(fields[_UTIME]) + int(fields[_STIME])) / _CLOCK_TICKS, resident * _PAGE_SIZE,
                        int(fields[_NUM_THREADS]), _STATES.get(state, state), io_bytes)

    def child_pids(self, threads: int) -> list[int]:
        """Pids of the children of every thread (a single-threaded process: just the main one)."""
        try:
            kids = _pread_all(self._children).split()
            tids = () if threads == 1 else [t for t in _proc.tids(self.pid) if t != self.pid]
        except OSError:
            return []  # exited
        for tid in tids:  # threads come and go: open these per tick
            try:
                fd = _proc.open_file(self.pid, f"task/{tid}/children")
            except OSError:
                continue  # the thread exited
            try:
                kids += _pread_all(fd).split()
            except OSError:
                pass
            finally:
                os.close(fd)
        return [int(pid) for pid in kids]

    def close(self) -> None:
        for fd in self._fds:
            os.close(fd)
        self._fds = []


# /proc/PID/task/TID/children (CONFIG_PROC_CHILDREN) lists a thread's children directly, so
# walking a tree costs a few reads instead of psutil's scan of every process on the machine.
# It can miss a child born during the read: the next tick finds it.
_PROCFS = sys.platform.startswith("linux") and _proc.children_file_exists()
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if _PROCFS else 100
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if _PROCFS else 4096
# bound once: read() runs per process per tick (bench/bench_monitor.py)
_pread_usage, _pread_all = _proc.pread_usage, _proc.pread_all
_STATE, _UTIME, _STIME, _NUM_THREADS = _tree.STATE, _tree.UTIME, _tree.STIME, _tree.NUM_THREADS
_STATES = {"R": "running", "S": "sleeping", "D": "disk-sleep", "T": "stopped", "t": "tracing-stop",
           "Z": "zombie", "X": "dead", "x": "dead", "I": "idle", "P": "parked", "W": "waking", "K": "wake-kill"}


def monitor(pid: int, interval_s: float = 0.5, duration_s: float | None = None, include_children: bool = True,
            on_sample: Callable[[Sample], object] | None = None) -> list[Sample]:
    """Sample ``pid``'s tree every ``interval_s`` until it ends, ``duration_s`` passes or Ctrl-C.

    ``on_sample`` sees each sample as it comes; returning ``False`` stops early.

    Raises:
        BadArgument: ``interval_s`` or ``duration_s`` is not positive.
        psutil.NoSuchProcess: there is no process ``pid``.

    >>> samples = monitor(os.getpid(), interval_s=0.1, duration_s=0.3)
    >>> [s.pid for s in samples][:1] == [os.getpid()]
    True
    """
    if not interval_s > 0:
        raise BadArgument(f"the interval must be > 0 seconds, got {interval_s}")
    if duration_s is not None and not duration_s > 0:
        raise BadArgument(f"the duration must be > 0 seconds, got {duration_s}")
    samples: list[Sample] = []
    with TreeSampler(pid, include_children) as sampler:
        start = time.monotonic()
        end = math.inf if duration_s is None else start + duration_s
        tick = 0
        try:
            while True:
                # Ticks sit on a fixed grid (no drift); a late tick skips the slots it missed.
                tick = max(tick + 1, int((time.monotonic() - start) / interval_s) + 1)
                due = min(start + tick * interval_s, end)
                time.sleep(max(0.0, due - time.monotonic()))
                sample = sampler.sample()
                if sample is None:
                    break
                samples.append(sample)
                if (on_sample is not None and on_sample(sample) is False) or sample.ended or due >= end:
                    break
        except KeyboardInterrupt:
            pass  # Ctrl-C is how an open-ended watch stops: keep what was sampled
    return samples


def write_csv(samples: Sequence[Sample], path: str | os.PathLike) -> None:
    """Write ``samples`` to ``path`` as CSV (columns ``COLUMNS``, unreadable I/O left empty), atomically."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(COLUMNS)
    writer.writerows(["" if v is None else v for v in s.as_row().values()] for s in samples)
    write_atomic(path, text.getvalue().encode())


def read_csv(path: str | os.PathLike) -> list[Sample]:
    """Read samples written by :func:`write_csv`.

    Raises:
        BadArgument: the file is not a ``labkit monitor`` CSV.
    """
    with open(path, newline="", encoding="utf-8") as handle:
        rows = csv.reader(handle)
        if tuple(next(rows, ())) != COLUMNS:
            raise BadArgument(f"{path} is not a labkit monitor CSV (expected columns {', '.join(COLUMNS)})")
        return [_sample_from_row(row) for row in rows if row]


_COLUMN_TYPES: tuple[Callable[[str], Any], ...] = (float, int, float, int, int, int, str, int, int)


def _sample_from_row(row: list[str]) -> Sample:
    """A CSV row as a Sample (an empty I/O column is None: the kernel would not say)."""
    values: list[Any] = [None if v == "" and i >= 7 else kind(v)
                         for i, (kind, v) in enumerate(zip(_COLUMN_TYPES, row))]
    return Sample(*values)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the arguments of ``labkit monitor`` to ``parser``."""
    parser.add_argument("pid", type=int, help="the process to watch")
    parser.add_argument("--interval", type=float, default=0.5, metavar="SEC", help="seconds between samples (0.5)")
    parser.add_argument("--duration", type=float, default=None, metavar="SEC",
                        help="stop after SEC seconds (default: when the process exits, or Ctrl-C)")
    parser.add_argument("--no-children", action="store_true", help="watch the process alone, not its descendants")
    parser.add_argument("--csv", type=Path, default=None, metavar="FILE",
                        help="write the samples to FILE at the end instead of printing each")
    parser.add_argument("--plot", type=Path, default=None, metavar="FILE.png", help="draw CPU and RSS over time")
    parser.add_argument("--run-dir", type=Path, default=None, metavar="DIR",
                        help="a trainer's run folder: --plot adds its loss")


def main(args: argparse.Namespace) -> int:
    """Run ``labkit monitor`` with parsed ``args``; return the exit code."""
    if args.pid <= 0:
        raise BadArgument(f"a pid is a whole number > 0, got {args.pid}")
    printer = None if args.csv else (lambda s: print(_describe(s), flush=True))
    try:
        samples = monitor(args.pid, args.interval, args.duration, not args.no_children, on_sample=printer)
    except psutil.NoSuchProcess:
        raise LabkitError(f"no process with pid {args.pid}") from None
    except psutil.AccessDenied:
        raise PermissionDenied(f"reading process {args.pid}", "watch your own processes, or run as root") from None
    from labkit.liveplot import plot  # matplotlib only when a plot is asked for

    for path, write in ((args.csv, write_csv), (args.plot, lambda s, p: plot(s, p, run_dir=args.run_dir))):
        if path is not None:
            try:
                write(samples, path)
            except OSError as err:
                raise LabkitError(f"cannot write {path}: {err.strerror or err}") from None
            print(f"wrote {path}")
    print(_summary(args.pid, samples))
    return 0


def _describe(s: Sample) -> str:
    io_text = "" if s.read_bytes is None else (f"  read {s.read_bytes / _MIB:.1f} MiB  "
                                          f"written {(s.write_bytes or 0) / _MIB:.1f} MiB")
    return (f"{time.strftime('%H:%M:%S', time.localtime(s.t))}  pid {s.pid}  cpu {s.cpu_percent:6.1f}%  "
            f"rss {s.rss_bytes / _MIB:7.1f} MiB  threads {s.num_threads:3d}  children {s.num_children:2d}  "
            f"{s.status}{io_text}")


def _summary(pid: int, samples: Sequence[Sample]) -> str:
    if not samples:
        return f"pid {pid}: no samples"
    cpu = [s.cpu_percent for s in samples]
    return (f"pid {pid}: {len(samples)} samples over {samples[-1].t - samples[0].t:.1f} s; "
            f"cpu mean {sum(cpu) / len(cpu):.1f}%, max {max(cpu):.1f}%; "
            f"rss max {max(s.rss_bytes for s in samples) / _MIB:.1f} MiB; last status {samples[-1].status}")

