"""Capability detection: what this machine lets the lessons do (``labkit doctor``).

Every check looks instead of assuming (tools on PATH, /proc, the cgroup mounts, NVML). A check
that finds nothing, or fails, becomes a capability that is not available, with a hint saying what
the learner can do and what the lessons do instead; :func:`check` never raises.

>>> from labkit import doctor
>>> doctor.check().get("tmux").ok in (True, False)
True
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

from labkit._linux import cgroup as _cgroup
from labkit._linux.proc import PROC

__all__ = ["Capability", "Report", "check", "main", "find_tool", "TOOL_NAMES", "CAPABILITY_NAMES"]

_PROC = PROC  # "/proc"; tests point this at an empty folder to play a machine without /proc (macOS)

# tool -> (arguments that print its version cheaply, hint when it is missing)
_TOOLS: dict[str, tuple[tuple[str, ...], str]] = {
    "tmux": (("-V",), "apt install tmux; lesson 02 uses setsid and nohup instead, and exercise 2's tmux check cannot run (no points)"),
    "screen": (("-v",), "apt install screen; lesson 02 uses tmux or setsid instead, and exercise 2's screen check cannot run (no points)"),
    "strace": (("-V",), "apt install strace; lesson 05 reads /proc/PID/syscall and wchan instead"),
    "lsof": (("-v",), "apt install lsof; lesson 05 lists /proc/PID/fd instead"),
    "gdb": (("--version",), "apt install gdb; lesson 05 uses py-spy or SIGUSR1 stack dumps instead"),
    "py-spy": (("--version",), "pip install py-spy; lesson 05 gets the trainer's stacks with SIGUSR1 instead"),
    "cpulimit": (("-h",), "apt install cpulimit; lesson 04 uses labkit's SIGSTOP/SIGCONT throttle instead"),
    "prlimit": (("--version",), "apt install util-linux; lesson 04 sets rlimits with Python's resource module"),
    "taskset": (("--version",), "apt install util-linux; lesson 04 uses os.sched_setaffinity instead"),
    "stress-ng": (("--version",), "apt install stress-ng; lesson 04 loads the machine with trainer faults instead"),
    "systemd-analyze": (("--version",), "apt install systemd; lesson 03 lints units with labkit's own rules only"),
    "nohup": (("--version",), "part of coreutils; lesson 02 ignores SIGHUP from Python instead"),
    "setsid": (("--version",), "part of util-linux; lesson 02 uses Popen(start_new_session=True) instead"),
    "sshd": (("-V",), "apt install openssh-server; lesson 02 drops a pseudo-terminal instead of a real SSH login"),
}
TOOL_NAMES: tuple[str, ...] = tuple(_TOOLS)
CAPABILITY_NAMES: tuple[str, ...] = (
    *TOOL_NAMES, "systemctl-user", "systemd-pid1", "logout", "cgroup", "cgroup-memory", "cgroup-cpu", "ptrace",
    "grading-sandbox", "gpu")

_NO_SYSTEMD_HINT = "lesson 03 runs units under labkit's own supervisor, which follows systemd's documented semantics"
_CGROUP_HINTS = {
    "memory": "lesson 04 limits memory with RLIMIT_AS (prlimit) instead: MemoryError in the trainer, no OOM kill",
    "cpu": "lesson 04 throttles CPU with cpulimit-style SIGSTOP/SIGCONT instead of a CPU quota; its exercise 1 (a "
           "cpu cgroup) cannot be checked here (no points)",
}
# finds "3.3a" in "tmux 3.3a", "13.1" in "GNU gdb (Debian 13.1-3) 13.1", "252" in "systemd 252 (252.38-1)"
_VERSION_RE = re.compile(r"(?<![A-Za-z0-9.])\d+(?:\.\d+)*[a-z]?(?![\w.])")  # "OpenSSH_9.2" -> 9.2


@dataclass(frozen=True)
class Capability:
    """One thing the lessons may rely on, and whether this machine has it."""

    name: str
    ok: bool
    detail: str  # what was found: a version and path, or why not
    hint: str = ""  # what the learner can do, or what the lessons do instead
    category: str = "tool"  # "tool", "kernel" or "gpu"


def _read(path: str) -> str | None:
    """Return a small text file's stripped content, or None when it cannot be read."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read().strip()
    except OSError:
        return None


def _platform_info() -> dict[str, object]:
    """Describe the interpreter, the OS, the user, and guess whether we run in a container."""
    import getpass
    import platform

    euid = os.geteuid() if hasattr(os, "geteuid") else None
    try:
        user = getpass.getuser()
    except Exception:  # no passwd entry for our uid, common in containers
        user = str(euid)
    pid1, pid1_cgroup = _read(f"{_PROC}/1/comm"), _read(f"{_PROC}/1/cgroup") or ""
    marks = [f"{p} exists" for p in ("/.dockerenv", "/run/.containerenv") if os.path.exists(p)]
    marks += [f"$container={os.environ['container']}"] if os.environ.get("container") else []
    marks += [f"PID 1's cgroup mentions {w}" for w in ("docker", "kubepods", "containerd", "lxc") if w in pid1_cgroup]
    marks += [f"PID 1 is {pid1}, not an init system"] if pid1 and pid1 not in ("systemd", "init") else []
    marks += [f"a {hub} server (${var} is set)" for var, hub in (("BINDER_REQUEST", "Binder"),
                                                                   ("BINDER_LAUNCH_HOST", "Binder"),
                                                                   ("JUPYTERHUB_USER", "JupyterHub"))
              if os.environ.get(var)][:1]
    return {"python": platform.python_version(), "os": platform.system(), "kernel_release": platform.release(),
            "machine": platform.machine(), "user": user, "euid": euid, "is_root": euid == 0,
            "in_container": bool(marks), "container_evidence": "; ".join(marks) or "no container markers found"}


@dataclass
class Report:
    """The capabilities found by :func:`check`, in a fixed order, and the platform they were found on."""

    capabilities: list[Capability]
    platform: dict[str, object] = field(default_factory=_platform_info)

    def get(self, name: str) -> Capability | None:
        """Return the capability called *name*, or None if the report has none."""
        return next((c for c in self.capabilities if c.name == name), None)

    def as_dict(self) -> dict[str, object]:
        """Return the report as one JSON-ready object: ``{"platform": {...}, "capabilities": {name: {...}}}``."""
        caps = {c.name: {"ok": c.ok, "detail": c.detail, "hint": c.hint, "category": c.category}
                for c in self.capabilities}
        return {"platform": dict(self.platform), "capabilities": caps}

    def to_text(self) -> str:
        """Return an aligned table (ok / missing per capability), then hints for what is missing."""
        p = self.platform
        lines = [f"labkit doctor: {p.get('os')} {p.get('kernel_release')}, Python {p.get('python')}, "
                 f"user {p.get('user')}{' (root)' if p.get('is_root') else ''}, container: "
                 f"{'likely' if p.get('in_container') else 'probably not'} ({p.get('container_evidence')})"]
        width = max((len(c.name) for c in self.capabilities), default=0)
        for category in dict.fromkeys(c.category for c in self.capabilities):
            lines.append(f"\n{category}")
            lines += [f"  {'ok' if c.ok else 'missing':<8} {c.name:<{width}}  {c.detail}"
                      for c in self.capabilities if c.category == category]
        if missing := [c for c in self.capabilities if not c.ok]:
            lines.append("\nWhat is missing, and what to do:")
            lines += [f"  {c.name}: {c.hint or '(no hint)'}" for c in missing]
        return "\n".join(lines)


def find_tool(name: str) -> str | None:
    """Return the path of the executable *name* on PATH, else in the venv's ``bin`` or in sbin, else None.

    A Jupyter kernel started from a venv often lacks that ``bin`` on PATH, which would hide
    pip-installed tools such as py-spy.
    """
    found = shutil.which(name)
    if found is None and sys.prefix != sys.base_prefix:
        found = shutil.which(name, path=os.path.dirname(sys.executable))
    if found is None:  # daemons such as sshd live in sbin, which is not on a user's PATH
        found = shutil.which(name, path="/usr/local/sbin:/usr/sbin:/sbin")
    return found


def _run(argv: list[str], timeout_s: float, env: dict[str, str] | None = None) -> tuple[int | None, str]:
    """Run *argv* and return (exit code, stdout + stderr); (None, reason) if it did not finish."""
    try:
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, errors="replace",
                              timeout=timeout_s, env={**(os.environ if env is None else env), "LC_ALL": "C"})
    except subprocess.TimeoutExpired:  # run() has already killed and reaped it
        return None, f"no answer within {timeout_s:g} s"
    except OSError as exc:
        return None, exc.strerror or str(exc)
    return proc.returncode, (proc.stdout + "\n" + proc.stderr).strip()


def _tool(name: str, timeout_s: float) -> Capability:
    version_args, hint = _TOOLS[name]
    if (path := find_tool(name)) is None:
        return Capability(name, False, "not found on PATH", hint, "tool")
    code, out = _run([path, *version_args], timeout_s)
    if code is None or code > 1:  # found but silent, or failing (`cpulimit -h` exits 1): still say where
        return Capability(name, True, f"{path} (version unknown: {out if code is None else f'exit code {code}'})")
    version = next((m.group(0) for line in out.splitlines() if (m := _VERSION_RE.search(line))), "")
    return Capability(name, True, f"{version} ({path})" if version else path, "", "tool")


def _systemd_pid1() -> Capability:
    comm = _read(f"{_PROC}/1/comm")
    if comm is None:
        return Capability("systemd-pid1", False, f"cannot read {_PROC}/1/comm (not Linux?)", _NO_SYSTEMD_HINT, "kernel")
    # /proc/1/exe, then comm ("init" where systemd runs as /sbin/init); not /run/systemd/system, which
    # `labkit systemd start` creates for a moment (labkit.systemd.manager.pid1_is_systemd)
    from labkit.systemd.manager import pid1_is_systemd

    ok = comm == "systemd" or (_PROC == PROC and pid1_is_systemd())
    why = "" if ok else " (usual in containers, and in WSL without systemd=true)"
    return Capability("systemd-pid1", ok, f"PID 1 is {comm}{why}", "" if ok else _NO_SYSTEMD_HINT, "kernel")


def _systemctl_user(timeout_s: float) -> Capability:
    """Does a user manager answer: the login's own, or one labkit started (``labkit systemd start``)?
    If none does, can labkit start one here, and if not, why."""
    from labkit.systemd import manager

    hint = f"{_NO_SYSTEMD_HINT}; where systemd is PID 1, a login (or `loginctl enable-linger`) starts a user manager"
    if (path := find_tool("systemctl")) is None:
        return Capability("systemctl-user", False, "systemctl not found on PATH", hint, "tool")
    ours = manager.find()
    code, out = _run([path, "--user", "show-environment"], timeout_s, env=manager.user_environment())
    if code == 0:
        whose = f"labkit's (pid {ours.pid}, `labkit systemd env` for a shell)" if ours else "the login's"
        return Capability("systemctl-user", True, f"a user manager answers: {whose}", "", "tool")
    why = f"`systemctl --user` says: {out.splitlines()[-1] if out else f'exit code {code}'}"
    cannot = manager.why_cannot_start()
    if cannot is None:
        return Capability("systemctl-user", False, f"no user manager runs, and `labkit systemd start` can start "
                          f"one (systemd is not PID 1 here; {why})", "labkit systemd start", "tool")
    if not _systemd_pid1().ok:
        why = f"systemd is not PID 1, so no user manager runs, and labkit cannot start one: {cannot}; {why}"
    return Capability("systemctl-user", False, why, hint, "tool")


def _cgroup_layout(mountinfo: str | None = None, self_cgroup: str | None = None) -> _cgroup.Layout:
    """Return (version, our v2 folder or None, {v1 controller: our folder}): the kernel layer's reading,
    the same one ``labkit limit`` uses. Reads /proc/self/mountinfo and /proc/self/cgroup unless given."""
    if mountinfo is None and self_cgroup is None:
        return _cgroup.layout(_PROC)
    return _cgroup.parse_layout(mountinfo or "", self_cgroup or "")


def _cgroup_controller(ctrl: str) -> Capability:
    verdict = _cgroup.controller(ctrl, _cgroup_layout())
    return Capability(f"cgroup-{ctrl}", verdict.ok, verdict.detail, "" if verdict.ok else _CGROUP_HINTS[ctrl], "kernel")


def _cgroup_summary() -> Capability:
    version, v2_dir, v1_dirs = _cgroup_layout()
    parts = [f"v1 controllers: {','.join(sorted(v1_dirs))}"] if v1_dirs else []
    if v2_dir is not None:
        parts.append(f"v2 at {v2_dir} offers: {','.join(_cgroup.offered(v2_dir)) or 'nothing'}")
    hint = "" if version != "none" else "no cgroup filesystem (not Linux?); lesson 04 uses rlimits and throttling"
    detail = f"{version}: {'; '.join(parts)}" if parts else version
    return Capability("cgroup", version != "none", detail, hint, "kernel")


def _ptrace() -> Capability:
    """A live test (attach to a child of ours, read its memory as py-spy does) plus what restricts tracing
    others: capabilities, Yama, seccomp (labkit._linux.ptrace)."""
    from labkit._linux import ptrace

    hint = ("start the program under the tool instead (`strace -f -- CMD`, `py-spy record -- CMD`) or run the tool "
            "with sudo; in a container add --cap-add SYS_PTRACE; lesson 05 falls back to /proc (state) and SIGUSR1 "
            "stack dumps")
    if (status := _read(f"{_PROC}/self/status")) is None:
        return Capability("ptrace", False, f"no {_PROC}/self/status (not Linux?)", hint, "kernel")
    scope = ptrace.yama_scope()
    facts = (f"ptrace_scope={'absent (no Yama)' if scope is None else scope}, "
             f"CAP_SYS_PTRACE={'yes' if ptrace.has_cap('CapEff') else 'no'}, seccomp={ptrace.seccomp_mode()}, "
             f"euid={os.geteuid()}")
    failed = ptrace.attach_test()
    limits = ptrace.restrictions()
    if failed:
        why = f"attaching to a child of ours failed ({failed})" + (f": {'; '.join(limits)}" if limits else "")
        return Capability("ptrace", False, f"{facts}: {why}", hint, "kernel")
    if scope == 1:
        hint += "; or allow it until reboot: `sudo sysctl kernel.yama.ptrace_scope=0`"
        return Capability("ptrace", False, f"{facts}: only a process's ancestors may attach, so `strace -p` and "
                          "`py-spy dump` on a process started beside them fail", hint, "kernel")
    if limits:
        return Capability("ptrace", True, f"{facts}: may attach to our own children, but: {'; '.join(limits)}",
                          "", "kernel")
    return Capability("ptrace", True, f"{facts}: may attach to processes of our own uid, our children included",
                      "", "kernel")


_LOGIND_CONF = ("/etc/systemd/logind.conf", "/usr/lib/systemd/logind.conf.d", "/usr/local/lib/systemd/logind.conf.d",
                "/run/systemd/logind.conf.d", "/etc/systemd/logind.conf.d")


def kill_user_processes(paths: tuple[str, ...] = _LOGIND_CONF) -> str | None:
    """logind's KillUserProcesses= as configured (the main file, then drop-ins in name order, the last
    assignment winning, logind.conf(5)); None when nothing sets it."""
    import glob

    files = [paths[0]] + sorted((f for folder in paths[1:] for f in glob.glob(f"{folder}/*.conf")),
                                key=os.path.basename)
    value = None
    for path in files:
        for line in (_read(path) or "").splitlines():
            match = re.match(r"\s*KillUserProcesses\s*=\s*(\S*)", line)
            if match:
                value = match.group(1).lower()
    return value


def _logout() -> Capability:
    """What survives a logout: logind's KillUserProcesses= and lingering (logind.conf(5), loginctl(1))."""
    import getpass

    import psutil

    logind = any(p.info["name"] == "systemd-logind" for p in psutil.process_iter(["name"]))
    if not logind:
        return Capability("logout", True, "no systemd-logind runs: a logout (or an SSH drop) only hangs up the "
                          "session (SIGHUP): nohup, setsid, tmux and screen jobs survive it", "", "kernel")
    setting = kill_user_processes()
    user = getpass.getuser()
    linger = os.path.exists(f"/var/lib/systemd/linger/{user}")
    said = (f"KillUserProcesses={setting}" if setting else
            "KillUserProcesses unset (the build's default: no on Debian and Ubuntu, yes in upstream systemd)")
    if setting in ("yes", "true", "1", "on"):
        survive = ("linger is on: `systemd-run --user --scope CMD` or a user service survives" if linger else
                   "only what runs outside the session survives: `loginctl enable-linger` then "
                   "`systemd-run --user --scope CMD` (or a user service)")
        return Capability("logout", False, f"logind: {said}: logging out kills every process of the session, "
                          f"nohup, setsid, tmux and screen jobs alike; {survive}",
                          "loginctl enable-linger $USER, then start jobs with systemd-run --user --scope", "kernel")
    return Capability("logout", True, f"logind: {said}: a logout hangs up the session (SIGHUP) but kills nothing "
                      f"else, so nohup, setsid, tmux and screen jobs survive (linger {'on' if linger else 'off'})",
                      "", "kernel")


def _grading_sandbox() -> Capability:
    """What ``labkit grade`` can put around student code here (see ``labkit/course/_isolation.py``)."""
    import pwd

    from labkit.course._isolation import DEFAULT_USER, namespaces_work

    hint = ("labkit grade still runs the checks in its judge, apart from student code, but the student code runs "
            "as the grader's own user without PID/mount namespaces: grade as root (a container) for a class you "
            "do not trust; each gradebook row says what was missing")
    if os.geteuid() != 0:
        return Capability("grading-sandbox", False, "not root: no sandbox user, no PID or mount namespaces", hint,
                          "kernel")
    why = namespaces_work()
    if why is not None:
        return Capability("grading-sandbox", False, f"PID/mount namespaces refused: {why}", hint, "kernel")
    try:
        user = f"user {DEFAULT_USER} (uid {pwd.getpwnam(DEFAULT_USER).pw_uid})"
    except KeyError:
        user = f"user {DEFAULT_USER} (created by the first `labkit grade`)"
    from labkit._linux.cgroup import freezer_writable

    freezer = "cgroup freezer" if freezer_writable() else "no cgroup freezer"
    return Capability("grading-sandbox", True, f"judge, {user}, PID and mount namespaces, {freezer}", "", "kernel")


def _gpu(timeout_s: float) -> Capability:
    hint = "no GPU needed; GPU parts of lesson 06 are skipped"
    try:
        import pynvml  # the nvidia-ml-py package, the [gpu] extra

        pynvml.nvmlInit()
        try:
            names = [pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(i))
                     for i in range(pynvml.nvmlDeviceGetCount())]
        finally:
            pynvml.nvmlShutdown()
        if names:  # older nvidia-ml-py versions return bytes
            names = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
            return Capability("gpu", True, f"{len(names)} GPU(s) via NVML: {', '.join(names)}", "", "gpu")
        nvml = "NVML found no devices"
    except ImportError:
        nvml = "pynvml not installed"
    except Exception as exc:  # NVMLError_LibraryNotFound, NVMLError_DriverNotLoaded, ...
        nvml = f"NVML failed: {exc or type(exc).__name__}"
    if (smi := find_tool("nvidia-smi")) is None:
        return Capability("gpu", False, f"{nvml}; nvidia-smi not found", hint, "gpu")
    code, out = _run([smi, "-L"], timeout_s)
    gpus = [line.split(" (UUID")[0] for line in out.splitlines() if line.startswith("GPU ")]
    if code == 0 and gpus:
        return Capability("gpu", True, f"{len(gpus)} GPU(s) via nvidia-smi: {'; '.join(gpus)} ({nvml})", "", "gpu")
    return Capability("gpu", False, f"{nvml}; nvidia-smi -L: {out.splitlines()[-1] if out else code}", hint, "gpu")


def _guard(name: str, category: str, probe: Callable[[], Capability]) -> Capability:
    """Run one probe; an unexpected error becomes a capability that is not available."""
    try:
        return probe()
    except Exception as exc:
        hint = "this is a labkit bug; please report it with the output of `labkit doctor --json`"
        return Capability(name, False, f"check failed: {type(exc).__name__}: {exc}", hint, category)


def check(*, timeout_s: float = 3.0) -> Report:
    """Detect what this machine offers the lessons; never raises.

    Args:
        timeout_s: the longest any one external command (``tmux -V``, ``nvidia-smi -L``, ...) may run.

    Returns:
        A :class:`Report` with one :class:`Capability` per name in :data:`CAPABILITY_NAMES`, in that order.

    >>> check().get("cgroup").category
    'kernel'
    """
    from concurrent.futures import ThreadPoolExecutor

    probes: list[tuple[str, str, Callable[[], Capability]]] = [
        *((t, "tool", lambda t=t: _tool(t, timeout_s)) for t in TOOL_NAMES),
        ("systemctl-user", "tool", lambda: _systemctl_user(timeout_s)),
        ("systemd-pid1", "kernel", _systemd_pid1),
        ("logout", "kernel", _logout),
        ("cgroup", "kernel", _cgroup_summary),
        ("cgroup-memory", "kernel", lambda: _cgroup_controller("memory")),
        ("cgroup-cpu", "kernel", lambda: _cgroup_controller("cpu")),
        ("ptrace", "kernel", _ptrace),
        ("grading-sandbox", "kernel", _grading_sandbox),
        ("gpu", "gpu", lambda: _gpu(timeout_s)),
    ]
    # the version commands are independent: side by side, doctor takes about as long as the slowest
    with ThreadPoolExecutor(max_workers=8) as pool:
        caps = list(pool.map(lambda p: _guard(*p), probes))
    try:
        platform = _platform_info()
    except Exception as exc:
        platform = {"error": f"{type(exc).__name__}: {exc}"}
    return Report(caps, platform)


def main(as_json: bool = False) -> int:
    """Print the report (a table, or JSON with *as_json*) and return the exit code, 0."""
    report = check()
    print(json.dumps(report.as_dict(), indent=2) if as_json else report.to_text())
    return 0
