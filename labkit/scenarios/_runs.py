"""What the scenarios about a moved or resumed run read: train.log's starts, and the live trainer.

The trainer logs one ``start:`` line per start, ``resume: from FILE at step N`` when it resumed,
``checkpoint FILE saved`` for each save, and ``SIGHUP is ignored, as inherited (nohup)`` when it
was started with SIGHUP ignored (labkit.trainer.loop). A live trainer is found by the run folder
its command line names; a multiplexer by its server process, an ancestor of the pane's program.
"""

from __future__ import annotations

import re
import shlex
import signal
from pathlib import Path

import psutil

from labkit.scenarios.base import kill_verified

_RESUMED = re.compile(r"resume: from (\S+) at step (\d+)")
_SAVED = re.compile(r"checkpoint ckpt-(\d+)\.lkc saved")
MULTIPLEXERS = ("tmux: server", "tmux", "screen", "SCREEN")


def read_log(run_dir: Path) -> str:
    """train.log of ``run_dir`` ('' when there is none)."""
    try:
        return (run_dir / "train.log").read_text(errors="replace")
    except OSError:
        return ""


def starts(log: str) -> list[str]:
    """The log cut into one piece per start of the trainer, oldest first."""
    marks = [m.start() for m in re.finditer(r"\] start: ", log)]
    return [log[a:b] for a, b in zip(marks, marks[1:] + [len(log)])]


def resumed_step(piece: str) -> int | None:
    """The step a start resumed from; None when it began from step 0."""
    found = _RESUMED.search(piece)
    return int(found.group(2)) if found else None


def newest_saved(pieces: list[str]) -> int:
    """The newest step saved in these pieces of the log (-1: none)."""
    steps = [int(s) for piece in pieces for s in _SAVED.findall(piece)]
    return max(steps, default=-1)


def trainer_command(python: str, run_dir: Path, data: dict, step_time_s: str, *extra: str) -> list[str]:
    """The trainer's command line for a scenario's run: its folder and the seeded settings in ``data``
    (epochs, checkpoint interval ``every``, seed; ``steps_per_epoch`` when drawn, else 200)."""
    return [python, "-m", "labkit.trainer", "--run-dir", str(run_dir), "--epochs", str(data["epochs"]),
            "--steps-per-epoch", str(data.get("steps_per_epoch", 200)), "--step-time", step_time_s,
            "--checkpoint-every", str(data["every"]), *extra, "--seed", str(data["seed"])]


def write_launch(run_dir: Path, command: list[str], how: str = "how the run was started") -> None:
    """``run_dir/launch.sh``: the command as a learner would have typed it (``python``, not a full path)."""
    (run_dir / "launch.sh").write_text(f"#!/bin/sh\n# {how}\n" + shlex.join(["python", *command[1:]]) + "\n")


def last_restart(log: str) -> str:
    """The log of the last start when the trainer was started again ('' if it started only once)."""
    return log[log.rfind("] start: "):] if log.count("] start: ") > 1 else ""


def restart_problems(last: str, run_dir: Path, safe_step: int, total: int) -> list[str]:
    """What is wrong with the last restart: steps saved on disk (up to ``safe_step``) computed again, or
    the run not finished (``total`` steps, final.json)."""
    problems = []
    resumed = resumed_step(last)
    if resumed is None:
        problems.append(f"the last start began from step 0: the {safe_step} steps saved on disk were computed again")
    elif resumed < safe_step:
        problems.append(f"the run resumed from step {resumed}, older than its newest good checkpoint (step "
                        f"{safe_step}): steps were computed again")
    if "] completed: step" not in last or not (run_dir / "final.json").exists():
        problems.append(f"the run has not finished its {total} steps (no final.json from the last start)")
    return problems


def trainers(run_dir: Path) -> list[psutil.Process]:
    """Live (not zombie) processes running the trainer on ``run_dir``."""
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        try:
            cmdline = proc.info["cmdline"] or []
            if proc.info["status"] != psutil.STATUS_ZOMBIE and str(run_dir) in cmdline and \
                    any("labkit.trainer" in a for a in cmdline):
                found.append(proc)
        except psutil.Error:
            continue
    return found


def pane_of(proc: psutil.Process) -> tuple[psutil.Process | None, psutil.Process | None]:
    """(the multiplexer server above ``proc``, its child that leads to ``proc``), or (None, None)."""
    child = proc
    try:
        for parent in proc.parents():
            if parent.name() in MULTIPLEXERS or parent.name().startswith("tmux"):
                return parent, child
            child = parent
    except psutil.Error:
        pass
    return None, None


def end_panes(run_dir: Path) -> None:
    """SIGKILL the trainers on ``run_dir`` and, where one runs in tmux or screen, the pane's own process
    (its shell), so the learner's session for it closes; other sessions on the server are left alone."""
    victims = []
    for proc in trainers(run_dir):
        server, pane = pane_of(proc)
        victims.append(proc)
        if pane is not None and pane != proc:
            victims.append(pane)
    for proc in victims:
        kill_verified(proc, signal.SIGKILL)
    psutil.wait_procs(victims, timeout=5)
