"""nbgrader cell metadata: what each kind of cell carries, checks, and lookups by grade_id.

The metadata is exactly what nbgrader's own "Create Assignment" extension writes (schema
version 3, ``src/create_assignment/create_assignment_model.ts``) and what its validator
accepts (``nbgrader/nbgraderformat/v3.py``), so an instructor can open our notebooks with
nbgrader's toolbar and nbgrader can read them::

    kind        cell type       grade  solution  locked  task   points
    solution    code            false  true      false   false  -      autograded answer
    manual      any             true   true      false   false  N      manually graded answer
    tests       code            true   false     true    false  N      autograder tests
    readonly    any             false  false     true    false  -      read-only
    task        markdown/raw    false  false     true    true   N      manually graded task

Every cell of these kinds has a ``grade_id`` unique in its notebook; the grader matches a
student's cells to the solution's by ``grade_id`` (and checks the cell id agrees).
Nothing here imports nbformat: a notebook is any mapping shaped like nbformat's JSON.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from labkit.errors import BadArgument

SCHEMA_VERSION = 3
Kind = Literal["solution", "manual", "tests", "readonly", "task"]

_GRADE_ID = re.compile(r"^[A-Za-z0-9_-]+$")  # nbgrader's v3.json pattern, minus the empty id
_FLAGS = ("grade", "solution", "locked")
# nbgrader's generate_assignment adds checksum and cell_type to released notebooks; a student's
# copy of an nbgrader-released notebook may carry them, so they are accepted (and not copied).
_KNOWN_KEYS = {"grade", "grade_id", "locked", "points", "schema_version", "solution", "task",
               "checksum", "cell_type"}


class BadCell(BadArgument):
    """A cell's nbgrader metadata, id or markers are wrong; names the notebook and the cell."""

    def __init__(self, notebook: str, index: int, cell: Mapping[str, Any], problem: str) -> None:
        label = describe_cell(index, cell)
        super().__init__(f"{notebook}, {label}: {problem}")
        self.notebook = notebook
        self.cell_index = index
        self.cell_id: str | None = cell.get("id")
        meta = cell.get("metadata", {}).get("nbgrader")
        self.grade_id: str | None = meta.get("grade_id") if isinstance(meta, Mapping) else None
        self.problem = problem


@dataclass(frozen=True)
class GradedCell:
    """One cell nbgrader tracks, as the grader needs it."""

    grade_id: str
    kind: Kind
    cell_id: str | None  #: nbformat 4.5 cell id (None in notebooks older than 4.5)
    index: int  #: position in the notebook, from 0
    cell_type: str  #: "code", "markdown" or "raw"
    points: float | None  #: for kinds "manual", "tests" and "task"; None otherwise
    source: str


def describe_cell(index: int, cell: Mapping[str, Any]) -> str:
    """Name a cell for a message: ``cell 3 (id 'a1b2', grade_id 'q1')``."""
    parts = []
    if cell.get("id"):
        parts.append(f"id {cell['id']!r}")
    meta = cell.get("metadata", {}).get("nbgrader")
    if isinstance(meta, Mapping) and meta.get("grade_id"):
        parts.append(f"grade_id {meta['grade_id']!r}")
    return f"cell {index}" + (f" ({', '.join(parts)})" if parts else "")


def cell_source(cell: Mapping[str, Any]) -> str:
    """The cell's source as one string (on disk nbformat may store a list of lines)."""
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else source


def cell_kind(cell: Mapping[str, Any]) -> Kind | None:
    """The nbgrader kind of a cell (see the module table), or None for an ordinary cell.

    Follows ``getType`` in nbgrader's create_assignment_model.ts; the metadata is assumed
    valid (see :func:`graded_cells`).
    """
    meta = cell.get("metadata", {}).get("nbgrader")
    if not isinstance(meta, Mapping):
        return None
    if meta.get("task"):
        return "task"
    if meta.get("solution") and meta.get("grade"):
        return "manual"
    if meta.get("solution"):
        return "solution"
    if meta.get("grade"):
        return "tests"
    if meta.get("locked"):
        return "readonly"
    return None


def canonical_metadata(cell: Mapping[str, Any]) -> dict[str, Any] | None:
    """The nbgrader metadata nbgrader's extension would write for this cell (None: no kind).

    ``locked`` is derived from the kind the way nbgrader does it (answers are never locked,
    tests and tasks always are), so an author's slip cannot leave a test cell editable.
    """
    kind = cell_kind(cell)
    if kind is None:
        return None
    meta = cell["metadata"]["nbgrader"]
    result: dict[str, Any] = {
        "grade": kind in ("manual", "tests"),
        "grade_id": meta["grade_id"],
        "locked": kind in ("tests", "readonly", "task"),
        "schema_version": SCHEMA_VERSION,
        "solution": kind in ("solution", "manual"),
        "task": kind == "task",
    }
    if kind in ("manual", "tests", "task"):
        result["points"] = meta["points"]
    return result


def nbgrader_checksum(cell: Mapping[str, Any]) -> str:
    """The checksum nbgrader's generate_assignment stores in ``metadata.nbgrader.checksum``.

    The same MD5 as ``compute_checksum`` in nbgrader 0.9's ``nbgrader/utils.py`` (reimplemented:
    nbgrader is not a dependency): over the source, the cell type, ``str()`` of the grade,
    solution and locked flags (a solution cell is never locked, a grade cell always is), the
    grade_id and, for a grade cell, ``str(float(points))``. ``nbgrader validate`` and
    ``autograde`` compare it with the cell they read: a changed test cell, or an answer cell left
    as released (scored 0 without running), is found by it.

    Args:
        cell: a cell with nbgrader metadata (a grade_id; points on a grade cell).

    Returns:
        32 lowercase hex digits.

    >>> nbgrader_checksum({"cell_type": "code", "source": "assert True", "metadata": {"nbgrader": {
    ...     "grade": True, "solution": False, "locked": True, "grade_id": "t1", "points": 1}}})
    'cfbb8fbc22f670ab382ffc071b3913d6'
    """
    meta = cell["metadata"]["nbgrader"]
    grade, solution = bool(meta.get("grade", False)), bool(meta.get("solution", False))
    locked = False if solution else (True if grade else bool(meta.get("locked", False)))
    digest = hashlib.md5(usedforsecurity=False)
    for part in (cell_source(cell), cell.get("cell_type", ""), str(grade), str(solution), str(locked),
                 meta["grade_id"]):
        digest.update(part.encode("utf-8"))
    if grade:
        digest.update(str(float(meta["points"])).encode("utf-8"))
    return digest.hexdigest()


def graded_cells(nb: Mapping[str, Any], notebook: str = "notebook") -> list[GradedCell]:
    """Every cell with nbgrader metadata, in order, after checking it as nbgrader would.

    Args:
        nb: the notebook (an nbformat ``NotebookNode`` or the same shape of plain dicts).
        notebook: how to name the notebook in errors, e.g. its path.

    Raises:
        BadCell: malformed metadata, a missing or invalid grade_id, a grade cell without
            points, a markdown cell that is grade but not solution (or the reverse), or a
            grade_id used twice.
    """
    found: list[GradedCell] = []
    seen: dict[str, int] = {}
    for index, cell in enumerate(nb.get("cells", [])):
        _check_metadata(cell, index, notebook)
        kind = cell_kind(cell)
        if kind is None:
            continue
        meta = cell["metadata"]["nbgrader"]
        grade_id = meta["grade_id"]
        if grade_id in seen:
            raise BadCell(notebook, index, cell,
                          f"grade_id {grade_id!r} is already used by cell {seen[grade_id]}; "
                          "every answer and test cell needs its own")
        seen[grade_id] = index
        points = meta.get("points") if kind in ("manual", "tests", "task") else None
        found.append(GradedCell(grade_id, kind, cell.get("id"), index, cell.get("cell_type", ""),
                                None if points is None else float(points), cell_source(cell)))
    return found


def answer_cells(nb: Mapping[str, Any], notebook: str = "notebook") -> dict[str, GradedCell]:
    """The cells a student writes in (kinds "solution" and "manual"), keyed by grade_id.

    >>> nb = {"cells": [{"cell_type": "code", "id": "c1", "source": "x = 1", "metadata": {
    ...     "nbgrader": {"grade": False, "solution": True, "locked": False,
    ...                  "grade_id": "set_x", "schema_version": 3}}}]}
    >>> answer_cells(nb)["set_x"].cell_id
    'c1'
    """
    return {c.grade_id: c for c in graded_cells(nb, notebook) if c.kind in ("solution", "manual")}


def test_cells(nb: Mapping[str, Any], notebook: str = "notebook") -> dict[str, GradedCell]:
    """The autograder test cells (kind "tests"), keyed by grade_id; each has ``points``."""
    return {c.grade_id: c for c in graded_cells(nb, notebook) if c.kind == "tests"}


test_cells.__test__ = False  # type: ignore[attr-defined]  # not a pytest test despite the name


def _check_metadata(cell: Mapping[str, Any], index: int, notebook: str) -> None:
    """Check one cell's nbgrader metadata with the rules of nbgrader's v3 validator."""
    meta = cell.get("metadata", {}).get("nbgrader")
    if meta is None:
        return

    def bad(problem: str) -> BadCell:
        return BadCell(notebook, index, cell, problem)

    if not isinstance(meta, Mapping):
        raise bad("metadata.nbgrader must be an object")
    unknown = sorted(set(meta) - _KNOWN_KEYS)
    if unknown:
        raise bad(f"unknown nbgrader key(s) {', '.join(unknown)}")
    version = meta.get("schema_version")
    if version != SCHEMA_VERSION or isinstance(version, bool):
        raise bad(f"nbgrader schema_version is {version!r}; this course uses {SCHEMA_VERSION}")
    for flag in (*_FLAGS, "task"):
        if flag in meta and not isinstance(meta[flag], bool):
            raise bad(f"nbgrader {flag!r} must be true or false, not {meta[flag]!r}")
        if flag != "task" and flag not in meta:
            raise bad(f"nbgrader metadata lacks {flag!r} (nbgrader requires grade, solution, locked)")
    grade, solution, task = meta["grade"], meta["solution"], meta.get("task", False)
    if not (grade or solution or meta["locked"] or task):
        return
    grade_id = meta.get("grade_id")
    if not isinstance(grade_id, str) or not _GRADE_ID.match(grade_id):
        raise bad(f"grade_id {grade_id!r} must be a non-empty name of letters, digits, _ and -")
    is_code = cell.get("cell_type") == "code"
    if task and (is_code or grade or solution):
        raise bad("a task cell must be a markdown cell that is neither grade nor solution")
    if not task and not is_code and grade != solution:
        raise bad("a markdown answer cell must be both grade and solution (nbgrader grades it "
                  "by hand); use a code cell for autograder tests")
    points = meta.get("points")
    if grade or task:
        if points is None:
            raise bad("a grade cell needs points")
        if isinstance(points, bool) or not isinstance(points, (int, float)) or points < 0:
            raise bad(f"points must be a number >= 0, not {points!r}")
    elif points is not None:
        raise bad("points only count on grade cells; remove them or set grade to true")
