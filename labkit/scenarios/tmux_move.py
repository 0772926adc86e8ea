"""Scenario ``tmux-move``: a long run must move into tmux without losing its work.

The run was started without tmux; its owner must leave, and it has to go on in a tmux session
where anyone can attach and watch it. A running process cannot be put into a new terminal from
outside without ptrace (``reptyr`` does it with ptrace, and it is often missing or refused), so the
reliable move is: stop it cleanly (SIGTERM: the trainer saves a checkpoint and exits 0,
labkit.trainer.shutdown), then start the same command with ``--resume`` inside
``tmux new-session -d``. ``check`` finds the live trainer on the run's folder, walks its parents to
a tmux server (``tmux: server``, any socket), and reads train.log: the last start must have
resumed from the newest checkpoint the earlier run saved. Wrong fixes: a new run from scratch in
tmux (its steps are redone), ``nohup`` instead of tmux (it survives, but nobody can attach),
SIGKILL then resume (the steps since the last periodic save are lost: resumed from older).
"""

from __future__ import annotations

import random
import shlex
from pathlib import Path
from typing import Any

from labkit.scenarios import _runs
from labkit.scenarios.base import Context, Scenario, ScenarioError, python, wait_for


class TmuxMove(Scenario):
    """Move a running job into tmux, from its checkpoint, without losing steps."""

    name = "tmux-move"
    topic = "sessions"
    summary = "a long run was started without tmux: move it into a tmux session without losing work"
    needs = ("tmux",)

    def plan(self, rng: random.Random) -> dict[str, Any]:
        return {"run": f"{rng.choice(('llama', 'mistral', 'bert', 'vit'))}-{rng.choice(('lora', 'sft', 'dpo'))}-"
                       f"{rng.randrange(1, 60)}",
                "every": rng.randrange(10, 20), "seed": rng.randrange(1000), "epochs": rng.randrange(40, 80),
                "session": rng.choice(("train", "run", "work", "job")),
                "who": rng.choice(("Ana", "Bo", "Chen", "Dara", "Eli"))}

    def story(self, data: dict[str, Any]) -> str:
        return (f"{data['who']} started run {data['run']} from a plain shell an hour ago and has to leave; the "
                f"team wants to watch it from a tmux session (`tmux attach`) and stop it by hand later. The run "
                f"saves a checkpoint every {data['every']} steps and stops cleanly on SIGTERM, saving one more. "
                f"There is no reptyr on this machine.\n"
                f"Goal: have the run go on inside a tmux session, losing no step it has already computed.")

    def run_dir(self, ctx: Context) -> Path:
        return ctx.folder / "runs" / ctx.data["run"]

    def command(self, ctx: Context) -> list[str]:
        """The run's original command (also in launch.sh)."""
        return _runs.trainer_command(python(), self.run_dir(ctx), ctx.data, "0.03")

    def start(self, ctx: Context) -> None:
        run_dir = self.run_dir(ctx)
        run_dir.mkdir(parents=True)
        _runs.write_launch(run_dir, self.command(ctx))
        ctx.spawn("run", self.command(ctx), log=run_dir / "stdout.log")
        wait_for(lambda: _runs.newest_saved([_runs.read_log(run_dir)]) >= 0, 60.0, "the run's first checkpoint")

    def check(self, ctx: Context) -> list[str]:
        run_dir = self.run_dir(ctx)
        if ctx.process("run") is not None:
            return ["the run still runs where it was started, outside tmux"]
        pieces = _runs.starts(_runs.read_log(run_dir))
        live = _runs.trainers(run_dir)
        if len(pieces) < 2 or not live:
            return ["the run is not running any more: nothing trains on its folder"]
        problems = []
        if len(live) > 1:
            problems.append(f"{len(live)} trainers write to the same run folder at once")
        if not any(_runs.pane_of(proc)[0] is not None for proc in live):
            problems.append("the run is not inside a tmux session: nobody can attach to it")
        resumed, saved = _runs.resumed_step(pieces[-1]), _runs.newest_saved(pieces[:-1])
        if resumed is None:
            problems.append(f"the run in tmux began from step 0: the {saved} steps already saved are computed "
                            "again")
        elif resumed < saved:
            problems.append(f"the run resumed from step {resumed}, but step {saved} was saved: steps are "
                            "computed again")
        return problems

    def hints(self, ctx: Context) -> list[str]:
        run_dir = self.run_dir(ctx)
        return [
            "A process cannot be handed to a new terminal from outside (that needs ptrace: reptyr). But this run "
            "can stop without losing anything and continue from where it stopped.",
            f"`ps -ef | grep {ctx.data['run']}` finds it; `tail {run_dir / 'train.log'}` shows its checkpoints; "
            f"`cat {run_dir / 'launch.sh'}` is how it was started. What does it do on SIGTERM?",
            f"`kill -TERM PID`, wait for \"stopped cleanly\" in train.log, then `tmux new-session -d -s "
            f"{ctx.data['session']} \"$(tail -n 1 {run_dir / 'launch.sh'}) --resume\"`. "
            "Then `labkit scenario check`.",
        ]

    def solution(self, ctx: Context) -> str:
        run_dir = self.run_dir(ctx)
        return (f"kill -TERM {ctx.pid('run')}          # saves a checkpoint, exits 0\n"
                f"tail -n 2 {run_dir / 'train.log'}  # stopped cleanly on SIGTERM; resume with --resume\n"
                f"tmux new-session -d -s {ctx.data['session']} '{shlex.join(self.command(ctx))} --resume'\n"
                f"tmux attach -t {ctx.data['session']}   # watch it; Ctrl-b d leaves it running\n"
                "Without --resume the run starts over; nohup keeps it alive but nobody can attach.")

    def cleanup(self, ctx: Context) -> None:
        _runs.end_panes(self.run_dir(ctx))
