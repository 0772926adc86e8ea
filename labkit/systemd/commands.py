"""``labkit unit lint|run|logs|timer``: the command-line side of :mod:`labkit.systemd`."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime

from labkit.errors import BadArgument


def add_arguments(sub) -> None:
    """Add the ``unit`` actions to a sub-parser."""
    actions = sub.add_subparsers(dest="unit_command", metavar="ACTION", parser_class=type(sub))
    actions.required = True
    lint = actions.add_parser("lint", help="find mistakes in unit files (exit 1 on errors)")
    lint.add_argument("files", nargs="+", metavar="FILE")
    lint.add_argument("--json", action="store_true", help="one JSON list of findings")
    lint.add_argument("--no-systemd-analyze", action="store_true", help="labkit's rules only")
    run = actions.add_parser("run", help="run a .service with systemd's semantics (Ctrl-C stops it)")
    run.add_argument("file", metavar="FILE")
    run.add_argument("--json", action="store_true", help="events as JSON lines")
    run.add_argument("--for", dest="run_for_s", type=float, default=None, metavar="SEC",
                     help="stop the unit after SEC seconds if it still runs")
    run.add_argument("--stop-after", dest="stop_after_s", type=float, default=None, metavar="SEC",
                     help="`systemctl stop` the unit after SEC seconds")
    run.add_argument("--real", action="store_true",
                     help="run it on the real systemd user manager (a copy in its unit folder), where one runs")
    logs = actions.add_parser("logs", help="the journal of a unit run by labkit (like journalctl -u)")
    logs.add_argument("name", help="the unit's file name, e.g. train.service")
    logs.add_argument("--lines", "-n", type=int, default=None)
    timer = actions.add_parser("timer", help="when a .timer (or an OnCalendar= expression) elapses next")
    timer.add_argument("what", metavar="FILE.timer|EXPRESSION")
    timer.add_argument("--iterations", type=int, default=5)


def main(args: argparse.Namespace) -> int:
    """Run one ``labkit unit`` action."""
    return {"lint": _lint, "run": _run, "logs": _logs, "timer": _timer}[args.unit_command](args)


def _lint(args: argparse.Namespace) -> int:
    from labkit.systemd.lint import has_errors, lint_file

    findings = []
    for path in args.files:
        findings += lint_file(path, use_systemd_analyze=not args.no_systemd_analyze)
    if args.json:
        print(json.dumps([f.as_dict() for f in findings], indent=1))
    else:
        for finding in findings:
            print(finding)
        errors = sum(f.severity == "error" for f in findings)
        print(f"{len(args.files)} file(s): {errors} error(s), {len(findings) - errors} other finding(s)",
              file=sys.stderr)
    return 1 if has_errors(findings) else 0


def _run(args: argparse.Namespace) -> int:
    from labkit.systemd.journal import Journal, describe
    from labkit.systemd.runner import check_options, supervise
    from labkit.systemd.service import ServiceSpec
    from labkit.systemd.unitfile import load

    check_options(args.stop_after_s, args.run_for_s)
    unit = load(args.file)
    if unit.type != ".service":
        raise BadArgument(f"{unit.name}: `labkit unit run` runs .service units; for a timer use `labkit unit timer`")
    spec = None if args.real else ServiceSpec.from_unit(unit)  # --real: systemd judges the unit itself
    journal = Journal(unit.name)

    def emit(record: dict) -> None:
        line = json.dumps(record) if args.json else f"{record['t']:8.3f}  {describe(record)}"
        print(line, flush=True)

    if args.real:
        state = _run_real(unit, journal, emit, args)
    else:
        assert spec is not None  # read above unless --real
        state = supervise(spec, journal, emit, stop_after_s=args.stop_after_s, run_for_s=args.run_for_s)
    if not args.json:
        print(f"{unit.name}: {state}; journal: labkit unit logs {unit.name}", file=sys.stderr)
    return 0 if state == "inactive" else 1


def _run_real(unit, journal, emit, args: argparse.Namespace) -> str:
    import signal

    from labkit.systemd.real import run_real

    asked = []
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda *_: asked.append(True))

    def report(record: dict) -> None:
        journal.event(record)
        emit(record)

    limit = min(x for x in (args.stop_after_s, args.run_for_s, float("inf")) if x is not None)
    return run_real(unit, report, stop_after_s=None if limit == float("inf") else limit,
                    stop_requested=lambda: bool(asked))


def _logs(args: argparse.Namespace) -> int:
    from labkit.systemd.journal import read

    print(read(args.name, args.lines), end="")
    return 0


def _timer(args: argparse.Namespace) -> int:
    from labkit.systemd.timers import describe_timer

    if args.iterations < 1:
        raise BadArgument("--iterations must be at least 1")
    for line in describe_timer(args.what, args.iterations, datetime.now().astimezone()):
        print(line)
    return 0


def add_manager_arguments(sub) -> None:
    """Add the ``systemd`` actions (a real user manager labkit starts) to a sub-parser."""
    actions = sub.add_subparsers(dest="systemd_command", metavar="ACTION", parser_class=type(sub))
    actions.required = True
    start = actions.add_parser("start", help="start a private systemd user manager (and journald) here")
    start.add_argument("--config-home", default=None, metavar="DIR",
                       help="its XDG_CONFIG_HOME (default: yours; units go in DIR/systemd/user)")
    start.add_argument("--json", action="store_true")
    actions.add_parser("stop", help="stop it, its services and the journald it started; remove what it made")
    status = actions.add_parser("status", help="whether it runs, or why it cannot start")
    status.add_argument("--json", action="store_true")
    actions.add_parser("env", help="print `export XDG_RUNTIME_DIR=... XDG_CONFIG_HOME=...` for a shell: "
                                   "eval \"$(labkit systemd env)\"")


def manager_main(args: argparse.Namespace) -> int:
    """Run one ``labkit systemd`` action."""
    import shlex
    from dataclasses import asdict

    from labkit.errors import LabkitError
    from labkit.systemd import manager

    if args.systemd_command == "start":
        found = manager.find()
        started = found or manager.start(config_home=args.config_home)
        if args.json:
            print(json.dumps({**asdict(started), "already_running": found is not None}))
        else:
            print(f"systemd user manager {'already running' if found else 'started'}: pid {started.pid}, "
                  f"units in {started.unit_dir}", file=sys.stderr)
            print(f"to use it from a shell: eval \"$(labkit systemd env)\"", file=sys.stderr)
        return 0
    if args.systemd_command == "stop":
        stopped = manager.stop()
        print("stopped the systemd user manager" if stopped else "no systemd user manager of labkit's was running",
              file=sys.stderr)
        return 0
    if args.systemd_command == "env":
        found = manager.find()
        if found is None:
            raise LabkitError("no systemd user manager of labkit's runs: `labkit systemd start` first")
        print(f"export XDG_RUNTIME_DIR={shlex.quote(found.runtime_dir)} XDG_CONFIG_HOME={shlex.quote(found.config_home)}; "
              "unset DBUS_SESSION_BUS_ADDRESS")
        return 0
    state = manager.status()
    if args.json:
        print(json.dumps(state))
    elif state["running"]:
        print(f"running: pid {state['pid']}, answers: {state['answers']}, units in {state['unit_dir']}, "
              f"cgroup2 controllers: {' '.join(state['controllers']) or 'none'}")
    else:
        print("not running; " + ("`labkit systemd start` can start one" if state["can_start"]
                                 else f"cannot start here: {state['reason']}"))
    return 0
