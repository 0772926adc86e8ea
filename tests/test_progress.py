"""Check my work and labkit progress: the visible checks re-run in the kernel, results recorded."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from labkit.course import progress

ROOT = Path(__file__).resolve().parent.parent


def run_with_checks(source: Path, folder: Path) -> list[dict]:
    """Execute a copy of ``source`` plus a cell that presses every Check button; return the results."""
    notebook = nbformat.read(source, as_version=4)
    target = folder / source.name
    nbformat.write(notebook, target)
    probe = nbformat.v4.new_code_cell(
        "import json\nfrom labkit.course.progress import CheckMyWork\n"
        f"print('RESULTS', json.dumps([r.__dict__ for r in CheckMyWork({source.name!r}).check_all()]))")
    notebook.cells.insert(len(notebook.cells) - 1, probe)  # before the clean-up cell
    NotebookClient(notebook, timeout=180, allow_errors=True, resources={"metadata": {"path": str(folder)}}).execute()
    text = "".join(o.get("text", "") for o in probe.outputs if o.output_type == "stream")
    return json.loads(text.split("RESULTS", 1)[1])


def test_a_solved_lesson_passes_every_check_and_is_recorded(home, tmp_path):
    results = run_with_checks(ROOT / "solutions" / "00_welcome.ipynb", tmp_path)
    assert [(r["exercise"], r["passed"]) for r in results] == [("ex1", True), ("ex2", True)]
    recorded = json.loads((home / "progress.json").read_text())
    assert recorded["00_welcome"]["ex1"]["passed"] and recorded["00_welcome"]["ex2"]["points"] > 0


def test_an_unanswered_exercise_fails_with_what_was_seen_and_a_hint(home, tmp_path):
    results = run_with_checks(ROOT / "exercises" / "00_welcome.ipynb", tmp_path)
    assert not any(r["passed"] for r in results)
    assert all(r["error"] and r["hint"] for r in results), results
    assert "progress.json" in str(progress.progress_path()) and progress.read_progress()["00_welcome"]


def test_labkit_progress_lists_every_exercise_of_the_course(home, tmp_path):
    progress.record(progress.CheckResult("02_sessions", "ex1", True, 3, at=1.0))
    done = subprocess.run([sys.executable, "-m", "labkit", "progress", "--exercises", str(ROOT / "exercises"),
                           "--json"], capture_output=True, text=True)
    rows = json.loads(done.stdout)
    assert {r["lesson"] for r in rows} >= {"00_welcome", "01_signals", "02_sessions", "06_graceful_shutdown"}
    row = next(r for r in rows if (r["lesson"], r["exercise"]) == ("02_sessions", "ex1"))
    assert row["status"] == "passed" and row["points"] == 3
    assert all(r["status"] == "not tried" for r in rows if r["lesson"] == "05_diagnostics")
    table = subprocess.run([sys.executable, "-m", "labkit", "progress", "--exercises", str(ROOT / "exercises")],
                           capture_output=True, text=True)
    assert "points from the visible checks" in table.stdout


def test_a_notebook_run_under_another_name_shows_the_problem_instead_of_failing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    checker = progress.CheckMyWork("02_sessions.ipynb")
    assert checker.exercises == [] and "cannot read exercise notebook" in checker.problem
    assert checker.check_all() == []


def test_requirement_cells_group_into_one_exercise_that_passes_only_when_all_do(tmp_path):
    def cell(grade_id, source, points):
        return {"cell_type": "code", "source": source, "metadata": {"nbgrader": {"grade": True, "grade_id": grade_id,
                                                                                 "points": points}}}
    task = {"cell_type": "markdown", "source": "## Exercise 1: a title",
            "metadata": {"nbgrader": {"grade_id": "ex1_task"}}}
    notebook = tmp_path / "99_demo.ipynb"
    notebook.write_text(json.dumps({"cells": [task, cell("ex1_first", "print('seen first')", 1),
                                              cell("ex1_second", "assert 1 == 2, 'the second is missing'", 2),
                                              cell("ex2_tests", "pass", 1)]}))
    exercises = progress.exercises_of(notebook)
    assert [(e["exercise"], e["points"], e["title"]) for e in exercises] == \
        [("ex1", 3, "Exercise 1: a title"), ("ex2", 1, "ex2")]
    result = progress._run_checks("99_demo", exercises[0])
    assert not result.passed and result.points == 3
    assert "seen first" in result.seen and result.error == "ex1_second: AssertionError: the second is missing"


def test_a_check_that_cannot_run_here_fails_and_says_it_is_the_machine(tmp_path):
    source = "from labkit.checks import NotCheckable\nraise NotCheckable('tmux is not installed here')"
    cell = {"cell_type": "code", "source": source,
            "metadata": {"nbgrader": {"grade": True, "grade_id": "ex1_tmux", "points": 1}}}
    notebook = tmp_path / "99_demo.ipynb"
    notebook.write_text(json.dumps({"cells": [cell]}))
    result = progress._run_checks("99_demo", progress.exercises_of(notebook)[0])
    assert not result.passed
    assert result.error == "ex1_tmux: NotCheckable: not checkable here: tmux is not installed here"
    assert "labkit doctor" in result.hint and "not a mistake of yours" in result.hint
