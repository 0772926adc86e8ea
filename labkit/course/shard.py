"""Which submissions one grader grades: the folder layouts it reads, and ``--shard K/N``.

A class is split **by student**, never by notebook, so every notebook of one student lands in
the same shard (its feedback folder is whole, and a student's rows come from one machine). The
split is a stable hash of the student's name (the first 8 bytes of its SHA-256, modulo N): the
same on every machine, in every Python and every run, unlike :func:`hash`, which is salted per
process (``PYTHONHASHSEED``, see the Python docs of ``object.__hash__``). N machines given the
same folder and ``--shard 1/N`` ... ``N/N`` grade disjoint parts that cover the class.

Layouts :func:`find_submissions` reads under a folder (the first that matches wins):

- nbgrader's exchange: ``<course>/inbound/<student>+<assignment>+<timestamp>[+<random>]/*.ipynb``
  (what ``nbgrader submit`` writes; a student who submitted twice has two folders: the latest
  timestamp is taken, as ``nbgrader collect`` does);
- nbgrader's course folder: ``submitted/<student>/<assignment>/*.ipynb`` (or labkit's own
  ``submitted/<student>/*.ipynb``);
- a flat folder: ``<student>/*.ipynb`` (an LMS download unpacked one folder per student).
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labkit.course._merge import _STUDENT, Submission, submissions_from
from labkit.errors import BadArgument

SHARD_NAME = ".shard.json"  #: written in a shard's output folder: which shard, of how many
_SHARD = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")
_SKIP = (".ipynb_checkpoints",)


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` (1-based, as SLURM's and GNU parallel's numbering) of ``count``."""

    index: int
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def holds(self, student: str) -> bool:
        """Whether ``student`` is graded by this shard."""
        return shard_of(student, self.count) == self.index


def parse_shard(text: str) -> Shard:
    """``"K/N"`` -> Shard(K, N), with 1 <= K <= N.

    Raises:
        BadArgument: anything else.

    >>> parse_shard("2/4")
    Shard(index=2, count=4)
    """
    match = _SHARD.match(text or "")
    if not match:
        raise BadArgument(f"--shard expects K/N (e.g. 1/4), got {text!r}")
    index, count = int(match[1]), int(match[2])
    if not 1 <= index <= count:
        raise BadArgument(f"--shard {text}: K must be between 1 and N (shards are numbered from 1)")
    return Shard(index, count)


def shard_of(student: str, count: int) -> int:
    """The shard (1..count) that grades ``student``: a stable hash, the same everywhere.

    >>> shard_of("alice", 4)
    4
    """
    if count < 1:
        raise BadArgument(f"the number of shards must be at least 1, got {count}")
    value = int.from_bytes(hashlib.sha256(student.encode("utf-8")).digest()[:8], "big")
    return value % count + 1


def select(submissions: Iterable[Submission], shard: Shard | None) -> list[Submission]:
    """The submissions of the students ``shard`` grades (all of them for None)."""
    return [sub for sub in submissions if shard is None or shard.holds(sub.student)]


def find_submissions(paths: Iterable[str | os.PathLike[str]]) -> list[Submission]:
    """Submissions from notebook paths and folders, in a stable order (student, notebook).

    A notebook path is named as :func:`submissions_from` does; a folder is read in the first
    layout of the module docstring it matches.

    Raises:
        BadArgument: a path that does not exist, a folder holding no notebook, a bad name, or
            two submissions of the same student and notebook.
    """
    files: list[Path] = []
    named: list[Submission] = []
    for entry in paths:
        path = Path(entry)
        if path.is_dir():
            found = _from_folder(path)
            if not found:
                raise BadArgument(f"{path}: no submission found (expected <student>/*.ipynb, "
                                  "submitted/<student>/[<assignment>/]*.ipynb or nbgrader's inbound/)")
            named += found
        else:
            files.append(path)
    subs = submissions_from(files) + named
    seen: dict[tuple[str, str], Path] = {}
    for sub in subs:
        if not _STUDENT.match(sub.student) or sub.student in (".", ".."):  # folder names come from students
            raise BadArgument(f"bad student name {sub.student!r} for {sub.path}: it must name one folder")
        key = (sub.student, sub.notebook)
        if key in seen:
            raise BadArgument(f"{sub.path} and {seen[key]} are both {sub.student}'s {sub.notebook}; "
                              "grade them separately")
        seen[key] = sub.path
    return sorted(subs, key=lambda sub: (sub.student, sub.notebook))


def _from_folder(folder: Path) -> list[Submission]:
    inbound = folder if folder.name == "inbound" else folder / "inbound"
    if inbound.is_dir():
        return _from_exchange(inbound)
    submitted = folder if folder.name == "submitted" else folder / "submitted"
    if submitted.is_dir():
        return [Submission(path, path.relative_to(submitted).parts[0], path.stem)
                for path in _notebooks(submitted, depth=2) + _notebooks(submitted, depth=3)]
    return [Submission(path, path.parent.name, path.stem) for path in _notebooks(folder, depth=2)]


def _from_exchange(inbound: Path) -> list[Submission]:
    """The latest submission of each student and assignment in nbgrader's ``inbound/``."""
    latest: dict[tuple[str, str], tuple[str, Path]] = {}
    for entry in sorted(inbound.iterdir()):
        parts = entry.name.split("+")
        if not entry.is_dir() or len(parts) < 3:
            continue
        student, assignment, stamp = parts[0], parts[1], parts[2]
        key = (student, assignment)
        # nbgrader's timestamps ("2026-11-29 10:00:00.123456 UTC") sort as text within one format.
        if key not in latest or stamp > latest[key][0]:
            latest[key] = (stamp, entry)
    found = []
    for (student, _), (_, entry) in sorted(latest.items()):
        found += [Submission(path, student, path.stem) for path in _notebooks(entry, depth=1)]
    return found


def _notebooks(folder: Path, depth: int) -> list[Path]:
    """``*.ipynb`` exactly ``depth`` levels under ``folder`` (checkpoints skipped), sorted."""
    pattern = "/".join(["*"] * (depth - 1) + ["*.ipynb"])
    return sorted(path for path in folder.glob(pattern)
                  if path.is_file() and not any(part in _SKIP or part.startswith(".")
                                                for part in path.relative_to(folder).parts))


def write_record(out_dir: str | os.PathLike[str], shard: Shard, submissions: Iterable[Submission]) -> None:
    """Note in ``out_dir`` which shard it holds and whose submissions (``labkit grade merge``
    reads it to find a shard that is missing)."""
    from labkit._atomic import write_json_atomic

    subs = list(submissions)
    write_json_atomic(Path(out_dir) / SHARD_NAME, {
        "version": 1, "shard": shard.index, "of": shard.count,
        "submissions": sorted({f"{sub.student}/{sub.notebook}" for sub in subs})})


def read_record(out_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """What :func:`write_record` wrote in ``out_dir``, or None (not a shard, or unreadable)."""
    import json

    try:
        data = json.loads((Path(out_dir) / SHARD_NAME).read_text())
        Shard(int(data["shard"]), int(data["of"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return data if isinstance(data, dict) else None
