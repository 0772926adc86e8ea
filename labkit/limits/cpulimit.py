"""The ``cpulimit`` tool (``--mechanism cpulimit``): SIGSTOP/SIGCONT from outside, one process at a time.

cpulimit (Debian's limitcpu 2.x) measures and stops each process on its own: with ``-m`` it
follows the children but gives *each* the quota, so a parent with two busy children under
``cpulimit -l 40 -m`` used 172 % of a core (measured, bench/bench_limits.py). So labkit runs it
on the one process (no ``-m``) and watches: the moment that process has children, cpulimit
cannot hold the tree, and labkit's throttle (the same signals, over the whole tree) takes over,
said on stderr and in ``applied``. A running process that already has children is refused.
"""

from __future__ import annotations

import subprocess
import sys
import threading

import psutil

from labkit._throttle import Throttle
from labkit.errors import BadArgument, LabkitError
from labkit.limits.mechanism import Applied, Mechanism
from labkit.limits.throttle import start_throttle
from labkit.signals import terminate_child

__all__ = ["CpulimitMechanism", "cannot_hold"]


def cannot_hold(pid: int, children: int) -> str:
    """Why cpulimit cannot hold ``pid`` with ``children`` descendants, in words."""
    return (f"cpulimit cannot hold pid {pid}'s {children} child process{'es' if children > 1 else ''}: it limits "
            f"each process on its own (-m watches children but gives each its own quota)")


class _Watched:
    """``cpulimit -p PID -l PCT -z`` on one process, watched for children every ``poll_s`` seconds."""

    def __init__(self, pid: int, percent: float, poll_s: float = 0.05) -> None:
        self.pid, self.percent, self.poll_s = pid, percent, poll_s
        self.handed_over: Throttle | None = None  #: the Throttle holding the tree once children appeared
        self.message: str | None = None  #: what was said when the throttle took over
        self.process = subprocess.Popen(["cpulimit", "-p", str(pid), "-l", f"{percent:g}", "-z"],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._watch, name=f"cpulimit-watch-{pid}", daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        try:
            target = psutil.Process(self.pid)
            while not self._stopping.wait(self.poll_s):
                children = target.children(recursive=True)
                if children:
                    self._hand_over(len(children))
                    return
                if self.process.poll() is not None:
                    return  # cpulimit -z left: the target is gone
        except psutil.Error:
            return  # the target is gone

    def _hand_over(self, children: int) -> None:
        with self._lock:
            if self._stopping.is_set():
                return
            terminate_child(self.process)  # on SIGTERM cpulimit continues the target before it exits
            try:
                self.handed_over = start_throttle(self.pid, self.percent)
            except LabkitError:
                return  # the target ended meanwhile
        self.message = (f"{cannot_hold(self.pid, children)}; labkit's throttle now holds the whole tree "
                        f"at {self.percent:g}% (next time use --mechanism throttle or cgroup)")
        print(f"labkit limit: {self.message}", file=sys.stderr, flush=True)

    def stop(self) -> None:
        """End cpulimit (it continues the target first) or the throttle that took over; safe to call again."""
        self._stopping.set()
        with self._lock:
            terminate_child(self.process)
            if self.handed_over is not None:
                self.handed_over.stop()
        self._thread.join(timeout=2.0)


class CpulimitMechanism(Mechanism):
    """cpulimit on one process at ``percent`` % of one CPU; the throttle takes over a tree."""

    name = "cpulimit"
    kernel_side = False

    def __init__(self, percent: float) -> None:
        self.percent = percent
        self.watched: _Watched | None = None

    def describe(self) -> str:
        if self.watched is not None and self.watched.handed_over is not None:
            return "throttle, taking over from cpulimit: SIGSTOP/SIGCONT over the whole tree"
        return "cpulimit: the tool's SIGSTOP/SIGCONT on one process (cpulimit -p PID -l PCT)"

    def applied(self) -> list[Applied]:
        if self.watched is not None and self.watched.handed_over is not None:
            return [Applied("cpu quota", f"{self.percent:g}%",
                            "throttle (labkit's SIGSTOP/SIGCONT duty cycle), taking over from cpulimit",
                            "the whole process tree: cpulimit holds each process on its own")]
        return [Applied("cpu quota", f"{self.percent:g}%", "cpulimit (SIGSTOP/SIGCONT, the tool)",
                        "cpulimit -l on this one process; if it starts children, labkit's throttle takes over "
                        "the tree")]

    def apply(self, pid: int, launched: bool) -> None:
        """Start cpulimit on ``pid``.

        Raises:
            BadArgument: a running process that already has children (cpulimit cannot hold a tree).
            LabkitError: no process ``pid``.
        """
        if not launched:
            _refuse_a_tree(pid)
        self.watched = _Watched(pid, self.percent)

    def verify(self, pid: int) -> dict[str, str]:
        """The helper holding ``pid`` now, as the kernel lists it (cpulimit's argv, or the throttle's share)."""
        watched = self.watched
        if watched is None:
            return {}
        if watched.handed_over is not None:
            return {"holder": "throttle", "running": str(watched.handed_over.running).lower(),
                    "achieved_percent": f"{watched.handed_over.achieved_percent:.1f}"}
        try:
            argv = psutil.Process(watched.process.pid).cmdline()
        except psutil.Error:
            argv = []
        return {"holder": "cpulimit", "argv": " ".join(argv), "running": str(watched.process.poll() is None).lower()}

    def clean_up(self) -> None:
        if self.watched is not None:
            self.watched.stop()


def _refuse_a_tree(pid: int) -> None:
    try:
        children = len(psutil.Process(pid).children(recursive=True))
    except psutil.NoSuchProcess:
        raise LabkitError(f"no process with pid {pid}") from None
    if children:
        raise BadArgument(f"--mechanism cpulimit refuses pid {pid}: {cannot_hold(pid, children)}; "
                          f"use --mechanism throttle or cgroup to hold the whole tree")
