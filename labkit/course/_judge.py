"""The judge: runs the instructor's cells (set-up, checks) in a process student code cannot reach.

``python -I -m labkit.course._judge FD``: FD is a connected socket to the grader. Under
``labkit grade`` the learner's answer cells run in the student kernel; every other code cell of
the solution runs here, so the checks and the labkit functions they call are the real ones:
nothing a submission does to its own interpreter (replacing ``labkit.checks``, wrapping
builtins, redefining exception classes, printing success) reaches them. The names an answer
defines arrive as copied data or as :class:`~labkit.course._wire.Remote` objects
(``_wire.py``). The first thing the judge does is make itself non-dumpable
(``PR_SET_DUMPABLE`` 0), so a process of the same user can neither ptrace it nor read its
memory or file descriptors through ``/proc``.

Messages are JSON lines. From the grader: ``run`` (a cell: index, source, timeout_s),
``bind`` (names from an answer), ``exit``. To the grader: ``done`` (how the cell ended, what
it printed), and while a cell runs, ``call`` / ``guarded`` requests the grader answers with
``result``.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import ctypes.util
import io
import json
import os
import pickle
import signal
import socket
import sys
import time
import traceback
from typing import Any

PR_SET_DUMPABLE = 4
OUTPUT_MAX_CHARS = 2**20


class CellTimeout(BaseException):
    """The cell ran past its time (raised by SIGALRM, so ``except Exception`` cannot swallow it)."""


class Channel:
    """The judge's side of the socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.reader = sock.makefile("rb")
        self.writer = sock.makefile("wb")
        self.serial = 0

    def send(self, message: dict) -> None:
        from labkit.course._wire import dumps

        self.writer.write(dumps(message))
        self.writer.flush()

    def receive(self) -> dict | None:
        line = self.reader.readline()
        return json.loads(line) if line else None

    def _request(self, message: dict) -> Any:
        from labkit.course._wire import rebuild_exception

        self.serial += 1
        message["id"] = self.serial
        self.send(message)
        with _reaping():
            reply = self._reply()
        if reply.get("error"):
            ename, evalue = reply["error"]
            raise rebuild_exception(str(ename), str(evalue))
        return reply.get("value")

    def _reply(self) -> dict:
        while True:
            reply = self.receive()
            if reply is None:
                raise ConnectionError("the grader went away")
            if reply.get("op") == "result" and reply.get("id") == self.serial:
                return reply  # an older id: an answer to a call a timeout abandoned

    def call(self, token: str, attr: str, args: tuple | None) -> Any:
        from labkit.course._wire import decode, encode_args

        payload = None
        if args is not None:
            payload = base64.b64encode(pickle.dumps(encode_args(*args))).decode()
        return decode(self._request({"op": "call", "token": token, "attr": attr, "payload": payload}),
                      self.remote)

    def guarded(self, token: str, target: int | str, args: tuple, kwargs: dict, timeout_s: float):
        from labkit.course.standin import GuardedCall

        from labkit.course._wire import encode_args

        plain_args, plain_kwargs = encode_args(args, kwargs)
        payload = base64.b64encode(pickle.dumps((target, plain_args, plain_kwargs))).decode()
        # the same call with pid 1 first, for the grader's recording init (see _relay.StandIns)
        payload_init = base64.b64encode(pickle.dumps(([1, *plain_args], plain_kwargs))).decode()
        raised, message, signals, returned, blocked = self._request(
            {"op": "guarded", "token": token, "target": target, "payload": payload, "payload_init": payload_init,
             "timeout_s": timeout_s})
        return GuardedCall(target, raised, str(message), tuple((int(p), str(s)) for p, s in signals),
                           str(returned), bool(blocked))

    def remote(self, token: str, name: str, is_callable: bool):
        from labkit.course._wire import Remote

        return Remote(self, token, name, is_callable)


# -- children of the judge, while the learner's code waits for them ------------------------------
#
# A check starts a process and hands its pid to the learner's function, which stops it and waits
# (psutil's wait, or polling): in the student kernel, that process is not a child, so its end is
# only seen once its parent, the judge, has reaped it, and the judge is blocked in the call. So
# while a call is in flight the judge reaps its children on SIGCHLD, and keeps each exit status for
# the check's own ``Popen.wait()`` (``os.waitpid`` of the judge consults what was reaped first).

_REAPED: dict[int, int] = {}
_IN_CALL = [False]
_real_waitpid = os.waitpid


def _waitpid(pid: int, options: int) -> tuple[int, int]:
    if pid > 0 and pid in _REAPED:
        return pid, _REAPED.pop(pid)
    return _real_waitpid(pid, options)


def _reap(signum=None, frame=None) -> None:
    if not _IN_CALL[0]:
        return
    while True:
        try:
            pid, status = _real_waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        _REAPED[pid] = status


def _patch_poll() -> None:
    """``Popen.poll()`` bound the real ``os.waitpid`` as a default argument: give it ours."""
    import subprocess

    poll = subprocess.Popen._internal_poll  # type: ignore[attr-defined]
    if poll.__defaults__:
        poll.__defaults__ = tuple(_waitpid if value is _real_waitpid else value for value in poll.__defaults__)


@contextlib.contextmanager
def _reaping():
    _IN_CALL[0] = True
    _reap()  # a child that ended before the call
    try:
        yield
    finally:
        _IN_CALL[0] = False


def no_dump() -> bool:
    """Make this process non-dumpable: no ptrace, no /proc/PID/mem or fd by the same user."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        return libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) == 0
    except OSError:
        return False


def run_cell(namespace: dict, source: str, index: int, timeout_s: float, output_max: int = OUTPUT_MAX_CHARS) -> dict:
    """Execute one cell; return how it ended and what it printed."""
    out = io.StringIO()

    def alarm(signum, frame):
        raise CellTimeout

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, max(timeout_s, 0.01))
    status, ename, evalue = "ok", "", ""
    started = time.monotonic()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            try:
                exec(compile(source, f"<cell {index}>", "exec"), namespace)  # noqa: S102 - the instructor's cell
            except CellTimeout:
                status = "timeout"
            except KeyboardInterrupt:
                status = "timeout"
            except BaseException as err:  # noqa: BLE001 - a failed check is the expected outcome
                status, ename, evalue = "error", type(err).__name__, str(err)
                traceback.print_exc(limit=-3, file=out)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    text, dropped = out.getvalue(), ""
    if len(text) > output_max:
        text, dropped = text[:output_max], f"[labkit grade: output beyond {output_max} bytes dropped]\n"
    return {"op": "done", "index": index, "status": status, "ename": ename, "evalue": evalue[:10_000],
            "output": text, "dropped": dropped, "seconds": round(time.monotonic() - started, 3)}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    dumpable_off = no_dump()
    fd = int(argv[0])
    os.set_inheritable(fd, False)  # no process a check starts may write in the judge's name
    # Processes the checks start must not import what the learner left in the working folder
    # (``python -m labkit.trainer`` puts it first on sys.path) or in their own site folder.
    os.environ["PYTHONSAFEPATH"] = "1"  # Python 3.11+
    os.environ["PYTHONNOUSERSITE"] = "1"
    os.waitpid = _waitpid  # this process's own: see _reaping
    _patch_poll()
    signal.signal(signal.SIGCHLD, _reap)
    channel = Channel(socket.socket(fileno=fd))
    import builtins

    # the cells' own namespace: never this module's globals, which names from answers would shadow
    namespace: dict[str, Any] = {"__name__": "__main__", "__builtins__": builtins}
    channel.send({"op": "ready", "pid": os.getpid(), "uid": os.getuid(), "no_dump": dumpable_off})
    from labkit.course._wire import decode

    while (message := channel.receive()) is not None:
        op = message.get("op")
        if op == "run":
            channel.send(run_cell(namespace, message["source"], message["index"], float(message["timeout_s"]),
                                  int(message.get("output_max") or OUTPUT_MAX_CHARS)))
        elif op == "bind":
            for name, data in message["names"].items():
                try:
                    namespace[name] = decode(data, channel.remote)
                except ValueError:
                    namespace.pop(name, None)
            channel.send({"op": "bound"})
        elif op == "exit":
            break
    return 0


if __name__ == "__main__":
    sys.exit(main())
