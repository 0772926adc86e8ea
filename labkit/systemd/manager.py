"""A real systemd user manager (and journald), started by labkit where systemd is not PID 1.

Containers, hub images and CI machines often have the systemd package but not systemd as
PID 1. ``systemd --user`` refuses to start there only because ``sd_booted()`` tests whether
``/run/systemd/system/`` exists (sd_booted(3)). :func:`start` creates that folder for the
moment of start-up and removes it as soon as the manager answers (about 0.1 s here; during
that moment apt or invoke-rc.d would believe systemd is PID 1; a start that dies meanwhile leaves
it, and the next start removes it: an owner file inside names the labkit process), gives the manager a private 0700 ``XDG_RUNTIME_DIR``
(``systemctl --user`` and ``systemd-run --user`` then talk to ``$XDG_RUNTIME_DIR/systemd/private``,
no D-Bus daemon needed) and starts it inside a cgroup of its own,
``/labkit-ID.slice/user-UID.slice/user@UID.service`` in the cgroup2 hierarchy (and ``name=systemd``
on a hybrid machine): shaped as systemd itself would place it, so that journald tags the services'
output with ``_SYSTEMD_USER_UNIT`` and ``journalctl --user-unit NAME`` finds it. Started from the
root cgroup, a manager moves every process of the machine into its ``init.scope``. It also makes
the inert ``/run/systemd/inaccessible/`` nodes PID 1 makes at boot, which ``ProtectHome=yes`` and
``InaccessiblePaths=`` mount over what they hide.

``/lib/systemd/systemd-journald`` is started beside it when no journald answers (volatile
storage in ``/run/log/journal`` unless ``/var/log/journal`` exists) and shared by every manager
labkit starts on the machine (``/run/labkit/journald.json`` counts them; the last one out stops
it). Without journald the services' output is lost, and the manager is started with
``--log-target=null`` (it would otherwise write to ``/dev/console``, a slow serial line on many VMs).
journald tags each line with its unit from the cgroup of the process that wrote it, read when it
processes the line: lines of a child that has already exited (a quick ``cat`` in a service script)
can arrive without ``_SYSTEMD_USER_UNIT`` and then escape ``journalctl --user-unit`` (measured here on
a busy machine; the same holds under systemd as PID 1).

Measured with systemd 252 on Debian 12 (2 cores, hybrid cgroups): the manager answers about
0.3 s after its start; each service gets its own cgroup; restarts, start limits, KillMode,
timeouts and timers work; timers fire up to ~0.25 s late. On a hybrid hierarchy the cgroup2
mount has no controllers, so ``MemoryMax=``/``CPUQuota=``/``TasksMax=`` are accepted but not
enforced: :attr:`Manager.controllers` says which are.

The manager's record is ``$LABKIT_HOME/systemd/manager.json``; :func:`stop` ends the manager
(``systemctl --user exit``, then SIGKILL to whatever is left in its cgroup), the journald it
started, and removes the cgroups and folders it made.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import stat
import shutil
import signal
import subprocess
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import psutil

from labkit._atomic import write_json_atomic
from labkit._linux import proc as _proc, wait as _wait
from labkit._linux.cgroup import mounts as cgroup_mounts
from labkit.cgroups import discard as discard_cgroup
from labkit.errors import BadArgument, LabkitError, PermissionDenied, ToolMissing

MARKER = Path("/run/systemd/system")  # what sd_booted() tests
JOURNAL_SOCKETS = Path("/run/systemd/journal")
VOLATILE_JOURNAL = Path("/run/log/journal")
_SOCKET_MAX = 107  # sun_path holds 108 bytes with the NUL
_POLL_S = 0.05


@dataclass
class Manager:
    """A running user manager labkit started (or found). Paths are absolute strings."""

    pid: int
    create_time: float
    runtime_dir: str  #: its XDG_RUNTIME_DIR: ``systemd/private`` there is the socket systemctl uses
    config_home: str  #: its XDG_CONFIG_HOME: unit files go in ``systemd/user`` there
    cgroups: list[str]  #: the manager's cgroup folders (cgroup2, and name=systemd on a hybrid machine)
    controllers: list[str]  #: cgroup2 controllers its services can use (memory, cpu, pids, ...)
    journald_pid: int | None = None  #: the journald labkit started and shares between its managers, if any
    made: list[str] = field(default_factory=list)  #: folders labkit created and removes at stop
    started_at: float = 0.0  #: time.time() of the start

    @property
    def unit_dir(self) -> Path:
        """Where ``systemctl --user daemon-reload`` looks for unit files of this manager."""
        return Path(self.config_home) / "systemd" / "user"

    def environment(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """``base`` (default: this process's environment) with what ``systemctl --user``,
        ``systemd-run --user`` and ``journalctl --user`` need to reach this manager."""
        env = dict(os.environ if base is None else base)
        env["XDG_RUNTIME_DIR"] = self.runtime_dir
        # where systemd is not PID 1, `systemctl --user enable/disable` edit the unit folders
        # themselves, found through XDG_CONFIG_HOME: the manager's, not the caller's
        env["XDG_CONFIG_HOME"] = self.config_home
        env.pop("DBUS_SESSION_BUS_ADDRESS", None)  # else systemctl tries the session bus first
        return env

    def alive(self) -> bool:
        return _same_process(self.pid, self.create_time)


def state_path() -> Path:
    """``$LABKIT_HOME/systemd/manager.json``: the record of the manager labkit started, or
    ``$LABKIT_SYSTEMD_MANAGER`` where set (the test suite points every test and notebook at the
    one manager it started, whatever LABKIT_HOME a test uses)."""
    if os.environ.get("LABKIT_SYSTEMD_MANAGER"):
        return Path(os.environ["LABKIT_SYSTEMD_MANAGER"]).expanduser().resolve()
    from labkit.jobs import labkit_home

    return (labkit_home() / "systemd" / "manager.json").expanduser().resolve()


def _load(path: Path) -> Manager | None:
    """The record at ``path`` (keys another labkit version wrote are ignored), or None."""
    try:
        data = json.loads(path.read_text())
        known = {f.name for f in fields(Manager)}
        return Manager(**{k: v for k, v in data.items() if k in known})
    except (OSError, ValueError, TypeError):
        return None


def find() -> Manager | None:
    """The manager labkit started for this LABKIT_HOME, if it still runs; else None."""
    manager = _load(state_path())
    return manager if manager is not None and manager.alive() else None


def user_environment(base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment to run ``systemctl --user`` in: labkit's manager's when one runs, else
    ``base`` (or this process's environment) as it is (a desktop login's own manager)."""
    manager = find()
    if manager is not None:
        return manager.environment(base)
    return dict(os.environ if base is None else base)


def answers(env: dict[str, str], timeout_s: float = 5.0) -> bool:
    """True if ``systemctl --user show-environment`` answers in ``env``."""
    try:
        done = subprocess.run(["systemctl", "--user", "show-environment"], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, timeout=timeout_s)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def systemd_binary() -> str | None:
    """The ``systemd`` executable (it is not on PATH on Debian), or None."""
    for candidate in (shutil.which("systemd"), "/lib/systemd/systemd", "/usr/lib/systemd/systemd"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def why_cannot_start() -> str | None:
    """None if :func:`start` can start a manager here, else why not (one line)."""
    if systemd_binary() is None:
        return "the systemd package is not installed (apt install systemd)"
    if shutil.which("systemctl") is None:
        return "systemctl is not installed (apt install systemd)"
    if pid1_is_systemd():
        return ("systemd is PID 1 here: use the user manager a login starts "
                "(or `loginctl enable-linger $USER`), not one of labkit's")
    if os.geteuid() != 0:
        return ("not permitted: starting a user manager without systemd as PID 1 needs root, "
                f"to create {MARKER} for the moment of start-up")
    unified = cgroup2_mount()
    if unified is None:
        return "no cgroup2 hierarchy is mounted (systemd needs one to track services)"
    if not os.access(unified, os.W_OK):
        return f"the cgroup2 hierarchy at {unified} is read-only here (a container without a writable cgroup)"
    return None


def pid1_is_systemd() -> bool:
    """Whether systemd runs as PID 1, from /proc/1/exe or /proc/1/comm (not from the sd_booted()
    marker, which a labkit start creates for a moment; comm says "init" where systemd was started
    as /sbin/init); the marker only where neither can be read."""
    try:
        if _proc.exe_name(1) == "systemd":
            return True
    except OSError:
        pass
    try:
        return _proc.comm(1) == "systemd"
    except OSError:
        return MARKER.is_dir()


def start(config_home: str | os.PathLike | None = None, timeout_s: float = 15.0) -> Manager:
    """Start a private user manager (and journald if none answers); return it.

    Idempotent: a manager labkit already started for this LABKIT_HOME is returned as it is.
    ``config_home`` is the manager's XDG_CONFIG_HOME (default: the user's own, so units in
    ``~/.config/systemd/user`` are found as on a server).

    Raises:
        ToolMissing: no systemd package.
        PermissionDenied: not root, or the cgroup hierarchy is read-only.
        BadArgument: ``config_home`` is not a folder that can be made.
        LabkitError: systemd is PID 1, an earlier manager's processes hold its cgroup, or the
            manager exited or did not answer within ``timeout_s``; also a SIGTERM/SIGHUP during
            start-up (everything started is undone first).
    """
    with _locked():
        found = find()
        if found is not None:
            return found
        reason = why_cannot_start()
        if reason is not None:
            raise _refusal(reason)
        return _start(Path(config_home or _default_config_home()).expanduser().resolve(), timeout_s)


def stop(timeout_s: float = 15.0) -> bool:
    """Stop the manager labkit started (its services first, as ``systemctl --user exit`` does),
    the journald it started, and remove its cgroups and folders. False if none was running.

    Raises:
        LabkitError: processes in its cgroups would not die (uninterruptible sleep); the record
            stays, so a later ``stop`` can try again.
        PermissionDenied: the manager is another user's (root's).
    """
    with _locked():
        manager = _load(state_path())
        if manager is None:
            return False
        _stop(manager, timeout_s)
        state_path().unlink(missing_ok=True)
        return True


def status() -> dict:
    """What ``labkit systemd status`` prints: running or not, and why a start would fail."""
    manager = find()
    if manager is None:
        return {"running": False, "can_start": why_cannot_start() is None, "reason": why_cannot_start()}
    return {"running": True, "answers": answers(manager.environment()), **asdict(manager),
            "unit_dir": str(manager.unit_dir)}


# --- start --------------------------------------------------------------------------------
def _start(config_home: Path, timeout_s: float) -> Manager:
    uid = os.geteuid()
    relative, roots = _cgroup_layout(uid)
    _refuse_busy_cgroups(relative, roots)  # before touching anything an earlier manager still uses
    try:
        (config_home / "systemd" / "user").mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise BadArgument(f"cannot use {config_home} as the manager's XDG_CONFIG_HOME: {err.strerror}") from err
    made: list[str] = []
    cgroups: list[Path] = []
    proc: subprocess.Popen | None = None
    journald: int | None = None
    shared = False
    try:
        with _interruptible_as_error():
            runtime = _runtime_dir()
            made.append(str(runtime))
            cgroups = _make_cgroups(relative, roots, made)
            _make_inaccessible_nodes()
            journald, shared = _share_journald(), True
            env = _manager_environment(runtime, config_home)
            log = runtime / "manager.log"
            with _marker():
                proc = _launch(env, cgroups, log)
                manager = Manager(pid=proc.pid, create_time=psutil.Process(proc.pid).create_time(),
                                  runtime_dir=str(runtime), config_home=str(config_home),
                                  cgroups=[str(c) for c in cgroups], controllers=_controllers(cgroups[0]),
                                  journald_pid=journald, made=made, started_at=time.time())
                _write_record(manager)  # from now on `labkit systemd stop` finds it, whatever happens here
                _wait_until_it_answers(proc, env, log, timeout_s)
            return manager
    except BaseException:
        if proc is not None and proc.poll() is None:
            proc.kill()
        if proc is not None:
            proc.wait()
        _kill_tree(cgroups)
        if shared:
            _release_journald()
        _remove_made(cgroups, made)
        state_path().unlink(missing_ok=True)
        raise


INACCESSIBLE = Path("/run/systemd/inaccessible")
_INACCESSIBLE_KINDS = {"dir": stat.S_IFDIR, "reg": stat.S_IFREG, "fifo": stat.S_IFIFO, "sock": stat.S_IFSOCK,
                       "chr": stat.S_IFCHR, "blk": stat.S_IFBLK}


def _make_inaccessible_nodes() -> None:
    """Create ``/run/systemd/inaccessible/{dir,reg,fifo,sock,chr,blk}`` (mode 0000) as PID 1 does at
    boot (systemd's src/shared/dev-setup.c, make_inaccessible_nodes).

    A root user manager mounts these over what ``ProtectHome=yes``, ``InaccessiblePaths=`` and
    ``ProtectKernelTunables=`` hide; without them such a service fails with 226/NAMESPACE
    ("Failed to mount /run/systemd/inaccessible/dir", seen here with systemd 252), where it runs on a
    machine booted with systemd. They are left in place: the same inert nodes PID 1 keeps, which
    nothing reads as a sign of a booted systemd. A node the kernel refuses (``chr``/``blk`` in a
    container without CAP_MKNOD) is skipped: only the services that need that kind fail then.
    """
    try:
        INACCESSIBLE.mkdir(mode=0o755, parents=True, exist_ok=True)
    except OSError:
        return
    for name, kind in _INACCESSIBLE_KINDS.items():
        path = INACCESSIBLE / name
        if os.path.lexists(path):
            continue
        try:
            if kind == stat.S_IFDIR:
                path.mkdir(mode=0)
            else:
                os.mknod(path, kind | 0, os.makedev(0, 0))
            os.chmod(path, 0)  # the umask cannot add bits, but mkdir's mode is masked: make sure
        except OSError:
            continue


def _launch(env: dict[str, str], cgroups: list[Path], log: Path) -> subprocess.Popen:
    """``systemd --user`` in its cgroups: a shell writes its own pid into each cgroup.procs, then
    execs systemd (no preexec_fn, which is unsafe in a threaded process such as a notebook kernel)."""
    target = "journal" if _journal_answers() else "null"  # without journald it would log to the console
    join = 'binary="$1"; shift; for f; do echo $$ > "$f" || exit 97; done; exec "$binary" --user --log-target=' + target
    argv = ["/bin/sh", "-c", join, "sh", systemd_binary() or "systemd", *(str(c / "cgroup.procs") for c in cgroups)]
    with open(log, "wb") as out:
        return subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)


def _wait_until_it_answers(proc: subprocess.Popen, env: dict[str, str], log: Path, timeout_s: float) -> None:
    if _wait.wait_for(lambda: answers(env, timeout_s=2.0) or (proc.poll() is not None and "exited"), timeout_s,
                      max_interval_s=_POLL_S) is not True:
        code = proc.poll()
        said = log.read_text(errors="replace").strip().splitlines()
        if said:
            why = said[-1]
        elif code is None:
            why = f"no answer within {timeout_s:g} s"
        else:
            why = f"it exited with code {code}" + (" (could not join its cgroup)" if code == 97 else "")
        raise LabkitError(f"systemd --user did not start: {why}")


def _write_record(manager: Manager) -> None:
    state_path().parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(state_path(), asdict(manager))


class _Interrupted(LabkitError):
    """A SIGTERM or SIGHUP arrived while a manager was starting; what was started is undone."""


@contextlib.contextmanager
def _interruptible_as_error():
    """Turn SIGTERM and SIGHUP into an exception for the moment of start-up, so the clean-up runs
    (their default action ends the process at once, leaving the sd_booted() marker behind).
    Only possible in the main thread; elsewhere the signals keep their handlers."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupted(signum, _frame):
        raise _Interrupted(f"{signal.Signals(signum).name} while the manager was starting: everything it had "
                           "started was undone")

    previous = {sig: signal.signal(sig, interrupted) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def _marker():
    """``/run/systemd/system`` for the moment of start-up, under a machine-wide lock (two labkit
    starts never race over it), with a file naming its owner inside, so a marker left by a labkit
    process that died meanwhile is recognised and removed by the next start."""
    with _locked(Path("/run/lock/labkit-systemd-marker.lock")):
        _remove_stale_marker()
        made = not MARKER.exists()
        owner = MARKER / f".labkit-{os.getpid()}"
        try:
            MARKER.mkdir(parents=True, exist_ok=True)
            owner.touch()
            yield
        finally:
            with contextlib.suppress(OSError):
                owner.unlink()
            if made:
                with contextlib.suppress(OSError):
                    MARKER.rmdir()


def _remove_stale_marker() -> None:
    """A marker that holds only owner files of labkit processes that are gone (and no systemd as
    PID 1) is a leftover of an interrupted start: remove it."""
    if pid1_is_systemd() or not MARKER.is_dir():
        return
    entries = list(MARKER.iterdir())
    owners = [e for e in entries if e.name.startswith(".labkit-") and e.name[8:].isdigit()]
    if not owners or len(owners) != len(entries) or any(psutil.pid_exists(int(e.name[8:])) for e in owners):
        return  # not ours, or its owner still runs
    for entry in owners:
        with contextlib.suppress(OSError):
            entry.unlink()
    with contextlib.suppress(OSError):
        MARKER.rmdir()


def _runtime_dir() -> Path:
    from labkit.jobs import labkit_home

    runtime = (labkit_home() / "systemd" / "runtime").expanduser().resolve()
    if len(str(runtime / "systemd" / "private")) > _SOCKET_MAX:
        raise LabkitError(f"the manager's socket path would be too long (over {_SOCKET_MAX} bytes): "
                          f"{runtime}; set LABKIT_HOME to a shorter folder")
    shutil.rmtree(runtime, ignore_errors=True)
    runtime.mkdir(parents=True, mode=0o700)
    os.chmod(runtime, 0o700)
    return runtime


def _default_config_home() -> Path:
    return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")


def _manager_environment(runtime: Path, config_home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DBUS_SESSION_BUS_ADDRESS", "NOTIFY_SOCKET",
                                                             "LISTEN_FDS", "LISTEN_PID", "INVOCATION_ID")}
    env.update(XDG_RUNTIME_DIR=str(runtime), XDG_CONFIG_HOME=str(config_home))
    return env


def cgroup2_mount() -> Path | None:
    """Where the cgroup2 (unified) hierarchy is mounted, or None (from /proc/self/mounts)."""
    return _mount_of("cgroup2", None)


def _mount_of(fstype: str, option: str | None) -> Path | None:
    for point, kind, options in cgroup_mounts():
        if kind == fstype and (option is None or option in options):
            return Path(point)
    return None


def _cgroup_layout(uid: int) -> tuple[Path, list[Path]]:
    """``labkit-ID.slice/user-UID.slice/user@UID.service`` and the hierarchies it goes in: cgroup2,
    and name=systemd on a hybrid machine. ID comes from the state file's path, so that managers of
    different LABKIT_HOMEs coexist while journald still reads unit names from the path (it skips
    leading slices, then ``user@UID.service``)."""
    import hashlib

    tag = hashlib.sha256(str(state_path().resolve()).encode()).hexdigest()[:10]
    relative = Path(f"labkit-{tag}.slice") / f"user-{uid}.slice" / f"user@{uid}.service"
    unified = cgroup2_mount()
    if unified is None:
        raise LabkitError("no cgroup2 hierarchy is mounted (systemd needs one to track services)")
    named = _mount_of("cgroup", "name=systemd")
    return relative, [unified] + ([named] if named is not None else [])


def _refuse_busy_cgroups(relative: Path, roots: list[Path]) -> None:
    for root in roots:
        if (root / relative).is_dir() and _procs_in(root / relative):
            raise LabkitError(f"processes of an earlier manager are still in {root / relative}; "
                              "stop them first (`labkit systemd stop` with the same LABKIT_HOME)")


def _make_cgroups(relative: Path, roots: list[Path], made: list[str]) -> list[Path]:
    folders = []
    for root in roots:
        folder = root / relative
        for part in (relative.parts[0], Path(*relative.parts[:2]), relative):
            if not (root / part).exists():
                made.append(str(root / part))
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise PermissionDenied(f"creating {folder}", "the cgroup hierarchy is not writable here") from err
        folders.append(folder)
    _enable_controllers(roots[0], relative)
    return folders


def _enable_controllers(root: Path, relative: Path) -> None:
    """Pass the cgroup2 controllers down to the manager's cgroup, as far as the kernel allows
    (a cgroup with processes in it cannot enable controllers for its children)."""
    here = root
    for part in relative.parts:
        try:
            available = (here / "cgroup.controllers").read_text().split()
        except OSError:
            available = []
        for controller in available:  # one at a time: one refused must not cost the others
            with contextlib.suppress(OSError):
                (here / "cgroup.subtree_control").write_text(f"+{controller}")
        here = here / part


def _controllers(folder: Path) -> list[str]:
    try:
        return (folder / "cgroup.controllers").read_text().split()
    except OSError:
        return []


def _journal_answers() -> bool:
    # comm is cut to 15 characters ("systemd-journal"); psutil completes it from the command line
    return (JOURNAL_SOCKETS / "stdout").is_socket() and any(
        p.info["name"] in ("systemd-journal", "systemd-journald") for p in psutil.process_iter(["name"]))


JOURNALD_RECORD = Path("/run/labkit/journald.json")  # machine-wide, as journald's sockets are
JOURNALD_LOCK = Path("/run/lock/labkit-journald.lock")  # never removed: a waiter must lock the same file


def _share_journald() -> int | None:
    """The pid of a journald labkit runs for its managers (started now if none answers), with
    this manager counted among its users; None where journald cannot run or is not labkit's."""
    me = str(state_path().resolve())
    with _locked(JOURNALD_LOCK):
        record = _journald_record()
        if record and _same_process(record["pid"], record["create_time"]):
            record["users"] = sorted({*record["users"], me})
            _write_journald_record(record)
            return record["pid"]
        binary = next((p for p in ("/lib/systemd/systemd-journald", "/usr/lib/systemd/systemd-journald")
                       if os.access(p, os.X_OK)), None)
        if binary is None or _journal_answers():
            return None  # none to start, or the machine's own journald (not ours to stop)
        made = [str(f) for f in (JOURNAL_SOCKETS, VOLATILE_JOURNAL) if not f.exists()]
        # Shared by every labkit manager on the machine, it outlives the caller that started it:
        # it gets none of that caller's environment (a test run's leak-check tag would make the
        # first run's check kill it while a later run still logs to it).
        proc = subprocess.Popen([binary], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True,
                                env={"PATH": os.environ.get("PATH", os.defpath)})
        ready = _wait.wait_for(lambda: (JOURNAL_SOCKETS / "stdout").is_socket()
                               or (proc.poll() is not None and "exited"), 5.0, max_interval_s=_POLL_S)
        if ready is not True:
            proc.kill()
            proc.wait()
            return None  # the manager then logs nowhere; its services' output is lost
        # a journald that died leaves its users: they are counted on with the new one
        users = sorted({me, *(u for u in (record or {}).get("users", []) if _user_alive(Path(u)))})
        _write_journald_record({"pid": proc.pid, "create_time": psutil.Process(proc.pid).create_time(),
                                "made": made, "users": users})
        return proc.pid


def _release_journald() -> None:
    """Count this manager out of the shared journald's users; the last one out stops it and
    removes the folders it made (its sockets and the volatile journal)."""
    me = str(state_path().resolve())
    with _locked(JOURNALD_LOCK):
        record = _journald_record()
        if record is None:
            return
        record["users"] = [user for user in record["users"] if user != me and _user_alive(Path(user))]
        if record["users"] and _same_process(record["pid"], record["create_time"]):
            _write_journald_record(record)
            return
        _end(record["pid"], record["create_time"], 5.0, asked=False)
        for folder in record.get("made", []):
            shutil.rmtree(folder, ignore_errors=True)
        JOURNALD_RECORD.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            JOURNALD_RECORD.parent.rmdir()


def _write_journald_record(record: dict) -> None:
    JOURNALD_RECORD.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(JOURNALD_RECORD, record)


def _journald_record() -> dict | None:
    try:
        return json.loads(JOURNALD_RECORD.read_text())
    except (OSError, ValueError):
        return None


def _user_alive(path: Path) -> bool:
    """A manager counted among journald's users still needs it: it runs, or it is starting (its
    start holds the lock beside its record)."""
    manager = _load(path)
    if manager is not None and manager.alive():
        return True
    try:
        with open(path.with_suffix(".lock"), "a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True  # a start (or stop) of that manager is under way
            fcntl.flock(handle, fcntl.LOCK_UN)
    except OSError:
        pass
    return False


# --- stop ---------------------------------------------------------------------------------
def _stop(manager: Manager, timeout_s: float) -> None:
    cgroups = [Path(c) for c in manager.cgroups]
    if manager.alive():
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            subprocess.run(["systemctl", "--user", "exit"], env=manager.environment(), stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, timeout=timeout_s)
        _end(manager.pid, manager.create_time, timeout_s)
    left = _kill_tree(cgroups)
    if left:
        raise LabkitError(f"processes {left[:10]} in the manager's cgroups did not die after SIGKILL (uninterruptible "
                          "sleep: a device or a network file system); run `labkit systemd stop` again later")
    if manager.journald_pid:
        _release_journald()
    _remove_made(cgroups, list(manager.made))


def _end(pid: int, create_time: float, timeout_s: float, asked: bool = True) -> None:
    """Wait ``timeout_s`` for ``pid`` to end if it was ``asked`` to, else SIGTERM it first; then
    SIGTERM, then SIGKILL (reaping it if it is our child)."""
    steps = ((None, timeout_s),) if asked else ((signal.SIGTERM, timeout_s),)
    for sig, wait_s in (*steps, (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        if sig is not None and _same_process(pid, create_time):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
            except PermissionError as err:
                raise PermissionDenied(f"signalling pid {pid}", "it is another user's: stop it as that user") from err
        # the pidfd wakes us the moment it exits; _same_process then reaps it if it is our child
        # (a pid recycled between the check and pidfd_open would only make this step wait wait_s)
        if _same_process(pid, create_time):
            _wait.wait_exited(pid, wait_s)
        if not _same_process(pid, create_time):
            return


def _same_process(pid: int, create_time: float) -> bool:
    try:
        proc = psutil.Process(pid)
        if abs(proc.create_time() - create_time) > 0.05:
            return False
        if proc.status() == psutil.STATUS_ZOMBIE:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)  # ours (the suite started it): reap it
            return False
        return True
    except psutil.Error:
        return False


def _procs_in(folder: Path) -> list[int]:
    pids = []
    for procs in folder.rglob("cgroup.procs"):
        with contextlib.suppress(OSError, ValueError):
            pids += [int(line) for line in procs.read_text().split()]
    return pids


def _kill_tree(cgroups: list[Path]) -> list[int]:
    """SIGKILL everything in the manager's cgroups (their child cgroups included) until they are
    empty (5 s at most); the pids still there after that (none, normally)."""
    return _wait.kill_until_empty(
        lambda: {pid for folder in cgroups if folder.is_dir() for pid in _procs_in(folder)}, 5.0)


def _remove_made(cgroups: list[Path], made: list[str]) -> None:
    for folder in cgroups:  # the manager's own sub-cgroups (app.slice/..., init.scope), then its own
        discard_cgroup(folder)
    roots = {folder.parents[2] for folder in cgroups}  # the hierarchies' mount points
    for path in sorted((Path(p) for p in made), key=lambda p: -len(p.parts)):
        if any(root in path.parents for root in roots):  # a cgroup: rmdir, never rmtree
            with contextlib.suppress(OSError):
                path.rmdir()
        else:
            shutil.rmtree(path, ignore_errors=True)


def _refusal(reason: str) -> LabkitError:
    if reason.startswith("the systemd package"):
        return ToolMissing("systemd", "apt install systemd")
    if reason.startswith("not permitted") or "read-only" in reason:
        return PermissionDenied("starting a systemd user manager", reason)
    return LabkitError(f"cannot start a systemd user manager: {reason}")


@contextlib.contextmanager
def _locked(path: Path | None = None):
    path = path or state_path().with_suffix(".lock")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(path, "w")
    except PermissionError as err:
        raise PermissionDenied(f"writing {path}", "set LABKIT_HOME to a folder of yours") from err
    except OSError as err:
        raise LabkitError(f"cannot write {path}: {err.strerror}") from err
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield
