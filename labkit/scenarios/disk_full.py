"""Scenario ``disk-full``: the run's disk fills with old checkpoints and a save fails.

The run was started with a large ``--keep`` ("keep everything, to be safe"), on a small scratch
disk (here a tmpfs of a few hundred KiB per seed, mount(8) ``-t tmpfs -o size=``). Each save
writes a temporary file and renames it over (labkit.checkpoint: the previous checkpoint is never
touched), so when the disk fills, the save fails with ENOSPC, the trainer says so in train.log and
exits, and every checkpoint already on disk is whole. The goal: free space without losing the
newest checkpoint and finish the run from it, keeping few enough checkpoints (``--keep``) that the
disk does not fill again. Wrong fixes: deleting every checkpoint (the run starts over), deleting
the newest ones (the run redoes their steps), resuming without a smaller ``--keep`` (the disk fills
again before the end). Needs root: mounting a tmpfs takes CAP_SYS_ADMIN (mount(2)).
"""

from __future__ import annotations

import os
import random
import shlex
import subprocess
from pathlib import Path
from typing import Any

from labkit import checkpoint
from labkit.scenarios import _runs
from labkit.scenarios.base import Context, Scenario, ScenarioError, end_strays, python

_SAVES = 30  # checkpoints a whole run writes: about three disks' worth


class DiskFull(Scenario):
    """Old checkpoints filled the scratch disk: free space, keep the newest, finish the run."""

    name = "disk-full"
    topic = "shutdown"
    summary = "a save failed: old checkpoints filled the disk; free space and finish the run"

    def unavailable(self) -> str | None:
        if os.geteuid() != 0:
            return "not root: mounting the scenario's small scratch disk (a tmpfs) needs CAP_SYS_ADMIN"
        return None

    def plan(self, rng: random.Random) -> dict[str, Any]:
        every = rng.randrange(3, 7)
        return {"size_kib": rng.choice((768, 1024, 1280)), "every": every, "epochs": 2,
                "steps_per_epoch": every * _SAVES // 2, "keep": rng.choice((50, 100, 1000)),
                "seed": rng.randrange(1000),
                "run": f"{rng.choice(('gpt2', 'clip', 'wav2vec', 'unet'))}-{rng.choice(('small', 'base', 'tiny'))}-"
                       f"{rng.randrange(1, 50)}"}

    def story(self, data: dict[str, Any]) -> str:
        return (f"Run {data['run']} stopped in the middle of the night: train.log ends with a save that failed, "
                f"\"No space left on device\". It writes to a small scratch disk, and it was started with "
                f"--keep {data['keep']} so that nothing would ever be lost. A teammate proposes `rm -rf` on the "
                f"checkpoint folder to make room.\n"
                f"Goal: finish the run (final.json) from its newest checkpoint, and make sure the disk cannot "
                f"fill up again before the end.")

    def disk(self, ctx: Context) -> Path:
        """The scratch disk (a tmpfs mount point)."""
        return ctx.folder / "scratch"

    def run_dir(self, ctx: Context) -> Path:
        """The run's folder, on the scratch disk."""
        return self.disk(ctx) / "runs" / ctx.data["run"]

    def command(self, ctx: Context) -> list[str]:
        """The run's original command (also in launch.sh)."""
        return _runs.trainer_command(python(), self.run_dir(ctx), ctx.data, "0.002", "--keep", str(ctx.data["keep"]))

    def start(self, ctx: Context) -> None:
        d, disk = ctx.data, self.disk(ctx)
        disk.mkdir()
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={d['size_kib']}k,mode=0755",
                                  "labkit-scenario", str(disk)], capture_output=True, text=True, timeout=10)
        if mounted.returncode != 0:
            raise ScenarioError(f"cannot mount a tmpfs: {mounted.stderr.strip() or mounted.returncode}")
        d["mounted"] = str(disk)
        _runs.write_launch(ctx.folder, self.command(ctx))
        done = subprocess.run(self.command(ctx), stdin=subprocess.DEVNULL, capture_output=True, timeout=120)
        found = checkpoint.list_checkpoints(self.run_dir(ctx) / "checkpoints")
        log = (self.run_dir(ctx) / "train.log").read_text(errors="replace")
        if done.returncode == 0 or not found or "No space left" not in log:
            raise ScenarioError(f"the run did not fill the disk as planned (exit {done.returncode})")
        d["newest"] = found[0][0]

    def check(self, ctx: Context) -> list[str]:
        run_dir, d = self.run_dir(ctx), ctx.data
        last = _runs.last_restart(_runs.read_log(run_dir))
        if not last:
            return ["the run has not been started again since the disk filled up"]
        problems = _runs.restart_problems(last, run_dir, d["newest"], d["epochs"] * d["steps_per_epoch"])
        if "No space left" in last:
            problems.append("the disk filled up again after the restart")
        return problems

    def hints(self, ctx: Context) -> list[str]:
        folder = self.run_dir(ctx) / "checkpoints"
        return [
            "Find out how full the disk is and what fills it. A resume needs only the newest intact checkpoint; "
            "the run's own settings decide how many pile up.",
            f"`df -h {self.disk(ctx)}`, `du -sh {self.run_dir(ctx)}/*`, `ls -lt {folder}`; train.log's last "
            "lines say what failed and what was kept. The start line and launch.sh show how it was started.",
            f"Delete the older checkpoints, keeping the newest two (`ls {folder}/ckpt-*.lkc | head -n -2 | xargs rm`), "
            f"then run launch.sh's command with `--keep 3 --resume` in place of `--keep {ctx.data['keep']}`. "
            "Then `labkit scenario check`.",
        ]

    def solution(self, ctx: Context) -> str:
        folder = self.run_dir(ctx) / "checkpoints"
        command = [a if a != str(ctx.data["keep"]) else "3" for a in self.command(ctx)]
        return (f"df -h {self.disk(ctx)}                 # 100% used\n"
                f"ls -lt {folder} | head             # newest: ckpt-{ctx.data['newest']:08d}.lkc\n"
                f"ls {folder}/ckpt-*.lkc | head -n -2 | xargs rm   # keep the newest two\n"
                + shlex.join(command) + " --resume\n"
                "`rm -rf` of the folder (or the newest files) throws steps away; --resume with the old --keep "
                "fills the disk again.")

    def cleanup(self, ctx: Context) -> None:
        end_strays(str(self.run_dir(ctx)))
        if ctx.data.get("mounted"):
            subprocess.run(["umount", "-l", ctx.data["mounted"]], capture_output=True, timeout=10)
