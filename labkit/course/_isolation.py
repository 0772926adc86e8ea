"""Which protections the grader can put around a submission on this machine, and their settings.

A submission runs as two processes (``_judge.py``): the learner's answers in the student
kernel, the instructor's checks in the judge. Around both, where the grader runs as root:

- an unprivileged **sandbox user** (default ``labkit-grader``, created with ``useradd`` when
  missing; ``--sandbox-user``): the learner's code cannot signal or trace the grader, PID 1
  or other users' processes, nor read files only root may read;
- a **PID namespace** whose pid 1 is the grader's recording init: nothing outside the
  submission's own processes is visible in ``/proc`` or reachable by ``kill``;
- a **mount namespace**: an empty temporary folder (other submissions' folders are not there),
  private ``/dev/shm`` and ``/var/tmp``, and empty read-only folders over the solutions, the
  repository's tests, the gradebook and the submitted notebooks.

Without root none of these can be set up: grading still works (the judge alone already keeps
the checks out of the learner's reach), and each gradebook row says what was in force.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_USER = "labkit-grader"
SANDBOX = Path(__file__).with_name("_sandbox.py")  #: the kernel wrapper the grader runs (stdlib only)


@dataclass(frozen=True)
class Isolation:
    """What a run gets: the sandbox user (None: the grader's own) and the folders hidden."""

    uid: int | None = None
    gid: int | None = None
    user: str = ""
    hide: tuple[str, ...] = ()
    expose: tuple[str, ...] = ()  #: folders made reachable through ones the user may not enter
    missing: tuple[str, ...] = field(default=())  #: protections not in force, and why

    def describe(self, missing: list[str] | tuple[str, ...] = ()) -> str:
        """The gradebook's ``protections`` column: what held this submission; ``missing``: what
        this submission's own run lacked besides (the freezer, a cgroup limit)."""
        held = ["judge"]
        if self.uid is not None:
            held += [f"user {self.user} (uid {self.uid})", "pid+mount namespaces"]
            if self.hide:
                held.append("solutions, tests, gradebook and submissions hidden")
        text = "; ".join(held)
        lacking = [*self.missing, *missing]
        return text + (f"; missing: {', '.join(lacking)}" if lacking else "")


def sandbox_identity(user: str | None) -> tuple[int, int] | str:
    """(uid, gid) of the sandbox user, creating it when root and missing; else why not."""
    if not user:
        return "no sandbox user asked for"
    if not sys.platform.startswith("linux"):
        return "not Linux"
    if os.geteuid() != 0:
        return "the grader is not root (it cannot switch users or make namespaces)"
    import pwd

    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        useradd = shutil.which("useradd") or "/usr/sbin/useradd"
        done = subprocess.run([useradd, "--system", "--no-create-home", "--home-dir", "/nonexistent",
                               "--shell", "/bin/bash", "--user-group", user], capture_output=True, text=True)
        try:
            entry = pwd.getpwnam(user)
        except KeyError:
            return f"cannot create user {user}: {done.stderr.strip() or 'useradd failed'}"
    if entry.pw_uid == 0:
        return f"user {user} is root"
    return entry.pw_uid, entry.pw_gid


def namespaces_work() -> str | None:
    """None when this process can make PID and mount namespaces; else why not."""
    if os.geteuid() != 0:
        return "not root"
    unshare = shutil.which("unshare")
    if unshare is None:
        return "no unshare(1) to test with"
    try:
        done = subprocess.run([unshare, "--pid", "--fork", "--mount", "--propagation", "private", "true"],
                              capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as err:
        return str(err)
    return None if done.returncode == 0 else (done.stderr.decode(errors="replace").strip() or "unshare failed")


def hidden_folders(candidates: list[Path], keep: list[Path]) -> tuple[list[str], list[str]]:
    """Folders to hide, and the ones that cannot be (they hold something the run needs).

    A folder holding labkit itself, the Python environment or the run's own folder stays
    visible (hiding it would break the run), and is reported.
    """
    needed = [path.resolve() for path in keep]
    hide: list[str] = []
    kept: list[str] = []
    for path in sorted({candidate.resolve() for candidate in candidates}):
        if not path.is_dir():
            continue
        if any(need == path or path in need.parents for need in needed):
            kept.append(str(path))
        elif not any(Path(other) in path.parents for other in hide):
            hide.append(str(path))
    return hide, kept


def plan(user: str | None, hide: list[Path], keep: list[Path]) -> Isolation:
    """The isolation for this grading run (decided once for all submissions)."""
    identity = sandbox_identity(user)
    if isinstance(identity, str):
        return Isolation(missing=(f"sandbox user and namespaces ({identity})",))
    why = namespaces_work()
    if why is not None:
        return Isolation(missing=(f"namespaces ({why})",))
    expose = reachable_folders()
    problem = try_sandbox(identity[0], identity[1], expose)
    if problem:
        return Isolation(missing=(f"sandbox user ({problem})",))
    folders, visible = hidden_folders(hide, keep)
    missing = tuple(f"{folder} stays visible (it holds labkit or the run)" for folder in visible)
    import pwd

    return Isolation(identity[0], identity[1], pwd.getpwuid(identity[0]).pw_name, tuple(folders), tuple(expose),
                     missing)


def reachable_folders() -> list[str]:
    """What the sandbox user must reach: this Python (its real prefix), the environment, labkit."""
    import labkit

    folders = {os.path.realpath(sys.base_prefix), os.path.realpath(sys.prefix), sys.prefix,
               os.path.realpath(Path(labkit.__file__).parent.parent),
               os.path.dirname(os.path.realpath(sys.executable))}
    return sorted(folders)


def try_sandbox(uid: int, gid: int, expose: list[str]) -> str | None:
    """Run the real sandbox once (namespaces, mounts, the user) with a command that imports what
    the judge and the kernel import; None when it works, else the reason."""
    import json
    import tempfile


    top = tempfile.mkdtemp(prefix="labkit-grade-check-")
    try:
        os.mkdir(os.path.join(top, "work"))
        command = [sys.executable, "-I", "-S", str(SANDBOX), "--top", top, "--status", os.path.join(top, "end.json"),
                   "--uid", str(uid), "--gid", str(gid)]
        for folder in expose:
            command += ["--expose", folder]
        command += ["--", sys.executable, "-I", "-c", "import labkit.course._judge, ipykernel"]
        done = subprocess.run(command, cwd=os.path.join(top, "work"), capture_output=True, text=True, timeout=60)
        try:
            with open(os.path.join(top, "end.json")) as handle:
                end = json.load(handle)
        except (OSError, ValueError):
            end = {}
        if end.get("exit_code") == 0:
            return None
        lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
        return f"it cannot run this Python and labkit: {lines[-1] if lines else end}"
    except (OSError, subprocess.SubprocessError) as err:
        return str(err)
    finally:
        shutil.rmtree(top, ignore_errors=True)
