"""The course as shipped: exercises are up to date, and their checks fail on unanswered work."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from labkit.course import build

ROOT = Path(__file__).resolve().parent.parent
EXERCISES = sorted((ROOT / "exercises").glob("*.ipynb"))


def test_exercises_are_generated_from_the_solutions():
    report = build(ROOT / "solutions", ROOT / "exercises", check=True)
    assert report.ok, report.problems()


@pytest.mark.parametrize("path", EXERCISES, ids=[p.stem for p in EXERCISES])
def test_every_check_fails_on_an_unanswered_exercise(path, tmp_path):
    notebook = nbformat.read(path, as_version=4)
    NotebookClient(notebook, timeout=120, allow_errors=True,
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    graded = [cell for cell in notebook.cells if cell.metadata.get("nbgrader", {}).get("grade")
              and cell.cell_type == "code"]
    assert graded
    for cell in graded:
        errors = [out.ename for out in cell.outputs if out.output_type == "error"]
        grade_id = cell.metadata["nbgrader"]["grade_id"]
        assert errors, f"{path.name} {grade_id}: the checks passed without an answer"
        # Failing for the right reason: the missing answer, not a broken notebook (NameError...).
        assert errors[0] in ("NotImplementedError", "AssertionError", "CheckFailed"), (grade_id, errors)
    cleanup = [cell for cell in notebook.cells if cell.metadata.get("nbgrader", {}).get("grade_id") == "cleanup"]
    assert cleanup and not [out for out in cleanup[0].outputs if out.output_type == "error"]
