"""Scenario ``orphan-workers``: a dead trainer's data-loader workers still hold memory.

The previous run crashed; its forked workers never watch their parent, so they live on, adopted
by init (here the scenario's keeper, a subreaper), each holding its share of memory. The new run
has workers of its own with the *same* command line. The fix: find the workers whose parent is
no longer a trainer (``ps -o pid,ppid,rss,args``, ``pstree -p``) and stop them. Wrong fixes:
``pkill -f`` on the command line (kills the new run's workers too), killing the new run (free
memory, lost work), stopping only some of the orphans.
"""

from __future__ import annotations

import json
import random
from typing import Any

from labkit.scenarios.base import Context, Scenario, python, wait_for


class OrphanWorkers(Scenario):
    """Orphaned data-loader workers hold memory next to a healthy new run."""

    name = "orphan-workers"
    topic = "shutdown"
    summary = "memory is short: a crashed trainer's loader workers live on next to the new run"

    def plan(self, rng: random.Random) -> dict[str, Any]:
        old = rng.randrange(10, 60)
        return {"orphans": rng.randrange(2, 5), "workers": rng.randrange(2, 4),
                "memory_mb": rng.choice((24, 32, 40, 48)), "old_run": f"run-{old:03d}",
                "new_run": f"run-{old + 1:03d}",
                "model": rng.choice(("a ViT-B", "a 350M GPT", "a wav2vec", "a U-Net"))}

    def story(self, data: dict[str, Any]) -> str:
        return (f"Last night {data['old_run']}, training {data['model']}, died on an NCCL timeout. This "
                f"morning {data['new_run']} was started with the same command and is training fine, but "
                f"`free -m` shows far less memory than it should, and the next job will not fit. Every "
                f"data-loader worker on the box runs the same command line.\n"
                f"Goal: give the memory back without disturbing {data['new_run']} or its workers.")

    def start(self, ctx: Context) -> None:
        data, runs = ctx.data, ctx.folder / "runs"
        runs.mkdir()
        for run, count, crash in ((data["old_run"], data["orphans"], "0.3"), (data["new_run"], data["workers"], "0")):
            ctx.spawn(run, [python(), "-m", "labkit.scenarios._actors", "loader", "--run-dir",
                            str(runs / run), "--workers", str(count), "--memory-mb", str(data["memory_mb"])],
                      log=runs / f"{run}.console", env={"LABKIT_SCENARIO_CRASH_AFTER_S": crash})
            pid_file = runs / run / "workers.json"
            wait_for(pid_file.exists, 20.0, f"{run}'s workers")
            for index, pid in enumerate(json.loads(pid_file.read_text())["workers"]):
                ctx.record(f"{run}/worker{index}", pid)
        wait_for(lambda: ctx.process(data["old_run"]) is None, 20.0, f"{data['old_run']} to crash")

    def _labels(self, ctx: Context, run: str) -> list[str]:
        return [label for label in ctx.procs if label.startswith(run + "/")]

    def check(self, ctx: Context) -> list[str]:
        data, problems = ctx.data, []
        if ctx.process(data["new_run"]) is None:
            problems.append(f"{data['new_run']}'s trainer is gone: the new run lost its work")
        lost = [l for l in self._labels(ctx, data["new_run"]) if ctx.process(l) is None]
        if lost:
            problems.append(f"{len(lost)} of {data['new_run']}'s own workers are gone: its data loading broke")
        left = [l for l in self._labels(ctx, data["old_run"]) if ctx.process(l) is not None]
        if left:
            mib = len(left) * data["memory_mb"]
            problems.append(f"about {mib} MiB is still held by {len(left)} process(es) that no trainer uses")
        return problems

    def hints(self, ctx: Context) -> list[str]:
        return [
            "Same command line, different families: look at who each worker's parent is.",
            "`ps -wweo pid,ppid,rss,lstart,args --sort=-rss | head` or `pstree -p` show which workers still have a "
            "trainer above them and which were adopted by init (the scenario's keeper plays init here).",
            "Kill only the workers whose PPID is not the living trainer: "
            "`ps -wweo pid,ppid,args | grep loader`, then `kill PID...` for the orphans. Then `labkit scenario check`.",
        ]

    def solution(self, ctx: Context) -> str:
        orphans = [str(ctx.pid(l)) for l in self._labels(ctx, ctx.data["old_run"])]
        alive = ctx.process(ctx.data["new_run"])
        return (f"ps -wweo pid,ppid,rss,args | grep loader   # two families: parent {alive.pid if alive else '?'} "
                f"(the new run) and the keeper (orphans)\n"
                f"kill {' '.join(orphans)}   # the orphans of {ctx.data['old_run']}\n"
                "`pkill -f loader` would have ended the new run's workers too; killing the new run frees "
                "memory but throws its progress away.")
