"""The scenario's keeper: a small init for one scenario's processes.

Every process a scenario starts is a child of its keeper, and the keeper is a child subreaper
(``PR_SET_CHILD_SUBREAPER``, prctl(2)): a process orphaned inside the scenario is re-parented to
the keeper, not to PID 1. That matters because PID 1 does not always reap (in a container it is
often a plain program: here it is ``process_api``, which leaves its orphans as zombies forever),
and a scenario about zombies or orphans needs an init that does its job: ``wait()`` for whatever
ends. The keeper also remembers how each of its children ended, so ``check`` can tell a clean
exit (0) from a SIGKILL (-9).

Protocol: one JSON line per connection on ``keeper.sock`` in the scenario folder:
``{"op": "spawn", "argv": [...], "log": PATH, "cwd": PATH}`` answers ``{"pid": N, "create_time": T}``;
``{"op": "exits"}`` answers ``{"PID": exit code, ...}`` (negative: killed by that signal).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil

from labkit._linux import wait as _wait

SOCKET_NAME = "keeper.sock"
MAX_LIFETIME_S = 6 * 3600  # safety net: a forgotten scenario does not run for days
READY = "ready"


def request(folder: Path, message: dict, timeout_s: float = 10.0) -> dict:
    """Send one request to the keeper of ``folder`` and return its answer."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(timeout_s)
        conn.connect(str(folder / SOCKET_NAME))
        conn.sendall(json.dumps(message).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = conn.recv(65536)
            if not chunk:
                break
            data += chunk
    return json.loads(data or b"{}")


def start(folder: Path) -> subprocess.Popen:
    """Start a keeper for ``folder`` in a session of its own and wait until it listens."""
    proc = subprocess.Popen([sys.executable, "-m", "labkit.scenarios._keeper", str(folder)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=open(folder / "keeper.log", "ab"), start_new_session=True)
    assert proc.stdout is not None
    line = proc.stdout.readline().decode().strip()
    proc.stdout.close()
    if line != READY:
        proc.kill()
        proc.wait()
        raise OSError(f"the scenario keeper did not start (see {folder / 'keeper.log'})")
    return proc


def _set_subreaper() -> None:
    from labkit._prctl import become_subreaper

    if not become_subreaper():
        print("keeper: PR_SET_CHILD_SUBREAPER refused; orphans go to PID 1", file=sys.stderr, flush=True)


def _reap(exits: dict[str, int]) -> None:
    for pid, status in _wait.reaped():
        exits[str(pid)] = os.waitstatus_to_exitcode(status)


def _answer(message: dict, folder: Path, exits: dict[str, int]) -> dict:
    if message.get("op") == "exits":
        return dict(exits)
    if message.get("op") != "spawn":
        return {"error": f"unknown op {message.get('op')!r}"}
    try:
        log = open(message.get("log") or os.devnull, "ab")
    except OSError as err:
        return {"error": f"cannot open its log: {err}"}
    try:
        child = subprocess.Popen(message["argv"], stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                 cwd=message.get("cwd") or str(folder), start_new_session=True,
                                 env={**os.environ, **message.get("env", {})})
    except OSError as err:
        return {"error": str(err)}
    finally:
        log.close()
    child.returncode = 0  # the keeper reaps with waitpid(-1); keep Popen.__del__ from waiting too
    return {"pid": child.pid, "create_time": psutil.Process(child.pid).create_time()}


def main(folder_arg: str) -> int:
    """Serve spawn requests and reap every child until SIGTERM/SIGKILL or the lifetime cap."""
    folder = Path(folder_arg)
    _set_subreaper()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    path = folder / SOCKET_NAME
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(8)
    server.settimeout(0.1)
    exits: dict[str, int] = {}
    print(READY, flush=True)
    deadline = time.monotonic() + MAX_LIFETIME_S
    while time.monotonic() < deadline:
        _reap(exits)
        try:
            conn, _ = server.accept()
        except socket.timeout:
            continue
        with conn:
            conn.settimeout(5.0)
            try:
                data = b""
                while not data.endswith(b"\n"):
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                answer = _answer(json.loads(data), folder, exits)
                conn.sendall(json.dumps(answer).encode() + b"\n")
            except (OSError, ValueError) as err:
                print(f"keeper: bad request: {err}", file=sys.stderr, flush=True)
    for child in psutil.Process().children(recursive=True):
        try:
            child.kill()
        except psutil.Error:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
