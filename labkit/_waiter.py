"""The job waiter: ``python -m labkit._waiter`` starts a job's command and records its end.

Only a parent can learn a child's exit status, so every detached job gets a small waiter
as its parent. The waiter daemonises first (fork, parent exits) so the program that asked
for the job (a notebook kernel, the CLI) is never left with a zombie; it then starts the
command, writes ``job.json`` atomically, reports readiness on a pipe, waits, and writes
``exit.json`` atomically when the command ends.

The waiter is also a child subreaper (``PR_SET_CHILD_SUBREAPER``): workers orphaned by a
crashed job are re-parented to it instead of to PID 1, and it reaps them, so a job never
leaves zombies behind, even in a container whose PID 1 does not reap (what ``docker run
--init`` and tini fix).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

from labkit._atomic import write_json_atomic
from labkit._multiplexer import TOOLS, pipe_pane_to
from labkit._prctl import become_subreaper
from labkit.signals import shell_exit_code

MODES = ("setsid", "nohup", *TOOLS)
_TERMINAL_VARIABLES = ("TERM", "TMUX", "TMUX_PANE", "STY", "WINDOW")


def _job_preexec(mode: str):
    def prepare() -> None:  # in the child, before exec
        # The waiter ignores these; ignored signals survive exec, so give the job the defaults.
        for sig in (signal.SIGHUP, signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_DFL)
        if mode == "nohup":
            signal.signal(signal.SIGHUP, signal.SIG_IGN)
            os.setpgid(0, 0)  # own group in the caller's session, like a shell's background job
        elif mode in TOOLS:
            _become_foreground_group()

    return prepare


def _become_foreground_group() -> None:
    """Take a group of our own and make it the terminal's foreground group, as a shell does."""
    os.setpgid(0, 0)
    signal.signal(signal.SIGTTOU, signal.SIG_IGN)  # a background group may not set it otherwise
    try:
        os.tcsetpgrp(0, os.getpid())
    except OSError:
        pass  # no terminal after all: the job still runs, Ctrl-C just does not reach it
    signal.signal(signal.SIGTTOU, signal.SIG_DFL)


def _load_environment(env_file: Path | None) -> dict[str, str] | None:
    """The caller's environment, passed in a private file (never on a command line) and removed."""
    if env_file is None:
        return None
    try:
        env = json.loads(env_file.read_text())
    finally:
        env_file.unlink(missing_ok=True)
    env.update({var: os.environ[var] for var in _TERMINAL_VARIABLES if var in os.environ})
    return env


def _command_for(mode: str, command: list[str]) -> list[str]:
    if mode == "nohup" and shutil.which("nohup"):
        if shutil.which(command[0]) is None:  # nohup would start, then fail with 127 in the log
            raise FileNotFoundError(2, "No such file or directory", command[0])
        return ["nohup", *command]  # the real tool: it sets SIGHUP to ignored and execs the command
    return command


def main(argv: list[str] | None = None) -> int:
    """Start the job, record it, wait for it, record its exit."""
    parser = argparse.ArgumentParser(prog="python -m labkit._waiter")
    parser.add_argument("--job-dir", type=Path, required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--mode", choices=MODES, required=True)
    parser.add_argument("--run-dir", default=None)
    ready_to = parser.add_mutually_exclusive_group(required=True)
    ready_to.add_argument("--ready-fd", type=int, help="an inherited pipe")
    ready_to.add_argument("--ready-path", type=Path, help="a FIFO (tmux and screen start us, not the caller)")
    parser.add_argument("--env-file", type=Path, default=None)
    parser.add_argument("--terminal", type=json.loads, default=None, help="the session's record (JSON)")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    in_terminal = args.mode in TOOLS

    if args.mode == "setsid":
        os.setsid()  # the waiter leaves the caller's terminal; the job gets a session of its own
    for sig in (signal.SIGHUP, signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    if not in_terminal and os.fork() > 0:
        os._exit(0)  # the caller reaps this intermediate at once; the waiter lives on
    become_subreaper()

    ready = open(args.ready_path, "w") if args.ready_path else os.fdopen(args.ready_fd, "w")
    log_path = args.job_dir / "job.log"
    try:
        env = _load_environment(args.env_file)
        argv = _command_for(args.mode, command)
        if args.mode == "tmux":
            pipe_pane_to(log_path)
        with open(log_path, "ab", buffering=0) as log:
            output = None if in_terminal else log  # in a terminal: the window, copied by the tool
            child = subprocess.Popen(
                argv, stdin=None if in_terminal else subprocess.DEVNULL, stdout=output,
                stderr=subprocess.STDOUT if output else None, start_new_session=(args.mode == "setsid"),
                preexec_fn=_job_preexec(args.mode), env=env,
            )
    except OSError as err:
        ready.write(f"error: cannot start {command[0]!r}: {err.strerror}\n")
        ready.close()
        return 127
    proc = psutil.Process(child.pid)
    record = {
        "name": args.name, "pid": child.pid, "create_time": proc.create_time(),
        "pgid": os.getpgid(child.pid), "sid": os.getsid(child.pid), "mode": args.mode,
        "command": command, "run_dir": args.run_dir, "log": str(log_path),
        "started_at": time.time(), "waiter_pid": os.getpid(), "cwd": os.getcwd(),
    }
    if args.terminal:
        record["terminal"] = args.terminal
    write_json_atomic(args.job_dir / "job.json", record)
    try:
        ready.write(f"ok {child.pid}\n")
        ready.close()
    except BrokenPipeError:
        pass  # the caller gave up waiting; the job runs on and its exit is still recorded

    _reap_until_all_gone(child.pid, args.job_dir / "exit.json")
    return 0


def _reap_until_all_gone(main_pid: int, exit_file: Path) -> None:
    """Reap every child (the job, then orphans re-parented to us); record the job's exit."""
    while True:
        try:
            pid, status = os.waitpid(-1, 0)
        except ChildProcessError:
            return
        if pid != main_pid:
            continue
        code = os.waitstatus_to_exitcode(status)
        write_json_atomic(exit_file, {
            "pid": pid, "exit_code": shell_exit_code(code),
            "signal": signal.Signals(-code).name if code < 0 else None, "ended_at": time.time(),
        })


if __name__ == "__main__":
    sys.exit(main())
