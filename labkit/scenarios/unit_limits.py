"""Scenario ``unit-limits``: the production unit's resource limits do not hold (trailing comments).

The unit was written like the seed's ``ml-training.service``, with a note after each limit on the
same line: ``CPUQuota=50%  # half a core``. systemd has no trailing comments: a ``#`` starts a
comment only at the start of a line (systemd.syntax(7)), so the value is ``50%  # half a core``,
which does not parse; systemd logs a warning and ignores the whole assignment, and the service
runs with no limit at all. ``systemctl --user show -p CPUQuotaPerSecUSec,MemoryMax`` says so
(``infinity``). The goal: the manager reports the intended limits for the running service.
Wrong fixes: deleting the limits (the service "starts clean" with none), commenting out the
lines (the same), setting them with ``systemctl set-property`` (a drop-in under ``user.control/``;
with ``--runtime`` gone at the next reboot; refused here because the file still says nothing usable).
"""

from __future__ import annotations

import random
from typing import Any

from labkit.scenarios import _units
from labkit.scenarios.base import Context, Scenario, ScenarioError

_SUFFIX = {"M": 1 << 20, "G": 1 << 30}
_NOTES = ("# half a core is plenty", "# keep it small", "# set by ops, do not raise", "# the box has more",
          "# per review", "# see runbook")


def memory_bytes(text: str) -> int:
    """``8G`` -> bytes, as systemd reads a size with a base-1024 suffix (systemd.resource-control(5))."""
    return int(text[:-1]) * _SUFFIX[text[-1]]


class UnitLimits(Scenario):
    """Limits written with trailing comments are ignored: make the manager report them."""

    name = "unit-limits"
    topic = "systemd"
    summary = "a training unit's CPU and memory limits are silently ignored: make them hold"
    needs = ("systemctl-user",)

    def plan(self, rng: random.Random) -> dict[str, Any]:
        return {"unit": f"labkit-scn-{rng.choice(('ml-training', 'finetune', 'pretrain', 'sweep'))}-"
                        f"{rng.randrange(100, 1000)}.service",
                "cpu_percent": rng.choice((50, 150, 200, 300)), "memory": rng.choice(("2G", "6G", "12G", "768M")),
                "tasks": rng.choice((64, 128, 512)), "notes": rng.sample(_NOTES, 3),
                "who": rng.choice(("the on-call engineer", "a new teammate", "the cluster admin"))}

    def story(self, data: dict[str, Any]) -> str:
        return (f"{data['unit']} trains a model for the team. Its unit file caps CPU at {data['cpu_percent']}%, "
                f"memory at {data['memory']} and tasks at {data['tasks']}, with a note beside each limit. Last "
                f"night the job took every core and most of the memory, and {data['who']} swears the limits are "
                f"in the file. They are.\n"
                f"Goal: make the manager apply all three limits to the running service, from the unit file.")

    def unit_text(self, ctx: Context) -> str:
        """The unit as installed (the notes on the limit lines are the bug)."""
        d, notes = ctx.data, ctx.data["notes"]
        return (f"[Unit]\nDescription=training job (labkit scenario)\n\n"
                f"[Service]\nExecStart=/bin/sh {ctx.folder / 'train.sh'}\n"
                f"CPUQuota={d['cpu_percent']}%  {notes[0]}\n"
                f"MemoryMax={d['memory']}  {notes[1]}\n"
                f"TasksMax={d['tasks']}  {notes[2]}\n"
                f"Restart=on-failure\n")

    def start(self, ctx: Context) -> None:
        d = ctx.data
        (ctx.folder / "train.sh").write_text("#!/bin/sh\necho 'training: epoch 1'\nexec sleep 21600\n")
        _units.install(ctx, d["unit"], self.unit_text(ctx))
        _units.reload()
        done = _units.systemctl("start", d["unit"])
        if done.returncode != 0:
            raise ScenarioError(f"cannot start {d['unit']}: {done.stderr.strip()}")

    def wanted(self, ctx: Context) -> dict[str, str]:
        """What ``systemctl show`` reports once the limits hold (CPUQuotaPerSecUSec is CPU time per second)."""
        d = ctx.data
        return {"CPUQuotaPerSecUSec": str(d["cpu_percent"] * 10_000), "MemoryMax": str(memory_bytes(d["memory"])),
                "TasksMax": str(d["tasks"])}

    def check(self, ctx: Context) -> list[str]:
        unit = ctx.data["unit"]
        props = _units.show(unit, "LoadState", "ActiveState", "NeedDaemonReload", "CPUQuotaPerSecUSec", "MemoryMax",
                            "TasksMax", "DropInPaths")
        if props.get("LoadState") != "loaded":
            return [f"{unit} is gone: the team still needs it"]
        problems = []
        if props.get("NeedDaemonReload") == "yes":
            problems.append(f"{unit} changed on disk, but the manager still uses the version it loaded before")
        if "user.control/" in props.get("DropInPaths", ""):  # where `systemctl set-property` writes
            problems.append("the limits come from `systemctl set-property`, not from the unit file: the file "
                            "still holds none that work (and --runtime ones are gone at the next reboot)")
        cpu = _units.seconds(props.get("CPUQuotaPerSecUSec", ""))
        shown = {"CPUQuotaPerSecUSec": "infinity" if cpu is None else str(round(cpu * 1_000_000)),
                 "MemoryMax": props.get("MemoryMax", ""), "TasksMax": props.get("TasksMax", "")}
        for prop, want in self.wanted(ctx).items():
            if shown[prop] != want:
                problems.append(f"the manager reports {prop}={props.get(prop)}: that limit does not hold")
        if props.get("ActiveState") != "active":
            problems.append(f"{unit} is not running ({props.get('ActiveState')}): the job has to keep training")
        return problems

    def hints(self, ctx: Context) -> list[str]:
        unit = ctx.data["unit"]
        return [
            "Ask the manager what it applied rather than reading the file: the two disagree. Then ask it why.",
            f"`systemctl --user show -p CPUQuotaPerSecUSec,MemoryMax,TasksMax {unit}` (infinity: no limit); "
            f"`journalctl --user -b | grep -i {unit.split('.')[0]}` or `systemd-analyze verify` on the file shows "
            "how systemd read each line; `labkit unit lint FILE` too.",
            "In unit files a # starts a comment only at the beginning of a line. Move each note to its own line "
            "above the limit, then `systemctl --user daemon-reload` and `systemctl --user restart "
            f"{unit}`, and `labkit scenario check`.",
        ]

    def solution(self, ctx: Context) -> str:
        d = ctx.data
        path = _units.unit_dir() / d["unit"]
        return (f"systemctl --user show -p CPUQuotaPerSecUSec,MemoryMax,TasksMax {d['unit']}   # infinity x3\n"
                f"sed -i -E 's/^((CPUQuota|MemoryMax|TasksMax)=[^ ]+) +#.*/\\1/' {path}   # drop the notes\n"
                "systemctl --user daemon-reload\n"
                f"systemctl --user restart {d['unit']}\n"
                f"systemctl --user show -p CPUQuotaPerSecUSec,MemoryMax,TasksMax {d['unit']}   "
                f"# {d['cpu_percent'] / 100:g} s of CPU per second, {memory_bytes(d['memory'])} bytes, "
                f"{d['tasks']} tasks\n"
                "Deleting or commenting out the limits leaves the job with none; a note belongs on its own line.")

    def cleanup(self, ctx: Context) -> None:
        _units.remove(ctx)
