"""Scenario ``restart-loop``: a user service that crashes and is restarted for ever.

The unit says ``Restart=always`` and has a start limit, but the limit can never be reached:
systemd gives up on a unit only when more than ``StartLimitBurst=`` starts fall within
``StartLimitIntervalSec=`` (systemd.unit(5)), and each round here takes ``RestartSec=`` plus the
service's run time, so ``Burst x (RestartSec + run time)`` is longer than the interval and the
counter never fills (labkit.systemd.lint's ``restart-loop`` rule; measured on systemd 252:
RestartSec=700ms with a burst of 3 in 2 s restarted 17 times in 13 s).
The goal: keep automatic restarts (a one-off crash must still be retried) but make the manager
give up after a few failures, so the unit ends ``failed`` ("Start request repeated too quickly") and an
alert can fire. Wrong fixes: ``systemctl --user stop`` (nothing changed in the unit: the next
start loops again), raising ``RestartSec=`` alone (rounds get longer, the limit is still never
reached), ``Restart=no`` (a single crash would leave the service down).
"""

from __future__ import annotations

import random
import time
from typing import Any

from labkit.scenarios import _units
from labkit.scenarios.base import Context, Scenario, ScenarioError

_PROPS = ("Restart", "RestartUSec", "StartLimitIntervalUSec", "StartLimitBurst", "ActiveState", "SubState",
          "Result", "NeedDaemonReload", "NRestarts", "LoadState")
_WAIT_CAP_S = 25.0


class RestartLoop(Scenario):
    """A crashing user service restarted for ever: make the start limit reachable."""

    name = "restart-loop"
    topic = "systemd"
    summary = "a user service crashes and is restarted for ever: make systemd give up after a few tries"
    needs = ("systemctl-user",)

    def plan(self, rng: random.Random) -> dict[str, Any]:
        burst = rng.choice((3, 4, 5))
        restart_s = rng.choice((2, 3))
        run_s = rng.choice((0.2, 0.3, 0.4))
        interval_s = max(2, int(burst * restart_s) - rng.randrange(1, 3))  # always below burst x restart_s
        what = rng.choice(("feature-store-sync", "embedding-cache", "eval-worker", "label-queue"))
        return {"unit": f"labkit-scn-{what}-{rng.randrange(100, 1000)}.service", "what": what, "burst": burst,
                "restart_s": restart_s, "run_s": run_s, "interval_s": interval_s,
                "config": rng.choice(("/etc/mlops/sync.yaml", "/srv/conf/cache.toml", "/opt/eval/settings.json"))}

    def story(self, data: dict[str, Any]) -> str:
        return (f"The {data['what']} service crashes at start because its config file is missing. Nobody "
                f"noticed for a week: systemd restarts it every few seconds, the journal is full of the same "
                f"error, and the unit never shows as failed, so the alert on failed units never fired. The unit "
                f"file even sets a start limit, yet it never triggers.\n"
                f"Goal: keep automatic restarts for a one-off crash, but make systemd give up on "
                f"{data['unit']} after a few failures in a row, so it ends up failed.")

    def unit_text(self, ctx: Context) -> str:
        """The unit as installed."""
        d = ctx.data
        return (f"[Unit]\nDescription={d['what']} (labkit scenario)\n"
                f"StartLimitIntervalSec={d['interval_s']}s\nStartLimitBurst={d['burst']}\n\n"
                f"[Service]\nExecStart=/bin/sh {ctx.folder / (d['what'] + '.sh')}\n"
                f"Restart=always\nRestartSec={d['restart_s']}s\n")

    def start(self, ctx: Context) -> None:
        d = ctx.data
        (ctx.folder / f"{d['what']}.sh").write_text(
            f"#!/bin/sh\necho \"{d['what']}: loading {d['config']}\"\nsleep {d['run_s']}\n"
            f"echo \"FileNotFoundError: [Errno 2] No such file or directory: '{d['config']}'\" >&2\nexit 1\n")
        _units.install(ctx, d["unit"], self.unit_text(ctx))
        _units.reload()
        done = _units.systemctl("start", d["unit"])
        if done.returncode != 0:
            raise ScenarioError(f"cannot start {d['unit']}: {done.stderr.strip()}")
        deadline = time.monotonic() + 15
        while _units.show(d["unit"], "SubState").get("SubState") != "auto-restart":  # crashed, a restart is due
            if time.monotonic() > deadline:
                raise ScenarioError(f"{d['unit']} did not crash and wait for its restart as planned")
            time.sleep(0.05)

    def _rounds_s(self, ctx: Context, props: dict[str, str]) -> float | None:
        """Seconds the start limit needs to trip as loaded; None when it never can."""
        if props.get("Restart") == "no":
            return None
        interval = _units.seconds(props.get("StartLimitIntervalUSec", ""))
        burst = int(props.get("StartLimitBurst", "0") or 0)
        restart = _units.seconds(props.get("RestartUSec", "")) or 0.0
        if not interval or burst <= 0:  # interval 0 turns the limit off
            return None
        rounds = burst * (restart + float(ctx.data["run_s"]))
        return rounds if rounds < interval else None

    def check(self, ctx: Context) -> list[str]:
        unit = ctx.data["unit"]
        props = _units.show(unit, *_PROPS)
        if props.get("LoadState") != "loaded":
            return [f"{unit} is gone: the service has to stay installed"]
        if props.get("NeedDaemonReload") == "yes":
            return [f"{unit} changed on disk, but the manager still runs the version it loaded before"]
        if props.get("Restart") == "no":
            return ["the service no longer restarts at all: a single crash at night would leave it down"]
        rounds = self._rounds_s(ctx, props)
        if rounds is None:
            return [f"as the manager has loaded it, {unit} would still be restarted for ever: its start "
                    "limit can never be reached"]
        deadline = time.monotonic() + min(rounds + 5.0, _WAIT_CAP_S)
        while props.get("ActiveState") in ("activating", "active") and time.monotonic() < deadline:
            time.sleep(0.2)
            props = _units.show(unit, *_PROPS)
        # failed (not auto-restart) with Restart= still on: the manager gave up by itself. Result= keeps
        # the last crash's reason (exit-code): systemd 252 sets start-limit-hit only if none was set before
        if props.get("ActiveState") == "failed":
            return []
        if props.get("ActiveState") in ("activating", "active"):
            return [f"{unit} is still being restarted; check again in a few seconds"]
        return [f"{unit} is {props.get('ActiveState')} (result: {props.get('Result')}), but the manager never gave "
                "up on it by itself: start it again and let it fail"]

    def hints(self, ctx: Context) -> list[str]:
        unit = ctx.data["unit"]
        return [
            "A start limit counts starts within a time window. Work out how long one crash-and-restart round "
            "takes here, and whether enough rounds ever fit in that window.",
            f"`systemctl --user cat {unit}` and `systemctl --user show -p StartLimitIntervalUSec,"
            f"StartLimitBurst,RestartUSec,NRestarts {unit}`; `labkit unit lint FILE` explains the rule. "
            "Stopping the unit changes nothing in its file.",
            f"Edit the file (`systemctl --user cat {unit}` shows where it is): make StartLimitIntervalSec= larger "
            "than StartLimitBurst= x (RestartSec= + run time), or shorten RestartSec=; keep Restart=. Then "
            f"`systemctl --user daemon-reload`, `systemctl --user restart {unit}`, wait until "
            f"`systemctl --user is-failed {unit}` says failed, and `labkit scenario check`.",
        ]

    def solution(self, ctx: Context) -> str:
        d = ctx.data
        rounds = d["burst"] * (d["restart_s"] + d["run_s"])
        return (f"# {d['burst']} x ({d['restart_s']} s + {d['run_s']} s) = {rounds:g} s > StartLimitIntervalSec="
                f"{d['interval_s']}s: the limit never trips\n"
                f"sed -i 's/^StartLimitIntervalSec=.*/StartLimitIntervalSec=60s/' {_units.unit_dir() / d['unit']}\n"
                "systemctl --user daemon-reload\n"
                f"systemctl --user restart {d['unit']}\n"
                f"sleep {rounds + 1:g}; systemctl --user show -p ActiveState,Result {d['unit']}  "
                "# failed: \"Start request repeated too quickly\" in the journal\n"
                "`systemctl stop` leaves the loop in the file; a longer RestartSec= alone makes it worse; "
                "Restart=no gives up on the first crash.")

    def cleanup(self, ctx: Context) -> None:
        _units.remove(ctx)
