"""Running scenarios: one active instance per ``$LABKIT_HOME``, its state, results and reset.

Files: ``$LABKIT_HOME/scenario/`` holds the active instance (``state.json``, the keeper's socket,
the run folders it made); ``$LABKIT_HOME/scenarios.json`` keeps every result (passed or given up,
seconds, hints used) for ``labkit progress``. Both JSON files are written atomically.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import time
from pathlib import Path
from typing import Any, NamedTuple

import psutil

from labkit._atomic import write_json_atomic
from labkit.jobs import labkit_home
from labkit.scenarios import _keeper
from labkit.scenarios.base import (CannotRun, Context, NoActiveScenario, Scenario, ScenarioActive,
                                   ScenarioError, UnknownScenario, kill_verified, verified)

RESULTS_FILE = "scenarios.json"


class Outcome(NamedTuple):
    """What ``check`` found: the problems left (none: passed) and the seconds taken."""

    problems: list[str]
    seconds: float
    hints_used: int


def registry() -> dict[str, Scenario]:
    """Every scenario, by name, in the order ``list`` shows them."""
    from labkit.scenarios.boot_order import BootOrder
    from labkit.scenarios.cpu_limit import CpuLimit
    from labkit.scenarios.disk_full import DiskFull
    from labkit.scenarios.logout import Logout
    from labkit.scenarios.orphan_workers import OrphanWorkers
    from labkit.scenarios.port_held import PortHeld
    from labkit.scenarios.restart_loop import RestartLoop
    from labkit.scenarios.stalled_run import StalledRun
    from labkit.scenarios.tmux_move import TmuxMove
    from labkit.scenarios.torn_checkpoint import TornCheckpoint
    from labkit.scenarios.unit_limits import UnitLimits
    from labkit.scenarios.zombies import Zombies

    found: list[Scenario] = [StalledRun(), Zombies(), PortHeld(), OrphanWorkers(), CpuLimit(), TornCheckpoint(),
                             RestartLoop(), UnitLimits(), BootOrder(), DiskFull(), Logout(), TmuxMove()]
    return {s.name: s for s in found}


def get(name: str) -> Scenario:
    """The scenario called ``name``; :class:`UnknownScenario` (exit 2) otherwise."""
    known = registry()
    if name not in known:
        raise UnknownScenario(name, list(known))
    return known[name]


def capabilities() -> dict[str, tuple[bool, str]]:
    """``labkit doctor``'s verdicts: capability name -> (available, detail or reason)."""
    from labkit import doctor

    return {c.name: (c.ok, c.detail) for c in doctor.check().capabilities}


def why_cannot_run(scenario: Scenario, caps: dict[str, tuple[bool, str]] | None = None) -> str | None:
    """The reason ``scenario`` cannot run on this machine, or None when it can."""
    reasons = []
    if scenario.needs:
        caps = capabilities() if caps is None else caps
        reasons = [f"no {need} ({caps.get(need, (False, 'not probed'))[1]})"
                   for need in scenario.needs if not caps.get(need, (False, ""))[0]]
    extra = scenario.unavailable()
    return "; ".join(reasons + ([extra] if extra else [])) or None


def home() -> Path:
    """``$LABKIT_HOME`` (created)."""
    path = labkit_home()
    path.mkdir(parents=True, exist_ok=True)
    return path


def folder() -> Path:
    """The active instance's folder."""
    return home() / "scenario"


def _load() -> dict[str, Any] | None:
    try:
        return json.loads((folder() / "state.json").read_text())
    except FileNotFoundError:
        return None
    except ValueError as err:
        raise ScenarioError(f"{folder() / 'state.json'} is unreadable ({err}); "
                            "`labkit scenario reset` clears it") from err


def _save(state: dict[str, Any]) -> None:
    write_json_atomic(folder() / "state.json", state)


def active() -> tuple[Scenario, Context]:
    """The active scenario and its context; :class:`NoActiveScenario` when there is none."""
    state = _load()
    if state is None:
        raise NoActiveScenario()
    return get(state["name"]), Context(folder(), state)


def start(name: str, seed: int | None = None) -> tuple[Scenario, Context]:
    """Start scenario ``name`` (seed drawn when None); nothing is left if it fails part-way."""
    scenario = get(name)
    state = _load()
    if state is not None:
        raise ScenarioActive(state["name"])
    reason = why_cannot_run(scenario)
    if reason:
        raise CannotRun(name, reason)
    seed = random.SystemRandom().randrange(1, 10**6) if seed is None else seed
    path = folder()
    if path.exists():  # a folder without state: left by a crash during start
        shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    state = {"name": name, "seed": seed, "started_at": time.time(), "hints_used": 0, "checks": 0,
             "data": scenario.plan(random.Random(seed))}
    ctx = Context(path, state)
    try:
        keeper = _keeper.start(path)
        state["keeper"] = {"pid": keeper.pid, "create_time": psutil.Process(keeper.pid).create_time()}
        _save(state)
        scenario.start(ctx)
        _save(state)
    except BaseException as err:
        reset_instance(scenario, ctx)
        if isinstance(err, (ScenarioError, OSError)):
            raise ScenarioError(f"scenario {name!r} could not start: {err}; nothing was left running") from err
        raise
    return scenario, ctx


def check(answers: dict[str, str] | None = None) -> Outcome:
    """Judge the live state; on success record the result and reset the instance."""
    scenario, ctx = active()
    ctx.answers.update({k: v for k, v in (answers or {}).items() if v is not None})
    ctx.state["checks"] = int(ctx.state.get("checks", 0)) + 1
    _save(ctx.state)
    problems = scenario.check(ctx)
    seconds = time.time() - float(ctx.state["started_at"])
    if not problems:
        _record(ctx, "passed", seconds)
        reset_instance(scenario, ctx)
    return Outcome(problems, seconds, int(ctx.state["hints_used"]))


def hint() -> tuple[int, int, str]:
    """The next hint: (its number, how many there are, the text); the last one repeats."""
    scenario, ctx = active()
    hints = scenario.hints(ctx)
    used = min(int(ctx.state["hints_used"]) + 1, len(hints))
    ctx.state["hints_used"] = used
    _save(ctx.state)
    return used, len(hints), hints[used - 1]


def give_up() -> str:
    """The worked fix; the attempt is recorded as given up and the instance reset."""
    scenario, ctx = active()
    text = scenario.solution(ctx)
    _record(ctx, "gave-up", time.time() - float(ctx.state["started_at"]))
    reset_instance(scenario, ctx)
    return text


def reset() -> str | None:
    """End the active instance, removing all it made; its name, or None when none was active."""
    try:
        scenario, ctx = active()
    except (NoActiveScenario, ScenarioError):  # none, or a state file nobody can read: clear the folder
        if folder().exists():
            shutil.rmtree(folder(), ignore_errors=True)
        return None
    reset_instance(scenario, ctx)
    return scenario.name


def reset_instance(scenario: Scenario, ctx: Context) -> None:
    """Stop every process the instance started (verified by start time), remove its cgroups and files."""
    try:
        scenario.cleanup(ctx)
    finally:
        keeper = ctx.keeper()
        ours = ctx.descendants()
        for entry in ctx.procs.values():
            proc = verified(int(entry["pid"]), float(entry["create_time"]))
            if proc is not None and proc not in ours:
                ours.append(proc)
        for proc in ours:
            kill_verified(proc, signal.SIGKILL)
        psutil.wait_procs(ours, timeout=5)
        if keeper is not None:
            kill_verified(keeper, signal.SIGKILL)
            psutil.wait_procs([keeper], timeout=5)
        record = ctx.state.get("keeper")
        if record:
            try:  # the keeper is our child when the instance was started by this process (tests)
                os.waitpid(int(record["pid"]), os.WNOHANG)
            except ChildProcessError:
                pass
        _remove_cgroups(ctx)
        shutil.rmtree(ctx.folder, ignore_errors=True)


def _remove_cgroups(ctx: Context) -> None:
    from labkit.cgroups import CgroupSet

    folders = {str(i): Path(p) for i, p in enumerate(ctx.cgroups)}
    if folders:
        cgroups = CgroupSet(folders)
        cgroups.kill(timeout_s=5.0)
        cgroups.remove()


def elapsed_s(ctx: Context) -> float:
    """Seconds since the instance started."""
    return time.time() - float(ctx.state["started_at"])


def results() -> list[dict[str, Any]]:
    """Every recorded result, oldest first."""
    try:
        loaded = json.loads((home() / RESULTS_FILE).read_text())
    except (FileNotFoundError, ValueError):
        return []
    return list(loaded.get("results", [])) if isinstance(loaded, dict) else []


def _record(ctx: Context, outcome: str, seconds: float) -> None:
    entries = results()
    entries.append({"name": ctx.state["name"], "seed": ctx.seed, "outcome": outcome,
                    "seconds": round(seconds, 1), "hints_used": int(ctx.state["hints_used"]),
                    "checks": int(ctx.state.get("checks", 0)), "finished_at": time.time()})
    write_json_atomic(home() / RESULTS_FILE, {"results": entries})


def summary_lines() -> list[str]:
    """One line per scenario played (best result first), for ``labkit progress``; empty when none."""
    best: dict[str, dict[str, Any]] = {}
    for entry in results():
        kept = best.get(entry["name"])
        better = kept is None or (entry["outcome"] == "passed" and
                                  (kept["outcome"] != "passed" or entry["seconds"] < kept["seconds"]))
        if better:
            best[entry["name"]] = entry
    lines = [f"scenario {name:18} {e['outcome']:8} {e['seconds']:>6.0f} s  {e['hints_used']} hint(s)"
             for name, e in sorted(best.items())]
    return lines
