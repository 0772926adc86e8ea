"""Per-process knobs the kernel copies across fork: rlimits, nice and CPU affinity.

``setrlimit(2)`` in the child before exec (``prlimit(2)`` on a running process, what
``prlimit --pid`` does), ``setpriority(2)`` and ``sched_setaffinity(2)``. They need no choice of
mechanism: every child inherits them. A memory limit here is ``RLIMIT_AS`` (``ulimit -v``,
``prlimit --as``): address space, not RSS, per process, and an allocation beyond it *fails*
(Python raises MemoryError) instead of the process being killed. No rlimit shares CPU time
(``RLIMIT_CPU`` ends a process after N CPU seconds).

On a running process nice and affinity are per *thread* on Linux: ``renice -p PID`` changes only
the thread whose id is PID, so every task in ``/proc/PID/task`` is set.
"""

from __future__ import annotations

import os
import resource

from labkit._linux import proc as _proc
from labkit.errors import LabkitError, PermissionDenied
from labkit.limits.mechanism import Applied, Mechanism
from labkit.limits.spec import RLIMITS, LimitSpec, size_text

__all__ = ["RlimitMechanism"]


class RlimitMechanism(Mechanism):
    """rlimits (and, with ``memory``, ``RLIMIT_AS`` as the memory limit), nice and affinity.

    Args:
        spec: the limits; its ``rlimits``, ``nice`` and ``cpus`` are always ours.
        memory: enforce ``spec.memory_max`` as ``RLIMIT_AS`` (the chooser's fallback for memory).
    """

    name = "rlimit"
    needs_holding = False  # the kernel keeps them; nothing to release

    def __init__(self, spec: LimitSpec, memory: bool) -> None:
        self.spec, self.memory = spec, memory
        self.limits = dict(spec.rlimits)  #: {name in RLIMITS: soft = hard value} set on the process
        if memory and spec.memory_max:
            self.limits["as"] = spec.memory_max

    def describe(self) -> str:
        knobs = [f"RLIMIT_{name.upper()}" for name in self.limits]
        knobs += ["setpriority(2)"] if self.spec.nice is not None else []
        knobs += ["sched_setaffinity(2)"] if self.spec.cpus is not None else []
        return f"per process, inherited by children: {', '.join(knobs) or 'nothing asked'}"

    def applied(self) -> list[Applied]:
        spec, found = self.spec, []
        if self.memory and spec.memory_max:
            found.append(Applied("memory max", size_text(spec.memory_max), "rlimit (RLIMIT_AS, like ulimit -v)",
                                 "per process, address space not RSS; allocations fail: Python raises "
                                 "MemoryError instead of being killed"))
        if spec.nice is not None:
            found.append(Applied("nice", str(spec.nice), "setpriority(2)", "inherited by children"))
        if spec.cpus is not None:
            cpus = ",".join(map(str, spec.cpus))
            found.append(Applied("cpus", cpus, "sched_setaffinity(2)", "inherited by children"))
        for name, value in spec.rlimits.items():
            found.append(Applied(f"rlimit {name}", str(value), f"setrlimit(2) RLIMIT_{name.upper()}",
                                 "per process, inherited by children"))
        return found

    def in_child(self) -> None:
        if self.spec.nice is not None:
            os.setpriority(os.PRIO_PROCESS, 0, self.spec.nice)
        if self.spec.cpus is not None:
            os.sched_setaffinity(0, self.spec.cpus)
        for name, value in self.limits.items():
            resource.setrlimit(RLIMITS[name], (value, value))

    def apply(self, pid: int, launched: bool) -> None:
        """Set the knobs on a running process from outside (a launched one set them in ``in_child``).

        Raises:
            LabkitError: the process is gone.
            PermissionDenied: the kernel refused (raising a hard limit or nice below 0 needs root).
        """
        if launched:
            return
        tasks = _tasks(pid)
        try:
            if self.spec.nice is not None:
                for tid in tasks:
                    os.setpriority(os.PRIO_PROCESS, tid, self.spec.nice)
            if self.spec.cpus is not None:
                for tid in tasks:
                    os.sched_setaffinity(tid, self.spec.cpus)
            for name, value in self.limits.items():
                resource.prlimit(pid, RLIMITS[name], (value, value))
        except PermissionError as err:
            raise PermissionDenied(f"limiting pid {pid}", str(err)) from None
        except ProcessLookupError:
            raise LabkitError(f"no process with pid {pid}") from None

    def verify(self, pid: int) -> dict[str, str]:
        """prlimit(2) read back per rlimit ("soft/hard"), nice and affinity of every thread; {} if gone."""
        found: dict[str, str] = {}
        try:
            for name in self.limits:
                soft, hard = resource.prlimit(pid, RLIMITS[name])
                found[f"RLIMIT_{name.upper()}"] = f"{soft}/{hard}"
            tasks = _tasks(pid)
            if self.spec.nice is not None:
                found["nice"] = ",".join(sorted({str(os.getpriority(os.PRIO_PROCESS, tid)) for tid in tasks}))
            if self.spec.cpus is not None:
                found["cpus"] = ",".join(map(str, sorted(os.sched_getaffinity(pid))))
        except (ProcessLookupError, LabkitError):
            return {}
        return found


def _tasks(pid: int) -> list[int]:
    """Thread ids of ``pid``. Raises LabkitError if it is gone."""
    try:
        return _proc.tids(pid)
    except OSError:
        raise LabkitError(f"no process with pid {pid}") from None
