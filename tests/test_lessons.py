"""The course as shipped: exercises are up to date, and their checks fail on unanswered work."""

from __future__ import annotations

import json
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


def _cells(notebook: str) -> dict[str, str]:
    path = ROOT / "solutions" / notebook
    return {cell["metadata"].get("nbgrader", {}).get("grade_id"): "".join(cell["source"])
            for cell in json.loads(path.read_text())["cells"]}


@pytest.mark.parametrize("honest", [True, False], ids=["says-unavailable", "claims-syscalls"])
def test_05_ex2_syscalls_where_strace_cannot_attach_checks_the_honest_line_then_awards_nothing(honest):
    """Lesson 05's own check cell on a machine where ptrace is refused: a script that says
    'unavailable' meets the requirement it can be judged on, and the rest is NotCheckable (no
    points); a script that claims system calls anyway fails as a wrong answer."""
    import contextlib
    import re
    import shutil

    from labkit import checks
    from labkit.errors import NotCheckable

    line = "unavailable (ptrace refused)" if honest else "getppid futex"
    scope = {"checks": checks, "re": re, "shutil": shutil, "DIAGNOSE_SCRIPT": "#!/bin/bash\n",
             "program": lambda *args: contextlib.nullcontext((4242, "")),
             "can_trace": lambda pid: (False, "ptrace_scope=3"),
             "diagnose": lambda pid, seconds=1: (0, "", {"state": "S", "syscalls": line}),
             "diagnose_without": lambda tools, pid: (0, "", {"state": "S", "syscalls": "unavailable (no strace)"})}
    expected = NotCheckable if honest else AssertionError
    with pytest.raises(expected) as raised:
        exec(_cells("05_diagnostics.ipynb")["ex2_syscalls"], scope)
    if honest:
        assert str(raised.value).startswith("not checkable here: strace cannot attach here (ptrace_scope=3)")
