"""What a scenario is (:class:`Scenario`) and what it works with (:class:`Context`).

A scenario plans its instance from a seed (:meth:`Scenario.plan`: names, causes, sizes, ports),
starts the live broken situation (:meth:`Scenario.start`), and judges the live state
(:meth:`Scenario.check`: the problems left, in words, none when fixed). Every process it starts
goes through :meth:`Context.spawn`, which records its pid *and* its start time: a pid alone may be
recycled by the kernel once the process is gone, and reset must never signal a stranger.
"""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path
from typing import Any, Callable

import psutil

from labkit.errors import BadArgument, LabkitError
from labkit.scenarios import _keeper

TOPICS = ("signals", "sessions", "systemd", "limits", "diagnostics", "shutdown")
_TOLERANCE_S = 0.05  # create_time comes from clock ticks: the same process always agrees far closer


class ScenarioError(LabkitError):
    """A scenario could not do what was asked (start, check, reset)."""


class UnknownScenario(BadArgument):
    """No scenario has that name (exit code 2)."""

    def __init__(self, name: str, known: list[str]) -> None:
        super().__init__(f"no scenario named {name!r}; `labkit scenario list` shows: {', '.join(known)}")


class ScenarioActive(LabkitError):
    """Another scenario is running: one at a time per ``$LABKIT_HOME``."""

    def __init__(self, name: str) -> None:
        super().__init__(f"scenario {name!r} is still active; finish it (`labkit scenario check`), "
                         "or end it (`labkit scenario give-up` or `labkit scenario reset`)")


class NoActiveScenario(LabkitError):
    """A command needs an active scenario and there is none."""

    def __init__(self) -> None:
        super().__init__("no scenario is active; `labkit scenario list` shows them, "
                         "`labkit scenario start NAME` starts one")


class CannotRun(LabkitError):
    """This machine lacks what the scenario needs; nothing was started."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"scenario {name!r} cannot run here: {reason}")


class Context:
    """One active instance: its folder, its plan (``data``), its recorded processes and cgroups."""

    def __init__(self, folder: Path, state: dict[str, Any]) -> None:
        self.folder = folder
        self.state = state
        self.data: dict[str, Any] = state.setdefault("data", {})
        self.procs: dict[str, dict[str, float]] = state.setdefault("procs", {})
        self.cgroups: list[str] = state.setdefault("cgroups", [])
        self.answers: dict[str, str] = state.setdefault("answers", {})

    @property
    def seed(self) -> int:
        """The seed this instance was planned from."""
        return int(self.state["seed"])

    def spawn(self, label: str, argv: list[str], log: Path | None = None, env: dict[str, str] | None = None) -> int:
        """Start ``argv`` as a child of the keeper, in a session of its own; record it as ``label``."""
        answer = _keeper.request(self.folder, {"op": "spawn", "argv": argv, "env": env or {},
                                               "log": str(log) if log else None, "cwd": str(self.folder)})
        if "error" in answer or "pid" not in answer:
            raise ScenarioError(f"cannot start {argv[0]}: {answer.get('error', 'no answer from the keeper')}")
        self.procs[label] = {"pid": int(answer["pid"]), "create_time": float(answer["create_time"])}
        return int(answer["pid"])

    def record(self, label: str, pid: int) -> None:
        """Record a process the scenario's own processes started (a worker), with its start time."""
        self.procs[label] = {"pid": pid, "create_time": psutil.Process(pid).create_time()}

    def process(self, label: str) -> psutil.Process | None:
        """The recorded process ``label`` if it still runs (same pid *and* start time), else None."""
        entry = self.procs.get(label)
        return None if entry is None else verified(int(entry["pid"]), float(entry["create_time"]))

    def pid(self, label: str) -> int:
        """The pid recorded as ``label``."""
        return int(self.procs[label]["pid"])

    def exit_code(self, label: str) -> int | None:
        """How ``label`` ended as its keeper saw it (negative: the signal), None if not (yet) known."""
        exits = _keeper.request(self.folder, {"op": "exits"})
        code = exits.get(str(self.pid(label)))
        return None if code is None else int(code)

    def keeper(self) -> psutil.Process | None:
        """The keeper process, verified by start time."""
        entry = self.state.get("keeper")
        return None if not entry else verified(int(entry["pid"]), float(entry["create_time"]))

    def descendants(self) -> list[psutil.Process]:
        """Every live process under the keeper (orphans included: the keeper is their subreaper)."""
        keeper = self.keeper()
        if keeper is None:
            return []
        try:
            return keeper.children(recursive=True)
        except psutil.Error:
            return []

    def zombies(self) -> list[psutil.Process]:
        """The zombies under the keeper."""
        found = []
        for proc in self.descendants():
            try:
                if proc.status() == psutil.STATUS_ZOMBIE:
                    found.append(proc)
            except psutil.Error:
                continue
        return found


def verified(pid: int, create_time: float) -> psutil.Process | None:
    """``psutil.Process(pid)`` if it started at ``create_time`` and is not a zombie, else None."""
    try:
        proc = psutil.Process(pid)
        if abs(proc.create_time() - create_time) > _TOLERANCE_S or proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return proc
    except psutil.Error:
        return None


def wait_for(condition: Callable[[], object], timeout_s: float, what: str, poll_s: float = 0.02) -> None:
    """Poll ``condition`` until true; raise :class:`ScenarioError` naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise ScenarioError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(poll_s)


def kill_verified(proc: psutil.Process, sig: int = signal.SIGKILL) -> None:
    """Send ``sig`` to ``proc`` (psutil checks its identity again before sending)."""
    try:
        proc.send_signal(sig)
    except psutil.Error:
        pass


class Scenario:
    """One broken situation. Subclasses set the class attributes and implement the methods."""

    name = ""
    topic = ""
    summary = ""  #: one line for ``list``
    needs: tuple[str, ...] = ()  #: labkit.doctor capability names this scenario needs

    def plan(self, rng: random.Random) -> dict[str, Any]:
        """Draw this instance's details (names, cause, sizes, ports) from ``rng``."""
        raise NotImplementedError

    def story(self, data: dict[str, Any]) -> str:
        """The situation, 3-5 sentences, and the goal."""
        raise NotImplementedError

    def start(self, ctx: Context) -> None:
        """Set up the live broken situation described by ``ctx.data``."""
        raise NotImplementedError

    def check(self, ctx: Context) -> list[str]:
        """What is still wrong, in words that do not give the answer away; empty when fixed."""
        raise NotImplementedError

    def hints(self, ctx: Context) -> list[str]:
        """Graded hints: first a direction, last the commands."""
        raise NotImplementedError

    def solution(self, ctx: Context) -> str:
        """A worked fix for this instance."""
        raise NotImplementedError

    def cleanup(self, ctx: Context) -> None:
        """Undo what generic reset cannot (files outside the folder, cgroup settings); default none."""

    def unavailable(self) -> str | None:
        """Why this machine cannot run the scenario beyond ``needs`` (e.g. not root); None when it can."""
        return None


def end_strays(marker: str, timeout_s: float = 5.0) -> list[int]:
    """SIGKILL every process whose command line names ``marker`` (a path inside the instance's folder).

    What the learner started by hand (a resumed run under nohup, setsid or tmux) is no child of the
    keeper; reset finds it by the run folder its command line names. Returns the pids ended.
    """
    import re

    # the path itself, not a longer name that starts with it (run-42 is not run-42-copy)
    names = re.compile(re.escape(marker) + r"(?=$|[/\s'\";&|)])")
    spared = {os.getpid(), *(p.pid for p in psutil.Process().parents())}  # never the shell that runs reset
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            if proc.info["pid"] not in spared and any(names.search(arg) for arg in proc.info["cmdline"] or ()):
                found.append(proc)
        except psutil.Error:
            continue
    for proc in found:
        kill_verified(proc, signal.SIGKILL)
    psutil.wait_procs(found, timeout=timeout_s)
    return [p.pid for p in found]


def python() -> str:
    """The interpreter scenario processes run with (this one, so labkit imports)."""
    import sys

    return sys.executable

