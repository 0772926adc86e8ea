"""Scenario ``zombies``: zombies pile up under a data-prep parent that never waits for its workers.

A zombie is a process that has exited but whose parent has not collected its exit status
(wait(2)); it holds a pid and a process-table slot, nothing else. It cannot be killed: it is
already dead (signal(7): a zombie ignores even SIGKILL). The only cures are the parent calling
wait(), or the parent exiting, after which init (here the scenario's keeper, a subreaper,
prctl(2) PR_SET_CHILD_SUBREAPER) adopts and reaps them. The prep saves its progress when asked
to stop (SIGTERM/SIGINT); SIGKILL gives it no chance to. Wrong fixes: ``kill -9`` on the zombies
(nothing happens), ``kill -9`` on the parent (zombies gone, progress lost).
"""

from __future__ import annotations

import json
import random
from typing import Any

from labkit.scenarios.base import Context, Scenario, python, wait_for


class Zombies(Scenario):
    """A parent that never reaps: stop it so it saves its progress and the zombies are reaped."""

    name = "zombies"
    topic = "signals"
    summary = "ps fills with <defunct> workers under a data-prep job that must keep its progress"

    def plan(self, rng: random.Random) -> dict[str, Any]:
        return {"every_s": rng.choice((0.05, 0.08, 0.1)), "max": rng.randrange(150, 400),
                "min_zombies": rng.randrange(6, 15),
                "dataset": rng.choice(("laion-subset", "c4-en-shard", "librispeech", "imagenet-val")),
                "job": rng.choice(("tokenize", "prep", "shard", "dedup"))}

    def story(self, data: dict[str, Any]) -> str:
        return (f"The {data['job']} job for {data['dataset']} forks one worker per shard. `ps` shows "
                f"a growing list of <defunct> processes under it, and the admin warns that the machine "
                f"will run out of pids. The job has a bug (it never waits for its workers); a fixed "
                f"version will continue from where this one stops, using the progress file it writes.\n"
                f"Goal: get rid of every zombie, without losing a single shard of progress.")

    def _out(self, ctx: Context):
        return ctx.folder / "data" / ctx.data["dataset"]

    def start(self, ctx: Context) -> None:
        data = ctx.data
        ctx.spawn("parent", [python(), "-m", "labkit.scenarios._actors", "prep", "--out", str(self._out(ctx)),
                             "--every", str(data["every_s"]), "--max", str(data["max"])],
                  log=ctx.folder / f"{data['job']}.log")
        wait_for(lambda: len(ctx.zombies()) >= data["min_zombies"], 30.0, "the first zombies")

    def _shards(self, ctx: Context) -> set[int]:
        return {int(p.stem.split("-")[1]) for p in self._out(ctx).glob("shard-*.bin")}

    def check(self, ctx: Context) -> list[str]:
        problems = []
        zombies = ctx.zombies()
        if zombies:
            problems.append(f"{len(zombies)} zombie process(es) are still in the process table")
        if ctx.process("parent") is not None:
            return problems or ["the job still runs and will leave a zombie behind for every shard"]
        try:
            saved = set(json.loads((self._out(ctx) / "progress.json").read_text())["shards_done"])
        except (OSError, ValueError, KeyError):
            saved = set()
        missing = self._shards(ctx) - saved
        if missing:
            problems.append(f"the job ended without recording its progress: {len(missing)} shard(s) on disk "
                            "are not in progress.json and would be redone")
        return problems

    def hints(self, ctx: Context) -> list[str]:
        return [
            "A zombie is already dead: no signal reaches it. Who is supposed to collect it?",
            "`ps -eo pid,ppid,stat,args | grep -w Z` shows the zombies and their parent. When a parent exits, "
            "init adopts its zombies and reaps them. How can the parent exit *and* save its progress?",
            "`kill -TERM PPID` (the parent's pid): it writes progress.json and exits 0, and its zombies are "
            "reaped by init. Then `labkit scenario check`.",
        ]

    def solution(self, ctx: Context) -> str:
        return (f"ps -eo pid,ppid,stat,args | awk '$3 ~ /Z/'   # all have PPID {ctx.pid('parent')}\n"
                f"kill -TERM {ctx.pid('parent')}   # the job saves progress.json and exits 0\n"
                "ps -eo stat | grep -c Z          # 0: init adopted and reaped them\n"
                "`kill -9` on a zombie does nothing (it is already dead); `kill -9` on the parent clears the "
                "zombies but loses the progress it would have saved.")
