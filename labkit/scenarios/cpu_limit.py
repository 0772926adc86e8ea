"""Scenario ``cpu-limit``: a job crawls at 10% of a core; find the limit and lift it, no restart.

The seed draws the limit: a cgroup v1 CPU quota (``cpu.cfs_quota_us`` = 10000 per
``cpu.cfs_period_us`` = 100000: 10 ms of CPU every 100 ms, kernel doc
``scheduler/sched-bwc.rst``), or a ``cpulimit`` process that stops and continues the job with
SIGSTOP/SIGCONT to hold it near 10%. The job's progress is only in memory, so a restart loses it.
``check`` passes at half a core or more; on a loaded machine also at twice the limit once no quota
and no limiter is left. Right fixes: write -1 to the quota (or move the pid to the parent cgroup), or stop ``cpulimit``
with SIGTERM (it continues the job as it exits). Wrong fixes: restarting the job (new pid, work
lost), ``renice`` (priority only matters against other runnable tasks: a quota or a stopped
process does not care), SIGKILLing ``cpulimit`` at a moment the job is stopped (it stays stopped).
"""

from __future__ import annotations

import os
import random
import time
from pathlib import Path
from typing import Any

import psutil

from labkit.scenarios.base import Context, Scenario, ScenarioError, python, wait_for

PERIOD_US = 100_000
MIN_SHARE = 0.5  #: of one core: the share that passes whatever else is seen
BUSY_SHARE = 0.2  #: twice the limit: enough once no limit is left (a loaded machine shares its cores)


def quota_share(pid: int) -> float | None:
    """The tightest CPU quota on ``pid``'s cgroup and its ancestors, in cores (None: no quota).

    v1: ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` (-1: none); v2: ``cpu.max`` ("max 100000": none).
    """
    from labkit._linux import cgroup as _cgroup

    member, tightest = _cgroup.memberships(pid), None
    for point, fstype, options in _cgroup.mounts():
        key = "cpu" if fstype == "cgroup" and "cpu" in options else "" if fstype == "cgroup2" else None
        if key is None or key not in member:
            continue
        folder, top = (Path(point) / member[key].lstrip("/")).resolve(), Path(point).resolve()
        while True:
            share = _folder_quota(folder, fstype == "cgroup2")
            if share is not None:
                tightest = share if tightest is None else min(tightest, share)
            if folder == top or top not in folder.parents:
                break
            folder = folder.parent
    return tightest


def _folder_quota(folder: Path, v2: bool) -> float | None:
    try:
        if v2:
            quota, period = (folder / "cpu.max").read_text().split()
        else:
            quota = (folder / "cpu.cfs_quota_us").read_text().strip()
            period = (folder / "cpu.cfs_period_us").read_text().strip()
        return None if quota in ("max", "-1") else int(quota) / int(period)
    except (OSError, ValueError):
        return None


def cpu_share(proc: psutil.Process, interval_s: float) -> float:
    """The share of one core ``proc`` used over the next ``interval_s`` seconds."""
    before, started = sum(proc.cpu_times()[:2]), time.monotonic()
    time.sleep(interval_s)
    return (sum(proc.cpu_times()[:2]) - before) / (time.monotonic() - started)


class CpuLimit(Scenario):
    """A job held at 10% of a core by a cgroup quota or by cpulimit."""

    name = "cpu-limit"
    topic = "limits"
    summary = "a tokenizer crawls at 10% of a core: find the limit, lift it without a restart"
    # either limit may be drawn, so both must be possible here (doctor's verdicts)
    needs = ("cgroup-cpu", "cpulimit")

    def plan(self, rng: random.Random) -> dict[str, Any]:
        return {"mechanism": rng.choice(("cgroup", "cpulimit")), "percent": 10,
                "job": rng.choice(("tokenize-wiki", "dedup-c4", "featurize-audio", "hash-images")),
                "hours": rng.randrange(3, 9), "who": rng.choice(("an old script", "a teammate", "last week's you"))}

    def story(self, data: dict[str, Any]) -> str:
        return (f"The {data['job']} job should take an hour, but after {data['hours']} hours it is a fraction "
                f"done: `top` shows it at about {data['percent']}% of a core on an idle machine. Somebody "
                f"({data['who']}) limited it long ago and forgot. Its progress is only in memory: "
                f"a restart starts it from zero.\n"
                f"Goal: let the same process (same pid) run at full speed again.")

    def start(self, ctx: Context) -> None:
        data = ctx.data
        pid = ctx.spawn("job", [python(), "-m", "labkit.scenarios._actors", "spin", "--out",
                                str(ctx.folder / f"{data['job']}.progress")], log=ctx.folder / f"{data['job']}.log")
        quota_us = PERIOD_US * data["percent"] // 100
        if data["mechanism"] == "cgroup":
            from labkit import cgroups

            parent = cgroups.own_folders(("cpu",)).get("cpu")
            if parent is None:
                raise ScenarioError("no writable cgroup v1 cpu hierarchy")
            folder = Path(parent) / f"labkit-scenario-{data['job']}-{ctx.seed}"
            folder.mkdir()
            ctx.cgroups.append(str(folder))
            ok = (cgroups.write(folder / "cpu.cfs_period_us", str(PERIOD_US))
                  and cgroups.write(folder / "cpu.cfs_quota_us", str(quota_us)))
            if not ok or cgroups.CgroupSet({"cpu": folder}).add(pid):
                raise ScenarioError(f"cannot set a CPU quota in {folder}")
        else:
            ctx.spawn("limiter", ["cpulimit", "-p", str(pid), "-l", str(data["percent"]), "-z"],
                      log=ctx.folder / "cpulimit.log")
        proc = ctx.process("job")
        if proc is None:
            raise ScenarioError("the job did not start")
        wait_for(lambda: cpu_share(proc, 0.5) < 0.3, 10.0, "the limit to hold")

    def check(self, ctx: Context) -> list[str]:
        proc = ctx.process("job")
        if proc is None:
            return [f"the job that ran as pid {ctx.pid('job')} is gone: its hours of work in memory are lost"]
        try:
            quota = quota_share(proc.pid)
            held = (quota is not None and quota < MIN_SHARE) or ctx.process("limiter") is not None
            share = cpu_share(proc, 1.0)
            if share < MIN_SHARE and not held:  # a busy machine slows it too: look longer before judging
                share = max(share, cpu_share(proc, 2.0))
            stopped = proc.status() == psutil.STATUS_STOPPED
        except psutil.Error:
            return [f"the job that ran as pid {ctx.pid('job')} is gone: its hours of work in memory are lost"]
        if share >= MIN_SHARE:
            return []
        if quota is not None and quota < MIN_SHARE:
            return [f"the job is still held to {quota * 100:.0f}% of a core (it got {share * 100:.0f}%)"]
        if ctx.process("limiter") is not None:
            return [f"something still holds the job back: it got {share * 100:.0f}% of a core"]
        if stopped and share < 0.02:  # stopped all along, not a limiter's stop/continue cycle
            return ["the job is there but stopped (state T): it makes no progress at all"]
        if share < BUSY_SHARE:
            return [f"the job gets only about {share * 100:.0f}% of a core"]
        return []  # no limit left; the rest is other people's load on a shared machine

    def hints(self, ctx: Context) -> list[str]:
        return [
            "A process held at an exact share of a core on an idle machine is being limited from outside: "
            "by a cgroup, or by another process. Find which before changing anything.",
            "`cat /proc/PID/cgroup` names its cgroups: look at the cpu line and read cpu.cfs_quota_us there. "
            "`ps -ef | grep -i limit` finds a limiter process; watch `ps -o stat -p PID` flip between R and T.",
            "A quota: `echo -1 > CGROUP/cpu.cfs_quota_us` (CGROUP under /sys/fs/cgroup/cpu). "
            "A cpulimit process: `kill CPULIMIT_PID` (SIGTERM: it continues the job as it exits; "
            "if the job is left in state T, `kill -CONT PID`). Then `labkit scenario check`.",
        ]

    def solution(self, ctx: Context) -> str:
        pid = ctx.pid("job")
        if ctx.data["mechanism"] == "cgroup":
            folder = ctx.cgroups[0]
            return (f"grep cpu /proc/{pid}/cgroup        # ...:cpu,cpuacct:/{os.path.basename(folder)}\n"
                    f"cat {folder}/cpu.cfs_quota_us   # {PERIOD_US * ctx.data['percent'] // 100}: 10% of a 100 ms period\n"
                    f"echo -1 > {folder}/cpu.cfs_quota_us   # no quota; the same pid runs at full speed\n"
                    "A restart loses the work; renice changes priority, not the quota.")
        return (f"ps -ef | grep cpulimit              # cpulimit -p {pid} -l {ctx.data['percent']} (pid "
                f"{ctx.pid('limiter')})\n"
                f"kill {ctx.pid('limiter')}          # SIGTERM: cpulimit sends SIGCONT to the job and exits\n"
                f"ps -o pid,stat,%cpu -p {pid}      # R, near 100%\n"
                "A restart loses the work; renice changes priority, not cpulimit's stop/continue cycle.")
