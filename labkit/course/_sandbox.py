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
import importlib.util
import json
import os
import resource
import shutil
import signal
import sys
import time

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (a few ms of every grade)
if TYPE_CHECKING:
    from labkit._linux import tree as _tree, wait as _wait
else:
    def _load_wait():
        """labkit/_linux/wait.py, loaded by its path: this script runs as ``python -I -S _sandbox.py``,
        where labkit is not importable; wait.py imports the standard library and, by path too, tree.py
        (which imports nothing but ``os``)."""
        path = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "_linux", "wait.py")
        spec = importlib.util.spec_from_file_location("_labkit_linux_wait", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    _wait = _load_wait()
    _tree = _wait._tree

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
KILL_TIMEOUT_S = 5.0
_STOP_SIGNALS = {signal.SIGTERM, signal.SIGHUP}
CLONE_NEWNS, CLONE_NEWPID = 0x00020000, 0x20000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_BIND, MS_REC, MS_PRIVATE = 1, 2, 4, 8, 4096, 16384, 1 << 18
_LIMITS = {"--as": resource.RLIMIT_AS, "--cpu": resource.RLIMIT_CPU, "--fsize": resource.RLIMIT_FSIZE,
           "--nproc": resource.RLIMIT_NPROC}


class _Stop(Exception):
    """Raised by the SIGTERM/SIGHUP handler to leave the wait loop."""


def parse_args(argv: list[str]) -> tuple[dict[str, object], list[str]]:
    """``--as N --cpu N --fsize N --nproc N --cgroup DIR... --status FILE --remove DIR
    [--judge-fd FD] [--uid N --gid N] [--hide DIR]... [--expose DIR]... [--top DIR]
    [--student-cgroup DIR]... [--delegate DIR]... -- CMD...``.

    ``--student-cgroup``: cgroups the kernel (not the judge) moves on into, the grader's freezer;
    ``--delegate``: cgroups handed to the sandbox user."""
    if "--" not in argv:
        raise SystemExit("usage: _sandbox.py [--as B] [--cpu S] [--fsize B] [--nproc N] "
                         "[--cgroup DIR]... [--status FILE] [--remove DIR] -- COMMAND...")
    cut = argv.index("--")
    options, command = argv[:cut], argv[cut + 1:]
    parsed: dict[str, object] = {"cgroups": [], "status": None, "remove": None, "limits": {}, "judge-fd": None,
                                 "uid": None, "gid": None, "hide": [], "top": None, "expose": [],
                                 "student-cgroup": [], "delegate": [], "work-max": None}
    if len(options) % 2 or not command:
        raise SystemExit("_sandbox.py: every option takes one value, and a command must follow --")
    for name, value in zip(options[::2], options[1::2]):
        if name in _LIMITS:
            parsed["limits"][_LIMITS[name]] = int(value)  # type: ignore[index]
        elif name == "--cgroup":
            parsed["cgroups"].append(value)  # type: ignore[attr-defined]
        elif name in ("--status", "--remove", "--top"):
            parsed[name[2:]] = value
        elif name in ("--uid", "--gid", "--judge-fd", "--work-max"):
            parsed[name[2:]] = int(value)
        elif name in ("--hide", "--expose", "--student-cgroup", "--delegate"):
            parsed[name[2:]].append(value)  # type: ignore[attr-defined]
        else:
            raise SystemExit(f"_sandbox.py: unknown option {name}")
    return parsed, command


def main(argv: list[str] | None = None) -> int:
    """Start the kernel under the limits, supervise it, leave nothing behind."""
    options, command = parse_args(sys.argv[1:] if argv is None else argv)
    if options["judge-fd"] is not None:
        os.set_inheritable(int(str(options["judge-fd"])), False)  # for the judge alone, not the kernel
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
    isolated = options["uid"] is not None and os.geteuid() == 0 and libc.unshare(CLONE_NEWPID) == 0
    if isolated:
        kernel = os.fork()  # pid 1 of the new PID namespace: _init starts the judge and the kernel
        if kernel == 0:
            _init(libc, options, command)
        if options["judge-fd"] is not None:
            os.close(int(str(options["judge-fd"])))  # init has it; the judge alone will keep it
    else:
        if options["judge-fd"] is not None:
            _start_judge(libc, options, command[0], drop=False)
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
    if isolated:
        _kill(kernel)  # init: the kernel ends every process of its namespace with it
    for pid in descendants(os.getpid()):
        _kill(pid)  # a frozen process keeps this SIGKILL pending, and dies as soon as it is thawed
    _thaw(options)  # the grader may have died in the middle of a check, with the learner frozen
    left = kill_descendants()
    if options["status"]:
        _write_status(str(options["status"]), ended, left, _kernel_end(options) if isolated else None)
    if not left and not _alive(parent):
        _clean_up_for(options)  # the grader died (PR_SET_PDEATHSIG): nobody else will
    return 3 if left else 0


def _thaw(options: dict[str, object]) -> None:
    """Thaw the learner's cgroups. The grader freezes them while a check runs, and a frozen process
    acts on SIGKILL only once thawed (the kernel's cgroup-v1/freezer-subsystem.rst; v2's
    ``cgroup.freeze``): a grader that dies mid-check would otherwise leave its kernel frozen forever."""
    for folder in _strings(options["student-cgroup"]):
        for name, value in (("freezer.state", "THAWED"), ("cgroup.freeze", "0")):
            path = os.path.join(folder, name)
            if os.path.exists(path):
                try:
                    with open(path, "w") as control:
                        control.write(value)
                except OSError:
                    pass


def _alive(parent: int) -> bool:
    """Whether the grader still runs. Not just getppid(): PR_SET_PDEATHSIG fires when the thread
    that started us exits, and until the grader's other threads have exited too we are
    re-parented to one of them, with the same pid."""
    if os.getppid() != parent:
        return False
    try:
        state = _tree.read_stat_fields(parent)[_tree.STATE]
    except OSError:
        return False
    return state not in (b"Z", b"X")


def _clean_up_for(options: dict[str, object]) -> None:
    for folder in _strings(options["cgroups"]):
        for parent, dirs, _ in list(os.walk(folder, topdown=False)):  # the student's, the learner's own first
            for name in dirs:
                try:
                    os.rmdir(os.path.join(parent, name))
                except OSError:
                    pass
        try:
            os.rmdir(folder)
        except OSError:
            pass
    if options["remove"]:
        shutil.rmtree(str(options["remove"]), ignore_errors=True)


def _exec_kernel(libc, options: dict[str, object], command: list[str], drop: bool = False) -> None:
    """In the forked child: join the cgroups, apply the limits, exec the kernel. Never returns."""
    try:
        _prepare_child(libc, options, drop, student=True)
        env = dict(os.environ)
        env["JPY_PARENT_PID"] = str(os.getppid())  # ipykernel exits when its parent (us) changes
        os.execvpe(command[0], command, env)
    except BaseException as err:  # noqa: BLE001 - a forked child must never return
        try:
            os.write(2, f"labkit sandbox: cannot start {command[0]}: {err}\n".encode())
        finally:
            os._exit(127)


def _prepare_child(libc, options: dict[str, object], drop: bool, student: bool = False) -> None:
    """Default signals, the cgroups (and for the kernel, ``student``, its freezer's), the sandbox
    user (``drop``), the rlimits, death with the parent."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, [])  # a blocked mask survives exec
    problems = []
    joined = _strings(options["cgroups"]) + (_strings(options["student-cgroup"]) if student else [])
    for folder in joined:
        try:
            with open(os.path.join(folder, "cgroup.procs"), "w") as handle:
                handle.write(str(os.getpid()))
        except OSError as err:
            problems.append(f"cannot join cgroup {folder}: {err.strerror}")
    if drop:
        _drop_privileges(options)
    for which, value in options["limits"].items():  # type: ignore[attr-defined]
        if which == resource.RLIMIT_NPROC:
            if os.getuid() == 0:
                continue  # root is never held to RLIMIT_NPROC; the pids cgroup does that
            value += _tree.tasks_of_user(os.getuid())  # the limit counts all the user's tasks
        try:
            resource.setrlimit(which, (value, value))
        except (OSError, ValueError) as err:
            problems.append(f"cannot set rlimit {which} to {value}: {err}")
    for problem in problems:
        os.write(2, f"labkit sandbox: {problem}\n".encode())
    # after the uid change, which clears it: the sandbox (or init) died, so does this
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _strings(value: object) -> list[str]:
    return [str(item) for item in value] if isinstance(value, list) else []


def _identity(options: dict[str, object]) -> tuple[int, int]:
    uid = int(str(options["uid"]))
    return uid, int(str(options["gid"])) if options["gid"] is not None else uid


def _drop_privileges(options: dict[str, object]) -> None:
    uid, gid = _identity(options)
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)  # also makes this process non-dumpable until it execs


def _start_judge(libc, options: dict[str, object], python: str, drop: bool) -> int:
    """Start the judge on the grader's end of the socket pair (``--judge-fd``), then close it here.

    The connection is inherited, never looked up by name: no other process, not even one of the
    same user, can connect in the judge's place.
    """
    fd = int(str(options["judge-fd"]))
    pid = os.fork()
    if pid == 0:
        try:
            os.setpgid(0, 0)  # out of the kernel's group: an interrupt (SIGINT to the group) is not for the judge
            _prepare_child(libc, options, drop)
            os.set_inheritable(fd, True)
            os.execv(python, [python, "-I", "-m", "labkit.course._judge", str(fd)])
        except BaseException as err:  # noqa: BLE001 - a forked child must never return
            try:
                os.write(2, f"labkit sandbox: cannot start the judge: {err}\n".encode())
            finally:
                os._exit(127)
    os.close(fd)  # the kernel, started next, must not inherit it
    options["judge-fd"] = None
    return pid


def _init(libc, options: dict[str, object], command: list[str]) -> None:
    """pid 1 of the sandbox's PID namespace. Never returns.

    As root: a private mount namespace (fresh /proc; empty tmpfs over the temporary folder
    but this run's own, over /dev/shm and /var/tmp, and read-only over every ``--hide``
    folder), the run's folders and cgroups handed to the sandbox user, the judge and the
    kernel started as that user. Then init becomes that user too (non-dumpable, so the
    learner's code, running as the same user, can neither trace nor read it) and stays as
    the namespace's recording stand-in for PID 1: it reaps orphans and writes every signal
    it receives, with the sender, to ``init-signals.jsonl`` (a checked refusal to stop pid 1
    rests on that record). When the kernel ends, init ends, and with it every process left
    in the namespace.
    """
    try:
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        _isolate_mounts(libc, options)
        top = str(options["top"])
        record = os.open(os.path.join(top, "init-signals.jsonl"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        end = os.open(os.path.join(top, "kernel-end.json"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        _delegate(options, command)
        if options["judge-fd"] is not None:
            _start_judge(libc, options, command[0], drop=True)
        kernel = os.fork()
        if kernel == 0:
            _exec_kernel(libc, options, command, drop=True)
        _drop_privileges(options)
        # the uid change cleared PR_SET_PDEATHSIG (prctl(2)): without it, an init whose sandbox
        # died kept its namespace alive (seen: a kernel outlived a grader stopped by SIGTERM)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        _record_until_kernel_ends(kernel, record, end)
    except BaseException as err:  # noqa: BLE001 - pid 1 must never return into main()
        try:
            os.write(2, f"labkit sandbox init: {type(err).__name__}: {err}\n".encode())
        finally:
            os._exit(126)
    os._exit(0)


def _record_until_kernel_ends(kernel: int, record: int, end: int) -> None:
    catchable = set(signal.valid_signals()) - {signal.SIGKILL, signal.SIGSTOP}
    signal.pthread_sigmask(signal.SIG_BLOCK, catchable)  # queued, even for a namespace's init
    while True:
        info = signal.sigtimedwait(catchable, 0.2)
        if info is not None and info.si_signo != signal.SIGCHLD:
            entry = {"signal": _signal_name(info.si_signo), "from_pid": info.si_pid, "from_uid": info.si_uid,
                     "t": time.time()}
            os.write(record, (json.dumps(entry) + "\n").encode())
        for pid, status in _wait.reaped():  # orphans of the namespace, and at last the kernel
            if pid == kernel:
                os.write(end, json.dumps(_end_of(status)).encode())
                return


def _isolate_mounts(libc, options: dict[str, object]) -> None:
    def mount(source: str, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
        if libc.mount(source.encode(), target.encode(), fstype.encode() if fstype else None, flags,
                      data.encode() if data else None) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"mount {target}: {os.strerror(err)}")

    if libc.unshare(CLONE_NEWNS) != 0:
        raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNS)")
    cwd = os.getcwd()
    mount("none", "/", None, MS_REC | MS_PRIVATE)
    mount("proc", _tree.PROC, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    top = str(options["top"])
    temporary = os.path.dirname(top)
    # What must stay under the temporary folder once it is covered: this run's folder, and labkit
    # or the environment when they live there (a repository cloned into /tmp)
    inside = [top] + [path for path in _strings(options["expose"]) if path.startswith(temporary + os.sep)]
    kept = {path: os.open(path, os.O_PATH) for path in sorted(set(inside), key=len) if os.path.isdir(path)}
    mount("tmpfs", temporary, "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777")
    for path, fd in kept.items():
        os.makedirs(path, exist_ok=True)
        mount(_tree.self_fd_path(fd), path, None, MS_BIND | MS_REC)
        os.close(fd)
    for shared in ("/dev/shm", "/var/tmp"):
        if os.path.isdir(shared) and shared != temporary:
            mount("tmpfs", shared, "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777")
    _make_reachable(mount, [str(path) for path in _strings(options["expose"])])
    for folder in _strings(options["hide"]):
        if os.path.isdir(folder):
            mount("tmpfs", folder, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV, "size=16k,mode=755")
    if options["work-max"]:  # the working folder: a tmpfs of its own, so no submission fills the disk
        mount("tmpfs", cwd, "tmpfs", MS_NOSUID | MS_NODEV, f"size={int(str(options['work-max']))},mode=700")
        os.mkdir(os.path.join(cwd, "tmp"))  # $TMPDIR
    # The working folder, entered again through the new mounts: else it stays on the covered
    # /tmp, and a rename between it and the same path by name fails with EXDEV.
    os.chdir(cwd)


def _make_reachable(mount, paths: list[str]) -> None:
    """Let the sandbox user reach ``paths`` (the Python it runs, labkit) through folders it may not
    enter, such as a Python under /root (0700): each such folder is covered, in this mount
    namespace only, by an empty tmpfs (mode 0711) into which only the needed entries are bound
    back. The rest of the folder (root's home) stays out of sight."""
    needed: dict[str, set[str]] = {}
    for path in paths:
        parts = os.path.abspath(path).split(os.sep)[1:]
        for depth in range(len(parts)):
            parent = os.sep + os.sep.join(parts[:depth])
            needed.setdefault(parent, set()).add(parts[depth])
    for parent in sorted(needed, key=lambda folder: folder.count(os.sep) if folder != os.sep else 0):
        try:
            if os.stat(parent).st_mode & 0o001:
                continue  # anyone may pass through already
        except OSError:
            continue
        kept = {}
        for child in needed[parent]:
            try:
                kept[child] = os.open(os.path.join(parent, child), os.O_PATH)
            except OSError:
                continue
        mount("tmpfs", parent, "tmpfs", MS_NOSUID | MS_NODEV, "mode=711")
        for child, fd in kept.items():
            target = os.path.join(parent, child)
            if os.path.isdir(_tree.self_fd_path(fd)):
                os.mkdir(target)
            else:
                open(target, "w").close()
            mount(_tree.self_fd_path(fd), target, None, MS_BIND | MS_REC)
            os.close(fd)


def _delegate(options: dict[str, object], command: list[str]) -> None:
    """Hand the run's work folder, connection file and cgroups to the sandbox user."""
    uid, gid = _identity(options)
    os.chmod(str(options["top"]), 0o711)  # the user may pass through to its work folder, no more
    for folder, dirs, files in os.walk(os.getcwd()):
        os.chown(folder, uid, gid)
        for name in files:
            os.chown(os.path.join(folder, name), uid, gid)
    if "-f" in command:
        os.chown(command[command.index("-f") + 1], uid, gid)  # the kernel's connection file
    for folder in _strings(options["delegate"]):
        os.chown(folder, uid, gid)  # delegated: the lessons make cgroups of their own under it
        for name in ("cgroup.procs", "tasks", "cgroup.subtree_control", "cgroup.threads"):
            if os.path.exists(os.path.join(folder, name)):
                os.chown(os.path.join(folder, name), uid, gid)


def _kernel_end(options: dict[str, object]) -> dict | None:
    try:
        with open(os.path.join(str(options["top"]), "kernel-end.json")) as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _end_of(status: int) -> dict:
    code = os.waitstatus_to_exitcode(status)
    if code < 0:
        return {"exit_code": None, "signal": _signal_name(-code)}
    return {"exit_code": code, "signal": None}


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass


def descendants(root: int) -> list[int]:
    """Live (non-zombie) descendants of ``root``, parents before children."""
    table = _tree.process_table()
    children = _tree.children_of(table)
    states = {pid: state for pid, (_, state) in table.items()}
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
    me = os.getpid()

    def alive() -> list[int]:
        _reap()  # the killed ones we reap; the rest are reaped by their parents or re-parented to us
        return descendants(me)

    # each round waits on the killed processes' pidfds, so it re-lists as soon as they have died
    return len(_wait.kill_until_empty(alive, timeout_s))


def _reap() -> None:
    for _ in _wait.reaped():
        pass


def _write_status(path: str, status: int | None, left: int, kernel_end: dict | None = None) -> None:
    # "stopped": the grader ended the kernel (SIGTERM to us); otherwise the kernel ended by itself
    info: dict[str, object] = {"left": left, "stopped": status is None, "exit_code": None, "signal": None}
    if kernel_end:  # the kernel ran under init in a PID namespace: init recorded how it ended
        info.update(exit_code=kernel_end.get("exit_code"), signal=kernel_end.get("signal"), stopped=False)
    elif status is not None:
        info.update(_end_of(status))
    try:
        with open(path, "w") as handle:
            json.dump(info, handle)
    except OSError:
        pass


if __name__ == "__main__":
    sys.exit(main())
