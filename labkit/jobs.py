"""Detached jobs: start, watch, signal and stop a command the way an operator would.

Each job lives in ``$LABKIT_HOME/jobs/NAME/``: ``job.json`` (pid, process start time,
process group, mode, command, run dir), ``job.log`` (its console output) and, once it
ended, ``exit.json`` (written by the job's waiter). A job runs in its own process group,
so a signal reaches the job and every worker it started, and nothing else.

A pid is only trusted together with its start time: once a job has ended, the kernel may
give its pid to an unrelated process, and labkit never signals that one.

Modes: ``setsid`` (a session of its own: no terminal can hang it up), ``nohup`` (stays in
the caller's session with SIGHUP ignored, via the real ``nohup``), ``tmux`` and ``screen``
(a detached session on labkit's private socket, see :mod:`labkit._multiplexer`; ``attach``
says how to reattach, and stopping the job ends its session).

>>> job = start("demo")                   # doctest: +SKIP
>>> job.stop(grace_s=10).as_dict()      # doctest: +SKIP
{'name': 'demo', 'pid': 4242, 'signal_sent': 'SIGTERM', 'escalated': False, 'exit_code': 0, ...}
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

import psutil

from labkit import signals as sigs
from labkit._linux import wait as _wait
from labkit._multiplexer import TOOLS, Multiplexer
from labkit.errors import BadArgument, JobExists, JobTimeout, LabkitError, NoSuchJob, NotOurProcess

MODES = ("setsid", "nohup", *TOOLS)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_START_TOLERANCE_S = 0.05  # create_time is computed from clock ticks; equal starts agree far closer
KILL_WAIT_S = 5.0
_ENDED_STATES = ("exited", "recycled", "lost", psutil.STATUS_ZOMBIE)
_RECORD_KEYS = ("pid", "create_time", "pgid", "mode", "command", "started_at")


def labkit_home() -> Path:
    """Return ``$LABKIT_HOME``, else ``$XDG_STATE_HOME/labkit``, else ``~/.local/state/labkit``."""
    if os.environ.get("LABKIT_HOME"):
        return Path(os.environ["LABKIT_HOME"]).expanduser()
    state = os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
    return Path(state) / "labkit"


def jobs_root(home: str | os.PathLike | None = None) -> Path:
    """Return the folder holding one sub-folder per job."""
    return Path(home).expanduser() / "jobs" if home else labkit_home() / "jobs"


def trainer_command(run_dir: str | os.PathLike, *args: str) -> list[str]:
    """The command of a trainer job: ``python -m labkit.trainer --run-dir DIR ARGS...``."""
    return [sys.executable, "-m", "labkit.trainer", "--run-dir", str(run_dir), *args]


@dataclass
class StopResult:
    """What ``stop`` did: the signal sent, whether it escalated to SIGKILL, how it ended."""

    name: str
    pid: int
    signal_sent: str | None
    escalated: bool
    exit_code: int | None
    seconds: float

    def as_dict(self) -> dict:
        """The result as the JSON object ``labkit jobs stop --json`` prints."""
        return asdict(self)


class Job:
    """A recorded detached job; reading it never changes it."""

    def __init__(self, name: str, home: str | os.PathLike | None = None) -> None:
        _check_name(name)
        self.name = name
        self.dir = jobs_root(home) / name
        try:
            self.record = json.loads((self.dir / "job.json").read_text())
            missing = [key for key in _RECORD_KEYS if key not in self.record]
        except FileNotFoundError:
            raise NoSuchJob(name, str(jobs_root(home))) from None
        except (ValueError, TypeError) as err:
            raise LabkitError(f"job {name!r}: {self.dir / 'job.json'} is unreadable ({err})") from err
        if missing:
            raise LabkitError(f"job {name!r}: {self.dir / 'job.json'} lacks {', '.join(missing)}; "
                              f"`labkit jobs remove {name}` forgets it")

    def __repr__(self) -> str:
        return f"Job(name={self.name!r}, pid={self.pid}, state={self.state!r})"

    @property
    def pid(self) -> int:
        """The pid of the job's main process (also its process-group id)."""
        return int(self.record["pid"])

    @property
    def pgid(self) -> int:
        """The job's process-group id."""
        return int(self.record["pgid"])

    @property
    def log_path(self) -> Path:
        """The job's console log."""
        return self.dir / "job.log"

    @property
    def run_dir(self) -> Path | None:
        """The trainer's run folder, when the job has one."""
        return Path(self.record["run_dir"]) if self.record.get("run_dir") else None

    @property
    def terminal(self) -> Multiplexer | None:
        """The tmux or screen session holding the job (modes tmux and screen), else None."""
        record = self.record.get("terminal")
        return Multiplexer.from_record(record) if record else None

    def attach_command(self) -> str:
        """The shell command that reattaches a terminal to the job's tmux or screen session.

        Raises:
            LabkitError: the job has no session to attach to (another mode, or it ended).
        """
        terminal = self.terminal
        if terminal is None:
            raise LabkitError(f"job {self.name!r} runs in mode {self.record['mode']}: it has no terminal to "
                              f"reattach; follow its output with `labkit jobs logs -f {self.name}` "
                              f"or `tail -f {self.log_path}`")
        if not terminal.exists():
            raise LabkitError(f"job {self.name!r} has ended ({self.state}) and its {terminal.tool} session "
                              f"with it; its output is in {self.log_path}")
        return terminal.attach_command()

    def screen_text(self, lines: int = 50) -> str:
        """What the job's terminal shows now (tmux/screen modes; empty once the session ended)."""
        terminal = self.terminal
        return terminal.capture(lines) if terminal else ""

    def process(self) -> psutil.Process | None:
        """Return the job's main process if it is still the one we started, else None.

        Raises:
            NotOurProcess: the pid now belongs to a different process (it was recycled).
        """
        try:
            proc = psutil.Process(self.pid)
            started = proc.create_time()
        except psutil.NoSuchProcess:
            return None
        if abs(started - self.record["create_time"]) > _START_TOLERANCE_S:
            raise NotOurProcess(self.pid, f"the pid was recycled: it now belongs to {proc.name()!r}, "
                                          f"started at {time.ctime(started)}, not to job {self.name!r}")
        return proc

    def members(self) -> list[psutil.Process]:
        """Live (non-zombie) processes of the job's group, orphaned workers included."""
        try:
            self.process()
        except NotOurProcess:
            return []  # the leader's pid was reused, so its group emptied long ago
        return sigs.group_members(self.pgid, self.record["create_time"], _START_TOLERANCE_S)

    def exit_info(self) -> dict | None:
        """Return ``exit.json`` (exit_code, signal, ended_at) once the job has ended."""
        try:
            return json.loads((self.dir / "exit.json").read_text())
        except (FileNotFoundError, ValueError):
            return None

    @property
    def exit_code(self) -> int | None:
        """The job's exit code (128+n for a death by signal n), or None while it runs."""
        info = self.exit_info()
        return None if info is None else info["exit_code"]

    @property
    def state(self) -> str:
        """running/sleeping/stopped/disk-sleep/zombie, 'exited', 'recycled' or 'lost'."""
        try:
            proc = self.process()
        except NotOurProcess:
            return "recycled"
        if proc is not None:
            try:
                return proc.status()
            except psutil.NoSuchProcess:
                pass
        return "exited" if self.exit_info() is not None else "lost"

    def is_alive(self) -> bool:
        """True while the job's main process runs (zombies count as ended)."""
        return self.state not in _ENDED_STATES

    def status(self) -> dict:
        """The JSON object ``labkit jobs status`` prints for this job."""
        info = self.exit_info() or {}
        state = self.state
        members = [p.pid for p in self.members()]
        return {
            "name": self.name, "pid": self.pid, "pgid": self.pgid, "alive": state not in _ENDED_STATES,
            "state": state, "mode": self.record["mode"], "run_dir": self.record.get("run_dir"),
            "log": str(self.log_path), "command": self.record["command"],
            "started_at": self.record["started_at"], "exit_code": info.get("exit_code"),
            "signal": info.get("signal"), "ended_at": info.get("ended_at"),
            "group_members": members,
        }

    def send_signal(self, sig: str | int | signal.Signals) -> signal.Signals:
        """Send ``sig`` to the job's whole process group.

        Raises:
            NotOurProcess: the job's pid was recycled.
            LabkitError: the job has already ended and left nothing behind.
        """
        sig = sigs.parse_signal(sig)
        self.process()  # raises NotOurProcess for a recycled pid
        if not self.members():
            raise LabkitError(f"job {self.name!r} has ended ({self.state}); nothing to signal")
        return sigs.send_group_signal(self.pgid, sig)

    def wait(self, timeout_s: float | None = None) -> int | None:
        """Wait until the job's group is empty; return the exit code (None on timeout)."""
        if _wait.wait_until_empty(lambda: [p.pid for p in self.members()], timeout_s):
            return None  # members left: the wait sleeps on their pidfds, and wakes as the last one exits
        _wait_until(lambda: self.exit_info() is not None, 2.0)
        return self.exit_code

    def stop(self, grace_s: float = 10.0, sig: str | int | signal.Signals = signal.SIGTERM) -> StopResult:
        """Send ``sig`` to the group, wait up to ``grace_s`` seconds, then SIGKILL whatever is left.

        Raises:
            NotOurProcess: the job's pid was recycled (nothing is signalled).
            JobTimeout: processes survived SIGKILL (uninterruptible sleep, state D).
        """
        sig = sigs.parse_signal(sig)
        if sig not in sigs.STOPPING_SIGNALS:
            names = ", ".join(s.name for s in sigs.STOPPING_SIGNALS)
            raise BadArgument(f"stop sends a signal that ends a process ({names}); "
                              f"for {sig.name} use `labkit jobs signal {self.name} {sig.name}`")
        if not (0 <= grace_s < float("inf")):
            raise BadArgument(f"the grace period must be a number of seconds >= 0, got {grace_s}")
        self.process()
        if not self.members():
            self._end_terminal()
            return StopResult(self.name, self.pid, None, False, self.exit_code, 0.0)
        try:
            escalated, seconds = sigs.terminate_group(self.pgid, self.record["create_time"] - _START_TOLERANCE_S,
                                                      grace_s, sig, KILL_WAIT_S)
        except JobTimeout as err:
            raise JobTimeout(f"job {self.name!r}: {err}") from None
        _wait_until(lambda: self.exit_info() is not None, 2.0)
        self._end_terminal()
        return StopResult(self.name, self.pid, sig.name, escalated, self.exit_code, round(seconds, 3))

    def _end_terminal(self) -> None:
        """End the job's tmux/screen session once the job is gone (its window closes by itself;
        this covers a waiter that could not finish)."""
        terminal = self.terminal
        if terminal is not None and not _wait_until(lambda: not terminal.exists(), 2.0, poll_s=0.05):
            terminal.kill()

    def logs(self, lines: int | None = None) -> str:
        """Return the job's console log, or only its last ``lines`` lines."""
        try:
            text = self.log_path.read_text(errors="replace").replace("\r\n", "\n")
        except FileNotFoundError:
            return ""
        if lines is None:
            return text
        if lines <= 0:
            return ""
        return "".join(text.splitlines(keepends=True)[-lines:])

    def follow(self, poll_s: float = 0.2, from_end: bool = False) -> Iterator[str]:
        """Yield the log's text as it is written (like ``tail -f``) until the job ends.

        With ``from_end``, only what is written after this call (the file is opened now).
        """
        handle = open(self.log_path, errors="replace")
        if from_end:
            handle.seek(0, os.SEEK_END)
        return self._follow(handle, poll_s)

    def _follow(self, handle, poll_s: float) -> Iterator[str]:
        # A terminal writes "\r\n" (tmux/screen logs); a "\r" at a chunk's end waits for the next.
        held = ""
        with handle:
            while True:
                chunk = handle.read()
                if chunk:
                    text = (held + chunk).replace("\r\n", "\n")
                    text, held = (text[:-1], "\r") if text.endswith("\r") else (text, "")
                    if text:
                        yield text
                elif not self.members():
                    rest = (held + handle.read()).replace("\r\n", "\n")
                    if rest:
                        yield rest
                    return
                else:
                    time.sleep(poll_s)


def start(
    name: str,
    command: list[str] | None = None,
    mode: str = "setsid",
    run_dir: str | os.PathLike | None = None,
    home: str | os.PathLike | None = None,
    env: dict[str, str] | None = None,
    timeout_s: float = 10.0,
) -> Job:
    """Start ``command`` (default: the trainer) as a detached job named ``name``.

    Raises:
        BadArgument: bad name, unknown mode, or a command that cannot be started.
        JobExists: a job of that name is still running.
    """
    _check_name(name)
    if mode not in MODES:
        raise BadArgument(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
    folder = Path(run_dir).expanduser().resolve() if run_dir else None
    if not command:
        folder = folder or jobs_root(home) / name / "run"
        command = trainer_command(folder)
    job_dir = jobs_root(home) / name
    job_dir.mkdir(parents=True, exist_ok=True)
    with open(job_dir / ".lock", "w") as lock:
        try:  # held until the job is recorded; the kernel drops it if this process dies
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BadArgument(f"job {name!r} is being started by another command right now") from None
        _clear_ended_job(name, home, job_dir)
        if mode in TOOLS:
            terminal = Multiplexer.for_job(mode, name, Path(home).expanduser() if home else labkit_home())
            answer = _spawn_in_terminal(terminal, job_dir, name, folder, command, env, timeout_s)
        else:
            answer = _spawn_waiter(job_dir, name, mode, folder, command, env, timeout_s)
    if not answer.startswith("ok"):
        raise BadArgument(answer.removeprefix("error: ") or f"job {name!r} did not start; see {job_dir / 'job.log'}")
    return Job(name, home)


def _spawn_waiter(job_dir: Path, name: str, mode: str, run_dir: Path | None, command: list[str],
                  env: dict[str, str] | None, timeout_s: float) -> str:
    """Start the job's waiter and return its first line: "ok PID" or "error: ..."."""
    read_fd, write_fd = os.pipe()
    waiter = _waiter_argv(job_dir, name, mode, run_dir, command, ["--ready-fd", str(write_fd)])
    with open(job_dir / "job.log", "ab") as log:
        intermediate = subprocess.Popen(waiter, pass_fds=(write_fd,), stdin=subprocess.DEVNULL,
                                        stdout=log, stderr=subprocess.STDOUT, env=env)
    os.close(write_fd)
    try:
        return _read_line(read_fd, timeout_s)
    finally:
        os.close(read_fd)
        intermediate.wait()


def _waiter_argv(job_dir: Path, name: str, mode: str, run_dir: Path | None, command: list[str],
                 ready: list[str]) -> list[str]:
    argv = [sys.executable, "-m", "labkit._waiter", "--job-dir", str(job_dir), "--name", name, "--mode", mode,
            *ready]
    argv += ["--run-dir", str(run_dir)] if run_dir else []
    return [*argv, "--", *command]


def _spawn_in_terminal(terminal: Multiplexer, job_dir: Path, name: str, run_dir: Path | None,
                       command: list[str], env: dict[str, str] | None, timeout_s: float) -> str:
    """Start the waiter as the program of a new tmux/screen session; return its first line.

    tmux starts a session's program from its server, not from us, so nothing we hold is
    inherited: readiness comes back through a FIFO and our environment through a private
    file the waiter deletes once read.
    """
    fifo, env_file = job_dir / ".ready", job_dir / ".environment.json"
    fifo.unlink(missing_ok=True)
    os.mkfifo(fifo, 0o600)
    fd = os.open(env_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(dict(os.environ if env is None else env), handle)
    # read and write: the FIFO never reports end-of-file before the waiter has written
    ready_fd = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)
    try:
        waiter = _waiter_argv(job_dir, name, terminal.tool, run_dir, command,
                              ["--ready-path", str(fifo), "--env-file", str(env_file),
                               "--terminal", json.dumps(terminal.as_record())])
        terminal.start(waiter, job_dir / "job.log", os.getcwd(), timeout_s)
        answer = _read_line(ready_fd, timeout_s)
    finally:
        os.close(ready_fd)
        fifo.unlink(missing_ok=True)
        env_file.unlink(missing_ok=True)
    if not answer.startswith("ok"):  # the waiter is ending, and its window with it; make sure
        if not _wait_until(lambda: not terminal.exists(), 2.0, poll_s=0.05):
            terminal.kill()
    if not answer:
        return f"error: job {name!r} did not start in {terminal.tool} within {timeout_s:g} s; see {job_dir / 'job.log'}"
    return answer


def list_jobs(home: str | os.PathLike | None = None) -> list[Job]:
    """Return every recorded job, sorted by name."""
    root = jobs_root(home)
    if not root.is_dir():
        return []
    found = []
    for entry in sorted(root.iterdir()):
        if (entry / "job.json").exists():
            try:
                found.append(Job(entry.name, home))
            except LabkitError as err:  # one damaged record must not hide the others
                print(f"labkit: warning: {err}", file=sys.stderr)
    return found


def remove(name: str, home: str | os.PathLike | None = None) -> None:
    """Forget an ended job (its folder and log; a run dir elsewhere is kept)."""
    job = Job(name, home)
    if job.members():
        raise JobExists(name, job.pid)
    shutil.rmtree(job.dir)


def _clear_ended_job(name: str, home, job_dir: Path) -> None:
    if not (job_dir / "job.json").exists():
        return
    old = Job(name, home)
    if old.members():
        raise JobExists(name, old.pid)
    for leftover in ("job.json", "exit.json"):
        (job_dir / leftover).unlink(missing_ok=True)
    if old.log_path.exists():
        old.log_path.replace(job_dir / "job.log.1")
    if old.terminal is not None:
        old.terminal.kill()  # a session that outlived its job would block the name


def _check_name(name: str) -> None:
    if not _NAME.match(name or ""):
        raise BadArgument(f"bad job name {name!r}: use letters, digits, '.', '_' or '-' (at most 64)")


def _read_line(fd: int, timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    data = b""
    while not data.endswith(b"\n"):
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
            break
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        data += chunk
    return data.decode(errors="replace").strip()


def _wait_until(condition, timeout_s: float | None, poll_s: float = 0.02) -> bool:
    """Whether ``condition()`` comes true within ``timeout_s``, polled on a backoff up to ``poll_s``."""
    return bool(_wait.wait_for(condition, timeout_s, max_interval_s=poll_s))
