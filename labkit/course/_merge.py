"""What the grader runs: the instructor's notebook with the learner's answers put in.

Only the learner's *answer* cells are taken from a submission, matched to the solution's by
nbgrader ``grade_id``; everything else (setup, read-only cells, tests, hidden tests, points)
comes from the solution. A student who edits, deletes or replaces test cells, changes their
points or adds cells gains nothing: none of that is read. An answer cell that is missing,
whose grade_id was renamed, whose type changed, or that still holds the exercise's stub counts
as not answered (and runs as the stub, which fails its tests).

Also here: whose each submitted file is (:func:`submissions_from`) and reading it safely
(:func:`read_submission`: a file that is not a notebook is reported, never fatal).
"""

from __future__ import annotations

import copy
import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from labkit.course.cells import GradedCell, answer_cells, cell_source, test_cells
from labkit.course.transform import build_notebook, read_notebook
from labkit.errors import BadArgument

if TYPE_CHECKING:
    from nbformat import NotebookNode

MAX_SUBMISSION_BYTES = 64 * 2**20  #: larger files are refused unread (outputs run wild)
_STUDENT = re.compile(r"^[^/\\\x00]{1,128}$")  #: a student's name is a folder name


@dataclass(frozen=True)
class Submission:
    """A notebook to grade and whose it is."""

    path: Path
    student: str
    notebook: str  #: file name without .ipynb; the solution has the same file name


def submissions_from(paths: Iterable[str | os.PathLike[str]],
                     students: Mapping[str | os.PathLike[str], str] | None = None) -> list[Submission]:
    """Name the student of each notebook: ``students[path]`` if given, else from the folders.

    The folder after ``submitted/`` names the student (``submitted/<student>/<notebook>.ipynb``,
    or nbgrader's ``submitted/<student>/<assignment>/<notebook>.ipynb``); without one, the
    notebook's own folder does.

    Raises:
        BadArgument: a missing file, a bad student name, or two submissions of the same
            student and notebook.
    """
    names = {os.path.abspath(key): value for key, value in (students or {}).items()}
    found: list[Submission] = []
    seen: dict[tuple[str, str], Path] = {}
    for entry in paths:
        path = Path(entry)
        if not path.is_file():
            raise BadArgument(f"no submission at {path}")
        student = names.pop(os.path.abspath(path), None) or _student_from_folders(path)
        if not _STUDENT.match(student) or student in (".", ".."):
            raise BadArgument(f"bad student name {student!r} for {path}; use --student PATH=NAME")
        key = (student, path.stem)
        if key in seen:
            raise BadArgument(f"{path} and {seen[key]} are both {student}'s {path.stem}; grade them separately")
        seen[key] = path
        found.append(Submission(path, student, path.stem))
    if names:
        raise BadArgument(f"--student names a file that is not among the submissions: {sorted(names)[0]}")
    return found


class InvalidSubmission(BadArgument):
    """The submitted file is not a notebook the grader can read; the message says why."""


@dataclass(frozen=True)
class Lesson:
    """A solution notebook, prepared once for all the submissions of that lesson."""

    name: str  #: the notebook's name without ``.ipynb``, e.g. ``01_signals``
    solution: NotebookNode
    exercise: NotebookNode  #: what students were given (hidden tests removed, answers stubbed)
    answers: dict[str, GradedCell]  #: the solution's answer cells by grade_id
    tests: dict[str, GradedCell]  #: the solution's test cells by grade_id
    stubs: dict[str, str]  #: the exercise's source of each answer cell
    digest: bytes  #: the solution file's bytes, for the gradebook's "graded with" record

    @property
    def max_score(self) -> float:
        """Points of all autograded tests."""
        return float(sum(test.points or 0 for test in self.tests.values()))


@dataclass(frozen=True)
class Answer:
    """One answer cell as found in a submission."""

    grade_id: str
    source: str | None  #: None: no usable cell
    answered: bool
    note: str = ""  #: why it does not count, in words


def load_lesson(path: str | os.PathLike[str]) -> Lesson:
    """Read and check a solution notebook; build the exercise students got from it.

    Raises:
        BadArgument: unreadable, not a notebook, or nbgrader metadata the builder rejects.
    """
    path = Path(path)
    solution = read_notebook(path)
    data = path.read_bytes()
    exercise = build_notebook(solution, str(path))
    built = {cell.get("id"): cell for cell in exercise.cells}
    answers = answer_cells(solution, str(path))
    stubs = {grade_id: cell_source(built[cell.cell_id]) for grade_id, cell in answers.items()}
    return Lesson(path.stem, solution, exercise, answers, test_cells(solution, str(path)), stubs, data)


def read_submission(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The submission's JSON, checked only as far as the grader reads it.

    Raises:
        InvalidSubmission: unreadable, too large, not JSON, or not an nbformat 4 notebook.
    """
    path = Path(path)
    try:
        if path.stat().st_size > MAX_SUBMISSION_BYTES:
            raise InvalidSubmission(f"larger than {MAX_SUBMISSION_BYTES // 2**20} MiB")
        data = json.loads(path.read_bytes())
    except OSError as err:
        raise InvalidSubmission(f"cannot read it ({err.strerror})") from err
    except UnicodeDecodeError as err:
        raise InvalidSubmission("not text (UTF-8)") from err
    except ValueError as err:
        raise InvalidSubmission(f"not JSON ({err})") from err
    if not isinstance(data, dict) or not isinstance(data.get("cells"), list):
        raise InvalidSubmission("not a Jupyter notebook (no list of cells)")
    if data.get("nbformat") != 4:
        raise InvalidSubmission(f"nbformat {data.get('nbformat')!r}; the course uses nbformat 4")
    return data


def find_answers(lesson: Lesson, submission: Mapping[str, Any]) -> dict[str, Answer]:
    """The learner's answer for each of the solution's answer cells, by grade_id."""
    by_grade_id: dict[str, list[Mapping[str, Any]]] = {}
    for cell in submission.get("cells", []):
        meta = cell.get("metadata") if isinstance(cell, Mapping) else None
        nbgrader = meta.get("nbgrader") if isinstance(meta, Mapping) else None
        if isinstance(nbgrader, Mapping) and isinstance(nbgrader.get("grade_id"), str):
            by_grade_id.setdefault(nbgrader["grade_id"], []).append(cell)
    found = {}
    for grade_id, wanted in lesson.answers.items():
        # JupyterLab keeps nbgrader metadata on a copied cell: prefer the one with the original id
        candidates = sorted(by_grade_id.get(grade_id, []), key=lambda cell: cell.get("id") != wanted.cell_id)
        found[grade_id] = _answer(grade_id, wanted, candidates[0] if candidates else None, lesson.stubs[grade_id])
    return found


def _answer(grade_id: str, wanted: GradedCell, cell: Mapping[str, Any] | None, stub: str) -> Answer:
    if cell is None:
        return Answer(grade_id, None, False, f"no cell with grade_id {grade_id!r} (deleted or renamed)")
    if cell.get("cell_type") != wanted.cell_type:
        return Answer(grade_id, None, False, f"the cell is {cell.get('cell_type')!r}, not {wanted.cell_type!r}")
    source = cell.get("source", "")
    if isinstance(source, list) and all(isinstance(line, str) for line in source):
        source = "".join(source)
    if not isinstance(source, str):
        return Answer(grade_id, None, False, "the cell's source is not text")
    if not source.strip() or source.strip() == stub.strip():
        return Answer(grade_id, source, False, "not answered")
    return Answer(grade_id, source, True)


def extra_cells(lesson: Lesson, submission: Mapping[str, Any]) -> int:
    """How many non-empty code cells the learner added (they are not run)."""
    known = {cell.get("id") for cell in lesson.solution.cells}
    count = 0
    for cell in submission.get("cells", []):
        if not isinstance(cell, Mapping) or cell.get("cell_type") != "code":
            continue
        if cell.get("id") in known or _grade_id(cell):
            continue
        source = cell.get("source", "")
        if isinstance(source, list):
            source = "".join(line for line in source if isinstance(line, str))
        count += bool(isinstance(source, str) and source.strip())
    return count


def notebook_to_run(lesson: Lesson, answers: Mapping[str, Answer]) -> NotebookNode:
    """A copy of the solution, outputs cleared, each answer cell holding the learner's answer
    (or the exercise's stub when not answered)."""
    nb = copy.deepcopy(lesson.solution)
    by_id = {cell.cell_id: grade_id for grade_id, cell in lesson.answers.items()}
    for cell in nb.cells:
        grade_id = by_id.get(cell.get("id"))
        if grade_id is not None:
            answer = answers[grade_id]
            cell.source = answer.source if answer.answered else lesson.stubs[grade_id]
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
    return nb


def _grade_id(cell: Mapping[str, Any]) -> str | None:
    meta = cell.get("metadata")
    nbgrader = meta.get("nbgrader") if isinstance(meta, Mapping) else None
    return nbgrader.get("grade_id") if isinstance(nbgrader, Mapping) else None


def _student_from_folders(path: Path) -> str:
    parts = Path(os.path.abspath(path)).parts[:-1]
    if "submitted" in parts:
        at = len(parts) - 1 - parts[::-1].index("submitted")
        if at + 1 < len(parts):
            return parts[at + 1]
    return parts[-1] if parts else "student"
