"""What a dropped SSH connection does to your jobs, shown on a real terminal.

:func:`simulate_disconnect` does what sshd does: it starts a login shell on a new
pseudo-terminal (its controlling terminal), types commands into it, then closes the
terminal's master side. The kernel hangs up the terminal and sends SIGHUP to the
session's leader; an interactive bash then sends SIGHUP to every job it started. The
report says which jobs survived and, for those that died, how (exit 129 is SIGHUP).

Each job line records its job's pid in ``NAME.pid`` in the shell's working folder, as
a real launch script would; :data:`METHODS` has one line per way of starting a job.

>>> report = simulate_disconnect(["plain", "nohup"])          # doctest: +SKIP
>>> print(format_report(report))                              # doctest: +SKIP
plain   died      killed by SIGHUP (exit 129)
nohup   survived  sleeping
"""

from __future__ import annotations

import os
import re
import select
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable

import psutil

from labkit._linux import wait as _wait
from labkit._multiplexer import tmux_socket  # noqa: F401  (public here: lessons use it)
from labkit.errors import BadArgument, LabkitError, ToolMissing
from labkit.signals import explain_exit_code, terminate_child

_LABKIT = f"{shlex.quote(sys.executable)} -m labkit"
# One line per way of starting a job from a terminal. {name}: the job's name, also its pid
# file's (NAME.pid); {seconds}: how long it runs; {tmux}: labkit's private tmux socket.
METHODS: dict[str, str] = {
    "plain": "sleep {seconds} & echo $! > {name}.pid",
    "nohup": "nohup sleep {seconds} > /dev/null 2>&1 & echo $! > {name}.pid",
    # setsid forks when started as a job (it leads its group), so $! would be the wrong pid
    "setsid": "setsid sh -c 'echo $$ > {name}.pid; exec sleep {seconds}' > /dev/null 2>&1 &",
    "disown": "sleep {seconds} & echo $! > {name}.pid; disown",
    "tmux": "tmux -L {tmux} new-session -d -s {name} -c \"$PWD\" 'echo $$ > {name}.pid; exec sleep {seconds}'",
    "screen": "screen -dmS {name} sh -c 'echo $$ > {name}.pid; exec sleep {seconds}'",
    **{f"labkit-{mode}": f"{_LABKIT} jobs start {{name}} --mode {mode} --pid-file {{name}}.pid -- sleep {{seconds}}"
       for mode in ("setsid", "nohup", "tmux", "screen")},
}
_NEEDS = {"tmux": "tmux", "screen": "screen", "setsid": "setsid", "nohup": "nohup",
          "labkit-tmux": "tmux", "labkit-screen": "screen"}
_LAUNCHERS = ("bash", "sh", "dash", "nohup", "setsid")  # a job still starting, not yet its program
HOW = ("hangup", "exit")
VIA = ("pty", "ssh")


@dataclass
class JobFate:
    """What happened to one job when its terminal went away."""

    name: str
    pid: int
    survived: bool
    state: str  # psutil's state if it survived, else "gone" (or "zombie": exited, not yet reaped)
    # shell-style (129 = SIGHUP) when the job outlived its shell and the reaper saw it end; a job
    # that died while its shell was still exiting was reaped by the shell, and its code is lost
    exit_code: int | None = None

    def describe(self) -> str:
        """One phrase: "sleeping", "killed by SIGHUP (exit 129)", "ended (exit status not seen)"."""
        if self.survived:
            return self.state
        if self.exit_code is None:  # its shell reaped it before dying itself: the status died with the shell
            return "died (its shell collected the exit status)"
        text = explain_exit_code(self.exit_code)
        match = re.search(r"killed by (SIG\w+)", text)
        return f"killed by {match.group(1)} (exit {self.exit_code})" if match else f"exited: {text}"


def available_methods() -> list[str]:
    """The methods of :data:`METHODS` whose tools are installed here."""
    return [name for name in METHODS if shutil.which(_NEEDS.get(name, "bash"))]


def ssh_unavailable() -> str | None:
    """None where ``simulate_disconnect(via="ssh")`` can run, else why not (one line)."""
    from labkit._sshd import why_unavailable

    return why_unavailable()


def job_line(method: str, name: str | None = None, seconds: int = 300) -> str:
    """The shell line that starts a job with ``method`` (see :data:`METHODS`)."""
    if method not in METHODS:
        raise BadArgument(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    return METHODS[method].format(name=name or method, seconds=seconds, tmux=tmux_socket())


def simulate_disconnect(jobs: dict[str, str] | list[str] | None = None, how: str = "hangup",
                        huponexit: bool = False, settle_s: float = 1.0, keep: bool = False,
                        timeout_s: float = 15.0, cwd: str | os.PathLike | None = None,
                        before_hangup: Callable[[dict[str, int], int], None] | None = None,
                        via: str = "pty") -> dict[str, JobFate]:
    """Start jobs from a login shell on a new terminal, end the connection, report who survived.

    Args:
        jobs: ``{name: shell line}``; each line starts one job and writes its pid to
            ``NAME.pid``. A list of method names uses :data:`METHODS`; None: every
            available method.
        how: ``"hangup"`` closes the terminal like a dropped connection; ``"exit"`` types
            ``exit`` first, like logging out.
        huponexit: run ``shopt -s huponexit`` first (bash then hangs up its jobs on exit too).
        keep: leave survivors running (stopping them is then the caller's job).
        cwd: the shell's working folder (default: a temporary one, removed afterwards).
        before_hangup: called with ``({name: pid}, shell_pid)`` once every job runs, just
            before the connection ends (to look at the session with ``ps``, say).
        via: ``"pty"`` (a shell on a pseudo-terminal of our own, whose parent reports the
            exit codes) or ``"ssh"`` (a real SSH login to a private sshd on 127.0.0.1; the
            connection is dropped by killing the ssh client; exit codes are not seen).

    Raises:
        ToolMissing: bash is not installed (or, with ``via="ssh"``, OpenSSH; the reason says which).
        LabkitError: a job did not record its pid within ``timeout_s``.
    """
    bash = shutil.which("bash")
    if bash is None:
        raise ToolMissing("bash", "the disconnect demo needs an interactive bash")
    if how not in HOW:
        raise BadArgument(f"how must be one of {', '.join(HOW)}, got {how!r}")
    if via not in VIA:
        raise BadArgument(f"via must be one of {', '.join(VIA)}, got {via!r}")
    lines = _job_lines(jobs)
    with tempfile.TemporaryDirectory(prefix="labkit-disconnect-") as scratch:
        folder = Path(cwd).expanduser() if cwd else Path(scratch)
        terminal = (_SshTerminal if via == "ssh" else _LocalTerminal)(bash, folder)
        try:
            if huponexit:
                terminal.type("shopt -s huponexit")
            for line in lines.values():
                terminal.type(line)
            pids = _read_pid_files(folder, list(lines), terminal, timeout_s)
            terminal.wait_until_idle(list(pids.values()), timeout_s)
            if before_hangup is not None:
                before_hangup(dict(pids), terminal.shell_pid())
            if how == "exit":
                terminal.type("exit")
                terminal.wait_for_shell_exit(timeout_s)
        except BaseException:
            terminal.hang_up()
            terminal.close(wait_for_orphans=False)
            raise
        terminal.hang_up()
        time.sleep(settle_s)  # let SIGHUP take effect everywhere
        codes = terminal.exit_codes()
        report = {name: _fate(name, pid, codes.get(pid)) for name, pid in pids.items()}
        if not keep:
            for fate in report.values():
                if fate.survived:
                    _kill_quietly(fate.pid)
        terminal.close(wait_for_orphans=not keep)
        for name in pids:
            (folder / f"{name}.pid").unlink(missing_ok=True)
    return report


def format_report(report: dict[str, JobFate]) -> str:
    """The report as a small table: name, survived/died, how."""
    width = max((len(name) for name in report), default=4)
    return "\n".join(f"{name:<{width}}  {'survived' if fate.survived else 'died':<8}  {fate.describe()}"
                     for name, fate in report.items())


def _job_lines(jobs: dict[str, str] | list[str] | None) -> dict[str, str]:
    if jobs is None:
        jobs = available_methods()
    if isinstance(jobs, (list, tuple)):
        jobs = {method: job_line(method) for method in jobs}
    for name in jobs:
        if not re.fullmatch(r"\w[\w.-]*", name):
            raise BadArgument(f"bad job name {name!r}: letters, digits, '_', '.' and '-' only")
    return dict(jobs)


class _Terminal:
    """A login bash on a new pseudo-terminal: type lines into it, read what it prints."""

    master: int
    output: str

    def type(self, line: str) -> None:
        os.write(self.master, (line + "\n").encode())

    def read(self, timeout_s: float) -> bool:
        """Read what the terminal printed; False if nothing came within ``timeout_s``."""
        if not select.select([self.master], [], [], max(timeout_s, 0))[0]:
            return False
        try:
            self.output += os.read(self.master, 4096).decode(errors="replace")
        except OSError:  # EIO: the shell has gone
            return False
        return True

    def wait_until_idle(self, pids: list[int], timeout_s: float) -> None:
        """Wait until every job has exec'd its program and the shell waits at its prompt.

        Both are races a real disconnect has too: a job hung up while ``nohup`` is still
        starting dies before nohup could ignore SIGHUP, and a shell busy running a line may
        see the closed terminal as end of input and exit without signalling its jobs.
        """
        self.type("echo READY-$((6*7))")  # printed as READY-42 only when the shell ran it
        deadline = time.monotonic() + timeout_s
        while "READY-42" not in self.output or not self.output.rstrip().endswith("$"):
            if not self.read(deadline - time.monotonic()):
                raise LabkitError(f"the shell did not come back to its prompt; it printed: {self.output[-300:]!r}")
        for pid in pids:
            _wait.wait_for(partial(_launched, pid), deadline - time.monotonic(), max_interval_s=0.01)

    def _close_master(self) -> None:
        try:
            os.close(self.master)
        except OSError:
            pass

    def alive(self) -> bool:
        raise NotImplementedError

    def shell_pid(self) -> int:
        raise NotImplementedError

    def wait_for_shell_exit(self, timeout_s: float) -> None:
        raise NotImplementedError

    def hang_up(self) -> None:
        raise NotImplementedError

    def exit_codes(self) -> dict[int, int]:
        return {}

    def close(self, wait_for_orphans: bool) -> None:
        raise NotImplementedError


def _shell_environment() -> dict[str, str]:
    screen_dir = Path(os.environ.get("SCREENDIR") or _default_screen_dir())
    screen_dir.mkdir(parents=True, exist_ok=True)
    screen_dir.chmod(0o700)
    return {**os.environ, "PS1": "$ ", "HISTFILE": "/dev/null", "TERM": "dumb", "SCREENDIR": str(screen_dir)}


class _Reaper:
    """``labkit._reaper`` running a command: it adopts the orphans and reports how each ended."""

    def __init__(self, command: list[str], terminal: int | None = None, cwd: Path | None = None,
                 env: dict[str, str] | None = None) -> None:
        report_read, report_write = os.pipe()
        argv = [sys.executable, "-m", "labkit._reaper", "--report-fd", str(report_write)]
        if terminal is None:
            argv.append("--no-terminal")
        stream = subprocess.DEVNULL if terminal is None else terminal  # stdin, stdout and stderr
        self.process = subprocess.Popen([*argv, "--", *command], pass_fds=(report_write,), cwd=cwd, env=env,
                                        stdin=stream, stdout=stream, stderr=stream)
        os.close(report_write)
        self.report_fd = report_read
        self.report = ""

    def child_pid(self, timeout_s: float = 10.0) -> int:
        """The pid of the command (the reaper reports it first)."""
        deadline = time.monotonic() + timeout_s
        while "SHELL" not in self.report and time.monotonic() < deadline:
            self.collect(0.5)
        match = re.search(r"SHELL (\d+)", self.report)
        if match is None:
            raise LabkitError("the terminal's shell did not start")
        return int(match.group(1))

    def has_reaped(self, pid: int) -> bool:
        return re.search(rf"^EXIT {pid} ", self.report, re.MULTILINE) is not None

    def exit_codes(self) -> dict[int, int]:
        """The exit code of every process the reaper saw end (shell-style)."""
        self.collect(0.0)
        return {int(pid): int(code) for pid, code in re.findall(r"^EXIT (\d+) (-?\d+)$", self.report, re.MULTILINE)}

    def collect(self, timeout_s: float) -> None:
        while select.select([self.report_fd], [], [], timeout_s)[0]:
            chunk = os.read(self.report_fd, 65536)
            if not chunk:
                break
            self.report += chunk.decode()
            timeout_s = 0.0

    def poll(self) -> int | None:
        return self.process.poll()

    def terminate(self) -> None:
        self.process.terminate()

    def wait(self, timeout: float | None = None) -> int:
        return self.process.wait(timeout)

    def kill(self) -> None:
        self.process.kill()

    def close(self, wait_for_orphans: bool) -> None:
        """Stop the reaper, once the orphans it adopted (killed survivors, tmux servers) are gone."""
        if wait_for_orphans:  # on their pidfds: the wait ends as the last one exits
            _wait.wait_until_empty(lambda: [child.pid for child in _live_children(self.process.pid)], 5.0)
        terminate_child(self.process)
        os.close(self.report_fd)


class _LocalTerminal(_Terminal):
    """The shell's parent is a reaper (as sshd is a login shell's), which reports how orphans ended."""

    def __init__(self, bash: str, cwd: Path) -> None:
        self.master, slave = os.openpty()
        self.output = ""
        self.reaper = _Reaper([bash, "--noprofile", "--norc", "-l", "-i"], terminal=slave, cwd=cwd,
                              env=_shell_environment())
        os.close(slave)

    def alive(self) -> bool:
        return self.reaper.poll() is None

    def shell_pid(self) -> int:
        """The login shell's pid."""
        return self.reaper.child_pid()

    def wait_for_shell_exit(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        shell = self.shell_pid()
        while not self.reaper.has_reaped(shell):
            if time.monotonic() > deadline:
                raise LabkitError(f"the shell did not exit after `exit`; it printed: {self.output[-300:]!r}")
            self.read(0.05)
            self.reaper.collect(0.05)

    def hang_up(self) -> None:
        """Close the terminal's master side, as sshd does when the connection drops."""
        self._close_master()

    def exit_codes(self) -> dict[int, int]:
        return self.reaper.exit_codes()

    def close(self, wait_for_orphans: bool) -> None:
        self.reaper.close(wait_for_orphans)


_EXPORTED = ("PATH", "SCREENDIR", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


class _SshTerminal(_Terminal):
    """A real SSH login to a private sshd on 127.0.0.1; the connection is dropped by killing ssh.

    sshd runs under a reaper, so a job that outlives its login shell is adopted and its exit
    code seen, as with the local terminal.
    """

    def __init__(self, bash: str, cwd: Path) -> None:
        from labkit._sshd import LocalSshServer

        self.reapers: list[_Reaper] = []

        def launch(command: list[str]) -> _Reaper:  # sshd under a reaper: logins' orphans come to it
            self.reapers.append(_Reaper(command))
            return self.reapers[-1]

        self.server = LocalSshServer.start(launch=launch)
        self.master, slave = os.openpty()
        self.output = ""
        self._shell_pid: int | None = None
        try:
            self.client = subprocess.Popen(
                self.server.client_argv(f"exec {shlex.quote(bash)} --noprofile --norc -l -i"),
                stdin=slave, stdout=slave, stderr=slave, start_new_session=True, env=_shell_environment())
        except OSError:
            self.server.stop()
            raise
        os.close(slave)
        # sshd gives the login a clean environment; bring over what labkit and the jobs need
        env = _shell_environment()
        wanted = {k: v for k, v in env.items() if k in _EXPORTED or k.startswith("LABKIT_")}
        exports = " ".join(f"{name}={shlex.quote(value)}" for name, value in sorted(wanted.items()))
        self.type(f"export PS1='$ ' HISTFILE=/dev/null {exports}; cd {shlex.quote(str(cwd))}")

    def alive(self) -> bool:
        return self.client.poll() is None

    def shell_pid(self) -> int:
        """The remote login shell's pid, asked from the shell itself."""
        if self._shell_pid is None:
            self.type('echo "SHELL-PID $$"')
            deadline = time.monotonic() + 10.0
            while (match := re.search(r"SHELL-PID (\d+)", self.output)) is None:
                if not self.read(deadline - time.monotonic()):
                    raise LabkitError(f"the remote shell did not say its pid: {self.output[-300:]!r}")
            self._shell_pid = int(match.group(1))
        return self._shell_pid

    def wait_for_shell_exit(self, timeout_s: float) -> None:
        try:
            self.client.wait(timeout=timeout_s)  # ssh ends when the remote shell has exited
        except subprocess.TimeoutExpired:
            raise LabkitError(f"the shell did not exit after `exit`; it printed: {self.output[-300:]!r}") from None

    def hang_up(self) -> None:
        """Drop the connection: ssh dies without a word, sshd closes the remote terminal."""
        if self.client.poll() is None:
            self.client.kill()
        self.client.wait()
        self._close_master()

    def exit_codes(self) -> dict[int, int]:
        return self.reapers[0].exit_codes()

    def close(self, wait_for_orphans: bool) -> None:
        reaper = self.reapers[0]
        if wait_for_orphans:  # the orphans are killed survivors, waiters and tmux servers ending now
            _wait.wait_for(lambda: len(_live_children(reaper.process.pid)) <= 1, 5.0)  # sshd stays
        self.server.stop()
        reaper.close(wait_for_orphans=False)


def _default_screen_dir() -> Path:
    from labkit.jobs import labkit_home

    return labkit_home() / "screen"


def _launched(pid: int) -> bool:
    """Whether ``pid`` has exec'd past its launcher (nohup, setsid, ...) or is gone."""
    try:
        return psutil.Process(pid).name() not in _LAUNCHERS
    except psutil.NoSuchProcess:
        return True


def _live_children(pid: int) -> list[psutil.Process]:
    try:
        children = psutil.Process(pid).children()
    except psutil.NoSuchProcess:
        return []
    live = []
    for child in children:
        try:
            if child.status() != psutil.STATUS_ZOMBIE:
                live.append(child)
        except psutil.NoSuchProcess:
            continue
    return live


def _read_pid_files(folder: Path, names: list[str], terminal: _Terminal, timeout_s: float) -> dict[str, int]:
    pids: dict[str, int] = {}
    deadline = time.monotonic() + timeout_s
    while len(pids) < len(names):
        for name in names:
            try:
                text = (folder / f"{name}.pid").read_text()
            except FileNotFoundError:
                continue
            if text.endswith("\n") and text.strip().isdigit():
                pids[name] = int(text)
        if len(pids) == len(names):
            break
        if time.monotonic() > deadline or not terminal.alive():
            missing = sorted(set(names) - set(pids))
            raise LabkitError(f"no pid file for {missing} in {folder} within {timeout_s:g} s; "
                              f"the shell printed: {terminal.output[-400:]!r}")
        terminal.read(0.05)
    return pids


def _fate(name: str, pid: int, exit_code: int | None) -> JobFate:
    try:
        state = psutil.Process(pid).status()
    except psutil.NoSuchProcess:
        state = "gone"
    survived = state not in ("gone", psutil.STATUS_ZOMBIE)
    return JobFate(name, pid, survived, state, None if survived else exit_code)


def _kill_quietly(pid: int) -> None:
    """SIGKILL a survivor and wait (briefly) until it is gone or a zombie."""
    try:
        proc = psutil.Process(pid)
        proc.kill()
        _wait.wait_exited(pid, 5.0)  # a zombie counts: its parent (the reaper) collects it
    except psutil.NoSuchProcess:
        pass
