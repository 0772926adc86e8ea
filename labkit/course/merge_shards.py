"""``labkit grade merge``: join the folders of graded shards into one gradebook, atomically.

Each input folder is what ``labkit grade --shard K/N --out DIR`` wrote: ``gradebook.csv``, its
state (the digest of each submission and solution), ``details/`` and ``feedback/``, and
``.shard.json`` (which shard, and whose submissions it was given). The merge:

- takes every row once. The same student and notebook in two folders is fine when both
  graded the same submission with the same result (a shard run twice, a merge merged again);
  a row whose grading failed on the grader's side gives way to a real grade. Anything else is
  a **conflict**: listed, and nothing is written (a gradebook that picked one of two grades
  silently is worse than none);
- reports what is **missing**: a shard of the split that no folder holds, a submission a
  shard was given but did not grade (it stopped early: grade it again, it resumes), and,
  given ``--roster`` or ``--submissions``, a student or a notebook with no row at all;
- copies each chosen row's details and feedback page (a file already identical is left
  alone), then replaces ``gradebook.csv`` and its state, each with an atomic rename: the
  gradebook is written last, so a merge that stopped halfway leaves the previous gradebook
  whole and running it again finishes it. Merging the same folders twice changes nothing.

The merged folder is a grading folder like any other: ``labkit grade`` run on it later grades
only what is new or changed.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from labkit.course._gradebook import CSV_NAME, DETAILS_DIR, GRADER_ERROR, read_gradebook, read_state, write_gradebook
from labkit.errors import BadArgument

_SAME = ("score", "max_score", "status")  #: what must agree; protections may differ between machines


@dataclass(frozen=True)
class Candidate:
    """One folder's row for a student and notebook."""

    folder: Path
    row: dict[str, str]
    digest: str


@dataclass
class MergeResult:
    """What ``merge`` found and did."""

    out: Path
    rows: int = 0
    written: bool = False
    copied: int = 0  #: details and feedback files copied (identical ones are not)
    conflicts: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Written, with nothing missing."""
        return self.written and not self.missing


def merge(folders: list[str | os.PathLike[str]], out: str | os.PathLike[str], *,
          roster: list[str] | None = None, expected: list[tuple[str, str]] | None = None) -> MergeResult:
    """Merge the grading ``folders`` into ``out``.

    Args:
        folders: the shards' output folders, in order of preference for identical rows.
        out: the merged folder (created; its gradebook replaced).
        roster: students who must each have at least one row.
        expected: (student, notebook) pairs that must each have a row.

    Returns:
        A :class:`MergeResult`; nothing is written when ``conflicts`` is not empty.

    Raises:
        BadArgument: a folder that does not exist or holds no gradebook nor shard record, or
            ``out`` among the inputs.
    """
    from labkit.course.shard import read_record

    dirs = [Path(folder) for folder in folders]
    target = Path(out)
    for folder in dirs:
        if not folder.is_dir():
            raise BadArgument(f"no folder at {folder}")
        if not (folder / CSV_NAME).is_file() and read_record(folder) is None:
            raise BadArgument(f"{folder}: not a grading folder (no {CSV_NAME}, no shard record)")
        if target.exists() and folder.resolve() == target.resolve():
            raise BadArgument(f"--out {target} is also an input; merge into another folder")
    result = MergeResult(target)
    chosen = _choose(dirs, result)
    result.missing += _missing_shards(dirs, chosen)
    have = set(chosen)
    result.missing += [f"{student} {notebook}: no row (expected from --submissions)"
                       for student, notebook in sorted(set(expected or ()) - have)]
    students = {student for student, _ in have}
    result.missing += [f"{student}: no row at all (on the roster)" for student in roster or () if student not in students]
    result.rows = len(chosen)
    if result.conflicts:
        return result
    try:
        target.mkdir(parents=True, exist_ok=True)
        for (student, notebook), pick in sorted(chosen.items()):
            for sub, suffix in ((DETAILS_DIR, ".json"), ("feedback", ".html")):
                result.copied += _copy(pick.folder / sub / student / f"{notebook}{suffix}",
                                       target / sub / student / f"{notebook}{suffix}")
        rows = [pick.row for _, pick in sorted(chosen.items())]
        digests = {f"{student}/{notebook}": pick.digest for (student, notebook), pick in chosen.items() if pick.digest}
        write_gradebook(target, rows, digests)
    except OSError as err:
        raise BadArgument(f"--out {target}: cannot write the merge: {err.strerror or err}") from err
    result.written = True
    return result


def _choose(dirs: list[Path], result: MergeResult) -> dict[tuple[str, str], Candidate]:
    found: dict[tuple[str, str], list[Candidate]] = {}
    for folder in dirs:
        digests = read_state(folder)
        for row in read_gradebook(folder / CSV_NAME):
            key = (row["student"], row["notebook"])
            found.setdefault(key, []).append(Candidate(folder, row, digests.get(f"{key[0]}/{key[1]}", "")))
    chosen = {}
    for key, candidates in sorted(found.items()):
        graded = [c for c in candidates if not c.row["status"].startswith(GRADER_ERROR)]
        if not graded:  # every copy failed on the grader's side (scores and reasons may differ):
            chosen[key] = candidates[0]  # none is a grade to compare; a rerun grades it
            continue
        first = graded[0]
        differ = [c for c in graded[1:] if any(c.row[name] != first.row[name] for name in _SAME)
                  or (c.digest and first.digest and c.digest != first.digest)]
        # a grader error gives way to a grade of the same submission only, never to an older one
        differ += [c for c in candidates if c not in graded and c.digest and first.digest and c.digest != first.digest]
        if differ:
            result.conflicts.append(f"{key[0]} {key[1]}: " + "; ".join(
                f"{_grade(c.row)} in {c.folder}" + (" (another submission or solution)"
                                                     if c.digest != first.digest else "")
                for c in [first, *differ]))
        chosen[key] = first
    return chosen


def _missing_shards(dirs: list[Path], chosen: dict[tuple[str, str], Candidate]) -> list[str]:
    from labkit.course.shard import read_record

    missing = []
    splits: dict[int, set[int]] = {}
    for folder in dirs:
        record = read_record(folder)
        if record is None:
            continue
        splits.setdefault(int(record["of"]), set()).add(int(record["shard"]))
        undone = sorted(key for key in record.get("submissions", [])
                        if tuple(str(key).split("/", 1)) not in chosen)
        if undone:
            missing.append(f"shard {record['shard']}/{record['of']} ({folder}) did not grade {len(undone)} of its "
                           f"{len(record.get('submissions', []))} submissions, e.g. {undone[0]}: run it again")
    if len(splits) > 1:
        missing.append("the folders come from different splits (" + ", ".join(f"N={n}" for n in sorted(splits)) +
                       "): some shards may be missing")
    for count, present in sorted(splits.items()):
        missing += [f"shard {index}/{count}: no folder given" for index in range(1, count + 1) if index not in present]
    return missing


def _copy(source: Path, target: Path) -> int:
    from labkit._atomic import write_atomic

    try:
        data = source.read_bytes()
    except FileNotFoundError:
        return 0
    try:
        if target.read_bytes() == data:
            return 0
    except OSError:
        pass
    target.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(target, data)
    return 1


def _grade(row: dict[str, str]) -> str:
    return f"{row['score']}/{row['max_score']} {row['status']}"


# -- the command line ----------------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``labkit grade merge``."""
    parser.add_argument("folders", nargs="+", type=Path, metavar="SHARD_DIR",
                        help="the --out folders of `labkit grade --shard K/N`")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR",
                        help="the merged folder: gradebook.csv, details/, feedback/")
    parser.add_argument("--roster", type=Path, default=None, metavar="CSV",
                        help="report roster students with no row (a CSV with a 'student' column)")
    parser.add_argument("--submissions", type=Path, nargs="+", default=None, metavar="PATH",
                        help="report submissions (notebooks or folders, as `labkit grade` reads them) with no row")


def main(args: argparse.Namespace) -> int:
    """0: merged, nothing missing; 1: conflicts (nothing written) or something missing."""
    from labkit.course.roster import read_roster
    from labkit.course.shard import find_submissions

    roster = list(read_roster(args.roster)) if args.roster is not None else None
    expected = ([(sub.student, sub.notebook) for sub in find_submissions(args.submissions)]
                if args.submissions else None)
    result = merge(args.folders, args.out, roster=roster, expected=expected)
    for line in result.conflicts:
        print(f"conflict: {line}", file=sys.stderr)
    for line in result.missing:
        print(f"missing: {line}", file=sys.stderr)
    if not result.written:
        print(f"labkit grade merge: {len(result.conflicts)} conflict(s); nothing written to {result.out}",
              file=sys.stderr)
        return 1
    print(f"merged {result.rows} rows from {len(args.folders)} folder(s) into {result.out / CSV_NAME} "
          f"({result.copied} files copied){'; ' + str(len(result.missing)) + ' missing' if result.missing else ''}")
    return 0 if result.ok else 1


__all__ = ["MergeResult", "add_arguments", "main", "merge"]
