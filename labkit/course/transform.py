"""One solution notebook to one exercise notebook, in memory.

Does what nbgrader's generate_assignment does with its ClearSolutions, ClearHiddenTests,
ClearOutput, LockCells and ComputeChecksums preprocessors (the cells come out as nbgrader 0.9.6
releases them, checksums included; tests/test_nbgrader.py compares with the real one), and
keeps the result byte-for-byte reproducible:
fixed nbformat version, no timing or widget metadata, nbformat's sorted-key JSON.
nbformat is imported inside the functions so ``import labkit.course`` stays light.
"""

from __future__ import annotations

import copy
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from labkit.course.cells import BadCell, canonical_metadata, cell_kind, cell_source, graded_cells, nbgrader_checksum
from labkit.course.regions import CODE_STUB, TEXT_STUB, RegionError, strip_regions
from labkit.errors import BadArgument

if TYPE_CHECKING:
    from nbformat import NotebookNode

NBFORMAT_MINOR = 5  #: fixed so a newer nbformat cannot change the bytes we write
_ATTACHMENT = re.compile(r"attachment:([^)\s\"'>]+)")


def read_notebook(path: str | os.PathLike[str]) -> NotebookNode:
    """Read an nbformat 4 notebook exactly as stored.

    ``nbformat.read`` is avoided on purpose: it may add random cell ids or upgrade the
    notebook while validating, which would make the build depend on chance.

    Raises:
        BadArgument: the file is unreadable, not JSON, or not an nbformat 4 notebook.
    """
    import nbformat
    from nbformat.v4.rwbase import rejoin_lines

    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise BadArgument(f"cannot read notebook {display_path(path)}: {err}") from err
    if not isinstance(data, dict) or data.get("nbformat") != 4 or not isinstance(data.get("cells"), list):
        raise BadArgument(f"{display_path(path)} is not an nbformat 4 notebook")
    return rejoin_lines(nbformat.from_dict(data))  # sources as strings, as nbformat.read gives


def build_notebook(nb: Mapping[str, Any], name: str = "notebook") -> NotebookNode:
    """Build the student's exercise from a solution notebook; ``nb`` is left unchanged.

    Solution regions become stubs at the same indentation, hidden tests disappear, outputs
    and execution counts are cleared, metadata is reduced to what the course needs
    (canonical nbgrader metadata with nbgrader's checksum and cell_type, tags, nbgrader's cell
    locks; the kernelspec's name, display name and language, and the language name),
    and cell ids are kept so the grader can match cells. The "Check my work" cells move up to
    just after the setup cell (see :func:`check_my_work_first`).

    >>> from labkit.course import read_notebook, build_notebook
    >>> exercise = build_notebook(read_notebook("solutions/01_signals.ipynb"))  # doctest: +SKIP

    Args:
        nb: the solution notebook (nbformat 4; every cell needs an id, as in nbformat 4.5).
        name: how errors name the notebook, e.g. ``solutions/01_signals.ipynb``.

    Raises:
        BadCell: (a :class:`~labkit.errors.BadArgument`) naming the notebook and cell, for
            unbalanced or nested markers, a solution region outside a solution cell, hidden
            tests outside a test cell, a missing or repeated cell id or grade_id, a grade cell
            without points, or other metadata nbgrader would reject.
        BadArgument: not an nbformat 4 notebook, or the result fails nbformat's schema.
    """
    import nbformat

    if nb.get("nbformat") != 4:
        raise BadArgument(f"{name} is nbformat {nb.get('nbformat')!r}; the course uses nbformat 4")
    graded_cells(nb, name)  # metadata rules and unique grade_ids, before touching any source
    cells: list[dict[str, Any]] = []
    first_use: dict[str, int] = {}
    for index, cell in enumerate(nb["cells"]):
        cell_id = cell.get("id")
        if not isinstance(cell_id, str) or not cell_id:
            raise BadCell(name, index, cell, "has no cell id; save the notebook with JupyterLab 4 "
                                             "(nbformat 4.5) so the grader can match its cells")
        if cell_id in first_use:
            raise BadCell(name, index, cell, f"cell id {cell_id!r} is also used by cell {first_use[cell_id]}")
        first_use[cell_id] = index
        cells.append(_build_cell(cell, index, name))
    cells = check_my_work_first(cells)
    exercise = nbformat.from_dict({
        "nbformat": 4,
        "nbformat_minor": NBFORMAT_MINOR,
        "metadata": _notebook_metadata(nb.get("metadata", {})),
        "cells": cells,
    })
    try:
        nbformat.validate(exercise)
    except nbformat.ValidationError as err:
        raise BadArgument(f"{name}: the built exercise is not a valid notebook: {err.message}") from err
    return exercise


CHECK_MY_WORK = ("check_my_work_md", "check_my_work")  #: grade_ids of the "Check my work" cells
SETUP = "setup"  #: grade_id of the cell every other cell needs first


def check_my_work_first(cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Move the "Check my work" cells (grade_ids ``check_my_work_md``, ``check_my_work``) to just
    after the ``setup`` cell.

    An exercise's stubs raise NotImplementedError and its checks fail until answered, and
    JupyterLab's Run All stops at the first error: at the end of the notebook the buttons
    would never be drawn for a learner who runs everything first. Placed after the setup,
    they appear on the first Run All. The grader runs the solution's order with the answers
    put in, so the move changes no grade. A notebook without these cells, or without a setup
    cell, keeps its order.
    """
    def grade_id(cell: Mapping[str, Any]) -> str | None:
        meta = cell.get("metadata", {}).get("nbgrader")
        return meta.get("grade_id") if isinstance(meta, Mapping) else None

    ids = [grade_id(cell) for cell in cells]
    if SETUP not in ids:
        return cells
    moved = [cell for cell, gid in zip(cells, ids) if gid in CHECK_MY_WORK]
    rest = [cell for cell, gid in zip(cells, ids) if gid not in CHECK_MY_WORK]
    at = [grade_id(cell) for cell in rest].index(SETUP) + 1
    return rest[:at] + moved + rest[at:]


def render(nb: Mapping[str, Any]) -> bytes:
    """The notebook as the bytes ``build`` writes: nbformat's JSON, one trailing newline.

    nbformat's v4 writer always uses indent 1, sorted keys and one line per source line, so
    equal notebooks give equal bytes.
    """
    import nbformat

    text: str = nbformat.writes(nbformat.from_dict(nb))
    return (text + "\n").encode("utf-8")


def _build_cell(cell: Mapping[str, Any], index: int, name: str) -> dict[str, Any]:
    kind = cell_kind(cell)
    cell_type = cell.get("cell_type")
    stub = CODE_STUB if cell_type == "code" else TEXT_STUB
    try:
        regions = strip_regions(cell_source(cell), stub)
    except RegionError as err:
        raise BadCell(name, index, cell, str(err)) from err
    if regions.solutions and kind not in ("solution", "manual"):
        raise BadCell(name, index, cell, "has a solution region but is not a solution cell; set "
                                         "nbgrader solution: true (and a grade_id) on it")
    if regions.hidden_tests and kind != "tests":
        raise BadCell(name, index, cell, "has hidden tests but is not an autograder test cell "
                                         "(nbgrader grade: true, solution: false, points)")
    source = regions.source
    if kind in ("solution", "manual") and not regions.solutions:
        source = "\n".join(stub)  # nbgrader: a solution cell without markers is all answer
    out: dict[str, Any] = {"cell_type": cell_type, "id": cell["id"],
                           "metadata": _cell_metadata(cell, kind), "source": source}
    if "nbgrader" in out["metadata"]:
        # nbgrader's ComputeChecksums, run last in its generate_assignment: over the cell as released
        out["metadata"]["nbgrader"].update(checksum=nbgrader_checksum(out), cell_type=cell_type)
    if cell_type == "code":
        out.update(execution_count=None, outputs=[])
    elif cell.get("attachments"):
        # Only images the remaining text shows: one used by a removed answer would leak it.
        used = set(_ATTACHMENT.findall(source))
        kept = {key: copy.deepcopy(value) for key, value in cell["attachments"].items() if key in used}
        if kept:
            out["attachments"] = kept
    return out


def _cell_metadata(cell: Mapping[str, Any], kind: str | None) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    nbgrader = canonical_metadata(cell)
    if nbgrader is not None:
        meta["nbgrader"] = nbgrader
    tags = cell.get("metadata", {}).get("tags")
    if tags:
        meta["tags"] = list(tags)
    # nbgrader's LockCells: JupyterLab then refuses to delete graded cells and to edit tests
    # or read-only cells, so a student cannot break the grader's cell matching by accident.
    if kind is not None:
        meta["deletable"] = False
    if kind in ("tests", "readonly", "task"):
        meta["editable"] = False
    return meta


def _notebook_metadata(metadata: Mapping[str, Any]) -> dict[str, Any]:
    # Only what picks the kernel: versions, widget state and toolbars would churn the bytes.
    result: dict[str, Any] = {}
    kernelspec = metadata.get("kernelspec")
    if isinstance(kernelspec, Mapping) and "name" in kernelspec:
        result["kernelspec"] = {"name": kernelspec["name"],
                                "display_name": kernelspec.get("display_name", kernelspec["name"])}
        if isinstance(kernelspec.get("language"), str):
            result["kernelspec"]["language"] = kernelspec["language"]  # nbgrader reads it
    language = metadata.get("language_info")
    if isinstance(language, Mapping) and "name" in language:
        result["language_info"] = {"name": language["name"]}
    return result


def display_path(path: str | os.PathLike[str]) -> str:
    """``path`` relative to the current folder when inside it (shorter messages), else as given."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)
