"""End a command we started and everything it started: its process tree and its process group.

Why both: a walk down from the top process finds the workers while the top one lives, but an
orphan is re-parented (to init or a subreaper) the moment its parent exits, and the walk loses
it; the process group keeps it, unless it left with setsid(2) or setpgid(2). A process under the
throttle may be stopped (state ``T``): it acts on SIGTERM only once continued, so SIGCONT follows
(signal(7)). Group membership is judged with the start time, as :func:`labkit.signals.group_members`
does: a group id is not reused while any member lives, and a process older than the group's
leader cannot belong to it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from typing import Any

import psutil

from labkit.signals import group_members

__all__ = ["members", "group_members", "end", "end_group"]

_POLL_S = 0.02
_KILL_WAIT_S = 5.0  #: how long SIGKILL may take (a process in state D dies when its I/O returns)


def members(pid: int, own_group: bool, started_at: float) -> list[psutil.Process]:
    """``pid``, its descendants, and (``own_group``: ``pid`` leads a group of its own) its group's members."""
    found: dict[int, psutil.Process] = {}
    try:
        root = psutil.Process(pid)
        found[pid] = root
        found.update((child.pid, child) for child in root.children(recursive=True))
    except psutil.Error:
        pass  # the top process has exited: only its group can still be found
    if own_group:
        for proc in group_members(pid, started_at):
            found.setdefault(proc.pid, proc)
    return list(found.values())


def end(popen: subprocess.Popen[Any], procs: list[psutil.Process], grace_s: float, own_group: bool,
        started_at: float) -> None:
    """SIGTERM and SIGCONT to ``popen``'s process and ``procs`` (its group too, if ``own_group``), SIGKILL
    what is left after ``grace_s`` seconds; reap ``popen``. Processes that survive SIGKILL for
    5 s (state D) are left; the caller's cgroup, if any, removes them."""
    others = [proc for proc in procs if proc.pid != popen.pid]
    for sig in (signal.SIGTERM, signal.SIGCONT):
        _send(popen, others, sig, own_group)
    _wait(popen, others, time.monotonic() + grace_s)
    left = {proc.pid: proc for proc in _alive(others)}
    for proc in list(left.values()):  # born during the grace: children of a survivor
        left.update((child.pid, child) for child in _children(proc))
    if popen.poll() is None:  # not reaped (a zombie at most): its pid and its group id are still its own
        left.update((proc.pid, proc) for proc in members(popen.pid, own_group, started_at) if proc.pid != popen.pid)
    elif own_group and any(_in_group(proc, popen.pid) for proc in left.values()):
        # reaped, but a member we knew still holds the group id, so it cannot have been reused
        left.update((proc.pid, proc) for proc in group_members(popen.pid, started_at))
    if popen.poll() is None or left:
        _send(popen, list(left.values()), signal.SIGKILL, own_group)
        _wait(popen, list(left.values()), time.monotonic() + _KILL_WAIT_S)
    popen.wait()


def end_group(pgid: int, started_at: float, grace_s: float = 1.0) -> None:
    """End what is left in group ``pgid`` once its leader has exited: SIGTERM, ``grace_s`` s, SIGKILL."""
    left = group_members(pgid, started_at)
    if not left:
        return
    for sig in (signal.SIGTERM, signal.SIGCONT):
        for proc in left:
            _signal(proc, sig)
    _wait(None, left, time.monotonic() + grace_s)
    left = list({proc.pid: proc for proc in _alive(left) + group_members(pgid, started_at)}.values())
    for proc in left:
        _signal(proc, signal.SIGKILL)
    _wait(None, left, time.monotonic() + _KILL_WAIT_S)


def _send(popen: subprocess.Popen[Any], procs: list[psutil.Process], sig: signal.Signals, own_group: bool) -> None:
    if popen.returncode is None:  # not reaped: its pid, and so the group's id, cannot have been reused
        if own_group:
            try:
                os.killpg(popen.pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
        popen.send_signal(sig)  # does nothing once it has been reaped
    for proc in procs:  # those that left the group (setsid) and were found in the tree
        _signal(proc, sig)


def _in_group(proc: psutil.Process, pgid: int) -> bool:
    try:
        return proc.is_running() and os.getpgid(proc.pid) == pgid
    except (OSError, psutil.Error):
        return False


def _signal(proc: psutil.Process, sig: signal.Signals) -> None:
    try:
        proc.send_signal(sig)  # psutil checks the start time: a reused pid is never signalled
    except psutil.Error:
        pass


def _alive(procs: list[psutil.Process]) -> list[psutil.Process]:
    """Those of ``procs`` still running; a zombie has ended (its parent reaps it, or init does)."""
    living = []
    for proc in procs:
        try:
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                living.append(proc)
        except psutil.Error:
            continue
    return living


def _children(proc: psutil.Process) -> list[psutil.Process]:
    try:
        return list(proc.children(recursive=True))
    except psutil.Error:
        return []


def _wait(popen: subprocess.Popen[Any] | None, procs: list[psutil.Process], deadline: float) -> None:
    """Until ``popen`` has exited (reaped) and ``procs`` have ended, or ``deadline`` (monotonic seconds)."""
    while (popen is not None and popen.poll() is None) or _alive(procs):
        if time.monotonic() >= deadline:
            return
        time.sleep(_POLL_S)
