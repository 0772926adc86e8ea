"""Call a learner's function where no signal it sends can reach anything: refusal checks.

"Refuse pid 1 and this notebook's own process" cannot be tested by calling the learner's
function on pid 1 or on the kernel: a learner who forgot the guard would really stop them
(where PID 1 forwards signals, as tini and dumb-init do, the whole container). So the call
runs in a *stand-in*: a forked copy of the process that holds the function, in which every
system call that sends a signal (kill, tkill, tgkill, rt_sigqueueinfo, rt_tgsigqueueinfo,
pidfd_send_signal) fails with EPERM, enforced by the kernel through a seccomp filter
(seccomp(2); inherited by whatever the call starts, so ``subprocess.run(["kill", ...])`` is
blocked too), and every attempt made through Python is recorded. ``"self"`` stands for the
stand-in's own pid: the copy plays "this notebook's own process".

Under ``labkit grade`` the learner's function lives in the student kernel, which runs in a
PID namespace whose pid 1 is the grader's recording init (see ``_sandbox.py``): there the
call is made for real against it (``labkit.course._judge``).

>>> expect_refusal(stop_gracefully, 1, grace_s=0.1)  # doctest: +SKIP
'stop_gracefully(1) refused: ValueError: refusing to stop pid 1'
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import platform
import select
import signal
import struct
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from labkit.checks import CheckFailed

__all__ = ["GuardedCall", "call_guarded", "expect_refusal"]

# Signal-sending syscalls by machine (asm/unistd.h): kill, tkill, tgkill, rt_sigqueueinfo,
# rt_tgsigqueueinfo, pidfd_send_signal.
_SYSCALLS = {"x86_64": (0xC000003E, (62, 200, 234, 129, 297, 424)),
             "aarch64": (0xC00000B7, (129, 130, 131, 138, 240, 424))}
_PR_SET_NO_NEW_PRIVS, _PR_SET_SECCOMP, _SECCOMP_MODE_FILTER = 38, 22, 2
_SECCOMP_RET_ALLOW, _SECCOMP_RET_ERRNO, _EPERM = 0x7FFF0000, 0x00050000, 1
_LIBC = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True) if sys.platform.startswith("linux") else None


@dataclass(frozen=True)
class GuardedCall:
    """What the learner's function did when called in the stand-in."""

    target: int | str  #: the pid asked for, or "self"
    raised: str | None  #: the exception's class name, None if it returned
    message: str = ""
    signals: tuple[tuple[int, str], ...] = field(default=())  #: (pid, signal) it tried to send
    returned: str = ""  #: repr of the return value, cut short
    blocked: bool = True  #: the kernel-enforced filter was in place (False: Python-level only)

    def describe(self) -> str:
        what = f"raised {self.raised}: {self.message}" if self.raised else f"returned {self.returned}"
        tried = ", ".join(f"{name} to pid {pid}" for pid, name in self.signals)
        return what + (f"; it tried to send {tried}" if tried else "")


def call_guarded(func: Callable[..., Any], target: int | str, *args: Any, timeout_s: float = 10.0,
                 **kwargs: Any) -> GuardedCall:
    """Call ``func(target, *args, **kwargs)`` in a forked stand-in where signals cannot be sent.

    Args:
        func: the learner's function; its first argument is a pid.
        target: a pid, or ``"self"`` for the stand-in's own pid.
        timeout_s: the stand-in is killed after this long (a function stuck waiting).

    Raises:
        CheckFailed: the stand-in did not answer within ``timeout_s``.
    """
    remote = getattr(func, "__labkit_call_guarded__", None)
    if remote is not None:  # under the grader: the judge calls it for real against its stand-ins
        return remote(target, *args, timeout_s=timeout_s, **kwargs)
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe
        os.close(reader)
        _child(writer, func, target, args, kwargs)
    os.close(writer)
    try:
        data = _read_all(reader, pid, timeout_s)
    finally:
        os.close(reader)
    if data is None:
        raise CheckFailed(f"{_name(func)}({target}) was still running after {timeout_s:g} s",
                          "a refusal must come at once, before anything is signalled or waited for")
    report = json.loads(data)
    return GuardedCall(target, report["raised"], report["message"],
                       tuple((int(p), str(s)) for p, s in report["signals"]), report["returned"],
                       report["blocked"])


def expect_refusal(func: Callable[..., Any], target: int | str, *args: Any, exception: type = ValueError,
                   **kwargs: Any) -> str:
    """``func(target, ...)`` raises ``exception`` and sends no signal (checked in a stand-in).

    Raises:
        CheckFailed: it returned, raised something else, or tried to send a signal.
    """
    call = call_guarded(func, target, *args, **kwargs)
    who = "this notebook's own process" if target == "self" else f"pid {target}"
    if call.signals:
        raise CheckFailed(f"{_name(func)} was asked to stop {who} and tried to signal it: {call.describe()} "
                          "(blocked: the check ran it in a stand-in)",
                          f"refuse {who} with `raise {exception.__name__}(...)` before sending anything")
    if call.raised != exception.__name__:
        raise CheckFailed(f"{_name(func)} was asked to stop {who} and {call.describe()}",
                          f"refuse {who} with `raise {exception.__name__}(...)`")
    return f"{_name(func)} refuses {who}: {call.raised}: {call.message}"


def _name(func: Callable[..., Any]) -> str:
    return getattr(func, "__name__", "the function")


def _read_all(fd: int, pid: int, timeout_s: float) -> bytes | None:
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout_s
    try:
        while (left := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                break
            chunk = os.read(fd, 65536)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
        os.kill(pid, signal.SIGKILL)  # the parent may signal: only the child is filtered
        return None
    finally:
        os.waitpid(pid, 0)


def _child(writer: int, func, target, args, kwargs) -> None:  # pragma: no cover - runs in the fork
    signals: list[tuple[int, str]] = []
    raised, message, returned = None, "", ""
    try:
        blocked = _block_signal_syscalls()
        _record_python_signals(signals)
        pid = os.getpid() if target == "self" else int(target)
        try:
            returned = repr(func(pid, *args, **kwargs))[:500]
        except BaseException as err:  # noqa: BLE001 - every outcome is reported
            raised, message = type(err).__name__, str(err)[:500]
        report = {"raised": raised, "message": message, "signals": signals, "returned": returned,
                  "blocked": blocked}
        data = json.dumps(report, default=str).encode()
        while data:
            data = data[os.write(writer, data):]
    finally:
        os._exit(0)


def _block_signal_syscalls() -> bool:
    """Install a seccomp filter that fails every signal-sending syscall with EPERM."""
    known = _SYSCALLS.get(platform.machine())
    if _LIBC is None or known is None:
        return False
    arch, numbers = known
    ld_w_abs, jeq_k, ret_k = 0x20, 0x15, 0x06
    prog = [(ld_w_abs, 0, 0, 4), (jeq_k, 1, 0, arch), (ret_k, 0, 0, _SECCOMP_RET_ERRNO | _EPERM),
            (ld_w_abs, 0, 0, 0), (0x35, len(numbers) + 1, 0, 0x40000000)]  # x32 numbers: refused
    for index, number in enumerate(numbers):
        left = len(numbers) - index - 1
        prog.append((jeq_k, left + 1, 0, number))  # match: jump to the EPERM at the end
    prog += [(ret_k, 0, 0, _SECCOMP_RET_ALLOW), (ret_k, 0, 0, _SECCOMP_RET_ERRNO | _EPERM)]
    raw = b"".join(struct.pack("HBBI", *item) for item in prog)
    buffer = ctypes.create_string_buffer(raw)

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    fprog = SockFprog(len(prog), ctypes.cast(buffer, ctypes.c_void_p))
    if _LIBC.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        return False
    return _LIBC.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0) == 0


def _record_python_signals(signals: list[tuple[int, str]]) -> None:
    """Record signals sent through os.kill/os.killpg (the kernel refuses them anyway)."""
    def name(sig) -> str:
        try:
            return signal.Signals(int(sig)).name
        except ValueError:
            return f"signal {int(sig)}"

    real_kill, real_killpg = os.kill, os.killpg

    def kill(pid, sig):
        if int(sig):  # signal 0 only asks whether the pid exists
            signals.append((int(pid), name(sig)))
        return real_kill(pid, sig)

    def killpg(pgid, sig):
        if int(sig):
            signals.append((-int(pgid), name(sig)))
        return real_killpg(pgid, sig)

    # psutil's send_signal/terminate/kill go through os.kill; subprocess `kill` is refused by
    # the seccomp filter without a record.
    os.kill, os.killpg = kill, killpg
