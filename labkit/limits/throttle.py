"""labkit's throttle: SIGSTOP/SIGCONT duty cycling of the whole tree (:mod:`labkit._throttle`).

For a CPU quota where no cgroup CPU controller is writable (most containers, a laptop without a
delegated cgroup). The tree's CPU use is read from ``/proc/PID/stat`` (utime + stime) every
100 ms period and the tree is stopped for the rest of the period once it has used its share,
children born later included. The job can see it: its processes show state ``T`` for part of
each period. It holds no memory limit.
"""

from __future__ import annotations

from labkit._linux import proc as _proc
from labkit._throttle import Throttle
from labkit.errors import LabkitError, PermissionDenied
from labkit.limits.mechanism import Applied, Mechanism

__all__ = ["ThrottleMechanism", "start_throttle"]


def start_throttle(pid: int, percent: float) -> Throttle:
    """A started :class:`~labkit._throttle.Throttle` on the tree under ``pid`` at ``percent`` % of one CPU.

    Raises:
        LabkitError: no process ``pid`` (or it has exited).
        PermissionDenied: ``pid`` belongs to another user.
        BadArgument: ``pid`` must never be stopped (PID 1, this process, an ancestor).
    """
    try:
        return Throttle(pid, percent).start()
    except ProcessLookupError:
        raise LabkitError(f"no process with pid {pid}") from None
    except PermissionError as err:
        raise PermissionDenied(f"throttling pid {pid}", str(err)) from None


class ThrottleMechanism(Mechanism):
    """The throttle's thread holding one tree at ``percent`` % of one CPU (100 = one core busy)."""

    name = "throttle"
    kernel_side = False

    def __init__(self, percent: float) -> None:
        self.percent = percent
        self.throttle: Throttle | None = None

    def describe(self) -> str:
        return ("throttle: labkit's SIGSTOP/SIGCONT duty cycle over the whole tree, "
                "CPU time read from /proc/PID/stat every 100 ms")

    def applied(self) -> list[Applied]:
        return [Applied("cpu quota", f"{self.percent:g}%", "throttle (labkit's SIGSTOP/SIGCONT duty cycle)",
                        "the whole process tree, adjusted every 100 ms")]

    def apply(self, pid: int, launched: bool) -> None:
        """Start the throttle's thread on ``pid``'s tree (raises as :func:`start_throttle`, except that a
        command we launched which has ended already needs no holding)."""
        try:
            self.throttle = start_throttle(pid, self.percent)
        except LabkitError:
            if not launched or _running(pid):
                raise

    def verify(self, pid: int) -> dict[str, str]:
        """Whether the thread runs, the share it measured from the kernel's counters, the state of ``pid``."""
        found = {"running": str(self.throttle is not None and self.throttle.running).lower()}
        if self.throttle is not None:
            found["achieved_percent"] = f"{self.throttle.achieved_percent:.1f}"
        try:
            found["state"] = _proc.read_stat(pid).state
        except OSError:
            found["state"] = "gone"
        return found

    def clean_up(self) -> None:
        """Stop the thread; every process it stopped is continued."""
        if self.throttle is not None:
            self.throttle.stop()


def _running(pid: int) -> bool:
    """``pid`` exists and has not ended (a zombie has)."""
    try:
        return _proc.read_stat(pid).state not in ("Z", "X")
    except OSError:
        return False
