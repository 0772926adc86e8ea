"""Scenario ``torn-checkpoint``: resume a crashed run when its newest checkpoint is torn.

The run crashed; its checkpoints were then copied off the node and the copy of the newest file
was cut short (the seed draws how: truncated, its tail zeroed with the size intact, or empty).
A checkpoint carries a SHA-256 of its body (:mod:`labkit.checkpoint`), so a torn file is found by
verifying, not by its size or name. The goal: finish the run from the newest *intact* checkpoint
with the run's own settings (the trainer refuses a checkpoint made with other ones). Wrong fixes:
deleting every checkpoint (the run starts over: its work is thrown away), starting without
``--resume`` (the same), resuming from an older checkpoint than needed (deleting good files).
"""

from __future__ import annotations

import random
import subprocess
from pathlib import Path
from typing import Any

from labkit import checkpoint
from labkit.errors import CheckpointCorrupt
from labkit.scenarios import _runs
from labkit.scenarios.base import Context, Scenario, ScenarioError, python



class TornCheckpoint(Scenario):
    """The newest checkpoint of a crashed run is torn: resume from the right one and finish."""

    name = "torn-checkpoint"
    topic = "shutdown"
    summary = "a crashed run's newest checkpoint is torn: finish it from the right one"

    def plan(self, rng: random.Random) -> dict[str, Any]:
        every = rng.randrange(4, 8)
        crash = every * rng.randrange(3, 6)
        steps = rng.randrange(crash // 2 + 2, crash)  # two epochs: the crash lands in the second
        return {"every": every, "crash": crash, "steps_per_epoch": steps, "epochs": 2, "seed": rng.randrange(1000),
                "tear": rng.choice(("truncated", "zeroed", "empty")), "cut": round(rng.uniform(0.2, 0.9), 2),
                "run": f"{rng.choice(('detr', 'sam', 'mae', 'bert'))}-{rng.choice(('coco', 'ade', 'wiki'))}-"
                       f"{rng.randrange(1, 30)}"}

    def story(self, data: dict[str, Any]) -> str:
        return (f"Run {data['run']} crashed on the cluster with a CUDA error. Its run folder was copied to "
                f"this machine to finish the job, but the copy was cut off while it wrote the last file. "
                f"The trainer can resume (`--resume`), yet a teammate suggests wiping the checkpoints "
                f"\"to be safe\".\n"
                f"Goal: finish the run (final.json) without redoing any step that an intact checkpoint "
                f"already holds.")

    def run_dir(self, ctx: Context) -> Path:
        """The copied run folder."""
        return ctx.folder / "runs" / ctx.data["run"]

    def command(self, ctx: Context) -> list[str]:
        """The run's original command (also in launch.sh)."""
        return _runs.trainer_command(python(), self.run_dir(ctx), ctx.data, "0.002", "--keep", "3")

    def start(self, ctx: Context) -> None:
        data, run_dir = ctx.data, self.run_dir(ctx)
        run_dir.mkdir(parents=True)
        _runs.write_launch(run_dir, self.command(ctx), "how the run was started on the cluster")
        done = subprocess.run(self.command(ctx) + ["--fault", "crash", "--fault-step", str(data["crash"])],
                              stdin=subprocess.DEVNULL, capture_output=True, timeout=120)
        found = checkpoint.list_checkpoints(run_dir / "checkpoints")
        if done.returncode != 1 or not found or found[0][0] != data["crash"]:
            raise ScenarioError(f"the run did not crash as planned (exit {done.returncode})")
        log = run_dir / "train.log"
        log.write_text("".join(l for l in log.read_text().splitlines(keepends=True) if "] fault " not in l)
                       .replace(f" fault crash at step {data['crash']}", ""))
        newest = found[0][1]
        raw = newest.read_bytes()
        cut = int(len(raw) * data["cut"])
        torn = {"truncated": raw[:cut], "zeroed": raw[:cut] + bytes(len(raw) - cut), "empty": b""}[data["tear"]]
        newest.write_bytes(torn)
        data["intact"] = found[1][0]

    def check(self, ctx: Context) -> list[str]:
        run_dir, data = self.run_dir(ctx), ctx.data
        last = _runs.last_restart(_runs.read_log(run_dir))
        if not last:
            return ["the run has not been started again since the crash"]
        return _runs.restart_problems(last, run_dir, data["intact"], data["epochs"] * data["steps_per_epoch"])

    def hints(self, ctx: Context) -> list[str]:
        folder = self.run_dir(ctx) / "checkpoints"
        return [
            "A file's name and size say nothing about whether its content is whole. Each checkpoint carries a "
            "checksum of its body: verify, do not guess, and do not delete what verifies.",
            f"`ls -l {folder}`; verify one with `python -c \"from labkit import checkpoint; "
            f"print(checkpoint.load('FILE').meta['global_step'])\"`. The run's settings are in launch.sh and "
            "in the first `start:` line of train.log: a resume must use the same ones.",
            f"`sh {self.run_dir(ctx) / 'launch.sh'}` with `--resume` added (the trainer skips the torn file, "
            "says so in train.log, and resumes from the newest intact one). Then `labkit scenario check`.",
        ]

    def solution(self, ctx: Context) -> str:
        lines = []
        for step, path in checkpoint.list_checkpoints(self.run_dir(ctx) / "checkpoints"):
            try:
                checkpoint.load(path)
                lines.append(f"#   {path.name}: intact (step {step})")
            except CheckpointCorrupt as err:
                lines.append(f"#   {path.name}: {err.reason}")
        return ("# verify each checkpoint:\n" + "\n".join(lines) + "\n"
                + " ".join(self.command(ctx)) + " --resume\n"
                f"# train.log: resume: skipped the torn file; resume: from ckpt-{ctx.data['intact']:08d}.lkc "
                f"at step {ctx.data['intact']}; completed\n"
                "Wiping the checkpoints or starting without --resume recomputes every step from 0.")
