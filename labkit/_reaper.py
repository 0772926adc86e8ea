"""``python -m labkit._reaper --report-fd N [--no-terminal] -- CMD``: run CMD and report every exit.

sshd is the parent of a login shell; when the shell dies, its jobs are re-parented to
PID 1, and their exit status is lost (some containers' PID 1 never even reaps them). This
small stand-in for sshd is a child subreaper: it starts CMD in a new session with the
terminal on fd 0 as its controlling terminal, and adopts every orphan of that session.
For each process it reaps it prints ``EXIT pid code`` (a shell-style code: 129 is death
by SIGHUP) on fd N. It exits on SIGTERM (passing it on to CMD), or when its parent dies.
With ``--no-terminal`` CMD runs as a plain child (a private sshd, whose logins' orphans
it adopts the same way).
"""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import termios
import time

from labkit._prctl import become_subreaper, set_parent_death_signal
from labkit.signals import shell_exit_code


def _take_terminal() -> None:  # in the child: a new session whose controlling terminal is fd 0
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def main(argv: list[str] | None = None) -> int:
    """Start the command, then reap and report until told to stop."""
    argv = list(sys.argv[1:] if argv is None else argv)
    on_terminal = "--no-terminal" not in argv
    argv = [arg for arg in argv if arg != "--no-terminal"]
    if argv[:1] != ["--report-fd"] or len(argv) < 3:
        print("usage: python -m labkit._reaper --report-fd N [--no-terminal] -- CMD...", file=sys.stderr)
        return 2
    report_fd, command = int(argv[1]), argv[2:]
    command = command[1:] if command[:1] == ["--"] else command
    set_parent_death_signal(signal.SIGTERM)
    become_subreaper()
    report = os.fdopen(report_fd, "w", buffering=1)
    if on_terminal:
        child = subprocess.Popen(command, stdin=0, stdout=0, stderr=0, start_new_session=True,
                                 preexec_fn=_take_terminal)
    else:  # a server (sshd) whose sessions' orphans we adopt
        child = subprocess.Popen(command)
    signal.signal(signal.SIGTERM, lambda *_: _stop(child))
    report.write(f"SHELL {child.pid}\n")
    if on_terminal:
        os.close(0)  # only the shell holds the terminal: closing the master is a real hang-up
        os.close(1)
        os.close(2)
    while True:
        try:
            pid, status = os.waitpid(-1, 0)
        except ChildProcessError:
            time.sleep(0.05)  # nothing to reap now; an orphan may still be adopted
            continue
        report.write(f"EXIT {pid} {shell_exit_code(os.waitstatus_to_exitcode(status))}\n")


def _stop(child: subprocess.Popen) -> None:
    """On SIGTERM: pass it on to the command if it still runs (sshd), then leave."""
    if child.returncode is None:
        try:
            child.terminate()
            child.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            pass
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
