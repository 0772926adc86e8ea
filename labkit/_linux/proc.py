"""Readers of /proc/PID: stat, status, wchan, syscall, task/, fd/, io, statm, environ, cmdline, and a
few machine-wide files (proc(5); Documentation/filesystems/proc.rst).

``open_file``, ``pread_all`` and ``pread_usage`` serve a caller that keeps files open and re-reads
them each tick (the monitor's sampler): one pread instead of an open, a read and a close."""

from __future__ import annotations

import os
from typing import NamedTuple

from labkit._linux.tree import PROC

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


def exists(pid: int) -> bool:
    """Whether /proc lists ``pid`` (a zombie still counts)."""
    return os.path.exists(f"{PROC}/{pid}")


def tids(pid: int) -> list[int]:
    """The thread ids of ``pid`` (its task/ folder), the main thread's included. Raises OSError if it
    is gone."""
    return [int(tid) for tid in os.listdir(f"{PROC}/{pid}/task")]


def fd_target(pid: int, fd: int) -> str:
    """What fd ``fd`` of ``pid`` points to ("pipe:[123]", "/dev/pts/0", a path). Raises OSError if it
    is closed, the process gone, or the link hidden (EACCES without ptrace read access)."""
    return os.readlink(f"{PROC}/{pid}/fd/{fd}")


def fd_targets(pid: int) -> dict[int, str]:
    """{fd: target} of every open fd of ``pid`` it may read; a link that vanishes meanwhile is left
    out. Raises OSError if the fd/ folder cannot be listed (gone, or another user's)."""
    found = {}
    for name in os.listdir(f"{PROC}/{pid}/fd"):
        try:
            found[int(name)] = os.readlink(f"{PROC}/{pid}/fd/{name}")
        except OSError:
            continue
    return found


def environ(pid: int | str) -> bytes:
    """/proc/PID/environ as the kernel gives it (NUL-separated; empty for a kernel thread or a process
    amid execve). Raises OSError if it is gone, a zombie (ESRCH on recent kernels) or another user's."""
    with open(f"{PROC}/{pid}/environ", "rb") as handle:
        return handle.read()


def cmdline_empty(pid: int | str) -> bool:
    """Whether /proc/PID/cmdline is empty (reads one byte). Raises OSError if it is gone."""
    with open(f"{PROC}/{pid}/cmdline", "rb") as handle:
        return not handle.read(1)


def status_bytes(pid: int) -> bytes:
    """The raw text of /proc/PID/status. Raises OSError if it is gone."""
    with open(f"{PROC}/{pid}/status", "rb") as handle:
        return handle.read()


def exe_name(pid: int) -> str:
    """The file name of the program ``pid`` runs (its exe link). Raises OSError (hidden, or gone)."""
    return os.path.basename(os.readlink(f"{PROC}/{pid}/exe"))


def comm(pid: int) -> str:
    """/proc/PID/comm, stripped. Raises OSError if it is gone."""
    with open(f"{PROC}/{pid}/comm") as handle:
        return handle.read().strip()


def mount_table() -> list[tuple[str, str, list[str]]]:
    """(mount point, fstype, options) of every mount this process sees (/proc/self/mounts); [] if
    it cannot be read."""
    try:
        with open(f"{PROC}/self/mounts") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return []
    return [(parts[1], parts[2], parts[3].split(",")) for parts in map(str.split, lines) if len(parts) >= 4]


def nr_open() -> int:
    """The most open files any process may be allowed (/proc/sys/fs/nr_open, 1048576 by default):
    proc_sys_fs(5); setrlimit(RLIMIT_NOFILE) above it fails with EPERM, even for root.
    Raises OSError (or ValueError for text that is not a number)."""
    with open(f"{PROC}/sys/fs/nr_open") as handle:
        return int(handle.read())


def ip_local_port_range() -> tuple[int, int]:
    """(first, last) source port Linux gives outgoing TCP/UDP connections
    (/proc/sys/net/ipv4/ip_local_port_range; ip-sysctl.rst, 32768 60999 by default).
    Raises OSError (or ValueError for text that is not two numbers)."""
    with open(f"{PROC}/sys/net/ipv4/ip_local_port_range") as handle:
        first, last = (int(word) for word in handle.read().split()[:2])
    return first, last


def boot_id() -> str:
    """This boot's id (/proc/sys/kernel/random/boot_id), with its dashes. Raises OSError."""
    with open(f"{PROC}/sys/kernel/random/boot_id") as handle:
        return handle.read().strip()


# Kept open and re-read: the monitor's sampler opens stat, statm, task/PID/children and io once per
# process and preads them every tick.

def open_file(pid: int, name: str) -> int:
    """An fd on /proc/PID/NAME (read-only, close-on-exec), bound to that process for good: once it
    has exited, reads fail (ESRCH) rather than reading a recycled pid's. Raises OSError."""
    return os.open(f"{PROC}/{pid}/{name}", os.O_RDONLY | os.O_CLOEXEC)


def pread_all(fd: int, chunk: int = 65536) -> bytes:
    """The whole file behind ``fd`` from offset 0 (pread; several reads when it is longer than
    ``chunk``). Raises OSError (ESRCH once the process is gone)."""
    data = part = os.pread(fd, chunk, 0)
    while len(part) == chunk:
        part = os.pread(fd, chunk, len(data))
        data += part
    return data


def pread_usage(stat_fd: int, statm_fd: int, io_fd: int) -> tuple[list[bytes], int, tuple[int, int] | None]:
    """One tick of a process kept open: (its stat fields after comm, resident pages, (read_bytes,
    write_bytes) or None where io is not ours to read). One call per process per tick, the parsing
    inline: the monitor's sampler pays for every Python call here. Raises OSError (ESRCH) once it is gone."""
    stat = os.pread(stat_fd, 4096, 0)
    resident = int(os.pread(statm_fd, 4096, 0).split()[1])
    try:
        words = os.pread(io_fd, 4096, 0).split()
        if words[8:12:2] == [b"read_bytes:", b"write_bytes:"]:  # the kernel's order since 2.6.20: no dict to build
            io_bytes: tuple[int, int] | None = (int(words[9]), int(words[11]))
        else:
            named = dict(zip(words[::2], words[1::2]))
            io_bytes = (int(named[b"read_bytes:"]), int(named[b"write_bytes:"]))
    except (OSError, KeyError, ValueError):
        io_bytes = None  # EACCES: another user's process (no ptrace read access)
    return stat[stat.rindex(b")") + 2:].split(), resident, io_bytes


def children_file_exists() -> bool:
    """Whether /proc/PID/task/TID/children exists (CONFIG_PROC_CHILDREN): a thread's children listed
    directly, so a tree walk costs a few reads instead of a scan of every process."""
    pid = os.getpid()
    return os.path.exists(f"{PROC}/{pid}/task/{pid}/children")


def _may_read(pid: int) -> bool:
    """Whether the kernel lets us read ptrace-guarded files of ``pid`` (stack, syscall, fd links)."""
    try:
        os.readlink(f"{PROC}/{pid}/exe")
        return True
    except PermissionError:
        return False
    except OSError:
        return True  # gone, or a kernel thread: not a permission question
