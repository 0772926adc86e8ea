"""``labkit course build``: turn ``solutions/NN_*.ipynb`` into ``exercises/NN_*.ipynb``.

Like nbgrader's generate_assignment (ClearSolutions, ClearHiddenTests, ClearOutput, LockCells,
ComputeChecksums: the same cells nbgrader 0.9.6 releases, see tests/test_nbgrader.py) but with
byte-for-byte reproducible output, so ``--check`` in CI can prove that the committed
exercises are exactly what the solutions produce. The per-notebook work is in transform.py;
this module handles folders, ``--check`` and the command line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from labkit.course.transform import build_notebook, display_path, read_notebook, render
from labkit.errors import BadArgument

__all__ = ["BuildReport", "add_arguments", "build", "build_notebook", "find_repo_root", "main",
           "read_notebook", "render"]

PATTERN = "[0-9][0-9]_*.ipynb"  #: lesson notebooks: zero-padded order, then the topic


@dataclass(frozen=True)
class BuildReport:
    """What ``build`` found for each exercise."""

    check: bool  #: True: compared only, wrote nothing
    written: tuple[Path, ...] = ()  #: exercises (re)written (build only)
    up_to_date: tuple[Path, ...] = ()  #: already what the solution produces
    out_of_date: tuple[Path, ...] = ()  #: differ from what the solution produces (check only)
    missing: tuple[Path, ...] = ()  #: no exercise yet for a solution (check only)
    extra: tuple[Path, ...] = ()  #: exercises without a solution: check reports, build removes

    @property
    def ok(self) -> bool:
        """Whether exercises/ now matches solutions/ (always true after a build)."""
        return not (self.out_of_date or self.missing or (self.check and self.extra))

    def problems(self) -> list[str]:
        """One line per exercise that does not match, saying what to run."""
        fix = "run `labkit course build`"
        found = [(p, f"{display_path(p)} is out of date: {fix}") for p in self.out_of_date]
        found += [(p, f"{display_path(p)} is missing: {fix}") for p in self.missing]
        if self.check:
            found += [(p, f"{display_path(p)} has no solution notebook: {fix} to remove it")
                      for p in self.extra]
        return [line for _, line in sorted(found)]

    def lines(self) -> list[str]:
        """One line per notebook for people, in lesson order: what was written, kept, removed."""
        found = [(p, f"wrote {display_path(p)}") for p in self.written]
        found += [(p, f"{display_path(p)} is up to date") for p in self.up_to_date]
        if not self.check:
            found += [(p, f"removed {display_path(p)}: it has no solution notebook") for p in self.extra]
        return [line for _, line in sorted(found)]

    def empty(self) -> bool:
        """Whether there was nothing to build or compare."""
        return not (self.written or self.up_to_date or self.out_of_date or self.missing or self.extra)


def build(solutions_dir: str | os.PathLike[str], exercises_dir: str | os.PathLike[str],
          check: bool = False) -> BuildReport:
    """Build every ``NN_*.ipynb`` of ``solutions_dir`` into ``exercises_dir``.

    Every notebook is built in memory first, so one bad solution writes nothing. Files are
    written atomically and only when their bytes change; an exercise whose solution is gone
    is removed. With ``check`` nothing is written: each exercise is compared with what would
    be written, as parsed JSON, so only content counts.

    >>> report = build("solutions", "exercises", check=True)  # doctest: +SKIP
    >>> report.ok  # doctest: +SKIP
    True

    Raises:
        BadArgument: ``solutions_dir`` is not a folder, or a solution notebook is invalid
            (see :func:`build_notebook`).
    """
    from labkit._atomic import write_atomic

    solutions, exercises = Path(solutions_dir), Path(exercises_dir)
    if not solutions.is_dir():
        raise BadArgument(f"no solutions folder at {display_path(solutions)}; pass --solutions DIR")
    built = {exercises / source.name: render(build_notebook(read_notebook(source), display_path(source)))
             for source in _lessons(solutions)}
    extra = tuple(path for path in _lessons(exercises) if path not in built)
    written: list[Path] = []
    up_to_date: list[Path] = []
    out_of_date: list[Path] = []
    missing: list[Path] = []
    for target, data in built.items():
        current = target.read_bytes() if target.is_file() else None
        if current == data or (check and current is not None and _same_json(current, data)):
            up_to_date.append(target)
        elif check:
            (missing if current is None else out_of_date).append(target)
        else:
            exercises.mkdir(parents=True, exist_ok=True)
            write_atomic(target, data)
            written.append(target)
    if not check:
        for path in extra:
            path.unlink()  # a generated folder: a renamed or deleted lesson must not linger
    return BuildReport(check, tuple(written), tuple(up_to_date), tuple(out_of_date),
                       tuple(missing), extra)


def find_repo_root(start: str | os.PathLike[str] | None = None) -> Path:
    """The nearest folder at or above ``start`` (default: cwd) holding pyproject.toml, else ``start``."""
    here = Path(start if start is not None else Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "pyproject.toml").is_file():
            return folder
    return here


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``labkit course build`` to ``parser``."""
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 naming each exercise that differs from its solution")
    parser.add_argument("--solutions", type=Path, default=None, metavar="DIR",
                        help="solution notebooks (default: solutions/ of the repository root)")
    parser.add_argument("--exercises", type=Path, default=None, metavar="DIR",
                        help="generated exercises (default: exercises/ of the repository root)")


def main(args: argparse.Namespace) -> int:
    """Run ``labkit course build`` with parsed ``args``; return the exit code (0 ok, 1 differs).

    The repository root is the nearest folder above the current one with a pyproject.toml.
    Errors in a solution notebook raise :class:`~labkit.errors.BadArgument` for the CLI to
    report (exit 2).
    """
    root = find_repo_root()
    solutions = args.solutions or root / "solutions"
    report = build(solutions, args.exercises or root / "exercises", check=args.check)
    for line in report.lines():
        print(line)
    for line in report.problems():
        print(line, file=sys.stderr)
    if report.empty():
        print(f"no solution notebooks ({PATTERN}) in {display_path(solutions)}")
    return 0 if report.ok else 1


def _lessons(folder: Path) -> list[Path]:
    return sorted(path for path in folder.glob(PATTERN) if path.is_file()) if folder.is_dir() else []


def _same_json(left: bytes, right: bytes) -> bool:
    try:
        return bool(json.loads(left) == json.loads(right))
    except ValueError:
        return False
