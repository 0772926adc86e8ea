"""Hold a process tree near a share of CPU by duty-cycling it with SIGSTOP and SIGCONT.

This is what ``cpulimit`` does, for when no cgroup CPU controller is writable (a laptop
without a delegated cgroup, most containers). Every period (100 ms by default) the tree
may run for a *work slice* and is stopped for the rest. The slice adapts to what the tree
really used, read from ``/proc/PID/stat`` (utime + stime), so a job that blocks on I/O is
not starved and a multi-process job is held to its total.

Unlike ``cpu.max`` in a cgroup, the job can see it: its processes show state ``T`` for
part of each period, a shell that started it in the foreground may report it as
"Stopped", and a SIGKILL of the Python process running the throttle (which cannot clean
up) leaves the tree stopped until someone sends it SIGCONT. A normal exit, :meth:`~Throttle.stop`,
an exception in the throttle's thread and the end of the target all resume the tree.
The throttle is a thread of this process, so a main thread that holds the GIL for long
(a C extension that does not release it) delays its switches.

>>> with Throttle(4242, percent=30) as throttle:   # doctest: +SKIP
...     throttle.wait(60)
>>> round(throttle.achieved_percent)                  # doctest: +SKIP
30
"""

from __future__ import annotations

import atexit
import collections
import itertools
import math
import os
import signal
import threading
import time
import weakref
from typing import NamedTuple

from labkit._linux import tree
from labkit.errors import BadArgument
from labkit.signals import protected_pids

__all__ = ["Throttle"]

_CLK_TCK = os.sysconf("SC_CLK_TCK")
_MIN_WORK_FRACTION = 0.01  # a stopped-for-good tree looks hung, and its CPU use can no longer be measured
_CREDIT_GAIN = 0.5  # < 1 keeps the loop stable while the rate estimate is still off by up to 4x
_RELIST_EVERY = 2  # periods between two listings of /proc for newborn children
_RATE_WINDOW = 10  # periods: long enough to average out 10 ms clock ticks
_DEAD_STATES = (b"Z", b"X")


class _Stat(NamedTuple):
    ppid: int
    state: bytes
    ticks: int  # utime + stime, all threads
    start: int  # starttime, ticks after boot: with the pid, a process's identity


def _read_stat(pid: int) -> _Stat | None:
    """``/proc/PID/stat`` in short, or None if the process is gone."""
    try:
        fields = tree.read_stat_fields(pid)
    except (FileNotFoundError, ProcessLookupError):  # gone, or exited between open and read
        return None
    return _Stat(int(fields[tree.PPID]), fields[tree.STATE], int(fields[tree.UTIME]) + int(fields[tree.STIME]),
                 int(fields[tree.STARTTIME]))


def _alive(stat: _Stat | None, start: int) -> bool:
    return stat is not None and stat.start == start and stat.state not in _DEAD_STATES


class _Tree:
    """The live members of the tree under one root, found again cheaply on each refresh.

    Listing ``/proc`` costs one directory read; only the pids not listed last time are
    opened, besides the members. A process outside the tree never joins it later (an
    orphan is adopted by a subreaper *above* its old parent), so the newborn are the only
    candidates.
    """

    def __init__(self, root: int, root_start: int, include_children: bool, protected: set[int]) -> None:
        self.root, self.root_start = root, root_start
        self.include_children = include_children
        self.protected = protected
        self.listed: set[str] = set()  # the names in /proc at the last listing
        self.members: dict[int, _Stat] = {}

    def refresh(self, relist: bool = True) -> dict[int, _Stat] | None:
        """The members now, root first; None once the root has exited.

        With ``relist=False`` only the known members are read again, which is cheaper
        but misses children born since the last listing.
        """
        root = _read_stat(self.root)
        if root is None or not _alive(root, self.root_start):
            return None
        if not self.include_children:
            self.members = {self.root: root}
            return self.members
        candidates = set(self.members)
        if relist or not self.members:
            listed = set(tree.pid_names())
            candidates.update(int(name) for name in listed - self.listed if name.isdigit())
            self.listed = listed
        candidates.discard(self.root)
        fresh = {pid: _read_stat(pid) for pid in candidates}
        self.members = self._descend(root, fresh)
        return self.members

    def _descend(self, root: _Stat, fresh: dict[int, _Stat | None]) -> dict[int, _Stat]:
        live = {pid: stat for pid, stat in fresh.items() if stat is not None and pid not in self.protected}
        children: dict[int, list[int]] = collections.defaultdict(list)
        for pid, stat in live.items():
            children[stat.ppid].append(pid)
        members, queue = {self.root: root}, [self.root]
        while queue:
            for child in children.get(queue.pop(), ()):
                if child not in members:
                    members[child] = live[child]
                    queue.append(child)
        return members


def _send(pid: int, sig: signal.Signals) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):  # exited, or a setuid child we may not touch
        pass


class Throttle:
    """Hold the process tree rooted at ``pid`` near ``percent`` % of one CPU with SIGSTOP/SIGCONT.

    ``percent`` is of one core: 100 is one core busy, 150 is one and a half (for a
    multi-threaded or multi-process job). With ``include_children`` the whole tree shares
    the budget, children born after the start included.

    Raises:
        ValueError: ``percent`` or ``period_s`` not a positive number, or ``pid`` one
            that must never be stopped (PID 1, this process or one of its ancestors).
        ProcessLookupError: no process ``pid``.
        PermissionError: ``pid`` belongs to another user.
    """

    def __init__(self, pid: int, percent: float, period_s: float = 0.1, include_children: bool = True) -> None:
        _check_positive("percent", percent)
        _check_positive("period_s", period_s)
        if pid <= 1:
            raise BadArgument(f"pid must be > 1, not {pid}: 0, negative pids and PID 1 (init) are never throttled")
        protected = protected_pids()
        if pid in protected:
            raise BadArgument(f"pid {pid} is this process or one of its ancestors; stopping it would freeze us too")
        stat = _read_stat(pid)
        if stat is None or stat.state in _DEAD_STATES:
            raise ProcessLookupError(f"no process {pid} (or it has exited)")
        try:
            os.kill(pid, 0)
        except PermissionError:
            raise PermissionError(f"may not signal pid {pid}: it belongs to another user") from None
        self.pid, self.percent, self.period_s = pid, float(percent), float(period_s)
        self.include_children = include_children
        self._tree = _Tree(pid, stat.start, include_children, protected)
        self._share = self.percent / 100
        self._credit_limit = max(3 * self._share * self.period_s, 5 / _CLK_TCK)
        self._lock = threading.Lock()  # held while signalling, so stop() can never race a SIGSTOP
        self._stopping = threading.Event()
        self._exited = threading.Event()
        self._thread: threading.Thread | None = None
        self._stopped: set[int] = set()  # every process we stopped and have not resumed yet
        self._progress = (0.0, 0.0)  # (tree CPU seconds, wall seconds) since start, swapped as one
        self._own_cpu = 0.0
        self.error: BaseException | None = None
        """The exception that ended the throttle's thread early, if any (the tree was resumed)."""

    def __repr__(self) -> str:
        state = "running" if self.running else "idle"
        return (f"<Throttle pid={self.pid} percent={self.percent:g} {state} "
                f"achieved={self.achieved_percent:.1f}%>")

    def __enter__(self) -> Throttle:
        return self if self._thread is not None else self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> Throttle:
        """Start throttling in a daemon thread and return ``self``.

        Raises:
            RuntimeError: already started (a Throttle runs once, like a thread).
        """
        if self._thread is not None:
            raise RuntimeError(f"{self!r} was already started; make a new Throttle")
        self._thread = threading.Thread(target=self._run, name=f"throttle-{self.pid}", daemon=True)
        _live.add(self)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop throttling and leave every process of the tree running; safe to call again."""
        if self._thread is None:
            return
        self._stopping.set()
        with self._lock:
            self._resume_everything()
        self._thread.join(timeout=max(1.0, 5 * self.period_s))
        _live.discard(self)

    @property
    def running(self) -> bool:
        """True while the thread is throttling (not yet stopped, target not yet exited)."""
        return self._thread is not None and self._thread.is_alive() and not self._stopping.is_set()

    @property
    def achieved_percent(self) -> float:
        """The tree's measured CPU share since start: CPU seconds / wall seconds * 100."""
        cpu_s, wall_s = self._progress
        return 100 * cpu_s / wall_s if wall_s > 0 else 0.0

    @property
    def own_cpu_seconds(self) -> float:
        """CPU time the throttle's own thread has used (``time.thread_time()`` inside it)."""
        return self._own_cpu

    def wait(self, timeout_s: float | None = None) -> bool:
        """Wait until the target process has exited; True if it did within ``timeout_s``."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while not self._target_exited():
            left = 0.05 if deadline is None else min(0.05, deadline - time.monotonic())
            if left <= 0:
                return False
            self._exited.wait(left)  # the thread sets it at once; polling covers an idle throttle
        return True

    def _target_exited(self) -> bool:
        return self._exited.is_set() or not _alive(_read_stat(self.pid), self._tree.root_start)

    # -- the thread ------------------------------------------------------------------

    def _run(self) -> None:
        cpu0 = time.thread_time()
        try:
            self._loop(cpu0)
        except BaseException as exc:  # noqa: BLE001 - kept for the caller; the tree must not stay stopped
            self.error = exc
        finally:
            with self._lock:
                self._resume_everything()
            self._own_cpu = time.thread_time() - cpu0

    def _loop(self, cpu0: float) -> None:
        members = self._tree.refresh()
        if members is None:
            return self._exited.set()
        meter = _Meter(members, self._share, self._credit_limit)
        work_s = meter.work_slice(self.period_s)
        for period in itertools.count():
            # Newborns are looked for every few periods: listing /proc is most of the cost,
            # and whatever they ran meanwhile is still counted once they are found.
            next_s = self._one_period(meter, work_s, relist=period % _RELIST_EVERY == 0)
            if next_s is None:
                return
            work_s = next_s
            self._own_cpu = time.thread_time() - cpu0

    def _one_period(self, meter: _Meter, work_s: float, relist: bool) -> float | None:
        """Let the tree run ``work_s``, read it, stop it for the rest of the period.

        Returns the next work slice, or None once stopping or the target has exited. The
        only reading is taken before SIGSTOP: waking up costs more than the work, so the
        wake-up that resumes the tree does nothing else.
        """
        started = time.monotonic()
        with self._lock:
            self._resume_stopped()
        if self._stopping.wait(min(work_s, self.period_s)):
            return None
        with self._lock:
            if self._stopping.is_set():
                return None
            members = self._tree.refresh(relist)
            if members is None:
                self._exited.set()
                return None
            if work_s < self.period_s:  # else nothing to take away: SIGSTOP costs the job its caches
                for pid, stat in members.items():
                    self._stopped.add(pid)
                    _send(pid, signal.SIGSTOP)
            ran_s = time.monotonic() - started
        self._progress = meter.account(members, ran_s)
        rest_s = self.period_s - ran_s
        if rest_s > 0 and self._stopping.wait(rest_s):
            return None
        return meter.work_slice(self.period_s)

    def _resume_stopped(self) -> None:
        for pid in self._stopped:
            _send(pid, signal.SIGCONT)
        self._stopped.clear()

    def _resume_everything(self) -> None:
        # What we stopped may have left the tree since (orphans are re-parented), and the
        # tree may hold processes stopped by others: a job left stopped looks hung.
        self._resume_stopped()
        for pid, stat in self._tree.members.items():
            if _alive(_read_stat(pid), stat.start):
                _send(pid, signal.SIGCONT)


class _Meter:
    """The tree's CPU use and the work slice that keeps it at the share.

    Each period the tree should use ``share * period`` CPU seconds, plus a part of the
    *credit*: what it was owed (positive) or overdrew (negative) so far, bounded so that a
    long idle spell does not buy a long burst. The slice is that CPU time divided by the
    tree's rate while running (CPU seconds per second: 1 for one busy thread, 0.3 for a
    job mostly waiting on I/O), averaged over the last periods.
    """

    def __init__(self, members: dict[int, _Stat], share: float, credit_limit: float) -> None:
        self.share, self.credit_limit = share, credit_limit
        self.ticks = {(pid, stat.start): stat.ticks for pid, stat in members.items()}
        self.started = self.last = time.monotonic()
        self.cpu_s = self.credit = 0.0
        self.window: collections.deque[tuple[float, float]] = collections.deque(maxlen=_RATE_WINDOW)

    def work_slice(self, period_s: float) -> float:
        """Seconds the tree may run in the next period."""
        ran_s = sum(ran for _, ran in self.window)
        rate = sum(cpu for cpu, _ in self.window) / ran_s if ran_s > 0 else 1.0
        wanted_cpu_s = self.share * period_s + _CREDIT_GAIN * self.credit
        return min(period_s, max(_MIN_WORK_FRACTION * period_s, wanted_cpu_s / max(rate, 0.01)))

    def account(self, members: dict[int, _Stat], ran_s: float) -> tuple[float, float]:
        """Take in a new reading; return (CPU seconds, wall seconds) since start."""
        now = time.monotonic()
        used, ticks = 0, {}
        for pid, stat in members.items():
            # A newcomer was born after the start. An exited process's last ticks are lost
            # from the sum, so each process's use is its own difference, never negative.
            before = self.ticks.get((pid, stat.start), 0)
            used += max(0, stat.ticks - before)
            ticks[(pid, stat.start)] = max(before, stat.ticks)
        self.ticks = ticks
        cpu_s = used / _CLK_TCK
        self.cpu_s += cpu_s
        self.credit += self.share * (now - self.last) - cpu_s
        self.credit = max(-self.credit_limit, min(self.credit_limit, self.credit))
        self.window.append((cpu_s, ran_s))
        self.last = now
        return self.cpu_s, now - self.started


def _check_positive(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise BadArgument(f"{name} must be a positive number, not {value!r}")


_live: weakref.WeakSet[Throttle] = weakref.WeakSet()


@atexit.register
def _stop_all() -> None:
    # daemon threads die silently at exit; without this a tree could be left stopped
    for throttle in list(_live):
        throttle.stop()
