"""Scenario ``boot-order``: an API unit that fails at boot because it starts before its model server.

Both units are ``Type=notify``: systemd counts each as started only when it sends ``READY=1``
(the model server does once its weights are loaded, sd_notify(3)). ``Wants=`` pulls a unit in but
orders nothing; ``After=`` orders but pulls nothing in (systemd.unit(5): "requirement
dependencies" and "ordering dependencies" are independent). With neither, or with only one, a boot
starts the API while the model server is still loading, and the API exits on "connection refused".
Started again by hand later, it works: that is why the bug survives. ``check`` plays a boot: it
stops both units and starts the API alone, as ``default.target`` would pull it in.
Right fix: ``Wants=`` (or ``Requires=``) *and* ``After=`` on the model server. Wrong fixes: restarting
the API by hand (works now, fails at the next boot), only ``Wants=`` (both start at once), a fixed
``sleep`` in ``ExecStartPre=`` (a race: a slower boot loses it).
"""

from __future__ import annotations

import random
import socket
import time
from typing import Any

from labkit.scenarios import _units
from labkit.scenarios.base import Context, Scenario, ScenarioError, python

_ACTOR = "-m labkit.scenarios._actors"


class BootOrder(Scenario):
    """The API starts before its model server is ready: order and pull in the dependency."""

    name = "boot-order"
    topic = "systemd"
    summary = "an API unit fails after every boot but works when restarted by hand"
    needs = ("systemctl-user",)

    def plan(self, rng: random.Random) -> dict[str, Any]:
        n = rng.randrange(100, 1000)
        model = rng.choice(("vllm", "triton", "tgi", "onnx-serve"))
        return {"model_unit": f"labkit-scn-{model}-{n}.service", "api_unit": f"labkit-scn-api-{n}.service",
                "model": model, "port": rng.randrange(20000, 40000), "warmup_s": rng.choice((0.6, 0.8, 1.0, 1.2)),
                "broken": rng.choice(("none", "after-only")),
                "product": rng.choice(("search", "chat", "tagging", "summaries"))}

    def story(self, data: dict[str, Any]) -> str:
        return (f"After each reboot of the inference box, the {data['product']} API ({data['api_unit']}) is "
                f"down: its log says the {data['model']} model server refused the connection. Whoever is on call "
                f"runs `systemctl --user restart` on it and it works, until the next reboot. The model server "
                f"({data['model_unit']}) takes a moment to load its weights.\n"
                f"Goal: make a boot that starts only the API bring both up, in the right order, every time.")

    def model_text(self, ctx: Context) -> str:
        d = ctx.data
        return (f"[Unit]\nDescription={d['model']} model server (labkit scenario)\n\n[Service]\nType=notify\n"
                f"ExecStart={python()} {_ACTOR} model --port {d['port']} --warmup {d['warmup_s']}\n")

    def api_text(self, ctx: Context) -> str:
        d = ctx.data
        after = f"After={d['model_unit']}\n" if d["broken"] == "after-only" else ""
        return (f"[Unit]\nDescription={d['product']} API (labkit scenario)\n{after}\n[Service]\nType=notify\n"
                f"ExecStart={python()} {_ACTOR} api --model-port {d['port']}\n")

    def start(self, ctx: Context) -> None:
        d = ctx.data
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("127.0.0.1", d["port"]))
            except OSError as err:
                raise ScenarioError(f"port {d['port']} is in use here; start again with another --seed") from err
        _units.install(ctx, d["model_unit"], self.model_text(ctx))
        _units.install(ctx, d["api_unit"], self.api_text(ctx))
        _units.reload()
        # the boot: both at once, as default.target pulls them in; the API loses the race
        _units.systemctl("start", "--no-block", d["model_unit"], d["api_unit"])
        deadline = time.monotonic() + 30
        while True:
            api = _units.show(d["api_unit"], "ActiveState")["ActiveState"]
            model = _units.show(d["model_unit"], "ActiveState")["ActiveState"]
            if api == "failed" and model == "active":
                return
            if time.monotonic() > deadline:
                raise ScenarioError(f"the boot did not go as planned (API {api}, model server {model})")
            time.sleep(0.1)

    def boot(self, ctx: Context) -> tuple[bool, str]:
        """Stop both, start the API alone (as a boot would); (did the API come up, what it said)."""
        d = ctx.data
        _units.systemctl("stop", d["api_unit"], d["model_unit"])
        _units.systemctl("reset-failed", d["api_unit"], d["model_unit"])
        done = _units.systemctl("start", d["api_unit"], timeout_s=60)
        state = _units.show(d["api_unit"], "ActiveState")["ActiveState"]
        return done.returncode == 0 and state == "active", state

    def check(self, ctx: Context) -> list[str]:
        d = ctx.data
        props = _units.show(d["api_unit"], "LoadState", "NeedDaemonReload", "ExecStartPre")
        model = _units.show(d["model_unit"], "LoadState", "NeedDaemonReload")
        if props.get("LoadState") != "loaded" or model.get("LoadState") != "loaded":
            return ["both units have to stay installed"]
        if "yes" in (props.get("NeedDaemonReload"), model.get("NeedDaemonReload")):
            return ["a unit changed on disk, but the manager still uses the version it loaded before"]
        problems = []
        if "sleep" in props.get("ExecStartPre", ""):
            problems.append("the API waits a fixed time before it starts: a slower boot (a cold disk, a larger "
                            "model) loses that race")
        up, state = self.boot(ctx)
        if not up:
            problems.append(f"after a simulated boot (both stopped, then only the API started) the API is {state}: "
                            "it still starts without a ready model server")
        return problems

    def hints(self, ctx: Context) -> list[str]:
        d = ctx.data
        return [
            "Play the boot yourself: stop both units, then start only the API. What does systemd know about "
            "the model server when it starts the API?",
            f"`systemctl --user cat {d['api_unit']}`, `systemctl --user list-dependencies {d['api_unit']}`, "
            f"`journalctl --user -u {d['api_unit']}`. In systemd.unit(5), compare what Wants= and After= each "
            "promise: one pulls a unit in, the other orders two units that both start.",
            f"Add both `Wants={d['model_unit']}` and `After={d['model_unit']}` to the [Unit] section of the API "
            f"unit; `systemctl --user daemon-reload`; then `labkit scenario check`.",
        ]

    def solution(self, ctx: Context) -> str:
        d = ctx.data
        path = _units.unit_dir() / d["api_unit"]
        return (f"systemctl --user stop {d['api_unit']} {d['model_unit']}; systemctl --user start {d['api_unit']}"
                "   # fails: the boot, replayed\n"
                f"sed -i '/^After=/d; /^\\[Unit\\]/a Wants={d['model_unit']}\\nAfter={d['model_unit']}' {path}\n"
                "systemctl --user daemon-reload\n"
                f"systemctl --user stop {d['api_unit']} {d['model_unit']}; systemctl --user start {d['api_unit']}"
                "   # waits for READY=1 from the model server, then starts the API\n"
                "Wants= alone starts both at once; After= alone orders against a unit nobody starts; a sleep "
                "is a race.")

    def cleanup(self, ctx: Context) -> None:
        _units.remove(ctx)
