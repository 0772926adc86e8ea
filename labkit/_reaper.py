"""``python -m labkit._reaper --report-fd N -- CMD``: run CMD on the terminal given as stdin and report every exit.

sshd is the parent of a login shell; when the shell dies, its jobs are re-parented to
PID 1, and their exit status is lost (some containers' PID 1 never even reaps them). This
small stand-in for sshd is a child subreaper: it starts CMD in a new session with the
terminal on fd 0 as its controlling terminal, and adopts every orphan of that session.
For each process it reaps it prints ``EXIT pid code`` (a shell-style code: 129 is death
by SIGHUP) on fd N. It exits on SIGTERM, or when its parent dies.
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
    if argv[:1] != ["--report-fd"] or len(argv) < 3:
        print("usage: python -m labkit._reaper --report-fd N -- CMD...", file=sys.stderr)
        return 2
    report_fd, command = int(argv[1]), argv[2:]
    command = command[1:] if command[:1] == ["--"] else command
    set_parent_death_signal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    become_subreaper()
    report = os.fdopen(report_fd, "w", buffering=1)
    shell = subprocess.Popen(command, stdin=0, stdout=0, stderr=0, start_new_session=True,
                             preexec_fn=_take_terminal)
    report.write(f"SHELL {shell.pid}\n")
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


if __name__ == "__main__":
    sys.exit(main())
