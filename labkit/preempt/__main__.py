"""``python -m labkit.preempt [options] -- COMMAND ...``: the same as ``labkit preempt-test``."""

from __future__ import annotations

import argparse
import sys

from labkit.errors import BadArgument, LabkitError
from labkit.preempt.cli import add_arguments, main


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise BadArgument(f"{message} (see `{self.prog} --help`)")


def run(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, command = argv[:cut], argv[cut + 1:]
    parser = _Parser(prog="labkit preempt-test")
    add_arguments(parser)
    try:
        return main(parser.parse_args(argv), command)
    except LabkitError as err:
        print(f"labkit preempt-test: error: {err}", file=sys.stderr)
        return err.exit_code


if __name__ == "__main__":
    sys.exit(run())
