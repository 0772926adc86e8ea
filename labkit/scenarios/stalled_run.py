"""Scenario ``stalled-run``: a training run stopped logging; save its work and name the cause.

The seed draws one of three causes, each a real kernel state:

- ``stopped``: the run got SIGSTOP (state T). It resumes on SIGCONT; a SIGTERM sent while it is
  stopped waits, pending, until then (signal(7)).
- ``pipe``: the main thread is blocked in read(2) on a pipe nobody writes (state S, wchan
  ``pipe_read``). Python retries a read interrupted by a signal (PEP 475), so SIGTERM alone is
  recorded but never acted on; a byte written into that pipe (``/proc/PID/fd/N`` of the pipe
  opens it again) lets the loop see the request.
- ``deadlock``: two threads each hold one lock and wait for the other's (both in futex_wait); no
  signal can make them progress. Its last periodic checkpoint is at the step it reached, so
  ending it loses nothing.

For every cause the goal is the same: keep the evidence (a dump of every thread's stack in the
log: the trainer dumps it on SIGUSR1 through faulthandler, which works even when the main thread
is stuck), end the run with a checkpoint at the step it reached, and name the cause
(``labkit scenario check --cause WORD``). Wrong fixes: ``kill -9`` right away (no evidence; for
``stopped`` and ``pipe`` the steps since the last checkpoint are lost), SIGTERM alone (nothing
happens for ``pipe``), a wrong cause.
"""

from __future__ import annotations

import json
import random
import re
import signal
from pathlib import Path
from typing import Any

from labkit import checkpoint
from labkit.errors import NoCheckpoint
from labkit.scenarios.base import Context, Scenario, ScenarioError, kill_verified, python, wait_for

CAUSES = {
    "stopped": ("stopped", "sigstop", "stop", "suspended", "t"),
    "pipe": ("pipe", "fifo", "read", "io", "hang-io", "blocked-read", "pipe_read"),
    "deadlock": ("deadlock", "lock", "locks", "futex", "dead-lock"),
}
_STACK_DUMP = re.compile(r"^(Current thread|Thread) 0x[0-9a-f]+", re.MULTILINE)


def reached_step(run_dir: Path) -> int:
    """The last step the run completed, from its metrics file (0 when none)."""
    last = 0
    try:
        for line in (run_dir / "metrics.jsonl").read_text().splitlines():
            try:
                last = max(last, int(json.loads(line)["step"]))
            except (ValueError, KeyError):
                continue  # a line cut short by a kill
    except FileNotFoundError:
        pass
    return last


def saved_step(run_dir: Path) -> int:
    """The step of the newest checkpoint that verifies (-1 when none)."""
    try:
        return int(checkpoint.load_latest(run_dir / "checkpoints").checkpoint.meta["global_step"])
    except NoCheckpoint:
        return -1


class StalledRun(Scenario):
    """A run stopped logging: SIGSTOPped, blocked on a pipe, or deadlocked."""

    name = "stalled-run"
    topic = "diagnostics"
    summary = "a run stopped logging: keep the evidence, save its work, name the cause"
    # The diagnosis reads /proc/PID/wchan, task/ and fd/, and the pipe fix opens /proc/PID/fd/N:
    # all need ptrace read access to the run (proc(5), PTRACE_MODE_READ_FSCREDS).
    needs = ("ptrace",)

    def plan(self, rng: random.Random) -> dict[str, Any]:
        cause = rng.choice(sorted(CAUSES))
        every = rng.randrange(5, 9)
        step = every * rng.randrange(2, 4) + (0 if cause == "deadlock" else rng.randrange(2, every - 1))
        return {"cause": cause, "checkpoint_every": every, "step": step, "seed": rng.randrange(1000),
                "step_time_s": rng.choice((0.02, 0.03)),
                "run": f"{rng.choice(('gpt2', 'vit', 'clip', 't5'))}-{rng.choice(('lr3e-4', 'bs256', 'warm2k'))}"}

    def story(self, data: dict[str, Any]) -> str:
        return (f"Run {data['run']} was training overnight. Its train.log stopped growing a while ago, "
                f"yet the process is still there and nothing crashed. Before anyone restarts it, the "
                f"team wants to know why it stalled and wants no step of its work thrown away.\n"
                f"Goal: get a dump of every thread's stack into its train.log while it is stuck, end the "
                f"run with a checkpoint at the step it reached, and name the cause: "
                f"`labkit scenario check --cause WORD` (stopped, pipe or deadlock).")

    def run_dir(self, ctx: Context) -> Path:
        """Where the run writes train.log, metrics.jsonl and checkpoints/."""
        return ctx.folder / "runs" / ctx.data["run"]

    def start(self, ctx: Context) -> None:
        data, run_dir = ctx.data, self.run_dir(ctx)
        cause = data["cause"]
        fault = {"pipe": f"hang-io:{data['step']}", "deadlock": f"deadlock:{data['step']}"}.get(cause, "")
        argv = [python(), "-m", "labkit.scenarios._actors", "train", "--run-dir", str(run_dir),
                "--epochs", "100", "--steps-per-epoch", "50", "--step-time", str(data["step_time_s"]),
                "--checkpoint-every", str(data["checkpoint_every"]), "--keep", "3", "--seed", str(data["seed"])]
        ctx.spawn("run", argv, env={"LABKIT_SCENARIO_FAULT": fault} if fault else {})
        wait_for(lambda: reached_step(run_dir) >= data["step"], 60.0, "the run to train")
        proc = ctx.process("run")
        if proc is None:
            raise ScenarioError(f"the run ended early; see {run_dir / 'train.log'}")
        if cause == "stopped":
            self._stop_between_checkpoints(ctx, run_dir)
        else:
            want = "pipe_read" if cause == "pipe" else "futex"
            wait_for(lambda: want in _wchans(proc), 20.0, f"the run to block ({want})")
        _scrub(run_dir / "train.log")

    def _stop_between_checkpoints(self, ctx: Context, run_dir: Path) -> None:
        for _ in range(50):
            proc = ctx.process("run")
            if proc is None:
                raise ScenarioError("the run ended before it could be stopped")
            step = reached_step(run_dir)
            if step % ctx.data["checkpoint_every"] in (0, ctx.data["checkpoint_every"] - 1):
                wait_for(lambda: reached_step(run_dir) != step, 5.0, "the next step")
                continue
            kill_verified(proc, signal.SIGSTOP)
            wait_for(lambda: proc.status() == "stopped", 5.0, "the run to stop")
            if saved_step(run_dir) < reached_step(run_dir):
                return
            kill_verified(proc, signal.SIGCONT)
        raise ScenarioError("could not stop the run between two checkpoints")

    def check(self, ctx: Context) -> list[str]:
        run_dir, problems = self.run_dir(ctx), []
        log = (run_dir / "train.log").read_text(errors="replace") if (run_dir / "train.log").exists() else ""
        if not _STACK_DUMP.search(log):
            problems.append("no evidence kept: train.log holds no dump of the run's thread stacks")
        if ctx.process("run") is not None:
            problems.append("the run's process is still there")
        else:
            reached, saved = reached_step(run_dir), saved_step(run_dir)
            if saved < reached:
                problems.append(f"the run reached step {reached} but its newest usable checkpoint is "
                                + (f"step {saved}" if saved >= 0 else "missing")
                                + ": work was thrown away")
        named = (ctx.answers.get("cause") or "").strip().lower()
        if not named:
            problems.append("no cause named yet: `labkit scenario check --cause WORD`")
        elif named not in CAUSES[ctx.data["cause"]]:
            problems.append(f"{named!r} is not why this run stalled")
        return problems

    def hints(self, ctx: Context) -> list[str]:
        cause = ctx.data["cause"]
        last = {
            "stopped": "State T: `kill -USR1 PID; kill -TERM PID; kill -CONT PID` (both signals wait, pending, "
                       "until SIGCONT; the run then dumps, saves and exits). Cause: stopped.",
            "pipe": "wchan pipe_read: `kill -USR1 PID; kill -TERM PID`, then `ls -l /proc/PID/fd` and "
                    "`echo > /proc/PID/fd/N` for a pipe fd: the read returns, the loop sees SIGTERM and saves. "
                    "Cause: pipe.",
            "deadlock": "futex in both threads: `kill -USR1 PID` (the dump shows two threads waiting on locks), "
                        "then `kill -9 PID`: its checkpoint already has the step it reached. Cause: deadlock.",
        }[cause]
        return [
            "Before touching it, find out what the process is doing: its state and where it sleeps in the kernel.",
            "`ps -o pid,stat,wchan:20,args -p PID` (find PID with `ps -ef | grep run-dir`), `cat /proc/PID/wchan`, "
            "`ls /proc/PID/task` and each thread's wchan. The trainer dumps every thread's stack into train.log "
            "on SIGUSR1, even when stuck.",
            last,
        ]

    def solution(self, ctx: Context) -> str:
        return (f"pid {ctx.pid('run')}, cause {ctx.data['cause']}; checkpoint every "
                f"{ctx.data['checkpoint_every']} steps, reached step {reached_step(self.run_dir(ctx))}.\n"
                + self.hints(ctx)[-1])


def _wchans(proc) -> str:
    from labkit._linux.proc import wchan

    try:
        return " ".join(wchan(proc.pid, t.id) for t in proc.threads())
    except OSError:
        return ""


def _scrub(log: Path) -> None:
    """Drop what the trainer says about its injected fault: a real stalled run does not announce why."""
    text = re.sub(r" fault \S+ at step \d+", "", log.read_text())
    kept = "".join(line for line in text.splitlines(keepends=True) if "] fault " not in line)
    with open(log, "r+") as handle:  # in place: the run keeps appending to the same file (O_APPEND)
        handle.write(kept)
        handle.truncate()
