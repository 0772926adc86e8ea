"""Start a command under limits (:func:`run_limited`), or limit a running process (:func:`limit_pid`).

A command we start gets its own process group (unless the caller chose one), so that stopping
it ends everything it started: the throttle and cpulimit hold a tree without a cgroup, and
ending only the top process would leave its workers running (orphans are re-parented, and a
walk from the top no longer finds them; their process group still does).

>>> run = run_limited(["python3", "train.py"], LimitSpec(cpu_quota=30, memory_max=2**30))  # doctest: +SKIP
>>> [str(a) for a in run.applied]                                                           # doctest: +SKIP
['cpu quota 30%: cgroup v1 (cpu.cfs_quota_us) (30000 us of CPU per 100000 us)', ...]
>>> run.stop(grace_s=5)                                                                     # doctest: +SKIP
143
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from typing import Any

from labkit._linux import proc as _proc
from labkit.errors import BadArgument, LabkitError, PermissionDenied
from labkit.limits import tree_stop
from labkit.limits.chooser import choose
from labkit.limits.mechanism import Applied, Mechanism, in_order
from labkit.limits.scope import ScopeMechanism
from labkit.limits.spec import LimitSpec

__all__ = ["LimitedProcess", "Held", "run_limited", "limit_pid", "forward_signals"]


class LimitedProcess:
    """A command started under limits; ``wait()`` cleans up and explains how it ended.

    Attributes:
        popen: the :class:`subprocess.Popen` of the command (its ``pid`` is ours too).
        mechanisms: what enforces the limits, in the order they were set up.
        returncode: the shell-style exit code (128 + N for signal N) once ended, else None.
        oom_killed: the kernel's OOM killer ended a process inside the memory limit.
    """

    def __init__(self, popen: subprocess.Popen[Any], mechanisms: list[Mechanism], own_group: bool,
                 started_at: float) -> None:
        self.popen, self.pid = popen, popen.pid
        self.mechanisms = tuple(mechanisms)
        self._own_group, self._started_at = own_group, started_at
        self._oom_before = sum(m.oom_kills() for m in mechanisms)
        self._memory_by_scope = any(isinstance(m, ScopeMechanism) and m.memory for m in mechanisms)
        self._open = True
        self.returncode: int | None = None
        self.oom_killed = False

    @property
    def applied(self) -> list[Applied]:
        """Each limit in force and the mechanism enforcing it (a handover by cpulimit shows here)."""
        return in_order([item for m in self.mechanisms for item in m.applied()])

    def verify(self) -> dict[str, dict[str, str]]:
        """{mechanism's one-line description: what the kernel says is in force for the command}."""
        return {m.describe(): m.verify(self.pid) for m in self.mechanisms}

    def wait(self, timeout_s: float | None = None) -> int:
        """Wait for the command; return its shell-style exit code (137 for an OOM kill), then clean up.

        Raises:
            subprocess.TimeoutExpired: still running after ``timeout_s`` seconds.
        """
        if self.returncode is not None:
            return self.returncode  # asked again: the cgroup (and its OOM counter) is gone by now
        code = self.popen.wait(timeout=timeout_s)
        self.returncode = 128 - code if code < 0 else code
        # Our own cgroup: its OOM counter (v2 memory.events oom_kill, v1 memory.oom_control) says. A scope's
        # cgroup is systemd's, removed with its counters once empty: SIGKILL under its MemoryMax= is the sign.
        self.oom_killed = sum(m.oom_kills() for m in self.mechanisms) > self._oom_before or \
            (self.returncode == 137 and self._memory_by_scope)
        self.close()
        return self.returncode

    def poll(self) -> int | None:
        """The exit code if the command has ended, else None."""
        return None if self.popen.poll() is None else self.wait()

    def how_it_ended(self) -> str:
        """One sentence: the exit code in words, or the OOM kill and the limit that caused it."""
        if self.returncode is None:
            return "still running"
        if self.oom_killed:
            limit = next((a.value for a in self.applied if a.limit == "memory max"), "?")
            return f"killed by the kernel's OOM killer: it used more than the {limit} memory limit (exit 137)"
        from labkit.signals import explain_exit_code

        return explain_exit_code(self.returncode)

    def stop(self, grace_s: float = 10.0) -> int:
        """End the command and everything it started: SIGTERM (and SIGCONT) to the whole tree, SIGKILL
        to what is left after ``grace_s`` seconds; then clean up. Returns the command's exit code.
        """
        if self.returncode is None:
            members = tree_stop.members(self.pid, self._own_group, self._started_at)
            self._release_helpers()  # the throttle continues what it stopped: a stopped process ignores SIGTERM
            tree_stop.end(self.popen, members, grace_s, self._own_group, self._started_at)
        return self.wait()

    def close(self) -> None:
        """Stop the helpers (throttle, cpulimit), end what the command left behind, remove its cgroup.

        Safe to call again."""
        if not self._open:
            return
        self._release_helpers()
        reaped_by_us = self.returncode is not None  # wait() or stop() reaped it just now, then called close()
        if self._own_group and self.popen.poll() is not None and reaped_by_us:
            # What the command left in its group goes with it. Only right after our own reap: a group id
            # is reserved while a member lives, so once the group has emptied after a reap made elsewhere
            # (popen.wait() by the caller, maybe long ago) the id may belong to another process's group.
            tree_stop.end_group(self.pid, self._started_at)
        for mechanism in self.mechanisms:
            mechanism.clean_up()
        self._open = False

    def _release_helpers(self) -> None:
        for mechanism in self.mechanisms:
            if not mechanism.kernel_side:
                mechanism.clean_up()

    def __enter__(self) -> LimitedProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.popen.poll() is None:
            self.stop()
        self.close()


class Held:
    """What keeps a limit on a running process (a throttle's thread, a cgroup we made) until ``stop()``."""

    def __init__(self, mechanism: Mechanism) -> None:
        self.mechanism = mechanism

    def __repr__(self) -> str:
        return f"<Held {self.mechanism.describe()}>"

    def stop(self) -> None:
        """Release: stop the helper, remove the (empty) cgroup; the process keeps running. Safe to call again."""
        self.mechanism.clean_up()


def run_limited(command: list[str], spec: LimitSpec, **popen_kwargs: Any) -> LimitedProcess:
    """Start ``command`` under ``spec``; report each limit's mechanism in ``.applied``.

    ``popen_kwargs`` go to :class:`subprocess.Popen`. Unless they name ``start_new_session`` or
    ``process_group`` (``start_new_session=False``: stay in the caller's group), the command gets a
    process group of its own (setpgid(2) in the child, as ``process_group=0`` does on Python 3.11).

    Raises:
        BadArgument: a bad limit, or a mechanism that cannot enforce a limit asked of it.
        PermissionDenied: the kernel refused a limit (raising a hard rlimit, nice below 0, a cgroup file).
        FileNotFoundError: no such command.
    """
    mechanisms = choose(spec)
    new_group = "start_new_session" not in popen_kwargs and "process_group" not in popen_kwargs
    own_group = new_group or bool(popen_kwargs.get("start_new_session")) or popen_kwargs.get("process_group") == 0
    env = popen_kwargs.pop("env", None)
    prepared: list[Mechanism] = []
    try:
        for mechanism in mechanisms:
            command, env = mechanism.prepare(command, env)
            prepared.append(mechanism)
        started_at = time.time()
        popen = _start(command, mechanisms, new_group, env, popen_kwargs)
    except BaseException:
        for mechanism in prepared:
            mechanism.clean_up()
        raise
    run = LimitedProcess(popen, mechanisms, own_group, started_at)
    try:
        for mechanism in mechanisms:
            mechanism.apply(popen.pid, launched=True)
    except BaseException:
        run.stop(grace_s=1.0)
        raise
    return run


def _start(command: list[str], mechanisms: list[Mechanism], new_group: bool, env: dict[str, str] | None,
           popen_kwargs: dict[str, Any]) -> subprocess.Popen[Any]:
    def in_child() -> None:  # the cgroup first, so that every child inherits it
        if new_group:
            os.setpgid(0, 0)
        for mechanism in mechanisms:
            mechanism.in_child()

    try:
        return subprocess.Popen(command, preexec_fn=in_child, env=env, **popen_kwargs)
    except subprocess.SubprocessError as err:  # an exception in in_child: the kernel refused a limit
        raise PermissionDenied("applying the limits in the new process",
                               "the kernel refused a limit (raising a hard rlimit or nice below 0 needs root; "
                               "is the value above the system's maximum?)") from err


def limit_pid(pid: int, spec: LimitSpec) -> tuple[list[Applied], list[Held]]:
    """Apply ``spec`` to a running process (renice, taskset -a, prlimit, a cgroup move, a throttle).

    Returns the limits applied and what holds them until its ``stop()`` (the throttle's thread,
    cpulimit, the cgroup we made); rlimits, nice and affinity need nothing held.

    Raises:
        BadArgument: a bad limit or pid, or a mechanism that cannot take a running process.
        LabkitError: no process ``pid``.
        PermissionDenied: the kernel refused a limit.
    """
    _check_target(pid)
    mechanisms = choose(spec, running=True)
    done: list[Mechanism] = []
    try:
        for mechanism in mechanisms:
            mechanism.prepare([], None)
            done.append(mechanism)
            mechanism.apply(pid, launched=False)
    except BaseException:
        for mechanism in done:
            mechanism.clean_up()
        raise
    applied = in_order([item for m in mechanisms for item in m.applied()])
    return applied, [Held(m) for m in mechanisms if m.needs_holding]


def _check_target(pid: int) -> None:
    if pid <= 1:
        raise BadArgument(f"refusing to limit pid {pid}")
    if not _proc.exists(pid):
        raise LabkitError(f"no process with pid {pid}")


def forward_signals(run: LimitedProcess) -> None:
    """In ``labkit limit``: pass SIGINT and SIGTERM on to the command (its whole group, if it has one)."""
    def forward(signum: int, _frame: object) -> None:
        if run.popen.returncode is not None:
            return  # reaped: its group id may be another group's by now
        try:
            if run._own_group:
                os.killpg(run.pid, signum)
            elif signum != signal.SIGINT:  # in our group Ctrl-C reached it already
                run.popen.send_signal(signum)
        except (ProcessLookupError, PermissionError):
            pass  # gone, or (the group emptied and its id reused) not ours to signal

    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)

