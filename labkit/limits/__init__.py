"""Limit a training process's CPU and memory, and say which kernel mechanism enforces each limit.

One module per mechanism, each following :class:`~labkit.limits.mechanism.Mechanism`; the
choice of mechanism per limit is made in one place, :mod:`labkit.limits.chooser`:

=============  ===========================================================================
cgroup         :mod:`~labkit.limits.cgroup`: a cgroup of our own, v2 ``cpu.max``/``memory.max``
               or v1 ``cpu.cfs_quota_us``/``memory.limit_in_bytes``; the whole tree; past the
               memory limit the kernel's OOM killer sends SIGKILL (137).
scope          :mod:`~labkit.limits.scope`: ``systemd-run --user --scope`` (CPUQuota=, MemoryMax=).
rlimit         :mod:`~labkit.limits.rlimit`: ``RLIMIT_AS`` and the other rlimits, nice, affinity;
               per process; an allocation past RLIMIT_AS fails (MemoryError), no kill.
throttle       :mod:`~labkit.limits.throttle`: SIGSTOP/SIGCONT duty cycling of the whole tree.
cpulimit       :mod:`~labkit.limits.cpulimit`: the ``cpulimit`` tool on one process; a tree is
               handed to the throttle, said on stderr.
=============  ===========================================================================

>>> run = run_limited(["python3", "train.py"], LimitSpec(cpu_quota=30, memory_max=2**30))  # doctest: +SKIP
>>> [str(a) for a in run.applied]                                                           # doctest: +SKIP
['cpu quota 30%: cgroup v1 (cpu.cfs_quota_us) (30000 us of CPU per 100000 us)', ...]
"""

from labkit.limits.chooser import available, cgroup_version
from labkit.limits.command import add_arguments, main
from labkit.limits.mechanism import Applied, Mechanism
from labkit.limits.process import Held, LimitedProcess, limit_pid, run_limited
from labkit.limits.spec import MECHANISMS, PREFIX, RLIMITS, LimitSpec, parse_size

__all__ = ["MECHANISMS", "PREFIX", "RLIMITS", "Applied", "Held", "LimitSpec", "LimitedProcess", "Mechanism",
           "add_arguments", "available", "cgroup_version", "limit_pid", "main", "parse_size", "run_limited"]
