"""How many kernels ``labkit grade`` runs at once by default: cores, waiting and memory.

The course's checks mostly wait (for a trainer's steps, grace periods, restarts): one student's
whole course took 68 s of wall time here with about 80 % of it waiting (issue 22; 23 s of CPU
for 2 students x 7 lessons graded in 136 s with ``--jobs 1``: 83 % waiting). A kernel that waits
a share ``w`` of its time keeps ``1 - w`` of a core busy, so ``cores / (1 - w)`` kernels fill
the cores. Every kernel's memory is capped by its cgroup (``--memory-max``, default 2 GiB), so
no more kernels run than ``available memory / cap``: the machine is never oversubscribed, even
if every submission uses all it may.

The share of waiting is measured on every run and kept in ``DIR/.grade-load.json``: the CPU
time the grading used (this process and every child it reaped: ``getrusage(RUSAGE_SELF)`` and
``RUSAGE_CHILDREN``, see getrusage(2)) against the wall time the submissions took. The next run
in that folder starts from the measured share; a first run from :data:`WAIT_SHARE_DEFAULT`.
"""

from __future__ import annotations

import json
import math
import os
import resource
from dataclasses import dataclass
from pathlib import Path

LOAD_NAME = ".grade-load.json"
WAIT_SHARE_DEFAULT = 0.8  #: measured for the course's solutions (issue 22), used before a run measured one
#: never more kernels per core than were shown not to change a score: --jobs 8 on 2 cores gave the
#: same scores as --jobs 1 for the whole course (issue 22); beyond that timing checks are untested
KERNELS_PER_CORE_MAX = 4
MEMORY_PER_KERNEL_DEFAULT = 2 * 2**30  #: assumed when --memory-max is off


@dataclass(frozen=True)
class Plan:
    """The default ``--jobs`` and why."""

    jobs: int
    cores: int
    wait_share: float
    measured: bool  #: the share comes from an earlier run in this folder
    memory_jobs: int  #: the most kernels the available memory allows

    def describe(self) -> str:
        """One line for stderr."""
        source = "measured in this folder" if self.measured else "the course's figure, not yet measured here"
        return (f"--jobs {self.jobs}: {self.cores} core(s), {self.wait_share:.0%} of grading time waiting "
                f"({source}), memory for {self.memory_jobs} kernel(s)")


def cores() -> int:
    """The CPUs this process may run on (its affinity mask, as taskset or a container sets it)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def plan_jobs(core_count: int, wait_share: float, available_bytes: int, memory_per_kernel_bytes: int | None,
              measured: bool = False) -> Plan:
    """Kernels at once: ``ceil(cores / (1 - wait))``, at most :data:`KERNELS_PER_CORE_MAX` per
    core and what memory holds, at least 1.

    >>> plan_jobs(2, 0.7, 64 * 2**30, 2 * 2**30).jobs
    7
    >>> plan_jobs(2, 0.8, 5 * 2**30, 2 * 2**30).jobs
    2
    """
    wait = min(max(wait_share, 0.0), 0.999)
    by_cpu = min(math.ceil(core_count / (1.0 - wait) - 1e-9), KERNELS_PER_CORE_MAX * core_count)
    per_kernel = memory_per_kernel_bytes or MEMORY_PER_KERNEL_DEFAULT
    by_memory = max(1, available_bytes // per_kernel)
    return Plan(max(1, min(by_cpu, by_memory)), core_count, wait, measured, by_memory)


def default_plan(out_dir: str | os.PathLike[str], memory_per_kernel_bytes: int | None) -> Plan:
    """The plan for a run writing to ``out_dir``: this machine's cores and available memory,
    the share of waiting measured there before (else :data:`WAIT_SHARE_DEFAULT`)."""
    import psutil

    measured = read_wait_share(out_dir)
    return plan_jobs(cores(), WAIT_SHARE_DEFAULT if measured is None else measured,
                     psutil.virtual_memory().available, memory_per_kernel_bytes, measured is not None)


def read_wait_share(out_dir: str | os.PathLike[str]) -> float | None:
    """The share of waiting an earlier run measured in ``out_dir``, or None."""
    try:
        data = json.loads((Path(out_dir) / LOAD_NAME).read_text())
        share = float(data["wait_share"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return share if 0.0 <= share <= 1.0 else None


class LoadMeter:
    """Measures CPU time against the wall time of graded submissions over one run.

    >>> meter = LoadMeter(); meter.add_wall(10.0); 0.0 <= meter.wait_share() <= 1.0
    True
    """

    def __init__(self) -> None:
        self.cpu_start_s = _cpu_s()
        self.wall_s = 0.0
        self.count = 0

    def add_wall(self, seconds: float) -> None:
        """Count one graded submission's wall time."""
        self.wall_s += max(0.0, seconds)
        self.count += 1

    def cpu_s(self) -> float:
        """CPU seconds used since the meter started (the grader and its reaped children)."""
        return max(0.0, _cpu_s() - self.cpu_start_s)

    def wait_share(self) -> float:
        """1 - CPU / wall, clamped to [0, 1]."""
        if self.wall_s <= 0:
            return 0.0
        return min(1.0, max(0.0, 1.0 - self.cpu_s() / self.wall_s))

    def save(self, out_dir: str | os.PathLike[str]) -> None:
        """Keep the measured share for the next run (only when something was graded)."""
        from labkit._atomic import write_json_atomic

        if self.count == 0 or self.wall_s < 1.0:  # too little to measure anything
            return
        write_json_atomic(Path(out_dir) / LOAD_NAME, {
            "wait_share": round(self.wait_share(), 3), "cpu_s": round(self.cpu_s(), 2),
            "submission_wall_s": round(self.wall_s, 2), "submissions": self.count})


def _cpu_s() -> float:
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total
