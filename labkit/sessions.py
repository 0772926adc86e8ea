"""What a dropped SSH connection does to your jobs, shown on a real terminal.

:func:`simulate_disconnect` does what sshd does: it starts an interactive shell on a new
pseudo-terminal (its controlling terminal), types commands into it, then closes the
terminal's master side. The kernel hangs up the terminal and sends SIGHUP to the
session's leader; an interactive bash then sends SIGHUP to every job it started. The
report says which jobs survived.

>>> report = simulate_disconnect({"plain": "sleep 300 &", "nohup": "nohup sleep 300 >/dev/null 2>&1 &"})
... # doctest: +SKIP
>>> report["plain"].survived, report["nohup"].survived      # doctest: +SKIP
(False, True)
"""

from __future__ import annotations

import fcntl
import os
import re
import select
import shutil
import subprocess
import termios
import time
from dataclasses import dataclass

import psutil

from labkit.errors import BadArgument, LabkitError, ToolMissing

# Each method starts `sleep` as a job of the interactive shell; $! is the job's pid.
METHODS: dict[str, str] = {
    "plain": "sleep {seconds} &",
    "nohup": "nohup sleep {seconds} > /dev/null 2>&1 &",
    "setsid": "(setsid sleep {seconds} > /dev/null 2>&1 &\necho \"PID setsid $!\")",
    "disown": "sleep {seconds} & disown",
}
_PID_LINE = re.compile(r"PID (\w[\w-]*) (\d+)")


@dataclass
class JobFate:
    """What happened to one job when its terminal went away."""

    name: str
    pid: int
    survived: bool
    state: str  # psutil's state if it survived, else "gone" (or "zombie": exited, not yet reaped)


def simulate_disconnect(jobs: dict[str, str] | None = None, settle_s: float = 1.0, keep: bool = False,
                        timeout_s: float = 10.0) -> dict[str, JobFate]:
    """Run each job line in an interactive bash on a new pty, hang the pty up, report who survived.

    A job line must start one background job (``CMD &``); its pid is taken from ``$!``.
    Survivors are killed before returning unless ``keep`` is true (then stopping them is
    the caller's job).

    Raises:
        ToolMissing: bash is not installed.
        LabkitError: the shell did not report every job's pid within ``timeout_s``.
    """
    bash = shutil.which("bash")
    if bash is None:
        raise ToolMissing("bash", "the disconnect demo needs an interactive bash")
    jobs = jobs or {name: line.format(seconds=300) for name, line in METHODS.items()}
    for name in jobs:
        if not re.fullmatch(r"\w[\w-]*", name):
            raise BadArgument(f"bad job name {name!r}: letters, digits, '_' and '-' only")
    shell, master = _start_terminal(bash)
    try:
        for name, line in jobs.items():
            typed = line if "echo \"PID" in line else f"{line}\necho \"PID {name} $!\""
            os.write(master, (typed + "\n").encode())
        pids = _read_pids(master, set(jobs), timeout_s)
        _wait_until_idle(master, list(pids.values()), timeout_s)
    except BaseException:
        _hang_up(shell, master)
        raise
    _hang_up(shell, master)
    time.sleep(settle_s)  # let SIGHUP take effect everywhere
    report = {name: _fate(name, pid) for name, pid in pids.items()}
    if not keep:
        for fate in report.values():
            if fate.survived:
                _kill_quietly(fate.pid)
    return report


def _start_terminal(bash: str) -> tuple[subprocess.Popen, int]:
    master, slave = os.openpty()
    env = {**os.environ, "PS1": "$ ", "HISTFILE": "/dev/null", "TERM": "dumb"}

    def become_terminal_owner() -> None:  # in the child: new session, the pty as its terminal
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    shell = subprocess.Popen([bash, "--norc", "--noprofile", "-i"], stdin=slave, stdout=slave, stderr=slave,
                             start_new_session=True, preexec_fn=become_terminal_owner, env=env)
    os.close(slave)
    return shell, master


def _read_pids(master: int, names: set[str], timeout_s: float) -> dict[str, int]:
    pids: dict[str, int] = {}
    buffer = ""
    deadline = time.monotonic() + timeout_s
    while set(pids) != names:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([master], [], [], remaining)[0]:
            raise LabkitError(f"the shell reported no pid for {sorted(names - set(pids))}; it printed: "
                              f"{buffer[-300:]!r}")
        try:
            buffer += os.read(master, 4096).decode(errors="replace")
        except OSError:
            break
        for name, pid in _PID_LINE.findall(buffer):
            if name in names:
                pids[name] = int(pid)
    return pids


_LAUNCHERS = ("bash", "nohup", "setsid")


def _wait_until_idle(master: int, pids: list[int], timeout_s: float) -> None:
    """Wait until every job has exec'd its program and the shell waits at its prompt.

    Both are races a real disconnect has too: a job hung up while ``nohup`` is still
    starting dies before nohup could ignore SIGHUP, and a shell busy running a line may
    see the closed terminal as end of input and exit without signalling its jobs.
    """
    os.write(master, b"echo READY-$((6*7))\n")  # printed as READY-42 only when the shell ran it
    deadline = time.monotonic() + timeout_s
    buffer = ""
    while "READY-42" not in buffer or not buffer.rstrip().endswith("$"):
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([master], [], [], remaining)[0]:
            raise LabkitError(f"the shell did not come back to its prompt; it printed: {buffer[-300:]!r}")
        buffer += os.read(master, 4096).decode(errors="replace")
    for pid in pids:
        while time.monotonic() < deadline:
            try:
                if psutil.Process(pid).name() not in _LAUNCHERS:
                    break
            except psutil.NoSuchProcess:
                break
            time.sleep(0.01)


def _hang_up(shell: subprocess.Popen, master: int) -> None:
    """Close the terminal's master side, as sshd does when the connection drops."""
    try:
        os.close(master)
    except OSError:
        pass
    try:
        shell.wait(timeout=5)
    except subprocess.TimeoutExpired:
        shell.kill()
        shell.wait()


def _fate(name: str, pid: int) -> JobFate:
    try:
        state = psutil.Process(pid).status()
    except psutil.NoSuchProcess:
        state = "gone"
    return JobFate(name, pid, state not in ("gone", psutil.STATUS_ZOMBIE), state)


def _kill_quietly(pid: int) -> None:
    """SIGKILL a survivor and wait (briefly) until it is gone or a zombie."""
    try:
        proc = psutil.Process(pid)
        proc.kill()
        deadline = time.monotonic() + 5
        while proc.status() != psutil.STATUS_ZOMBIE and time.monotonic() < deadline:
            time.sleep(0.01)
    except psutil.NoSuchProcess:
        pass
