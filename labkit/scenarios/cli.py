"""``labkit scenario list | start NAME | status | hint | check | give-up | reset``.

Register in ``labkit/cli.py`` with :func:`add_arguments` on a sub-parser and :func:`main` on the
parsed arguments; ``python -m labkit.scenarios`` runs the same commands on their own.
Exit codes: 0 done or passed, 1 check failed or the thing asked failed, 2 bad input.
"""

from __future__ import annotations

import argparse
import sys

from labkit.errors import BadArgument, LabkitError
from labkit.scenarios import engine

COMMANDS = ("list", "start", "status", "hint", "check", "give-up", "reset")


def _seed(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}")
    return int(text)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``scenario`` sub-commands to ``parser`` (the ``scenario`` sub-parser of ``labkit``)."""
    commands = parser.add_subparsers(dest="scenario_command", metavar="COMMAND", required=True)
    commands.add_parser("list", help="every scenario, its topic, and whether it can run here")
    start = commands.add_parser("start", help="set up a broken machine and tell its story")
    start.add_argument("name", help="a name from `labkit scenario list`")
    start.add_argument("--seed", type=_seed, default=None, help="draw this instance (default: random)")
    commands.add_parser("status", help="the active scenario: name, seed, time, hints used")
    commands.add_parser("hint", help="the next hint (first a direction, last the commands)")
    check = commands.add_parser("check", help="is it fixed? says what is still wrong")
    check.add_argument("--cause", default=None, help="name the cause, where the goal asks for it")
    commands.add_parser("give-up", help="show a worked fix and end the scenario")
    commands.add_parser("reset", help="stop and remove everything the scenario made")


def _list() -> int:
    caps = engine.capabilities()
    rows = []
    for scenario in engine.registry().values():
        reason = engine.why_cannot_run(scenario, caps)
        rows.append((scenario.name, scenario.topic, f"skipped: {reason}" if reason else "ok", scenario.summary))
    width = max(len(r[0]) for r in rows)
    for name, topic, verdict, summary in rows:
        print(f"{name:<{width}}  {topic:<11}  {verdict if verdict != 'ok' else summary}")
    return 0


def _start(name: str, seed: int | None) -> int:
    scenario, ctx = engine.start(name, seed)
    print(f"scenario {scenario.name} (seed {ctx.seed}, topic {scenario.topic})\n")
    print(scenario.story(ctx.data))
    print("\n`labkit scenario check` when you think it is fixed; `labkit scenario hint` for help.")
    return 0


def _status() -> int:
    scenario, ctx = engine.active()
    minutes, seconds = divmod(int(engine.elapsed_s(ctx)), 60)
    print(f"scenario {scenario.name}  seed {ctx.seed}  elapsed {minutes}m{seconds:02d}s  "
          f"hints used {ctx.state['hints_used']}  checks {ctx.state.get('checks', 0)}")
    return 0


def _check(cause: str | None) -> int:
    outcome = engine.check({"cause": cause} if cause else None)
    if outcome.problems:
        print("not yet:")
        for problem in outcome.problems:
            print(f"  - {problem}")
        return 1
    print(f"passed in {outcome.seconds:.0f} s with {outcome.hints_used} hint(s); everything the scenario made "
          "is removed (`labkit progress` lists the result)")
    return 0


def run(args: argparse.Namespace) -> int:
    """Run the parsed command; errors propagate as :class:`LabkitError`."""
    command = args.scenario_command
    if command == "list":
        return _list()
    if command == "start":
        return _start(args.name, args.seed)
    if command == "status":
        return _status()
    if command == "hint":
        number, total, text = engine.hint()
        print(f"hint {number}/{total}: {text}")
        return 0
    if command == "check":
        return _check(args.cause)
    if command == "give-up":
        print(engine.give_up())
        print("\nscenario ended; everything it made is removed")
        return 0
    if command == "reset":
        name = engine.reset()
        print(f"scenario {name} reset: its processes, files and cgroups are gone" if name else
              "no scenario was active")
        return 0
    raise BadArgument(f"unknown scenario command {command!r}; one of {', '.join(COMMANDS)}")


def main(args: argparse.Namespace) -> int:
    """Run the parsed command; a :class:`LabkitError` becomes one line on stderr and its exit code."""
    try:
        return run(args)
    except LabkitError as err:
        print(f"labkit: error: {err}", file=sys.stderr)
        return err.exit_code


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"labkit scenario: error: {message} (see `{self.prog} --help`)", file=sys.stderr)
        raise SystemExit(2)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse ``argv`` as ``labkit scenario`` would."""
    parser = _Parser(prog="labkit scenario", description="Broken machines to fix from a real terminal.")
    add_arguments(parser)
    return parser.parse_args(argv)
