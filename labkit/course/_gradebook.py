"""``DIR/gradebook.csv``: one row per submission, rewritten atomically after every grade.

Columns: student, notebook, score, max_score, status (the public contract), then protections
(what held the submission: the judge, the sandbox user, namespaces; and what was missing). Beside it,
``DIR/.gradebook-state.json`` records, for each row, a digest of the submission and of the
solution it was graded against, so a rerun skips exactly what is already graded: a
resubmitted notebook, a changed solution or a row whose grading failed on the grader's side
(status ``grader error: ...``) is graded again. Both files are replaced with temp file +
rename, so an interrupted run leaves the previous complete version, never half a file.

``DIR/details/<student>/<notebook>.json`` keeps what the CSV has no room for: each test's
points and message, and the seconds the submission took (``labkit grade report`` reads them;
``labkit grade merge`` copies them with the feedback).
"""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FIELDS = ("student", "notebook", "score", "max_score", "status", "protections")
GRADER_ERROR = "grader error"  #: statuses starting so are the grader's failures: retried on rerun
#: in "grader error: not checkable here: ...; the submission: timeout in cell 9", what the
#: submission itself did (it ran, but some checks could not run on this machine)
SUBMISSION_STATUS = "; the submission: "
NOT_CHECKABLE_TEXT = "not checkable here"  #: how the message of a test that could not run here starts
CSV_NAME = "gradebook.csv"
STATE_NAME = ".gradebook-state.json"
DETAILS_DIR = "details"


@dataclass(frozen=True)
class TestResult:
    """One test cell of the solution, as it went for one submission."""

    __test__ = False  # not a pytest test class despite the name

    grade_id: str
    cell_index: int
    points: float  #: scored: max_points or 0
    max_points: float
    passed: bool
    message: str  #: "passed", the error it raised, or why it did not run

    @property
    def checked(self) -> bool:
        """False where the check could not run on the grading machine (``NotCheckable``)."""
        return not self.message.startswith(NOT_CHECKABLE_TEXT)


@dataclass(frozen=True)
class GradeResult:
    """The grade of one submission: a gradebook row, plus the details behind it."""

    student: str
    notebook: str  #: the notebook's name without .ipynb
    score: float
    max_score: float | None  #: None when no solution could be read
    status: str  #: "ok", "not answered", "timeout in cell 7", "kernel died in cell 4 (...)", ...
    submission: Path | None = None
    tests: tuple[TestResult, ...] = ()
    seconds: float = 0.0
    resumed: bool = False  #: read from an earlier run's gradebook, not graded now
    protections: str = ""  #: what held the submission (``_isolation.Isolation.describe``)

    @property
    def grader_error(self) -> bool:
        """Whether grading failed on the grader's side (no solution, kernel did not start)."""
        return self.status.startswith(GRADER_ERROR)

    def row(self) -> dict[str, str]:
        """The gradebook.csv row."""
        return {"student": self.student, "notebook": self.notebook, "score": _number(self.score),
                "max_score": "" if self.max_score is None else _number(self.max_score), "status": self.status,
                "protections": self.protections}


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(round(value, 4))


def digest(*parts: bytes) -> str:
    """sha256 over the parts (each length-prefixed, so the parts cannot run into each other)."""
    import hashlib

    hasher = hashlib.sha256()
    for part in parts:
        hasher.update(len(part).to_bytes(8, "big"))
        hasher.update(part)
    return hasher.hexdigest()


def read_gradebook(path: str | os.PathLike[str]) -> list[dict[str, str]]:
    """The rows of a gradebook.csv as dicts keyed by :data:`FIELDS` ([] when there is none)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    return [{key: row.get(key) or "" for key in FIELDS} for row in csv.DictReader(io.StringIO(text))]


class Gradebook:
    """The gradebook of one output folder; not thread-safe (the grader writes from one thread)."""

    def __init__(self, out_dir: str | os.PathLike[str]) -> None:
        self.dir = Path(out_dir)
        self.rows = {(row["student"], row["notebook"]): row for row in read_gradebook(self.dir / CSV_NAME)}
        try:
            state = json.loads((self.dir / STATE_NAME).read_text())
            self.digests: dict[str, str] = dict(state.get("digests", {}))
        except (OSError, ValueError, AttributeError, TypeError):
            self.digests = {}

    def graded(self, student: str, notebook: str, submission_digest: str) -> dict[str, str] | None:
        """The row of a submission already graded in its present form, else None."""
        row = self.rows.get((student, notebook))
        if row is None or row["status"].startswith(GRADER_ERROR):
            return None
        return row if self.digests.get(_key(student, notebook)) == submission_digest else None

    def record(self, row: dict[str, str], submission_digest: str) -> None:
        """Add or replace the row of (student, notebook) and write both files atomically."""
        key = (row["student"], row["notebook"])
        self.rows[key] = {name: row[name] for name in FIELDS}
        self.digests[_key(*key)] = submission_digest
        self.save()

    def save(self) -> None:
        """Write the CSV, then the state, each atomically."""
        from labkit._atomic import write_atomic

        self.dir.mkdir(parents=True, exist_ok=True)
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=FIELDS, lineterminator="\n")
        writer.writeheader()
        for _, value in sorted(self.rows.items()):
            writer.writerow(value)
        write_atomic(self.dir / CSV_NAME, out.getvalue().encode("utf-8"))
        # After the CSV: a crash in between leaves a row without its digest, graded again next time.
        state = {"version": 1, "digests": dict(sorted(self.digests.items()))}
        write_atomic(self.dir / STATE_NAME, (json.dumps(state, indent=1) + "\n").encode())


def _key(student: str, notebook: str) -> str:
    return f"{student}/{notebook}"


def details(result: GradeResult) -> dict[str, object]:
    """What ``details/<student>/<notebook>.json`` holds for ``result``."""
    return {"version": 1, **result.row(), "seconds": round(result.seconds, 3),
            "tests": [{"grade_id": test.grade_id, "cell_index": test.cell_index, "points": test.points,
                       "max_points": test.max_points, "passed": test.passed, "message": test.message}
                      for test in result.tests]}


def write_details(out_dir: str | os.PathLike[str], result: GradeResult) -> None:
    """Write ``result``'s details file atomically."""
    from labkit._atomic import write_atomic

    folder = Path(out_dir) / DETAILS_DIR / result.student
    folder.mkdir(parents=True, exist_ok=True)
    write_atomic(folder / f"{result.notebook}.json", (json.dumps(details(result), indent=1) + "\n").encode())


def read_details(out_dir: str | os.PathLike[str], student: str, notebook: str) -> dict[str, Any] | None:
    """The details of one submission, or None when there are none (or they are unreadable)."""
    try:
        data = json.loads((Path(out_dir) / DETAILS_DIR / student / f"{notebook}.json").read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def read_state(out_dir: str | os.PathLike[str]) -> dict[str, str]:
    """The submission digests of ``out_dir``'s gradebook, by ``student/notebook``."""
    try:
        state = json.loads((Path(out_dir) / STATE_NAME).read_text())
        return {str(key): str(value) for key, value in dict(state.get("digests", {})).items()}
    except (OSError, ValueError, AttributeError, TypeError):
        return {}


def write_gradebook(out_dir: str | os.PathLike[str], rows: list[dict[str, str]], digests: dict[str, str]) -> None:
    """Replace ``out_dir``'s gradebook and its state at once (each file atomically; CSV first)."""
    book = Gradebook.__new__(Gradebook)  # not read from disk: replaced whole
    book.dir, book.rows = Path(out_dir), {}
    for row in rows:
        book.rows[(row["student"], row["notebook"])] = {name: row.get(name, "") for name in FIELDS}
    book.digests = dict(digests)
    book.save()
