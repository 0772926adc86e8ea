"""labkit.course: exercises built from solutions, checked, and their graded cells found."""

from __future__ import annotations

import argparse
import inspect
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import labkit.course
from labkit.course import (
    BadCell,
    answer_cells,
    build,
    build_notebook,
    read_notebook,
    render,
    strip_regions,
)
from labkit.course import test_cells as graded_test_cells  # not collected: not named test_*
from labkit.course.build import add_arguments, main
from labkit.course.cells import nbgrader_checksum
from labkit.course.regions import RegionError
from labkit.errors import BadArgument

FIXTURES = Path(__file__).parent / "fixtures" / "course"
SOLUTION = FIXTURES / "solution.ipynb"
GOLDEN = FIXTURES / "expected_exercise.ipynb"
REPO = Path(__file__).resolve().parent.parent
STUB = ["# YOUR CODE HERE", "raise NotImplementedError()"]


def solution():
    return read_notebook(SOLUTION)


def cell(nb, cell_id):
    return next(c for c in nb.cells if c.id == cell_id)


def exercise():
    return build_notebook(solution(), "solution.ipynb")


@pytest.fixture
def course(tmp_path):
    """A repository with two lessons in solutions/ and an empty exercises/ beside."""
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    solutions = tmp_path / "solutions"
    solutions.mkdir()
    shutil.copy(SOLUTION, solutions / "01_signals.ipynb")
    shutil.copy(SOLUTION, solutions / "02_sessions.ipynb")
    (solutions / "scratch.ipynb").write_text("not a lesson: ignored")
    return tmp_path


def run_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return main(parser.parse_args(list(argv)))


# -- the transformation -----------------------------------------------------------------------

def test_built_exercise_is_byte_for_byte_the_committed_golden():
    # After an intended change: write render(exercise()) to GOLDEN, then read the diff by hand.
    assert render(exercise()) == GOLDEN.read_bytes()


def test_stubs_replace_solutions_at_the_indentation_of_their_markers():
    source = cell(exercise(), "answer-exit-code").source.split("\n")
    assert source == [
        "def exit_code_for(signum, shell=True):",
        '    """The exit status a shell reports for a process killed by `signum`."""',
        *("    " + line for line in STUB),
        "    if not shell:",
        *("        " + line for line in STUB),
        "    return code",
    ]
    compile("\n".join(source), "answer", "exec")  # still parses


def test_hidden_tests_are_gone_and_visible_tests_stay():
    built = cell(exercise(), "tests-hidden").source
    assert built == "assert exit_code_for(signal.SIGKILL) == 137\nexit_code_for(signal.SIGKILL)"
    text = render(exercise()).decode()
    assert "HIDDEN" not in text and "SIGINT" not in text and "shell=False" not in text
    assert "128 + int(signum)" not in text and "cannot be caught" not in text


def test_markdown_answer_keeps_the_question_and_stubs_the_answer():
    assert cell(exercise(), "question-sigkill").source == (
        "**Why can the trainer not checkpoint when it receives SIGKILL?**\n\nYOUR ANSWER HERE")


def test_outputs_counts_and_volatile_metadata_are_cleared():
    nb = exercise()
    for c in nb.cells:
        assert set(c.metadata) <= {"nbgrader", "tags", "deletable", "editable"}
        if c.cell_type == "code":
            assert c.outputs == [] and c.execution_count is None
    # the kernelspec's language too: nbgrader reads it (without, its --check calls a release out of date)
    assert nb.metadata == {"kernelspec": {"display_name": "Python 3 (ipykernel)", "language": "python",
                                          "name": "python3"},
                           "language_info": {"name": "python"}}
    assert (nb.nbformat, nb.nbformat_minor) == (4, 5)
    assert cell(nb, "answer-exit-code").metadata.tags == ["exercise"]


@pytest.mark.parametrize("cell_id, nbgrader, locks", [
    ("intro", {"grade": False, "solution": False, "locked": True}, {"deletable": False, "editable": False}),
    ("answer-exit-code", {"grade": False, "solution": True, "locked": False}, {"deletable": False}),
    ("tests-visible", {"grade": True, "solution": False, "locked": True, "points": 1},
     {"deletable": False, "editable": False}),
    ("question-sigkill", {"grade": True, "solution": True, "locked": False, "points": 1},
     {"deletable": False}),
])
def test_metadata_is_what_nbgrader_writes_for_each_kind(cell_id, nbgrader, locks):
    built = cell(exercise(), cell_id)
    meta = built.metadata
    assert meta.nbgrader == {**nbgrader, "grade_id": meta.nbgrader.grade_id, "schema_version": 3,
                             "task": False, "checksum": nbgrader_checksum(built), "cell_type": built.cell_type}
    assert {k: v for k, v in meta.items() if k in ("deletable", "editable")} == locks
    assert "nbgrader" not in cell(exercise(), "imports").metadata


# nbgrader 0.9.6's compute_checksum on these cells (nbgrader/utils.py), recorded: nbgrader is not a
# dependency here; tests/test_nbgrader.py compares every cell of the course with the real one.
@pytest.mark.parametrize("cell_type, metadata, source, expected", [
    ("code", {"grade": True, "solution": False, "locked": True, "grade_id": "t1", "points": 1}, "assert True",
     "cfbb8fbc22f670ab382ffc071b3913d6"),
    ("code", {"grade": False, "solution": True, "locked": False, "grade_id": "a1"},
     "# YOUR CODE HERE\nraise NotImplementedError()", "7569c545cb508f74984355eea6a3fd4d"),
    ("markdown", {"grade": True, "solution": True, "locked": False, "grade_id": "m1", "points": 2.5},
     "YOUR ANSWER HERE", "633affcec6b6d45d69e30d79bbec8995"),
    ("code", {"grade": False, "solution": False, "locked": True, "grade_id": "r1"}, "x = '\u00e9'\n",
     "74d077a86b7ae4b4834c66abafc36cb5"),
    ("markdown", {"grade": False, "solution": False, "locked": True, "task": True, "grade_id": "k1", "points": 3},
     "Do it.", "f0420a081d48942eb3c7dabd93f708e7"),
    # a grade cell counts as locked whatever its flag says; points as float: 0 -> "0.0"
    ("code", {"grade": True, "solution": False, "locked": False, "grade_id": "t2", "points": 0}, "assert 1",
     "159be8b9e7007d4b36792c2b9a751463"),
])
def test_checksum_is_the_one_nbgrader_computes(cell_type, metadata, source, expected):
    cell = {"cell_type": cell_type, "source": source, "metadata": {"nbgrader": metadata}}
    assert nbgrader_checksum(cell) == expected


def test_checksums_change_when_a_test_cell_is_edited_and_match_the_released_cell():
    built = exercise()
    tests = cell(built, "tests-visible")
    assert tests.metadata.nbgrader.checksum == nbgrader_checksum(tests)
    edited = json.loads(json.dumps(tests))
    edited["source"] = tests.source.replace("assert", "assert True or")
    assert nbgrader_checksum(edited) != tests.metadata.nbgrader.checksum  # nbgrader validate reports it
    # an answer left as released has the released checksum: nbgrader scores it 0 without running it
    answer = cell(built, "question-sigkill")
    assert answer.metadata.nbgrader.checksum == nbgrader_checksum(answer)
    points = json.loads(json.dumps(tests))
    points["metadata"]["nbgrader"]["points"] = 5
    assert nbgrader_checksum(points) != tests.metadata.nbgrader.checksum
    assert "nbgrader" not in cell(built, "imports").metadata


def test_a_test_cell_left_editable_by_its_author_is_locked_like_nbgrader_does():
    nb = solution()
    cell(nb, "tests-visible").metadata.nbgrader.locked = False
    assert cell(build_notebook(nb), "tests-visible").metadata.nbgrader.locked is True


def test_same_input_gives_the_same_bytes_and_the_input_is_untouched():
    nb = solution()
    before = json.dumps(nb, sort_keys=True)
    first = render(build_notebook(nb))
    assert render(build_notebook(nb)) == first
    assert json.dumps(nb, sort_keys=True) == before
    # Key order and line splitting of the solution file do not matter either.
    reordered = json.loads(json.dumps(json.loads(SOLUTION.read_text()), indent=4))
    reordered["cells"] = [dict(reversed(list(c.items()))) for c in reordered["cells"]]
    assert render(build_notebook(reordered)) == first
    assert first.endswith(b"}\n") and not first.endswith(b"\n\n")


def test_a_solution_cell_without_markers_becomes_all_stub():
    nb = solution()
    cell(nb, "answer-exit-code").source = "x = 42"
    cell(nb, "question-sigkill").source = "Because SIGKILL cannot be caught."
    built = build_notebook(nb)
    assert cell(built, "answer-exit-code").source == "\n".join(STUB)
    assert cell(built, "question-sigkill").source == "YOUR ANSWER HERE"


def test_an_image_only_the_answer_shows_is_dropped():
    nb = solution()
    answer = cell(nb, "question-sigkill")
    answer.source += "\n### BEGIN SOLUTION\n![diagram](attachment:answer.png)\n### END SOLUTION"
    answer.source = "![question](attachment:q.png)\n" + answer.source
    png = {"image/png": "iVBORw0KGgo="}
    answer["attachments"] = {"answer.png": png, "q.png": png}
    assert list(cell(build_notebook(nb), "question-sigkill").attachments) == ["q.png"]


def test_cell_ids_and_grade_ids_let_the_grader_match_cells():
    sol, ex = solution(), exercise()
    assert [c.id for c in ex.cells] == [c.id for c in sol.cells]
    answers, tests = answer_cells(ex), graded_test_cells(ex)
    assert set(answers) == {"exit_code_for", "why_no_checkpoint_on_sigkill"}
    assert answers["exit_code_for"].cell_id == "answer-exit-code"
    assert answers["why_no_checkpoint_on_sigkill"].kind == "manual"
    assert answers["exit_code_for"].kind == "solution" and answers["exit_code_for"].points is None
    assert {k: (t.cell_id, t.points) for k, t in tests.items()} == {
        "test_exit_code_visible": ("tests-visible", 1.0), "test_exit_code_hidden": ("tests-hidden", 2.0)}
    assert "HIDDEN" in graded_test_cells(sol)["test_exit_code_hidden"].source
    for key, found in answer_cells(sol).items():
        assert (found.cell_id, found.index) == (answers[key].cell_id, answers[key].index)


# -- validation: each mistake names the notebook and the cell ----------------------------------

def _edit(cell_id, change):
    def apply(nb):
        change(cell(nb, cell_id))
    return apply


def _set_source(cell_id, text):
    return _edit(cell_id, lambda c: c.__setitem__("source", text))


def _set_meta(cell_id, **values):
    return _edit(cell_id, lambda c: c.metadata.nbgrader.update(values))


def _drop_meta(cell_id, key):
    return _edit(cell_id, lambda c: c.metadata.nbgrader.pop(key))


BAD = [
    ("begin without end", _set_source("answer-exit-code", "### BEGIN SOLUTION\nx = 1"),
     "answer-exit-code", "no matching '### END SOLUTION'"),
    ("end without begin", _set_source("answer-exit-code", "x = 1\n### END SOLUTION"),
     "answer-exit-code", "closes no region"),
    ("nested solutions", _set_source("answer-exit-code",
                                     "### BEGIN SOLUTION\n### BEGIN SOLUTION\n### END SOLUTION\n### END SOLUTION"),
     "answer-exit-code", "cannot nest"),
    ("hidden tests inside a solution", _set_source(
        "tests-hidden", "### BEGIN HIDDEN TESTS\n### BEGIN SOLUTION\n### END SOLUTION\n### END HIDDEN TESTS"),
     "tests-hidden", "cannot nest"),
    ("mismatched end", _set_source("tests-hidden", "### BEGIN HIDDEN TESTS\nassert 1\n### END SOLUTION"),
     "tests-hidden", "closes the '### BEGIN HIDDEN TESTS' region"),
    ("near-miss marker", _set_source("answer-exit-code", "## BEGIN SOLUTION\nsecret = 1\n### END SOLUTION"),
     "answer-exit-code", "looks like a marker"),
    ("solution marker in a plain cell", _set_source("imports", "### BEGIN SOLUTION\nx\n### END SOLUTION"),
     "imports", "not a solution cell"),
    ("solution marker in a read-only cell", _set_source("intro", "### BEGIN SOLUTION\nx\n### END SOLUTION"),
     "intro", "not a solution cell"),
    ("hidden tests in an answer cell", _set_source(
        "answer-exit-code", "### BEGIN HIDDEN TESTS\nassert 1\n### END HIDDEN TESTS"),
     "answer-exit-code", "not an autograder test cell"),
    ("duplicate grade_id", _set_meta("tests-hidden", grade_id="test_exit_code_visible"),
     "tests-hidden", "already used by cell 3"),
    ("grade cell without points", _drop_meta("tests-visible", "points"), "tests-visible", "needs points"),
    ("negative points", _set_meta("tests-visible", points=-1), "tests-visible", ">= 0"),
    ("points on an answer", _set_meta("answer-exit-code", points=3), "answer-exit-code", "only count on grade"),
    ("missing grade_id", _drop_meta("answer-exit-code", "grade_id"), "answer-exit-code", "grade_id None"),
    ("grade_id with spaces", _set_meta("answer-exit-code", grade_id="exit code"), "answer-exit-code",
     "letters, digits"),
    ("markdown graded but not solution", _set_meta("question-sigkill", solution=False),
     "question-sigkill", "both grade and solution"),
    ("old schema", _set_meta("tests-visible", schema_version=1), "tests-visible", "schema_version is 1"),
    ("flag not a bool", _set_meta("tests-visible", grade="yes"), "tests-visible", "true or false"),
    ("unknown key", _set_meta("tests-visible", weight=2), "tests-visible", "unknown nbgrader key(s) weight"),
    ("missing cell id", _edit("imports", lambda c: c.pop("id")), None, "has no cell id"),
    ("duplicate cell id", _edit("imports", lambda c: c.__setitem__("id", "intro")), "intro",
     "also used by cell 0"),
]


@pytest.mark.parametrize("change, cell_id, words", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_each_mistake_raises_bad_argument_naming_notebook_and_cell(change, cell_id, words):
    nb = solution()
    change(nb)
    with pytest.raises(BadArgument) as caught:
        build_notebook(nb, "solutions/01_signals.ipynb")
    err = caught.value
    assert isinstance(err, BadCell) and err.exit_code == 2
    message = str(err)
    assert message.startswith(f"solutions/01_signals.ipynb, cell {err.cell_index}")
    assert words in message, message
    if cell_id is not None:
        assert err.cell_id == cell_id and f"id {cell_id!r}" in message
    assert "\n" not in message


def test_region_errors_give_the_line():
    with pytest.raises(RegionError) as caught:
        strip_regions("a\nb\n### BEGIN HIDDEN TESTS\nc")
    assert caught.value.line == 3


def test_regions_in_markdown_take_the_text_stub_and_hidden_lines_vanish():
    result = strip_regions("Q?\n### BEGIN SOLUTION\nA.\n### END SOLUTION", ("YOUR ANSWER HERE",))
    assert (result.source, result.solutions, result.hidden_tests) == ("Q?\nYOUR ANSWER HERE", 1, 0)
    result = strip_regions("t1\n  ### BEGIN HIDDEN TESTS  \nt2\n### END HIDDEN TESTS\nt3")
    assert (result.source, result.hidden_tests) == ("t1\nt3", 1)


def test_a_file_that_is_not_a_v4_notebook_is_bad_input(tmp_path):
    (tmp_path / "01_x.ipynb").write_text('{"nbformat": 3, "worksheets": []}')
    with pytest.raises(BadArgument, match="not an nbformat 4 notebook"):
        read_notebook(tmp_path / "01_x.ipynb")
    (tmp_path / "01_x.ipynb").write_text("{")
    with pytest.raises(BadArgument, match="cannot read notebook"):
        read_notebook(tmp_path / "01_x.ipynb")


# -- folders, --check and the command ------------------------------------------------------------

def test_build_writes_every_lesson_then_finds_them_up_to_date(course):
    report = build(course / "solutions", course / "exercises")
    names = [p.name for p in report.written]
    assert names == ["01_signals.ipynb", "02_sessions.ipynb"] and report.ok
    assert (course / "exercises" / "01_signals.ipynb").read_bytes() == GOLDEN.read_bytes()
    assert not (course / "exercises" / "scratch.ipynb").exists()
    mtime = (course / "exercises" / "01_signals.ipynb").stat().st_mtime_ns
    again = build(course / "solutions", course / "exercises")
    assert again.written == () and len(again.up_to_date) == 2
    assert (course / "exercises" / "01_signals.ipynb").stat().st_mtime_ns == mtime  # not rewritten


def test_check_passes_when_up_to_date_and_writes_nothing(course):
    build(course / "solutions", course / "exercises")
    before = {p: p.read_bytes() for p in (course / "exercises").iterdir()}
    report = build(course / "solutions", course / "exercises", check=True)
    assert report.ok and report.problems() == [] and len(report.up_to_date) == 2
    assert {p: p.read_bytes() for p in (course / "exercises").iterdir()} == before


def test_check_compares_content_not_formatting(course):
    build(course / "solutions", course / "exercises")
    target = course / "exercises" / "01_signals.ipynb"
    target.write_text(json.dumps(json.loads(target.read_text()), indent=2))
    assert build(course / "solutions", course / "exercises", check=True).ok


def test_check_fails_naming_a_hand_edited_exercise(course, monkeypatch):
    build(course / "solutions", course / "exercises")
    target = course / "exercises" / "02_sessions.ipynb"
    target.write_bytes(target.read_bytes().replace(b"YOUR ANSWER HERE", b"my answer"))
    monkeypatch.chdir(course)
    report = build("solutions", "exercises", check=True)
    assert not report.ok
    assert report.problems() == [
        "exercises/02_sessions.ipynb is out of date: run `labkit course build`"]


def test_check_fails_for_a_missing_or_an_extra_exercise(course, monkeypatch):
    monkeypatch.chdir(course)
    build("solutions", "exercises")
    (course / "exercises" / "01_signals.ipynb").unlink()
    shutil.copy(GOLDEN, course / "exercises" / "09_old.ipynb")
    report = build("solutions", "exercises", check=True)
    assert report.problems() == [
        "exercises/01_signals.ipynb is missing: run `labkit course build`",
        "exercises/09_old.ipynb has no solution notebook: run `labkit course build` to remove it"]
    assert (course / "exercises" / "09_old.ipynb").exists()
    fixed = build("solutions", "exercises")
    assert [p.name for p in fixed.written] == ["01_signals.ipynb"]
    assert not (course / "exercises" / "09_old.ipynb").exists()
    assert build("solutions", "exercises", check=True).ok


def test_one_bad_solution_writes_no_exercise(course):
    nb = json.loads(SOLUTION.read_text())
    nb["cells"][2]["source"] = ["### BEGIN SOLUTION\n"]
    (course / "solutions" / "02_sessions.ipynb").write_text(json.dumps(nb))
    with pytest.raises(BadCell, match="02_sessions.ipynb, cell 2"):
        build(course / "solutions", course / "exercises")
    assert not (course / "exercises").exists()


def test_a_missing_solutions_folder_is_bad_input(tmp_path):
    with pytest.raises(BadArgument, match="no solutions folder"):
        build(tmp_path / "nope", tmp_path / "exercises")


def test_command_defaults_to_the_repository_root_and_exits_1_naming_the_notebook(
        course, monkeypatch, capsys):
    (course / "labs").mkdir()
    monkeypatch.chdir(course / "labs")  # below the root: pyproject.toml is found above
    assert run_cli("--check") == 1
    err = capsys.readouterr().err.splitlines()
    exercises = course.resolve() / "exercises"  # outside the current folder: shown in full
    assert err == [f"{exercises}/01_signals.ipynb is missing: run `labkit course build`",
                   f"{exercises}/02_sessions.ipynb is missing: run `labkit course build`"]
    assert run_cli() == 0
    assert capsys.readouterr().out.count("wrote ") == 2
    assert run_cli("--check") == 0
    assert capsys.readouterr().out.count("is up to date") == 2


def test_command_takes_explicit_folders(course, monkeypatch, capsys):
    monkeypatch.chdir(course)
    assert run_cli("--solutions", "solutions", "--exercises", "out") == 0
    assert capsys.readouterr().out.splitlines() == ["wrote out/01_signals.ipynb",
                                                    "wrote out/02_sessions.ipynb"]
    empty = course / "empty"
    empty.mkdir()
    assert run_cli("--solutions", "empty", "--exercises", "out2", "--check") == 0
    assert "no solution notebooks" in capsys.readouterr().out


# -- package hygiene ----------------------------------------------------------------------------

def test_importing_labkit_course_does_not_import_nbformat():
    code = "import sys, labkit, labkit.course; print('nbformat' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.stdout.strip() == "False", result.stderr


def test_public_api_is_typed_and_documented():
    for name in labkit.course.__all__:
        obj = getattr(labkit.course, name)
        assert (obj.__doc__ or "").strip(), name
        if inspect.isfunction(obj):
            signature = inspect.signature(obj)
            assert signature.return_annotation is not inspect.Signature.empty, name
            for parameter in signature.parameters.values():
                assert parameter.annotation is not inspect.Parameter.empty, (name, parameter.name)


# -- the real course ----------------------------------------------------------------------------

@pytest.mark.skipif(not list((REPO / "solutions").glob("[0-9][0-9]_*.ipynb")),
                    reason="no lessons in solutions/ yet")
def test_committed_exercises_are_what_the_solutions_build():
    report = build(REPO / "solutions", REPO / "exercises", check=True)
    assert report.ok, "\n".join(report.problems())


@pytest.mark.skipif(not list((REPO / "solutions").glob("[0-9][0-9]_*.ipynb")),
                    reason="no lessons in solutions/ yet")
def test_run_all_in_every_exercise_draws_check_my_work_before_the_first_cell_that_can_fail():
    """JupyterLab's Run All stops at the first error: an unanswered stub, or a check of it."""
    for path in sorted((REPO / "exercises").glob("[0-9][0-9]_*.ipynb")):
        cells = json.loads(path.read_text())["cells"]
        kinds = [(c["metadata"].get("nbgrader", {}).get("grade_id"), c["metadata"].get("nbgrader", {})) for c in cells]
        ids = [grade_id for grade_id, _ in kinds]
        at = ids.index("check_my_work")
        assert ids[at - 1] == "check_my_work_md" and ids.index("setup") < at, (path.name, ids)
        before = [grade_id for grade_id, meta in kinds[:at] if meta.get("solution") or meta.get("grade")]
        assert before == [], f"{path.name}: {before} can fail before the Check my work buttons are drawn"
        assert "CheckMyWork(" in "".join(cells[at]["source"])


def test_check_my_work_moves_after_setup_and_a_notebook_without_setup_keeps_its_order():
    from labkit.course.transform import check_my_work_first

    def cell(grade_id):
        return {"metadata": {"nbgrader": {"grade_id": grade_id}}} if grade_id else {"metadata": {}}

    order = ["intro", "setup", "ex1_answer", "ex1_tests", "check_my_work_md", "check_my_work", "cleanup", None]
    moved = check_my_work_first([cell(g) for g in order])
    assert [c["metadata"].get("nbgrader", {}).get("grade_id") for c in moved] == \
        ["intro", "setup", "check_my_work_md", "check_my_work", "ex1_answer", "ex1_tests", "cleanup", None]
    plain = [cell(g) for g in ["intro", "ex1_answer", "check_my_work"]]
    assert check_my_work_first(plain) == plain
