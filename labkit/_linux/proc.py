"""Readers of /proc/PID: stat, status, wchan, syscall (proc(5); Documentation/filesystems/proc.rst)."""

from __future__ import annotations

import os
from typing import NamedTuple

PROC = "/proc"
HIDDEN = "<hidden>"  # the kernel refused the read (ptrace_may_access failed): not the same as "none"


class Stat(NamedTuple):
    """The fields of /proc/PID/stat labkit uses (proc(5) numbers them 1, 2, 3, 4, 5, 6, 7, 8, 14, 15, 22)."""

    pid: int
    comm: str
    state: str  #: R, S, D, T, t, Z, X, I, P
    ppid: int
    pgrp: int
    session: int
    tty_nr: int  #: 0: no controlling terminal
    tpgid: int  #: the terminal's foreground process group; -1 without a terminal
    utime_ticks: int
    stime_ticks: int
    starttime_ticks: int

    @property
    def in_background(self) -> bool:
        """It has a terminal and is not in the terminal's foreground process group (a ``&`` job)."""
        return self.tty_nr != 0 and self.tpgid > 0 and self.pgrp != self.tpgid


def parse_stat(text: str) -> Stat:
    """Parse the text of /proc/PID/stat (comm may hold spaces and parentheses: split at the last ')')."""
    head, _, rest = text.rpartition(")")
    pid, _, comm = head.partition(" (")
    fields = rest.split()
    return Stat(int(pid), comm, fields[0], int(fields[1]), int(fields[2]), int(fields[3]), int(fields[4]),
                int(fields[5]), int(fields[11]), int(fields[12]), int(fields[19]))


def read_stat(pid: int, tid: int | None = None) -> Stat:
    """/proc/PID/stat (or a thread's, /proc/PID/task/TID/stat). Raises OSError if it is gone."""
    path = f"{PROC}/{pid}/task/{tid}/stat" if tid is not None else f"{PROC}/{pid}/stat"
    with open(path) as handle:
        return parse_stat(handle.read())


def read_status(pid: int) -> dict[str, str]:
    """/proc/PID/status as {field: value}; empty if the process is gone."""
    try:
        with open(f"{PROC}/{pid}/status") as handle:
            return dict(line.split(":\t", 1) for line in handle.read().splitlines() if ":\t" in line)
    except OSError:
        return {}


def nspid(pid: int) -> list[int]:
    """The pid in each nested PID namespace, outermost first (status' NSpid); [pid] on old kernels."""
    field = read_status(pid).get("NSpid", "")
    return [int(p) for p in field.split()] or [pid]


def wchan(pid: int, tid: int | None = None) -> str:
    """The kernel function it sleeps in; "" when running; :data:`HIDDEN` without ptrace read access
    (the kernel then shows "0", proc(5))."""
    path = f"{PROC}/{pid}/task/{tid}/wchan" if tid is not None else f"{PROC}/{pid}/wchan"
    try:
        with open(path) as handle:
            text = handle.read().strip()
    except PermissionError:
        return HIDDEN
    except OSError:
        return ""
    if text == "0":  # "0" means running, or that we may not see it: tell the two apart
        return HIDDEN if not _may_read(pid) else ""
    return text


def syscall(pid: int) -> list[str] | str:
    """/proc/PID/syscall split into words (number then arguments, or ["running"], or ["-1", ...]);
    :data:`HIDDEN` without ptrace attach access (EPERM); [] if it is gone."""
    try:
        with open(f"{PROC}/{pid}/syscall") as handle:
            return handle.read().split()
    except PermissionError:
        return HIDDEN
    except OSError:
        return []


def _may_read(pid: int) -> bool:
    """Whether the kernel lets us read ptrace-guarded files of ``pid`` (stack, syscall, fd links)."""
    try:
        os.readlink(f"{PROC}/{pid}/exe")
        return True
    except PermissionError:
        return False
    except OSError:
        return True  # gone, or a kernel thread: not a permission question
