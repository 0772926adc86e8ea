"""The grader's kernel wrapper: ``python _sandbox.py [limits] -- KERNEL ARGV...``.

The batch grader launches every student kernel through this small supervisor (it is the
command of the kernel spec, so jupyter_client sees it as "the kernel process"). It:

- runs in a session and process group of its own (jupyter_client starts it with
  ``start_new_session``; it calls ``setsid`` itself when started otherwise), so the kernel
  and whatever it starts are cut off from the grader's terminal;
- becomes a child subreaper (``PR_SET_CHILD_SUBREAPER``): a process the submission starts
  with ``setsid``/``start_new_session`` or a double-forked daemon is re-parented to the
  sandbox, not to PID 1, so it stays findable as a descendant;
- forks the kernel, which moves itself into the per-submission cgroups it is given (the
  sandbox stays outside them, so an OOM kill or ``pids.max`` never hits the supervisor),
  applies the rlimits and execs;
- ignores SIGINT (jupyter_client interrupts by signalling the whole group), and on SIGTERM or
  SIGHUP, or when the kernel ends, SIGKILLs every descendant, round after round, until none is
  left, then writes how the kernel ended to ``--status FILE`` and exits; when the grader itself
  died (``PR_SET_PDEATHSIG``), it also removes the cgroups and the ``--remove DIR`` folder.

It imports only the standard library and is run by path with ``python -I -S``, so it starts in
about 20 ms. Exit code: 0 when nothing is left alive, 3 when processes survived SIGKILL (state D).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import resource
import shutil
import signal
import sys
import time

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
KILL_TIMEOUT_S = 5.0
_STOP_SIGNALS = {signal.SIGTERM, signal.SIGHUP}
_LIMITS = {"--as": resource.RLIMIT_AS, "--cpu": resource.RLIMIT_CPU, "--fsize": resource.RLIMIT_FSIZE,
           "--nproc": resource.RLIMIT_NPROC}


class _Stop(Exception):
    """Raised by the SIGTERM/SIGHUP handler to leave the wait loop."""


def parse_args(argv: list[str]) -> tuple[dict[str, object], list[str]]:
    """``--as N --cpu N --fsize N --nproc N --cgroup DIR... --status FILE --remove DIR -- CMD...``."""
    if "--" not in argv:
        raise SystemExit("usage: _sandbox.py [--as B] [--cpu S] [--fsize B] [--nproc N] "
                         "[--cgroup DIR]... [--status FILE] [--remove DIR] -- COMMAND...")
    cut = argv.index("--")
    options, command = argv[:cut], argv[cut + 1:]
    parsed: dict[str, object] = {"cgroups": [], "status": None, "remove": None, "limits": {}}
    if len(options) % 2 or not command:
        raise SystemExit("_sandbox.py: every option takes one value, and a command must follow --")
    for name, value in zip(options[::2], options[1::2]):
        if name in _LIMITS:
            parsed["limits"][_LIMITS[name]] = int(value)  # type: ignore[index]
        elif name == "--cgroup":
            parsed["cgroups"].append(value)  # type: ignore[union-attr]
        elif name in ("--status", "--remove"):
            parsed[name[2:]] = value
        else:
            raise SystemExit(f"_sandbox.py: unknown option {name}")
    return parsed, command


def main(argv: list[str] | None = None) -> int:
    """Start the kernel under the limits, supervise it, leave nothing behind."""
    options, command = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        os.setsid()
    except OSError:
        pass  # already a session leader (jupyter_client uses start_new_session)
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)  # the grader died: clean up all the same
    parent = os.getppid()
    if parent == 1:
        return 0  # the grader died before the line above took effect

    def stop(signum, frame):
        raise _Stop

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGHUP, stop)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # an interrupt is for the kernel, not for us
    signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)  # no _Stop between fork and try
    kernel = os.fork()
    if kernel == 0:
        _exec_kernel(libc, options, command)
    ended = None
    try:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
        while True:
            pid, status = os.waitpid(-1, 0)  # reaps orphans re-parented to us too
            if pid == kernel:
                ended = status
                break
    except _Stop:
        pass
    except ChildProcessError:
        pass
    signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)  # nothing may interrupt the clean-up
    left = kill_descendants()
    if options["status"]:
        _write_status(str(options["status"]), ended, left)
    if not left and not _alive(parent):
        _clean_up_for(options)  # the grader died (PR_SET_PDEATHSIG): nobody else will
    return 3 if left else 0


def _alive(parent: int) -> bool:
    """Whether the grader still runs. Not just getppid(): PR_SET_PDEATHSIG fires when the thread
    that started us exits, and until the grader's other threads have exited too we are
    re-parented to one of them, with the same pid."""
    if os.getppid() != parent:
        return False
    try:
        with open(f"/proc/{parent}/stat", "rb") as handle:
            data = handle.read()
    except OSError:
        return False
    return data[data.rindex(b")") + 2:][:1] not in (b"Z", b"X")


def _clean_up_for(options: dict[str, object]) -> None:
    for folder in options["cgroups"]:  # type: ignore[union-attr]
        try:
            os.rmdir(folder)
        except OSError:
            pass
    if options["remove"]:
        shutil.rmtree(str(options["remove"]), ignore_errors=True)


def _exec_kernel(libc, options: dict[str, object], command: list[str]) -> None:
    """In the forked child: join the cgroups, apply the limits, exec the kernel. Never returns."""
    try:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)  # a blocked mask survives exec
        problems = []
        for folder in options["cgroups"]:  # type: ignore[union-attr]
            try:
                with open(os.path.join(folder, "cgroup.procs"), "w") as handle:
                    handle.write(str(os.getpid()))
            except OSError as err:
                problems.append(f"cannot join cgroup {folder}: {err.strerror}")
        for which, value in options["limits"].items():  # type: ignore[union-attr]
            if which == resource.RLIMIT_NPROC:
                if os.getuid() == 0:
                    continue  # root is never held to RLIMIT_NPROC; the pids cgroup does that
                value += _tasks_of_user(os.getuid())  # the limit counts all the user's tasks
            try:
                resource.setrlimit(which, (value, value))
            except (OSError, ValueError) as err:
                problems.append(f"cannot set rlimit {which} to {value}: {err}")
        for problem in problems:
            os.write(2, f"labkit sandbox: {problem}\n".encode())
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)  # the sandbox died: so does the kernel
        env = dict(os.environ)
        env["JPY_PARENT_PID"] = str(os.getppid())  # ipykernel exits when its parent (us) changes
        os.execvpe(command[0], command, env)
    except BaseException as err:  # noqa: BLE001 - a forked child must never return
        try:
            os.write(2, f"labkit sandbox: cannot start {command[0]}: {err}\n".encode())
        finally:
            os._exit(127)


def _tasks_of_user(uid: int) -> int:
    count = 0
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                if os.stat(f"/proc/{name}").st_uid == uid:
                    count += len(os.listdir(f"/proc/{name}/task"))
            except OSError:
                continue
    return count


def process_table() -> dict[int, tuple[int, str]]:
    """``{pid: (ppid, state)}`` for every process, read from ``/proc/PID/stat``."""
    table = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as handle:
                data = handle.read()
        except OSError:
            continue
        fields = data[data.rindex(b")") + 2:].split()  # the name in () may hold spaces
        table[int(name)] = (int(fields[1]), fields[0].decode())
    return table


def descendants(root: int) -> list[int]:
    """Live (non-zombie) descendants of ``root``, parents before children."""
    children: dict[int, list[int]] = {}
    states = {}
    for pid, (ppid, state) in process_table().items():
        children.setdefault(ppid, []).append(pid)
        states[pid] = state
    found, queue = [], list(children.get(root, []))
    while queue:
        pid = queue.pop(0)
        if states.get(pid) != "Z":
            found.append(pid)
        queue.extend(children.get(pid, []))
    return found


def kill_descendants(timeout_s: float = KILL_TIMEOUT_S) -> int:
    """SIGKILL every descendant until none is left; return how many survived ``timeout_s``.

    Several rounds are needed: a process may fork between the scan and the kill, and its child
    (re-parented to us, the subreaper, once its parent dies) is caught by the next scan.
    """
    me, deadline, pause = os.getpid(), time.monotonic() + timeout_s, 0.001
    while True:
        _reap()
        alive = descendants(me)
        if not alive or time.monotonic() > deadline:
            return len(alive)
        for pid in alive:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        time.sleep(pause)
        pause = min(pause * 2, 0.05)


def _reap() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _write_status(path: str, status: int | None, left: int) -> None:
    # "stopped": the grader ended the kernel (SIGTERM to us); otherwise the kernel ended by itself
    info: dict[str, object] = {"left": left, "stopped": status is None, "exit_code": None, "signal": None}
    if status is not None:
        code = os.waitstatus_to_exitcode(status)
        if code < 0:
            try:
                info["signal"] = signal.Signals(-code).name
            except ValueError:
                info["signal"] = f"signal {-code}"
        else:
            info["exit_code"] = code
    try:
        with open(path, "w") as handle:
            json.dump(info, handle)
    except OSError:
        pass


if __name__ == "__main__":
    sys.exit(main())
