"""The unit runner against the real systemd user manager, case by case.

Each case is a small unit run twice: on the real manager the test session started
(``labkit unit run --real``, through ``UnitRun(real=True)``) and under labkit's runner
(``labkit unit run``). Its commands are wrapped in ``rec``, a script that writes what the
process sees (cwd, argv, the environment, which of the unit's children are still alive) to a
file named after the phase, then execs the real command; so the two runs are compared on the
final result, the number of restarts, the main process's exit, which hooks ran how often and
what each saw, the processes left over, and how long a stop took. Cases run in parallel
threads; each is its own test id. A difference that is a documented limit of the runner (see
:mod:`labkit.systemd.runner`) is listed in the case's ``known`` with the reason; the rest of
that case is still compared.
"""

from __future__ import annotations

import os
import re
import textwrap
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from labkit.errors import LabkitError
from labkit.systemd.control import UnitRun

pytestmark = pytest.mark.skipif(bool(os.environ.get("LABKIT_SYSTEMD_UNAVAILABLE")),
                                reason=f"no real systemd user manager: {os.environ.get('LABKIT_SYSTEMD_UNAVAILABLE')}")

TIMER_SLACK_S = 0.25  # the real manager's timers fire up to ~0.25 s late (measured, systemd 252)
MARGIN_S = 0.25  # two processes polling at 20-40 ms on a busy 2-core machine (seen: up to 0.12 s)
WORKERS = 6
ALWAYS_SEEN = ("SERVICE_RESULT", "EXIT_CODE", "EXIT_STATUS", "MAINPID", "HOME")

SCRIPTS = {
    # rec PREFIX [COMMAND...]: write what this process sees to PREFIX.N, then exec COMMAND
    "rec": r"""#!/bin/sh
        p=$1; shift
        d=$(dirname "$p")
        n=1; while [ -e "$p.$n" ]; do n=$((n+1)); done
        {
          echo "pid=$$"
          echo "cwd=$(pwd)"
          for a in "$@"; do printf 'arg=%s\n' "$a"; done
          for f in before after; do
            [ -e "$d/$f.pid" ] && { kill -0 "$(cat "$d/$f.pid")" 2>/dev/null && echo "alive:$f=yes" || echo "alive:$f=no"; }
          done
          env | LC_ALL=C sort | sed 's/^/env:/'
        } > "$p.$n.tmp"
        mv "$p.$n.tmp" "$p.$n"
        [ $# -gt 0 ] && exec "$@"
        exit 0
        """,
    # failafter FILE: exit 1 once FILE exists (at most 5 s), so that what it follows has been recorded
    "failafter": """#!/bin/sh
        i=0; while [ ! -e "$1" ] && [ $i -lt 500 ]; do sleep 0.01; i=$((i+1)); done
        exit 1
        """,
    "die": """#!/bin/sh
        kill -s "$1" $$
        sleep 10
        """,
    # a child before the stop (dies on SIGTERM); on SIGTERM, one more that ignores it, then exit 0
    "kids": """#!/bin/sh
        sleep 300 & echo $! > "$1/before.pid"
        trap 'trap "" TERM; sleep 301 & echo $! > "$1/after.pid"; exit 0' TERM
        wait
        """,
    # the same, but the main process ignores SIGTERM (it goes on until SIGKILL)
    "stubborn": """#!/bin/sh
        sleep 300 & echo $! > "$1/before.pid"
        trap 'trap "" TERM; sleep 301 & echo $! > "$1/after.pid"' TERM
        while :; do sleep 0.1 & wait $!; done
        """,
    # Type=forking: the daemon goes to the background, the starter exits 0
    "forker": """#!/bin/sh
        sleep 300 &
        echo $! > "$1/daemon.pid"
        exit 0
        """,
}


@dataclass
class Case:
    id: str
    service: str
    unit: str = ""
    stop_after_s: float | None = None
    name: str | None = None
    files: dict[str, str] = field(default_factory=dict)
    seen: tuple[str, ...] = ()  # environment variables the hooks' records are compared on
    known: dict[str, str] = field(default_factory=dict)  # field -> why it differs (documented limit)

    @property
    def unit_name(self) -> str:
        return self.name or f"diff-{self.id}.service"


def _restart_table() -> list[Case]:
    exits = {"exit0": "/bin/true", "exit1": "/bin/false", "signal": "{bin}/die USR1", "core": "{bin}/die SEGV"}
    cases = []
    for restart in ("no", "on-success", "on-failure", "on-abnormal", "on-abort", "on-watchdog", "always"):
        for how, command in exits.items():
            cases.append(Case(f"restart-{restart}-{how}",
                              f"ExecStart={{bin}}/rec {{out}}/main {command}\nExecStopPost={{bin}}/rec {{out}}/stoppost\n"
                              f"Restart={restart}\nRestartSec=50ms\nWorkingDirectory={{out}}\nLimitCORE=infinity\n",
                              unit="StartLimitIntervalSec=30s\nStartLimitBurst=2\n"))
    return cases


STOP = "ExecStopPost={bin}/rec {out}/stoppost\nTimeoutStopSec=1s\n"

CASES = _restart_table() + [
    Case("startlimit-crash-loop", "ExecStart={bin}/rec {out}/main /bin/false\nRestart=always\nRestartSec=50ms\n",
         unit="StartLimitIntervalSec=30s\nStartLimitBurst=3\n"),
    Case("startlimit-clean-loop", "ExecStart={bin}/rec {out}/main /bin/true\nRestart=always\nRestartSec=50ms\n",
         unit="StartLimitIntervalSec=30s\nStartLimitBurst=3\n"),
    *[Case(f"killmode-{mode}", f"ExecStart={{bin}}/rec {{out}}/main {{bin}}/kids {{out}}\nKillMode={mode}\n" + STOP,
           stop_after_s=1.0) for mode in ("control-group", "mixed", "process", "none")],
    *[Case(f"timeout-{mode}", f"ExecStart={{bin}}/rec {{out}}/main {{bin}}/stubborn {{out}}\nKillMode={mode}\n" + STOP,
           stop_after_s=1.0) for mode in ("control-group", "mixed")],
    Case("hooks-clean-exit", "ExecStartPre={bin}/rec {out}/pre\nExecStart={bin}/rec {out}/main /bin/sleep 0.5\n"
                             "ExecStartPost={bin}/rec {out}/startpost\nExecStop={bin}/rec {out}/stop\n"
                             "ExecStopPost={bin}/rec {out}/stoppost\n"),
    Case("hooks-main-fails", "ExecStartPre={bin}/rec {out}/pre\nExecStart={bin}/rec {out}/main /bin/sh -c 'sleep 0.5; exit 3'\n"
                             "ExecStop={bin}/rec {out}/stop\nExecStopPost={bin}/rec {out}/stoppost\n"),
    Case("hooks-pre-fails", "ExecStartPre={bin}/rec {out}/pre /bin/sh -c 'exit 2'\nExecStart={bin}/rec {out}/main\n"
                            "ExecStop={bin}/rec {out}/stop\nExecStopPost={bin}/rec {out}/stoppost\n"),
    Case("hooks-pre-failure-ignored", "ExecStartPre=-{bin}/rec {out}/pre /bin/false\nExecStart={bin}/rec {out}/main\n"
                                      "ExecStop={bin}/rec {out}/stop\nExecStopPost={bin}/rec {out}/stoppost\n"),
    Case("hooks-stop-request", "ExecStartPre={bin}/rec {out}/pre\nExecStart={bin}/rec {out}/main /bin/sleep 300\n"
                               "ExecStartPost={bin}/rec {out}/startpost\nExecStop={bin}/rec {out}/stop\n"
                               "ExecStopPost={bin}/rec {out}/stoppost\n", stop_after_s=1.0),
    Case("hooks-exec-stop-kills-main", "ExecStart={bin}/rec {out}/main /bin/sleep 300\n"
                                       "ExecStop={bin}/rec {out}/stop /bin/kill $MAINPID\n"
                                       "ExecStopPost={bin}/rec {out}/stoppost\n", stop_after_s=1.0),
    Case("hooks-start-post-fails", "ExecStart={bin}/rec {out}/main /bin/sleep 300\n"
                                   "ExecStartPost={bin}/rec {out}/startpost {bin}/failafter {out}/main.1\n"
                                   "ExecStop={bin}/rec {out}/stop\n"
                                   "ExecStopPost={bin}/rec {out}/stoppost\n"),
    Case("oneshot-in-order", "Type=oneshot\nExecStart={bin}/rec {out}/one\nExecStart={bin}/rec {out}/two\n"
                             "ExecStartPost={bin}/rec {out}/startpost\nExecStop={bin}/rec {out}/stop\n"
                             "ExecStopPost={bin}/rec {out}/stoppost\n"),
    Case("semicolon-separates-commands", "ExecStartPre={bin}/rec {out}/pre ; {bin}/rec {out}/pre2\n"
                                         "ExecStart={bin}/rec {out}/main /bin/echo a\\; b\n"
                                         "ExecStopPost={bin}/rec {out}/stoppost\n"),
    Case("oneshot-first-fails", "Type=oneshot\nExecStart={bin}/rec {out}/one /bin/false\nExecStart={bin}/rec {out}/two\n"
                                "ExecStopPost={bin}/rec {out}/stoppost\n"),
    Case("type-exec-missing-binary", "Type=exec\nExecStart=/no/such/program\nExecStopPost={bin}/rec {out}/stoppost\n"),
    Case("type-simple-missing-binary", "Type=simple\nExecStart=/no/such/program\nExecStopPost={bin}/rec {out}/stoppost\n"),
    Case("type-forking", "Type=forking\nExecStart={bin}/rec {out}/main {bin}/forker {out}\n"
                         "ExecStop={bin}/rec {out}/stop\n" + STOP, stop_after_s=1.0),
    Case("env-quoting", "Environment=\"A=x y\" B=plain 'C=q\"u'\nEnvironment=D=%n E=$$lit\n"
                        "ExecStart={bin}/rec {out}/main /bin/true $A ${A} \"$B\" $D ${E} $UNSET ${UNSET}\n",
         seen=("A", "B", "C", "D", "E")),
    Case("envfile-quoting", "EnvironmentFile={out}/env.txt\nEnvironmentFile=-/no/such/file\n"
                            "ExecStart={bin}/rec {out}/main /bin/true $CONT\n",
         files={"env.txt": "# comment\n; also a comment\nPLAIN=value\nDQ=\"double \\\"quoted\\\" value\"\n"
                           "SQ='single $quoted'\nCONT=first \\\nsecond\nexport EXPORTED=1\n  SPACED  =  padded  \n"
                           "EMPTY=\nTRAIL=a # not a comment\n"},
         seen=("PLAIN", "DQ", "SQ", "CONT", "EXPORTED", "SPACED", "EMPTY", "TRAIL")),
    Case("env-joined-words", "Environment=B=b C=c\n"
                             "ExecStart={bin}/rec {out}/main /bin/true $B$C x${B}${C}y $B ${B}${C} a$B\n", seen=("B", "C")),
    Case("specifiers", "Environment=S=%n/%I/%p\n"
                       "ExecStart={bin}/rec {out}/main /bin/true %n %N %p %i %I %h %u %% 100%%\n",
         name="diff-spec@a\\x2db.service", seen=("S",)),
    Case("dollar-dollar", "ExecStart={bin}/rec {out}/main /bin/sh -c 'echo $$HOME $${HOME}'\n"),
    Case("plain-executable-name", "ExecStart={bin}/rec {out}/main true\n"),
    Case("workdir-default", "ExecStart={bin}/rec {out}/main\n"),
    Case("workdir-optional-missing", "WorkingDirectory=-/no/such/dir\nExecStart={bin}/rec {out}/main\n"),
    Case("workdir-tilde", "WorkingDirectory=~\nExecStart={bin}/rec {out}/main\n"),
    Case("workdir-missing", "WorkingDirectory=/no/such/dir\nExecStart={bin}/rec {out}/main\n"
                            "ExecStopPost=/bin/true\n"),
    Case("success-exit-status", "ExecStart={bin}/rec {out}/main /bin/sh -c 'exit 42'\nSuccessExitStatus=42\n"
                                "Restart=on-failure\nExecStopPost={bin}/rec {out}/stoppost\n"),
    Case("success-exit-signal", "ExecStart={bin}/rec {out}/main {bin}/die USR1\nSuccessExitStatus=SIGUSR1\n"
                                "Restart=on-failure\nExecStopPost={bin}/rec {out}/stoppost\n"),
    Case("restart-prevent-exit-status", "ExecStart={bin}/rec {out}/main /bin/sh -c 'exit 3'\nRestart=always\n"
                                        "RestartPreventExitStatus=3\nExecStopPost={bin}/rec {out}/stoppost\n"),
    Case("restart-force-exit-status", "ExecStart={bin}/rec {out}/main /bin/true\nRestart=no\nRestartSec=50ms\n"
                                      "RestartForceExitStatus=0\n", unit="StartLimitIntervalSec=30s\nStartLimitBurst=2\n"),
    Case("relative-exec-start", "ExecStart=./x.sh\n"),
    Case("unknown-specifier", "ExecStart=/bin/date +%F\n"),
    Case("exec-stop-fails", "ExecStart={bin}/rec {out}/main /bin/sleep 300\nExecStop={bin}/rec {out}/stop /bin/false\n"
                            "ExecStop={bin}/rec {out}/stoptwo\nExecStopPost={bin}/rec {out}/stoppost\n", stop_after_s=1.0),
    Case("start-pre-timeout", "ExecStartPre={bin}/rec {out}/pre /bin/sleep 300\nExecStart={bin}/rec {out}/main\n"
                              "TimeoutStartSec=1s\nExecStopPost={bin}/rec {out}/stoppost\n"),
    Case("main-failure-ignored", "ExecStart=-{bin}/rec {out}/main /bin/false\nExecStop={bin}/rec {out}/stop\n"
                                 "ExecStopPost={bin}/rec {out}/stoppost\n"),
    *[Case(f"child-left-after-clean-exit-{mode}",
           "ExecStart={bin}/rec {out}/main /bin/sh -c 'sleep 300 & echo $$! > {out}/before.pid; sleep 0.5'\n"
           f"KillMode={mode}\nExecStop={{bin}}/rec {{out}}/stop\n" + STOP) for mode in ("control-group", "mixed")],
]


# --- running the two sides -------------------------------------------------------------------
def _install_scripts(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in SCRIPTS.items():
        path = folder / name
        path.write_text(textwrap.dedent(text).lstrip())
        path.chmod(0o755)
    return folder


def _run_side(case: Case, side: str, root: Path, scripts: Path) -> dict:
    out = root / side / case.id
    out.mkdir(parents=True)
    for name, text in case.files.items():
        (out / name).write_text(text)
    body = f"[Unit]\nDescription=differential case {case.id}\n{case.unit}\n[Service]\n{case.service}"
    path = out / case.unit_name
    path.write_text(body.replace("{bin}", str(scripts)).replace("{out}", str(out)))
    run = UnitRun(path, stop_after_s=case.stop_after_s, real=side == "real")
    try:
        state = run.wait(120)
    except LabkitError as err:
        state = f"refused: {err}"
    finally:
        run.close()
    return _summary(run.events, out, state)


def _summary(events: list[dict], out: Path, state: str) -> dict:
    final = [e for e in events if e["event"] in ("failed", "stopped")]
    stopping = [e for e in events if e["event"] == "stopping"]
    # what the unit reported, up to its final event (after it, labkit ends what KillMode= left)
    until = events.index(final[-1]) if final else len(events)
    mains = [e for e in events[:until] if e["event"] == "exit" and e.get("phase") == "ExecStart"]
    ending = [e for e in events if e["event"] == "kill" and "ending" in e.get("reason", "")]
    return {
        "state": state.split(":")[0],
        "refusal": state.partition(": ")[2],
        "result": final[-1].get("result") if final else None,
        "restarts": sum(e["event"] == "restart" for e in events),
        "main_exit": (mains[-1]["code"], mains[-1]["status"]) if mains else None,
        "hooks": _records(out),
        "leftovers": len(ending[-1]["pids"]) if ending else 0,
        "stop_s": final[-1]["t"] - stopping[0]["t"] if final and stopping else None,
        "events": events,
    }


def _records(out: Path) -> dict[str, dict]:
    records = {}
    for path in sorted(out.iterdir()):
        if not re.fullmatch(r"[a-z]+\.\d+", path.name):
            continue
        record: dict = {"args": [], "env": {}, "alive": {}}
        for line in path.read_text().splitlines():
            key, _, value = line.partition("=")
            if key.startswith("env:"):
                record["env"][key[4:]] = value
            elif key.startswith("alive:"):
                record["alive"][key[6:]] = value
            elif key == "arg":
                record["args"].append(value)
            else:
                record[key] = value
        records[path.name] = record
    return records


def _normalized(summary: dict, out: Path, seen: tuple[str, ...]) -> dict:
    """The summary with the side's folder and pids replaced by placeholders, env cut to ``seen``."""
    mains = {r["pid"] for name, r in summary["hooks"].items() if name.startswith("main.")}
    hooks = {}
    for name, record in summary["hooks"].items():
        env = {k: v for k, v in record["env"].items() if k in ALWAYS_SEEN + seen}
        if "MAINPID" in env:
            env["MAINPID"] = "<main pid>" if env["MAINPID"] in mains else "<other pid>"
        args = ["<main pid>" if arg in mains else arg for arg in record["args"]]
        text = repr({"cwd": record["cwd"], "args": args, "env": env, "alive": record["alive"]})
        hooks[name] = eval(text.replace(str(out), "<OUT>"))  # noqa: S307 - our own repr
    return {**summary, "hooks": hooks, "refusal": summary["refusal"].replace(str(out), "<OUT>")}


@pytest.fixture(scope="module")
def outcomes(request, tmp_path_factory) -> dict[str, dict]:
    """Run every selected case on both sides (in threads); {case id: {"real": ..., "runner": ...}}."""
    root = tmp_path_factory.mktemp("differential")
    scripts = _install_scripts(root / "bin")
    wanted = {item.callspec.params["case"].id for item in request.session.items
              if getattr(item, "module", None) is request.module and hasattr(item, "callspec")}  # nbval cells have none
    chosen = [case for case in CASES if case.id in wanted]
    results: dict[str, dict] = {case.id: {} for case in chosen}
    lock = threading.Lock()

    def run(case: Case, side: str) -> None:
        summary = _run_side(case, side, root, scripts)
        with lock:
            results[case.id][side] = _normalized(summary, root / side / case.id, case.seen)

    with ThreadPoolExecutor(WORKERS) as pool:
        # the slow cases (stops, restarts) first, so that the pool ends together
        order = sorted(chosen, key=lambda c: (c.stop_after_s is None, "restart" not in c.id))
        for future in [pool.submit(run, case, side) for case in order for side in ("real", "runner")]:
            future.result()
    return results


def test_the_cases_are_many_and_named_once():
    assert len(CASES) >= 40 and len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_the_runner_matches_systemd(case: Case, outcomes):
    real, runner = outcomes[case.id]["real"], outcomes[case.id]["runner"]
    compared = ("state", "result", "restarts", "main_exit", "leftovers")
    for name in compared:
        if name in case.known:
            continue
        assert runner[name] == real[name], _explain(name, real, runner)
    if real["state"] == "refused" and "refusal" not in case.known:
        words = real["refusal"].partition(f"systemd refuses {case.unit_name}: ")[2]  # systemd's own
        assert words and words in runner["refusal"], (real["refusal"], runner["refusal"])
    if "hooks" not in case.known:
        assert sorted(runner["hooks"]) == sorted(real["hooks"]), _explain("hooks", real, runner)
        for name in real["hooks"]:
            assert runner["hooks"][name] == real["hooks"][name], f"{name}: " + _explain("hooks", real, runner)
    if real["stop_s"] is not None and "stop_s" not in case.known:
        assert abs(runner["stop_s"] - real["stop_s"]) <= TIMER_SLACK_S + MARGIN_S, _explain("stop_s", real, runner)


def _explain(name: str, real: dict, runner: dict) -> str:
    def events(side: dict) -> str:
        return "\n    ".join(str({k: v for k, v in e.items() if k not in ("unit", "real")}) for e in side["events"])

    return (f"{name}: real systemd {real[name]!r}, runner {runner[name]!r}\n  real events:\n    {events(real)}\n"
            f"  runner events:\n    {events(runner)}")
