"""Waits: the one place labkit writes a deadline loop, waits for processes to exit, and kills until empty.

Three kinds of wait, each with the cheapest mechanism the kernel offers:

- :func:`wait_for` polls a predicate: first after 1 ms, then twice as long each time up to a cap,
  so a condition that comes true at once costs almost nothing and one that takes seconds costs
  a few dozen wake-ups.
- :func:`wait_exited` / :func:`wait_all_exited` block on a **pidfd** where the kernel and Python
  have one: ``os.pidfd_open`` (pidfd_open(2), Linux 5.3, Python 3.9) gives a descriptor that
  ``poll`` reports readable once the process has exited (pidfd_open(2), "NOTES": POLLIN when the
  process terminates). The wake-up comes the moment it exits, not at the next poll. Elsewhere
  (ENOSYS: older kernel; EPERM: a seccomp filter, as in some containers; EINVAL: a thread id) they
  fall back to reading /proc/PID/stat on a backoff.
- :func:`kill_until_empty` signals whatever a listing returns, waits for those processes to exit,
  lists again, and repeats: a process may fork between a listing and the kill, and its child is
  caught by the next round. It never signals pid 1, its own pid, or a pid <= 0 (``kill(0, ...)``
  and ``kill(-1, ...)`` would hit our own group or every process).

"Exited" means the process has ended: it may still be a zombie, waiting for its parent's
``wait()``. A pidfd is readable for a zombie (the kernel's ``pidfd_poll`` checks the exit state,
not the reaping), and the fallback counts state Z or X as exited, so both give the same answer.
A child of ours must still be reaped by its ``Popen.wait()`` / ``os.waitpid``: these waits never
reap, so they never steal an exit status from the code that owns the child.

Pid reuse. A pidfd, once open, names one process for good: a recycled pid cannot fool the wait.
The window is between the moment the caller learned the pid and ``pidfd_open``; a caller that
holds a pid it did not start can close it by giving the process's start time
(``starttime_ticks``: field 22 of /proc/PID/stat, as :data:`labkit._linux.tree.STARTTIME` indexes
it), and a process with another start time counts as exited (psutil's ``create_time`` check).
A child of ours needs no such guard: its pid stays taken until we reap it.

Standard library only, and loadable by path: the grader's sandbox runs ``python -I -S`` before
labkit is importable, so this module finds its sibling ``tree.py`` by path when ``import labkit``
fails. Errors are the builtin ones (``ValueError`` for a pid that cannot be waited for or must not
be signalled), so the sandbox can use it; the layers above translate where a learner sees them.

>>> wait_for(lambda: 42, timeout_s=1.0)
42
>>> wait_exited(os.getpid(), timeout_s=0.01)
False

:func:`wait_exited_async` is the same wait for a coroutine (the grader's event loop).
"""

from __future__ import annotations

import errno
import math
import os
import select
import signal
import time

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (the sandbox starts in ~20 ms)
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator, Mapping
    from typing import TypeVar

    from labkit._linux import tree as _tree

    T = TypeVar("T")
else:
    try:
        from labkit._linux import tree as _tree
    except ImportError:  # loaded by path (the grader's sandbox): labkit is not importable
        def _load_tree():
            import importlib.util

            here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tree.py")
            spec = importlib.util.spec_from_file_location("_labkit_linux_tree", here)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            return module

        _tree = _load_tree()

FIRST_INTERVAL_S = 0.001  #: the first pause of a poll: most conditions come true within a few ms
MAX_INTERVAL_S = 0.05  #: the longest pause of a poll by default (what a stop may lose to polling)
RELIST_S = 0.2  #: a pure wait lists its processes again at least this often (one may leave the listing alive)
#: False forces the /proc polling fallback (tests, and the first ENOSYS or EPERM from pidfd_open)
USE_PIDFD = hasattr(os, "pidfd_open")
_PIDFD_OFF = (errno.ENOSYS, errno.EPERM, errno.EACCES)  # the kernel or a seccomp filter refuses pidfds


def wait_for(predicate: Callable[[], T], timeout_s: float | None, *, first_interval_s: float = FIRST_INTERVAL_S,
             max_interval_s: float = MAX_INTERVAL_S) -> T:
    """Call ``predicate()`` until it returns something true; return that value, or its last (false)
    value once ``timeout_s`` seconds have passed.

    Args:
        predicate: called at once, then after pauses of ``first_interval_s`` seconds, doubling up
            to ``max_interval_s`` (the pause never runs past the deadline).
        timeout_s: seconds to wait; ``None`` waits for ever, 0 or less calls ``predicate`` once.

    >>> wait_for(lambda: [], timeout_s=0)
    []
    """
    deadline = math.inf if timeout_s is None else time.monotonic() + timeout_s
    pause = first_interval_s
    while True:
        value = predicate()
        if value:
            return value
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return value
        time.sleep(min(pause, remaining))
        pause = min(pause * 2, max_interval_s)


def reaped() -> Iterator[tuple[int, int]]:
    """(pid, wait status) of each child of ours that has ended, reaped now, without waiting for more
    (waitpid(-1, WNOHANG) until it finds none: a subreaper's adopted orphans included)."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        yield pid, status


def exited(pid: int, starttime_ticks: int | None = None) -> bool:
    """Whether process ``pid`` has ended, read from /proc/PID/stat: gone, a zombie (Z) or dead (X),
    or (given ``starttime_ticks``) replaced by a process with another start time. ``os.kill(pid, 0)``
    cannot tell: it succeeds on a zombie."""
    try:
        fields = _tree.read_stat_fields(pid)
    except OSError:
        return True  # ENOENT or ESRCH: reaped
    if fields[_tree.STATE] in _tree.DEAD_STATES:
        return True
    return starttime_ticks is not None and int(fields[_tree.STARTTIME]) != starttime_ticks


def open_pidfd(pid: int) -> int | None:
    """A pidfd for ``pid`` (close it yourself), or ``None`` where pidfds cannot be had (an old kernel,
    a seccomp filter: pidfds are then switched off for this process; a thread id; no descriptor left).

    Raises:
        ProcessLookupError: no process ``pid`` (it exited and was reaped).
        ValueError: ``pid`` <= 0.
    """
    global USE_PIDFD
    _check_pid(pid)
    if not USE_PIDFD:
        return None
    try:
        return os.pidfd_open(pid)
    except ProcessLookupError:
        raise
    except OSError as err:
        if err.errno in _PIDFD_OFF:
            USE_PIDFD = False
        return None  # EINVAL (a thread, not a process), EMFILE/ENFILE: poll /proc for this one


def wait_exited(pid: int, timeout_s: float | None, *, starttime_ticks: int | None = None) -> bool:
    """Wait until process ``pid`` has exited (a zombie counts); True if it did within ``timeout_s``
    seconds (``None``: for ever). Never reaps: a child of ours still needs its ``wait()``.

    Args:
        starttime_ticks: the process's start time (stat field 22); a process with another one is a
            recycled pid, and ours counts as exited.

    Raises:
        ValueError: ``pid`` <= 0.
    """
    started = None if starttime_ticks is None else {pid: starttime_ticks}
    return not wait_all_exited([pid], timeout_s, starttime_ticks=started)


def wait_all_exited(pids: Iterable[int], timeout_s: float | None, *,
                    starttime_ticks: Mapping[int, int] | None = None) -> set[int]:
    """Wait until every process of ``pids`` has exited, ``timeout_s`` seconds at most (``None``: for
    ever); return the pids still running. One ``poll`` on all their pidfds: it returns as each exits.

    Raises:
        ValueError: a pid <= 0.
    """
    deadline = math.inf if timeout_s is None else time.monotonic() + timeout_s
    started = starttime_ticks or {}
    pending: dict[int, int] = {}  # pidfd -> pid
    polled: set[int] = set()
    poller = select.poll()
    try:
        for pid in set(pids):
            try:
                fd = open_pidfd(pid)
            except ProcessLookupError:
                continue
            if fd is None:
                polled.add(pid)
                continue
            if pid in started and exited(pid, started[pid]):  # checked once the pidfd pins the process
                os.close(fd)
                continue
            pending[fd] = pid
            poller.register(fd, select.POLLIN)
        pause = FIRST_INTERVAL_S
        while True:
            polled = {pid for pid in polled if not exited(pid, started.get(pid))}
            if not (pending or polled):
                break
            remaining = deadline - time.monotonic()
            wait_s = max(0.0, min(pause, remaining) if polled else remaining)
            timeout_ms = None if math.isinf(wait_s) else math.ceil(wait_s * 1000)
            for fd, _ in poller.poll(timeout_ms):  # a timeout of 0 still reports who has exited
                poller.unregister(fd)
                os.close(fd)
                del pending[fd]
            if remaining <= 0:
                break
            pause = min(pause * 2, MAX_INTERVAL_S)
        return set(pending.values()) | polled
    finally:
        for fd in pending:
            os.close(fd)


async def wait_exited_async(pid: int, timeout_s: float | None) -> bool:
    """:func:`wait_exited` for a coroutine: the pidfd joins the running event loop's selector
    (``loop.add_reader``), so the loop keeps running other tasks and wakes the moment ``pid``
    exits; without a pidfd, /proc is polled on a backoff with ``asyncio.sleep``. Never reaps.

    Raises:
        ValueError: ``pid`` <= 0.
    """
    import asyncio

    try:
        fd = open_pidfd(pid)
    except ProcessLookupError:
        return True
    if fd is None:
        deadline = math.inf if timeout_s is None else time.monotonic() + timeout_s
        pause = FIRST_INTERVAL_S
        while not exited(pid):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            await asyncio.sleep(min(pause, remaining))
            pause = min(pause * 2, MAX_INTERVAL_S)
        return True
    try:
        loop = asyncio.get_running_loop()
        readable: asyncio.Future[None] = loop.create_future()

        def ready() -> None:
            if not readable.done():
                readable.set_result(None)

        loop.add_reader(fd, ready)
        try:
            await asyncio.wait_for(readable, timeout_s)
            return True
        except asyncio.TimeoutError:
            return False
        finally:
            loop.remove_reader(fd)
    finally:
        os.close(fd)


def send(pid: int, sig: int) -> bool:
    """Send ``sig`` to ``pid`` through a pidfd where there is one (no recycled pid can receive it
    once the pidfd is open; pidfd_send_signal(2), Linux 5.1), else ``os.kill``. False when the
    process is gone.

    Raises:
        ValueError: ``pid`` is 1, this process, or <= 0.
        PermissionError: the process belongs to another user.
    """
    _check_signalable(pid)
    try:
        fd = open_pidfd(pid)
    except ProcessLookupError:
        return False
    try:
        if fd is None:
            os.kill(pid, sig)
        else:
            signal.pidfd_send_signal(fd, sig)
    except ProcessLookupError:
        return False
    finally:
        if fd is not None:
            os.close(fd)
    return True


def wait_until_empty(list_pids: Callable[[], Iterable[int]], timeout_s: float | None) -> list[int]:
    """Wait until ``list_pids()`` returns nothing (a group, a cgroup, a tree); return what it last
    listed (empty: success). Between listings it blocks on the listed processes' pidfds, so it
    returns the moment the last one exits; a listing that keeps naming exited processes (zombies
    nobody reaps) is re-read on a backoff instead."""
    return _rounds(list_pids, timeout_s, None)


def kill_until_empty(list_pids: Callable[[], Iterable[int]], timeout_s: float | None,
                     sig: int = signal.SIGKILL, *, before: Callable[[list[int]], object] | None = None,
                     after: Callable[[list[int]], object] | None = None) -> list[int]:
    """Send ``sig`` to everything ``list_pids()`` returns, wait for those to exit, list again, and
    repeat until the listing is empty or ``timeout_s`` seconds have passed; return the survivors
    (sorted: typically processes in state D, which die only when their I/O returns).

    Pid 1, this process and pids <= 0 are never signalled: they are returned as survivors as soon
    as nothing else is left (a listing that names them is the caller's mistake, not a reason to
    signal every process, which is what ``kill(-1, sig)`` would do).

    Args:
        before, after: called with each round's pids around the signals (a cgroup freezes its
            members before and thaws them after, so nothing forks while it is being killed).

    >>> kill_until_empty(lambda: [], timeout_s=1.0)
    []
    """
    return _rounds(list_pids, timeout_s, (sig, before, after))


def _rounds(list_pids: Callable[[], Iterable[int]], timeout_s: float | None,
            kill: tuple[int, Callable[[list[int]], object] | None, Callable[[list[int]], object] | None] | None,
            ) -> list[int]:
    deadline = math.inf if timeout_s is None else time.monotonic() + timeout_s
    pause = FIRST_INTERVAL_S
    seen_exited: set[int] = set()
    while True:
        listed = sorted(set(list_pids()))
        targets = [pid for pid in listed if not _protected(pid)]
        remaining = deadline - time.monotonic()
        if not targets or remaining <= 0:
            return listed
        if kill is not None:
            sig, before, after = kill
            if before is not None:
                before(targets)
            try:
                for pid in targets:
                    try:
                        send(pid, sig)
                    except PermissionError:
                        pass  # another user's: it stays, and is returned if it outlives the timeout
            finally:  # `after` undoes `before` (a freezer thaws) even if the loop is interrupted
                if after is not None:
                    after(targets)
        waiting = [pid for pid in targets if pid not in seen_exited]
        if waiting:
            # A kill re-lists on a backoff, for the children forked between the listing and the
            # signal. A pure wait re-lists at least every RELIST_S too: a listed process can leave
            # the listing alive (setsid, setpgid, a move to another cgroup) and must not hold the wait.
            limit = min(RELIST_S if kill is None else pause, remaining)
            still = wait_all_exited(waiting, limit)
            seen_exited.update(set(waiting) - still)
        else:  # only exited processes listed (zombies not yet reaped, a cgroup still counting them)
            time.sleep(min(pause, remaining))
        pause = min(pause * 2, MAX_INTERVAL_S)


def _protected(pid: int) -> bool:
    return pid <= 1 or pid == os.getpid()


def _check_pid(pid: int) -> None:
    if pid <= 0:
        raise ValueError(f"pid {pid} names no single process (0 and negative pids mean process groups)")


def _check_signalable(pid: int) -> None:
    _check_pid(pid)
    if pid == 1:
        raise ValueError("refusing to signal pid 1 (init: killing it ends the machine or the container)")
    if pid == os.getpid():
        raise ValueError(f"refusing to signal pid {pid}: it is this process")
