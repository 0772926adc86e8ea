"""What stops this process from tracing others: capabilities, Yama, seccomp (ptrace(2) "Ptrace access
mode checking", Documentation/admin-guide/LSM/Yama.rst, proc(5) for CapEff/CapBnd/Seccomp), and a live
attach test on a child of ours."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import time

from labkit._linux.proc import PROC, read_status

CAP_SYS_PTRACE = 19
_PTRACE_SEIZE, _PTRACE_DETACH = 0x4206, 17


def has_cap(field: str, cap: int = CAP_SYS_PTRACE, pid: int | str = "self") -> bool:
    """Whether capability ``cap`` is in the ``field`` set (CapEff, CapPrm, CapBnd) of ``pid``."""
    value = read_status(pid).get(field, "0") if isinstance(pid, int) else _self_status().get(field, "0")
    return bool(int(value.strip() or "0", 16) >> cap & 1)


def yama_scope() -> int | None:
    """kernel.yama.ptrace_scope (0-3), or None without Yama."""
    try:
        with open(f"{PROC}/sys/kernel/yama/ptrace_scope") as handle:
            return int(handle.read().strip())
    except (OSError, ValueError):
        return None


def seccomp_mode() -> int:
    """0 none, 1 strict, 2 filter (proc(5) Seccomp)."""
    try:
        return int(_self_status().get("Seccomp", "0").strip())
    except ValueError:
        return 0


def restrictions() -> list[str]:
    """Why ptrace (py-spy, strace, gdb, /proc/PID/syscall and wchan) may be refused here, in words; [] if
    nothing restricts it beyond the usual same-user rule."""
    found = []
    if not has_cap("CapEff"):
        where = "not even in the bounding set: a container started without --cap-add SYS_PTRACE" \
            if not has_cap("CapBnd") else "not in the effective set"
        found.append(f"CAP_SYS_PTRACE is missing ({where}): a process with capabilities we lack (root's, started "
                     "outside this environment) or of another user cannot be traced")
    scope = yama_scope()
    if scope == 1:
        found.append("Yama ptrace_scope=1: only a process's ancestors may trace it (`strace -p` on a sibling fails)")
    elif scope in (2, 3):
        found.append(f"Yama ptrace_scope={scope}: only CAP_SYS_PTRACE may trace" if scope == 2
                     else "Yama ptrace_scope=3: nobody may trace until reboot")
    if seccomp_mode() == 2:
        found.append("a seccomp filter is active: it may refuse ptrace or process_vm_readv (docker's default "
                     "profile refuses process_vm_readv, which py-spy uses, without CAP_SYS_PTRACE)")
    return found


def attach_test() -> str | None:
    """Attach (PTRACE_SEIZE) to a child of ours and detach; None if it worked, else the error in words."""
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return "no C library to call ptrace with"
    libc = ctypes.CDLL(libc_name, use_errno=True)
    libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
    pid = os.fork()
    if pid == 0:  # the child: wait to be traced, then go
        try:
            time.sleep(5)
        finally:
            os._exit(0)
    try:
        if libc.ptrace(_PTRACE_SEIZE, pid, None, None) != 0:
            return f"ptrace: {os.strerror(ctypes.get_errno())}"
        libc.ptrace(_PTRACE_DETACH, pid, None, None)
        return _read_memory_test(libc, pid)
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


class _IOVec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("length", ctypes.c_size_t)]


def _read_memory_test(libc, pid: int) -> str | None:
    """process_vm_readv(2) from the child (py-spy reads a process this way): a buffer of ours is at the same
    address in a forked child."""
    source = ctypes.create_string_buffer(b"labkit", 8)
    target = ctypes.create_string_buffer(8)
    local = _IOVec(ctypes.cast(target, ctypes.c_void_p), 8)
    remote = _IOVec(ctypes.cast(source, ctypes.c_void_p), 8)
    libc.process_vm_readv.argtypes = [ctypes.c_int, ctypes.POINTER(_IOVec), ctypes.c_ulong, ctypes.POINTER(_IOVec),
                                      ctypes.c_ulong, ctypes.c_ulong]
    if libc.process_vm_readv(pid, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0) < 0:
        return f"process_vm_readv: {os.strerror(ctypes.get_errno())}"
    return None


def _self_status() -> dict[str, str]:
    return read_status(os.getpid())
