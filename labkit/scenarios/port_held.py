"""Scenario ``port-held``: a port still held by a crashed run's orphaned child.

A run crashed; the metrics exporter it had started lives on (it was never told its parent died)
and still listens on the port the next run needs, so that run fails with EADDRINUSE. Elsewhere on
the machine a colleague's exporter, started the same way, listens on another port and must stay.
The fix: find the holder of *that* port (``ss -ltnp``, ``lsof -i``, ``fuser -n tcp``) and stop it.
Wrong fixes: stopping every exporter (``pkill -f``), or moving the new run to another port (the
port stays taken and the orphan keeps running).
"""

from __future__ import annotations

import random
import socket
from typing import Any

from labkit.scenarios.base import Context, Scenario, ScenarioError, python, wait_for

_ACTOR = ["-m", "labkit.scenarios._actors", "serve"]


def port_free(port: int) -> bool:
    """True when a new listener could bind 127.0.0.1:``port`` now."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def listening(port: int) -> bool:
    """True when something accepts connections on 127.0.0.1:``port``."""
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


class PortHeld(Scenario):
    """A crashed run's exporter still holds the port the next run needs."""

    name = "port-held"
    topic = "diagnostics"
    summary = "the next run cannot bind its port: a crashed run's child still holds it"

    def plan(self, rng: random.Random) -> dict[str, Any]:
        port = rng.randrange(20000, 40000)
        decoy = port + rng.choice((-1, 1)) * rng.randrange(7, 400)
        return {"port": port, "decoy_port": decoy,
                "run": f"{rng.choice(('bert', 'vit', 'llama', 'whisper', 'resnet'))}-"
                       f"{rng.choice(('sweep', 'ft', 'pretrain', 'ablation'))}-{rng.randrange(2, 40)}",
                "what": rng.choice(("metrics exporter", "TensorBoard-like dashboard", "profiler UI")),
                "colleague": rng.choice(("Ana", "Bo", "Chen", "Dara", "Eli"))}

    def story(self, data: dict[str, Any]) -> str:
        return (f"Run {data['run']} crashed an hour ago with a CUDA error. Its relaunch dies at once: "
                f"\"OSError: [Errno 98] Address already in use\" on 127.0.0.1:{data['port']}, where the "
                f"run serves its {data['what']}. {data['colleague']}'s job on this machine serves the same "
                f"kind of {data['what']} on another port and must not be touched.\n"
                f"Goal: free port {data['port']} for the relaunch, leaving {data['colleague']}'s work alone.")

    def start(self, ctx: Context) -> None:
        data = ctx.data
        for port in (data["port"], data["decoy_port"]):
            if not port_free(port):
                raise ScenarioError(f"port {port} is already in use on this machine; start again "
                                    "with another --seed")
        ctx.spawn("decoy", [python(), *_ACTOR, "--port", str(data["decoy_port"])],
                  log=ctx.folder / "colleague.log")
        ctx.spawn("crashed-run", [python(), *_ACTOR, "--port", str(data["port"]), "--spawn-and-die"],
                  log=ctx.folder / f"{data['run']}.log")
        wait_for(lambda: listening(data["port"]) and listening(data["decoy_port"]), 20.0,
                 "the exporters to listen")
        wait_for(lambda: ctx.process("crashed-run") is None, 20.0, "the run to crash")
        holder = next((p for p in ctx.descendants()
                       if p.pid not in (ctx.pid("decoy"), ctx.pid("crashed-run"))), None)
        if holder is None:
            raise ScenarioError("the orphaned exporter did not start")
        ctx.record("holder", holder.pid)

    def check(self, ctx: Context) -> list[str]:
        data, problems = ctx.data, []
        if ctx.process("decoy") is None:
            problems.append(f"{data['colleague']}'s {data['what']} (port {data['decoy_port']}) is gone: "
                            "it had nothing to do with the crashed run")
        if not port_free(data["port"]):
            problems.append(f"port {data['port']} is still taken: the relaunch would fail again")
        elif ctx.process("holder") is not None:
            problems.append("the process that held the port still runs")
        return problems

    def hints(self, ctx: Context) -> list[str]:
        port = ctx.data["port"]
        return [
            "Ask the kernel which process owns the listening socket; the crashed run's pid will not help.",
            f"`ss -ltnp` lists listening TCP sockets with the owning process; look for :{port}. "
            "Compare it with the other exporter: same command line, other port.",
            f"`ss -ltnp 'sport = :{port}'` (or `lsof -iTCP:{port} -sTCP:LISTEN`, or `fuser -n tcp {port}`) "
            f"gives the pid; `kill PID` stops it. Then `labkit scenario check`.",
        ]

    def solution(self, ctx: Context) -> str:
        port = ctx.data["port"]
        return (f"ss -ltnp 'sport = :{port}'        # users:((\"python\",pid=NNNN,...)): the orphaned exporter\n"
                f"ps -o pid,ppid,lstart,args -p NNNN  # a child of the crashed run, now adopted by init\n"
                f"kill NNNN                           # SIGTERM is enough; the port is free once it exits\n"
                f"Here NNNN was {ctx.pid('holder')}. Killing every exporter (pkill -f) would also end "
                f"the colleague's on port {ctx.data['decoy_port']}; moving to another port leaves the "
                "orphan running forever.")
