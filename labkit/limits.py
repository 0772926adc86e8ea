"""Limit a training process's CPU and memory, and say which kernel mechanism enforces each limit.

Mechanisms, strongest first (``auto`` picks the strongest the machine allows, per limit):

=============  ===========================================================================
cgroup         a cgroup of our own under this process's cgroup: v2 ``cpu.max``/``memory.max``
               /``memory.high``, or v1 ``cpu.cfs_quota_us``/``memory.limit_in_bytes``. Holds a
               whole process tree; a memory limit ends in the kernel's OOM killer (SIGKILL, 137).
scope          ``systemd-run --user --scope``: systemd makes the cgroup (needs a user manager;
               ``auto`` uses it where no cgroup of our own is writable).
rlimit         ``RLIMIT_AS`` (prlimit/ulimit -v): per process; allocations beyond it *fail*,
               so Python raises MemoryError instead of being killed. No CPU share limit exists.
throttle       SIGSTOP/SIGCONT duty cycling of the whole tree (:mod:`labkit._throttle`).
cpulimit       the ``cpulimit`` tool (``--mechanism cpulimit``): the same SIGSTOP/SIGCONT, but per
               process (``-m`` gives each child its own quota), so it holds one process: a
               process with children is refused (``--pid``), and when a launched command
               starts children the throttle takes over the tree, said on stderr.
=============  ===========================================================================

``nice``, CPU affinity and other rlimits need no choice: setpriority(2),
sched_setaffinity(2) and setrlimit(2)/prlimit(2) on every thread of the process.

>>> run = run_limited(["python3", "train.py"], LimitSpec(cpu_quota=30, memory_max=2**30))  # doctest: +SKIP
>>> [str(a) for a in run.applied]                                                           # doctest: +SKIP
['cpu quota 30%: cgroup v1 (cpu.cfs_quota_us=30000 per 100000 us)', ...]
"""

from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from labkit import cgroups
from labkit._linux import cgroup as _cgroup
from labkit._linux.tree import path as _proc_path
from labkit.errors import BadArgument, LabkitError, PermissionDenied

if TYPE_CHECKING:
    from labkit._throttle import Throttle

MECHANISMS = ("auto", "cgroup", "scope", "rlimit", "throttle", "cpulimit")
RLIMITS = {"nofile": resource.RLIMIT_NOFILE, "as": resource.RLIMIT_AS, "nproc": resource.RLIMIT_NPROC,
           "fsize": resource.RLIMIT_FSIZE, "core": resource.RLIMIT_CORE, "cpu": resource.RLIMIT_CPU}
PREFIX = "labkit-limit-"
_PERIOD_US = 100_000


@dataclass
class LimitSpec:
    """The limits to apply; None means "leave as it is"."""

    cpu_quota: float | None = None      # percent of one CPU (150 = one and a half)
    memory_max: int | None = None       # bytes: the hard limit
    memory_high: int | None = None      # bytes: throttle-and-reclaim point (cgroup v2 only)
    nice: int | None = None
    cpus: list[int] | None = None
    rlimits: dict[str, int] = field(default_factory=dict)  # name in RLIMITS -> soft = hard value
    mechanism: str = "auto"

    def check(self) -> None:
        """Raise BadArgument for a value no mechanism accepts."""
        if self.mechanism not in MECHANISMS:
            raise BadArgument(f"unknown mechanism {self.mechanism!r}; choose one of {', '.join(MECHANISMS)}")
        if self.cpu_quota is not None and not 0 < self.cpu_quota <= 100 * (os.cpu_count() or 1):
            raise BadArgument(f"--cpu-quota must be above 0 and at most {100 * (os.cpu_count() or 1)} "
                              f"(100 = one CPU), got {self.cpu_quota:g}")
        for name, value in (("--memory-max", self.memory_max), ("--memory-high", self.memory_high)):
            if value is not None and value < 1 << 20:
                raise BadArgument(f"{name} must be at least 1M, got {value} bytes")
        if self.nice is not None and not -20 <= self.nice <= 19:
            raise BadArgument(f"--nice must be from -20 to 19, got {self.nice}")
        if self.cpus is not None:
            allowed = os.sched_getaffinity(0)
            if not self.cpus or not set(self.cpus) <= allowed:
                raise BadArgument(f"--cpus {self.cpus} is not a subset of the CPUs this process may use "
                                  f"({sorted(allowed)})")
        for name in self.rlimits:
            if name not in RLIMITS:
                raise BadArgument(f"unknown rlimit {name!r}; choose from {', '.join(RLIMITS)}")


@dataclass(frozen=True)
class Applied:
    """One limit in force, and the mechanism that enforces it."""

    limit: str
    value: str
    mechanism: str
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.limit} {self.value}: {self.mechanism}" + (f" ({self.detail})" if self.detail else "")


def cgroup_version() -> str:
    """'v2', 'v1', 'hybrid' (v1 controllers and a v2 mount) or 'none': the kernel layer's reading of
    /proc/self/mountinfo and /proc/self/cgroup, the same one ``labkit doctor`` reports."""
    return _cgroup.layout().version


def _controllers() -> dict[str, _cgroup.Controller]:
    """The cpu and memory verdicts (a real child cgroup made and removed), as doctor gives them."""
    found = _cgroup.layout()
    return {ctrl: _cgroup.controller(ctrl, found) for ctrl in ("cpu", "memory")}


def available() -> dict[str, str | None]:
    """For each mechanism, None if usable here, else why not (one line)."""
    verdicts = _controllers()
    found: dict[str, str | None] = {}
    for ctrl, verdict in verdicts.items():
        found[f"cgroup-{ctrl}"] = None if verdict.ok else f"no cgroup of ours gets a writable {ctrl} limit: " \
            f"{verdict.detail} (see `labkit doctor`)"
    from labkit.systemd.real import why_unavailable as no_user_manager

    found["scope"] = no_user_manager()
    found["rlimit"] = None
    found["throttle"] = None if os.path.exists(_proc_path("self", "stat")) else "needs /proc (Linux)"
    found["cpulimit"] = None if shutil.which("cpulimit") else "cpulimit is not installed (apt install cpulimit)"
    return {name: found[name] for name in ("cgroup-cpu", "cgroup-memory", "scope", "rlimit", "throttle", "cpulimit")}


class LimitedProcess:
    """A command started under limits; ``wait()`` cleans up and explains how it ended."""

    def __init__(self, popen: subprocess.Popen, applied: list[Applied], group: cgroups.CgroupSet | None,
                 helpers: list, memory_by_scope: bool = False) -> None:
        self.popen, self.applied, self._group, self._helpers = popen, applied, group, helpers
        self._memory_by_scope = memory_by_scope
        self.pid = popen.pid
        self._oom_before = group.oom_kills() if group else 0
        self.returncode: int | None = None
        self.oom_killed = False

    def wait(self, timeout_s: float | None = None) -> int:
        """Wait for the command; return its shell-style exit code (137 for an OOM kill)."""
        if self.returncode is not None:
            return self.returncode  # asked again: the cgroup (and its OOM counter) is gone by now
        code = self.popen.wait(timeout=timeout_s)
        self.returncode = 128 - code if code < 0 else code
        # Our own cgroup: its OOM counter (memory.events oom_kill, v1 memory.oom_control) says. A scope's
        # cgroup is systemd's, removed with its counters once empty: SIGKILL under its MemoryMax= is the sign.
        self.oom_killed = (self._group is not None and self._group.oom_kills() > self._oom_before) or \
            (self.returncode == 137 and self._memory_by_scope)
        self.close()
        return self.returncode

    def poll(self) -> int | None:
        """The exit code if the command has ended, else None."""
        return None if self.popen.poll() is None else self.wait()

    def how_it_ended(self) -> str:
        """One sentence: exit code, or the OOM kill and the limit that caused it."""
        if self.returncode is None:
            return "still running"
        if self.oom_killed:
            limit = next((a.value for a in self.applied if a.limit == "memory max"), "?")
            return f"killed by the kernel's OOM killer: it used more than the {limit} memory limit (exit 137)"
        from labkit.signals import explain_exit_code

        return explain_exit_code(self.returncode)

    def stop(self, timeout_s: float = 10.0) -> int:
        """SIGTERM the command (SIGKILL after ``timeout_s``), wait, clean up."""
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                return self.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.popen.kill()
        return self.wait()

    def close(self) -> None:
        """Stop the helpers (throttle, cpulimit) and remove the cgroup once it is empty."""
        for helper in self._helpers:
            helper.stop()
        self._helpers = []
        if self._group is not None:
            self._group.kill(timeout_s=2.0)  # what the command left behind goes with it
            self._group.remove()
            self._group = None

    def __enter__(self) -> "LimitedProcess":
        return self

    def __exit__(self, *exc) -> None:
        if self.popen.poll() is None:
            self.stop()
        self.close()


def run_limited(command: list[str], spec: LimitSpec, **popen_kwargs) -> LimitedProcess:
    """Start ``command`` under ``spec``; report each limit's mechanism in ``.applied``.

    Raises:
        BadArgument: a bad limit, or a mechanism that cannot enforce a limit asked of it.
        PermissionDenied: the kernel refused a limit (raising a hard rlimit, nice below 0).
    """
    spec.check()
    plan = _plan(spec)
    group = _make_cgroup(spec, plan) if any(m.startswith("cgroup") for m in plan.values()) else None
    applied = _describe(spec, plan, group)
    preexec = _preexec(spec, plan, group)
    if "scope" in plan.values():
        command = _in_scope(command, spec, plan)
    try:
        popen = subprocess.Popen(command, preexec_fn=preexec, **popen_kwargs)
    except OSError:
        if group:
            group.remove()
        raise
    helpers = _start_cpu_helper(popen.pid, spec, plan, applied)
    return LimitedProcess(popen, applied, group, helpers, memory_by_scope=plan.get("memory") == "scope")


def _plan(spec: LimitSpec) -> dict[str, str]:
    """Which mechanism enforces the CPU quota and the memory limits."""
    can = available()
    plan: dict[str, str] = {}
    wanted = spec.mechanism
    if spec.cpu_quota is not None:
        plan["cpu"] = _pick("cpu quota", wanted, can, cgroup="cgroup-cpu", fallback="throttle",
                            refused={"rlimit": "an rlimit cannot share CPU time (RLIMIT_CPU only kills after N "
                                               "seconds); use cgroup, throttle or cpulimit"})
    if spec.memory_max is not None or spec.memory_high is not None:
        plan["memory"] = _pick("memory limit", wanted, can, cgroup="cgroup-memory", fallback="rlimit",
                               refused={"throttle": "stopping and continuing a process does not limit its memory",
                                        "cpulimit": "cpulimit limits CPU only"})
        if spec.memory_high is not None and plan["memory"] not in ("cgroup-memory", "scope"):
            raise BadArgument("--memory-high needs a cgroup (it throttles and reclaims before the hard limit)")
    return plan


def _pick(what: str, wanted: str, can: dict, cgroup: str, fallback: str, refused: dict[str, str]) -> str:
    if wanted in refused:
        raise BadArgument(f"--mechanism {wanted} cannot enforce a {what}: {refused[wanted]}")
    if wanted == "auto":
        return cgroup if can[cgroup] is None else "scope" if can["scope"] is None else fallback
    name = cgroup if wanted == "cgroup" else wanted
    if can.get(name) is not None:
        raise BadArgument(f"--mechanism {wanted} is not available here: {can[name]}")
    return name


def _make_cgroup(spec: LimitSpec, plan: dict[str, str]) -> cgroups.CgroupSet:
    """A child cgroup in each hierarchy the shared verdict chose for a planned cgroup limit."""
    verdicts = _controllers()
    group = cgroups.CgroupSet()
    name = f"{PREFIX}{os.getpid()}-{time.monotonic_ns() % 10**9}"
    for ctrl, verdict in verdicts.items():
        if plan.get(ctrl) != f"cgroup-{ctrl}" or verdict.hierarchy is None:
            continue
        if verdict.hierarchy in group.folders or verdict.folder is None:
            continue  # v2: one child holds both limits
        parent = Path(verdict.folder)
        cgroups.remove_stale(parent, PREFIX)
        child = parent / name
        try:
            child.mkdir()
        except OSError:
            continue
        group.folders[verdict.hierarchy] = child
    _write_cgroup_limits(group, spec, plan)
    return group


def _write_cgroup_limits(group: cgroups.CgroupSet, spec: LimitSpec, plan: dict[str, str]) -> None:
    v1cpu, v1mem, v2 = group.folders.get("cpu"), group.folders.get("memory"), group.folders.get("v2")
    if plan.get("cpu") == "cgroup-cpu" and spec.cpu_quota is not None:  # _plan picks it only for a quota
        quota = int(spec.cpu_quota / 100 * _PERIOD_US)
        ok = (v1cpu and cgroups.write(v1cpu / "cpu.cfs_period_us", str(_PERIOD_US))
              and cgroups.write(v1cpu / "cpu.cfs_quota_us", str(quota))) or \
             (v2 and cgroups.write(v2 / "cpu.max", f"{quota} {_PERIOD_US}"))
        if not ok:
            group.remove()
            raise PermissionDenied("setting the CPU quota", "the cgroup refused cpu.cfs_quota_us / cpu.max")
    if plan.get("memory") == "cgroup-memory":
        limit = spec.memory_max
        if v1mem and limit:
            ok = cgroups.write(v1mem / "memory.limit_in_bytes", str(limit))
            cgroups.write(v1mem / "memory.memsw.limit_in_bytes", str(limit))  # no escape into swap
        elif v2:
            ok = (not limit or cgroups.write(v2 / "memory.max", str(limit))) and \
                 (not spec.memory_high or cgroups.write(v2 / "memory.high", str(spec.memory_high)))
            cgroups.write(v2 / "memory.swap.max", "0")
        else:
            ok = False
        if not ok:
            group.remove()
            raise PermissionDenied("setting the memory limit", "the cgroup refused memory.limit_in_bytes / memory.max")


def _describe(spec: LimitSpec, plan: dict[str, str], group: cgroups.CgroupSet | None) -> list[Applied]:
    applied = []
    folders = group.folders if group else {}
    if spec.cpu_quota is not None:
        quota = f"{spec.cpu_quota:g}%"
        mechanism = plan["cpu"]
        if mechanism == "cgroup-cpu":
            where = "cgroup v1 (cpu.cfs_quota_us)" if "cpu" in folders else "cgroup v2 (cpu.max)"
            applied.append(Applied("cpu quota", quota, where,
                                   f"{int(spec.cpu_quota / 100 * _PERIOD_US)} us of CPU per {_PERIOD_US} us"))
        elif mechanism == "scope":
            applied.append(Applied("cpu quota", quota, "systemd-run --user --scope (CPUQuota=)",
                                   "systemd's cgroup for the command"))
        elif mechanism == "throttle":
            applied.append(Applied("cpu quota", quota, "throttle (labkit's SIGSTOP/SIGCONT duty cycle)",
                                   "the whole process tree, adjusted every 100 ms"))
        else:
            applied.append(Applied("cpu quota", quota, "cpulimit (SIGSTOP/SIGCONT, the tool)",
                                   "cpulimit -l on this one process; if it starts children, labkit's throttle "
                                   "takes over the tree"))
    if spec.memory_max is not None or spec.memory_high is not None:
        if plan["memory"] == "cgroup-memory":
            where = "cgroup v1 (memory.limit_in_bytes)" if "memory" in folders else "cgroup v2 (memory.max)"
            if spec.memory_max:
                applied.append(Applied("memory max", _size(spec.memory_max), where,
                                       "the whole tree; beyond it the kernel's OOM killer sends SIGKILL"))
            if spec.memory_high:
                applied.append(Applied("memory high", _size(spec.memory_high), "cgroup v2 (memory.high)",
                                       "above it the kernel throttles and reclaims"))
        elif plan["memory"] == "scope":
            applied.append(Applied("memory max", _size(spec.memory_max), "systemd-run --user --scope (MemoryMax=)",
                                   "systemd's cgroup; beyond it the OOM killer sends SIGKILL"))
        else:
            applied.append(Applied("memory max", _size(spec.memory_max), "rlimit (RLIMIT_AS, like ulimit -v)",
                                   "per process, address space not RSS; allocations fail: Python raises "
                                   "MemoryError instead of being killed"))
    if spec.nice is not None:
        applied.append(Applied("nice", str(spec.nice), "setpriority(2)", "inherited by children"))
    if spec.cpus is not None:
        applied.append(Applied("cpus", ",".join(map(str, spec.cpus)), "sched_setaffinity(2)", "inherited by children"))
    for name, value in spec.rlimits.items():
        applied.append(Applied(f"rlimit {name}", str(value), f"setrlimit(2) RLIMIT_{name.upper()}",
                               "per process, inherited by children"))
    return applied


def _preexec(spec: LimitSpec, plan: dict[str, str], group: cgroups.CgroupSet | None):
    def prepare() -> None:  # in the child, before exec: join the cgroup first, so children inherit it
        if group is not None:
            for folder in group.folders.values():
                with open(folder / "cgroup.procs", "w") as handle:
                    handle.write(str(os.getpid()))
        if spec.nice is not None:
            os.setpriority(os.PRIO_PROCESS, 0, spec.nice)
        if spec.cpus is not None:
            os.sched_setaffinity(0, spec.cpus)
        limits = dict(spec.rlimits)
        if plan.get("memory") == "rlimit" and spec.memory_max:
            limits["as"] = spec.memory_max
        for name, value in limits.items():
            resource.setrlimit(RLIMITS[name], (value, value))

    return prepare


def _in_scope(command: list[str], spec: LimitSpec, plan: dict[str, str]) -> list[str]:
    """``systemd-run --user --scope``: systemd creates the cgroup and runs the command in it."""
    properties = []
    if plan.get("cpu") == "scope":
        properties += ["-p", f"CPUQuota={spec.cpu_quota:g}%"]
    if plan.get("memory") == "scope":
        properties += ["-p", f"MemoryMax={spec.memory_max}"] if spec.memory_max else []
        properties += ["-p", f"MemoryHigh={spec.memory_high}"] if spec.memory_high else []
    return ["systemd-run", "--user", "--scope", "--quiet", *properties, "--", *command]


def _start_cpu_helper(pid: int, spec: LimitSpec, plan: dict[str, str], applied: list[Applied] | None = None) -> list:
    if spec.cpu_quota is None:  # _plan picks a CPU mechanism only for a quota
        return []
    if plan.get("cpu") == "throttle":
        from labkit._throttle import Throttle

        return [Throttle(pid, spec.cpu_quota).start()]
    if plan.get("cpu") == "cpulimit":
        return [_Cpulimit(pid, spec.cpu_quota, applied)]
    return []


def _cpulimit_cannot_hold(pid: int, children: int) -> str:
    return (f"cpulimit cannot hold pid {pid}'s {children} child process{'es' if children > 1 else ''}: it limits "
            f"each process on its own (-m watches children but gives each its own quota)")


class _Cpulimit:
    """The ``cpulimit`` tool on one process, watched for children.

    cpulimit (Debian's limitcpu 2.x) measures and stops each process on its own: with ``-m`` it
    follows the children but gives *each* the quota, so a parent with two busy children under
    ``cpulimit -l 40 -m`` used 172 % of a core. So labkit runs it on the one process (no ``-m``) and
    watches: the moment that process has children, cpulimit cannot hold the tree, and labkit's
    throttle (the same SIGSTOP/SIGCONT, over the whole tree) takes over, said on stderr and in
    ``applied``. ``labkit limit --pid`` refuses a process that already has children.
    """

    def __init__(self, pid: int, percent: float, applied: list[Applied] | None = None, poll_s: float = 0.05) -> None:
        self.pid, self.percent, self.poll_s = pid, percent, poll_s
        self.applied = applied
        self.handed_over: Throttle | None = None  #: the Throttle holding the tree once children appeared
        self.message: str | None = None  #: what was said when the throttle took over
        self.process = subprocess.Popen(["cpulimit", "-p", str(pid), "-l", f"{percent:g}", "-z"],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._watch, name=f"cpulimit-watch-{pid}", daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        import psutil

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
        from labkit._throttle import Throttle
        from labkit.signals import terminate_child

        with self._lock:
            if self._stopping.is_set():
                return
            terminate_child(self.process)  # on SIGTERM cpulimit continues the target before it exits
            try:
                self.handed_over = Throttle(self.pid, self.percent).start()
            except (ProcessLookupError, LabkitError):
                return  # the target ended meanwhile
        self.message = (f"{_cpulimit_cannot_hold(self.pid, children)}; labkit's throttle now holds the whole tree "
                        f"at {self.percent:g}% (next time use --mechanism throttle or cgroup)")
        print(f"labkit limit: {self.message}", file=sys.stderr, flush=True)
        if self.applied is not None:
            for index, item in enumerate(self.applied):
                if item.limit == "cpu quota":
                    self.applied[index] = Applied("cpu quota", item.value,
                                                  "throttle (labkit's SIGSTOP/SIGCONT duty cycle), taking over from "
                                                  "cpulimit", "the whole process tree: cpulimit holds each process "
                                                  "on its own")

    def stop(self) -> None:
        from labkit.signals import terminate_child

        self._stopping.set()
        with self._lock:
            terminate_child(self.process)  # on SIGTERM cpulimit continues the target before it exits
            if self.handed_over is not None:
                self.handed_over.stop()
        self._thread.join(timeout=2.0)


def limit_pid(pid: int, spec: LimitSpec) -> tuple[list[Applied], list]:
    """Apply ``spec`` to a running process (renice, taskset -a, prlimit, a cgroup move, a throttle).

    Returns the limits applied and the helpers (throttle, cpulimit) that keep working until
    their ``stop()``. Raises NoSuchProcess-like LabkitError for a pid that is gone.
    """
    spec.check()
    _check_target(pid)
    plan = _plan(spec)
    if plan.get("cpu") == "cpulimit":
        _refuse_a_tree_for_cpulimit(pid)
    if plan.get("memory") == "rlimit" and spec.memory_max:
        spec.rlimits = {**spec.rlimits, "as": spec.memory_max}
    group = _make_cgroup(spec, plan) if any(m.startswith("cgroup") for m in plan.values()) else None
    applied = _describe(spec, plan, group)
    tasks = _tasks(pid)
    try:
        if spec.nice is not None:
            for tid in tasks:  # nice is per thread on Linux: renice -p alone changes only the main one
                os.setpriority(os.PRIO_PROCESS, tid, spec.nice)
        if spec.cpus is not None:
            for tid in tasks:
                os.sched_setaffinity(tid, spec.cpus)
        for name, value in spec.rlimits.items():
            resource.prlimit(pid, RLIMITS[name], (value, value))
        if group is not None:
            for problem in group.add(pid):
                raise PermissionDenied(problem)
    except PermissionError as err:
        raise PermissionDenied(f"limiting pid {pid}", str(err)) from None
    return applied, _start_cpu_helper(pid, spec, plan) + ([_GroupHolder(group)] if group else [])


def _refuse_a_tree_for_cpulimit(pid: int) -> None:
    import psutil

    try:
        children = len(psutil.Process(pid).children(recursive=True))
    except psutil.NoSuchProcess:
        raise LabkitError(f"no process with pid {pid}") from None
    if children:
        raise BadArgument(f"--mechanism cpulimit refuses pid {pid}: {_cpulimit_cannot_hold(pid, children)}; "
                          f"use --mechanism throttle or cgroup to hold the whole tree")


class _GroupHolder:
    """Keeps a running process's cgroup until ``stop()``: then moves nothing, removes it when empty."""

    def __init__(self, group: cgroups.CgroupSet) -> None:
        self.group = group

    def stop(self) -> None:
        self.group.remove(timeout_s=0.1)


def _tasks(pid: int) -> list[int]:
    try:
        return [int(tid) for tid in os.listdir(_proc_path(pid, "task"))]
    except FileNotFoundError:
        raise LabkitError(f"no process with pid {pid}") from None


def _check_target(pid: int) -> None:
    if pid <= 1:
        raise BadArgument(f"refusing to limit pid {pid}")
    if not os.path.exists(_proc_path(pid)):
        raise LabkitError(f"no process with pid {pid}")


def _size(value: int | None) -> str:
    if value is None:
        return "-"
    for unit, factor in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if value % factor == 0:
            return f"{value // factor}{unit}"
    return f"{value}B"


def parse_size(text: str) -> int:
    """``200M``, ``1.5G``, ``4096`` (bytes) -> bytes, as systemd and docker write sizes.

    Raises:
        BadArgument: not a size.
    """
    from labkit.systemd.values import InvalidValue
    from labkit.systemd.values import parse_size as systemd_size

    try:
        value = systemd_size(text)
    except (InvalidValue, ValueError) as err:
        raise BadArgument(f"bad size {text!r}: {err}") from None
    if value is None:
        raise BadArgument("a limit of 'infinity' is no limit; leave the option out")
    return value


def _size_argument(text: str) -> int:
    import argparse

    try:
        return parse_size(text)
    except BadArgument as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def add_arguments(parser) -> None:
    """The options of ``labkit limit``."""
    parser.add_argument("--cpu-quota", type=float, default=None, metavar="PCT", help="percent of one CPU (150 = 1.5)")
    parser.add_argument("--memory-max", type=_size_argument, default=None, metavar="SIZE", help="e.g. 300M, 2G")
    parser.add_argument("--memory-high", type=_size_argument, default=None, metavar="SIZE", help="cgroup v2 only")
    parser.add_argument("--nice", type=int, default=None, help="-20 (first) .. 19 (last)")
    parser.add_argument("--cpus", default=None, metavar="LIST", help="CPU list like 0 or 0,2 or 0-3 (taskset -c)")
    parser.add_argument("--nofile", type=int, default=None, metavar="N", help="open files (ulimit -n)")
    parser.add_argument("--address-space", type=_size_argument, default=None, metavar="SIZE",
                        help="RLIMIT_AS (ulimit -v), per process")
    parser.add_argument("--mechanism", choices=MECHANISMS, default="auto",
                        help="auto: the strongest here; cpulimit holds one process (a tree goes to the throttle)")
    parser.add_argument("--pid", type=int, default=None, help="limit a running process instead of starting CMD")
    parser.add_argument("--for", dest="hold_for", type=float, default=None, metavar="SEC",
                        help="with --pid and a throttle: hold the limit SEC seconds (default: until it exits)")


def main(args, command: list[str]) -> int:
    """``labkit limit ... -- CMD``: run CMD under the limits; exit with its code."""
    spec = LimitSpec(args.cpu_quota, args.memory_max, args.memory_high, args.nice, _cpu_list(args.cpus),
                     {k: v for k, v in (("nofile", args.nofile), ("as", args.address_space)) if v is not None},
                     args.mechanism)
    if args.pid is not None:
        if command:
            raise BadArgument("give either --pid PID or a command after --, not both")
        return _limit_running(args.pid, spec, args.hold_for)
    if not command:
        raise BadArgument("no command: `labkit limit --cpu-quota 30 -- python train.py`")
    try:
        run = run_limited(command, spec)
    except FileNotFoundError:
        raise BadArgument(f"command not found: {command[0]}") from None
    for item in run.applied:
        print(f"labkit limit: {item}", file=sys.stderr)
    signal.signal(signal.SIGINT, lambda *_: run.popen.send_signal(signal.SIGINT))
    signal.signal(signal.SIGTERM, lambda *_: run.popen.send_signal(signal.SIGTERM))
    code = run.wait()
    if run.oom_killed or code != 0:
        print(f"labkit limit: {command[0]} {run.how_it_ended()}", file=sys.stderr)
    return code


def _limit_running(pid: int, spec: LimitSpec, hold_for: float | None) -> int:
    applied, helpers = limit_pid(pid, spec)
    for item in applied:
        print(f"labkit limit: pid {pid}: {item}", file=sys.stderr)
    if not any(not isinstance(h, _GroupHolder) for h in helpers):
        return 0  # kernel-side limits stay without us
    print(f"labkit limit: holding pid {pid} at {spec.cpu_quota:g}% until it exits (Ctrl-C to release)", file=sys.stderr)
    deadline = None if hold_for is None else time.monotonic() + hold_for
    try:
        while os.path.exists(_proc_path(pid)) and (deadline is None or time.monotonic() < deadline):
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        for helper in helpers:
            helper.stop()
    return 0


def _cpu_list(text: str | None) -> list[int] | None:
    if text is None:
        return None
    cpus: list[int] = []
    try:
        for part in text.split(","):
            low, _, high = part.partition("-")
            cpus += list(range(int(low), int(high or low) + 1))
    except ValueError:
        raise BadArgument(f"bad CPU list {text!r}: use 0 or 0,2 or 0-3") from None
    return cpus
