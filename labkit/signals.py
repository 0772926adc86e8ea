"""Signal names, what they mean, and safe delivery.

Safe delivery refuses the processes whose death would hurt the learner: PID 1 (init, or
the container itself), the caller, and the caller's ancestors — in a notebook these are
the Jupyter kernel and the Jupyter server. It also refuses their process groups, since
``kill -- -PGID`` on the kernel's own group would take the kernel down with the target.
"""

from __future__ import annotations

import os
import signal
import time

import psutil

from labkit._linux import wait as _wait
from labkit.errors import BadArgument, JobTimeout, PermissionDenied, ProtectedProcess

MEANINGS: dict[signal.Signals, str] = {
    signal.SIGTERM: "polite request to terminate; can be caught (the trainer checkpoints and exits 0)",
    signal.SIGINT: "interrupt, what Ctrl-C sends to the foreground process group; can be caught",
    signal.SIGHUP: "hang-up: the terminal or SSH session went away; can be caught or ignored (nohup)",
    signal.SIGKILL: "kill at once; cannot be caught, blocked or ignored: no checkpoint, no clean-up",
    signal.SIGSTOP: "freeze the process (state T); cannot be caught; SIGCONT resumes it",
    signal.SIGCONT: "resume a stopped process",
    signal.SIGTSTP: "stop from the terminal (Ctrl-Z); can be caught",
    signal.SIGQUIT: "quit with a core dump (Ctrl-\\); can be caught",
    signal.SIGUSR1: "user-defined; the trainer logs its status and every thread's stack",
    signal.SIGUSR2: "user-defined; the trainer checkpoints now and continues",
    signal.SIGSEGV: "invalid memory access; the default action kills with a core dump",
    signal.SIGABRT: "abort(), e.g. a failed assertion in C code; kills with a core dump",
    signal.SIGPIPE: "wrote to a pipe nobody reads; kills by default (Python ignores it)",
    signal.SIGCHLD: "a child process stopped or exited; ignored by default",
    signal.SIGALRM: "a timer set with alarm() expired",
    signal.SIGXCPU: "the CPU-time limit (RLIMIT_CPU) was exceeded",
}


def parse_signal(value: str | int | signal.Signals) -> signal.Signals:
    """Turn ``"TERM"``, ``"SIGTERM"``, ``"sigterm"``, ``"15"`` or ``15`` into ``signal.SIGTERM``.

    Raises:
        BadArgument: no such signal on this system.

    >>> parse_signal("term")
    <Signals.SIGTERM: 15>
    """
    if isinstance(value, signal.Signals):
        return value
    text = str(value).strip()
    try:
        if text.lstrip("-").isdigit():
            return signal.Signals(int(text))
        name = text.upper()
        return signal.Signals[name if name.startswith("SIG") else "SIG" + name]
    except (KeyError, ValueError):
        known = ", ".join(sig.name for sig in MEANINGS)
        raise BadArgument(f"unknown signal {text!r}; try one of {known}") from None


def describe(sig: str | int | signal.Signals) -> str:
    """Return a one-line explanation of a signal."""
    sig = parse_signal(sig)
    return f"{sig.name} ({int(sig)}): {MEANINGS.get(sig, signal.strsignal(sig) or 'no description')}"


def explain_exit_code(code: int | None) -> str:
    """Explain an exit status, shell style: 0 success, 1-127 the program's own, 128+n signal n.

    Negative values are Python's ``returncode`` for a death by signal.

    >>> explain_exit_code(137)
    '137 = 128 + 9: killed by SIGKILL'
    """
    if code is None:
        return "still running (no exit code yet)"
    if code < 0:
        return f"{code}: killed by {_signal_name(-code)} (Python reports -n; a shell shows {128 - code})"
    if code == 0:
        return "0: success"
    if code > 128 and code - 128 < signal.NSIG:
        return f"{code} = 128 + {code - 128}: killed by {_signal_name(code - 128)}"
    return f"{code}: the program exited with an error of its own"


def shell_exit_code(returncode: int) -> int:
    """Python's ``returncode`` (-n for a death by signal n) as a shell reports it (128 + n)."""
    return 128 - returncode if returncode < 0 else returncode


STOPPING_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGKILL)


def group_members(pgid: int, started_after: float, tolerance_s: float = 0.05) -> list[psutil.Process]:
    """Live (non-zombie) processes of group ``pgid`` started no earlier than ``started_after``.

    A group id cannot be reused while any process is still in the group, and members
    older than the group's leader cannot belong to it: together, this finds a job's
    processes (orphaned workers included) and nothing else.
    """
    found = []
    for pid in psutil.pids():
        try:
            if os.getpgid(pid) != pgid:
                continue
            proc = psutil.Process(pid)
            if proc.create_time() + tolerance_s >= started_after and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except (OSError, psutil.Error):
            continue
    return found


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def protected_pids() -> set[int]:
    """PID 1, this process and its ancestors: never signalled by labkit."""
    me = psutil.Process()
    return {1, me.pid, *(parent.pid for parent in me.parents())}


def protected_pgids() -> set[int]:
    """Process groups of the protected processes (and 0/1, which mean 'everyone' to kill())."""
    groups = {0, 1}
    for pid in protected_pids():
        try:
            groups.add(os.getpgid(pid))
        except OSError:
            pass
    return groups


def check_may_signal(pid: int) -> None:
    """Raise :class:`ProtectedProcess` if ``pid`` must never be signalled."""
    if pid <= 1:
        raise ProtectedProcess(pid, "PID 1 and pids <= 0 (whole groups, every process) are off limits")
    if pid == os.getpid():
        raise ProtectedProcess(pid, "that is this process itself (the notebook's kernel or the CLI)")
    if pid in protected_pids():
        raise ProtectedProcess(pid, "it is an ancestor of this process (e.g. the Jupyter server or your shell)")


def send_signal(pid: int, sig: str | int | signal.Signals) -> signal.Signals:
    """Send ``sig`` to one process after refusing protected ones; return the signal sent.

    Raises:
        ProtectedProcess: PID 1, the caller or an ancestor.
        psutil.NoSuchProcess: ``pid`` does not exist.
        PermissionDenied: the process belongs to another user.
    """
    sig = parse_signal(sig)
    check_may_signal(pid)
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        raise psutil.NoSuchProcess(pid) from None
    except PermissionError as err:
        raise PermissionDenied(f"sending {sig.name} to pid {pid}", "it belongs to another user") from err
    return sig


def send_group_signal(pgid: int, sig: str | int | signal.Signals) -> signal.Signals:
    """Send ``sig`` to every process of group ``pgid``, refusing the caller's own groups.

    Raises:
        ProtectedProcess: the group of PID 1, of the caller or of an ancestor.
        psutil.NoSuchProcess: no process is left in the group.
        PermissionDenied: a member belongs to another user.
    """
    sig = parse_signal(sig)
    if pgid in protected_pgids():
        raise ProtectedProcess(pgid, "it is the process group of this process or of an ancestor")
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        raise psutil.NoSuchProcess(pgid, msg=f"no process left in group {pgid}") from None
    except PermissionError as err:
        raise PermissionDenied(f"sending {sig.name} to group {pgid}", "a member belongs to another user") from err
    return sig


def terminate_group(pgid: int, started_after: float, grace_s: float, sig: str | int | signal.Signals = signal.SIGTERM,
                    kill_wait_s: float = 5.0) -> tuple[bool, float]:
    """Stop a process group the safe way: ``sig``, wait ``grace_s``, then SIGKILL what is left.

    SIGCONT follows ``sig`` because a stopped (state T) process only acts on a signal once
    it runs again. Membership is judged by :func:`group_members`, so zombies count as gone
    and a reused group id is never mistaken for the job. Returns (escalated, seconds).

    Raises:
        JobTimeout: processes survived SIGKILL (uninterruptible sleep, state D).
    """
    started = time.monotonic()
    for each in (parse_signal(sig), signal.SIGCONT):
        try:
            send_group_signal(pgid, each)
        except psutil.NoSuchProcess:
            break  # the last member left between the two signals
    escalated = not _wait_for_empty_group(pgid, started_after, grace_s)
    if escalated:
        try:
            send_group_signal(pgid, signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass  # the last member left between the check and the kill
        if not _wait_for_empty_group(pgid, started_after, kill_wait_s):
            left = ", ".join(str(p.pid) for p in group_members(pgid, started_after))
            raise JobTimeout(f"processes {left} of group {pgid} survived SIGKILL; a process in state D "
                             "waits for the kernel (I/O) and dies when it returns")
    return escalated, time.monotonic() - started


def _wait_for_empty_group(pgid: int, started_after: float, timeout_s: float) -> bool:
    """Whether every member of the group exits within ``timeout_s``: the wait sleeps on the
    members' pidfds, so it returns the moment the last one exits (it polled every 20 ms before)."""
    return not _wait.wait_until_empty(lambda: [p.pid for p in group_members(pgid, started_after)], timeout_s)


def terminate_child(proc, grace_s: float = 5.0) -> int:
    """SIGTERM a child we started (a ``subprocess.Popen``), SIGKILL it after ``grace_s``; return its code."""
    import subprocess

    if proc.poll() is None:
        proc.terminate()
        try:
            return proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.wait()
