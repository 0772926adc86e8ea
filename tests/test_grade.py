"""labkit grade: honest scores from the solution's tests, hostile submissions contained, nothing left.

Most tests share one graded "class" (``batch``): a dozen submissions of the fixture lesson
``tests/fixtures/grade/solutions/10_basics.ipynb`` (tests worth 2 + 3 + 5 points, cells 4, 7
and 10; answers in cells 3, 6 and 9), graded once with two kernels at a time.
"""

from __future__ import annotations

import argparse
import contextlib
import asyncio
import html
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import nbformat
import psutil
import pytest

from labkit.cgroups import own_folders
from labkit.course import _cgroup, _isolation, build
from labkit.course._gradebook import Gradebook, digest
from labkit.course._merge import find_answers, load_lesson, notebook_to_run
from labkit.course._run import TOKEN_VAR, _kernel_env, run_notebook
from labkit.course.grade import (GradeLimits, GradeResult, add_arguments, grade, grade_notebook, main,
                                 read_gradebook, submissions_from)
from labkit.errors import BadArgument

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).parent / "fixtures" / "grade"
SOLUTIONS = FIXTURES / "solutions"
SOLUTION = SOLUTIONS / "10_basics.ipynb"
EXERCISE = FIXTURES / "exercises" / "10_basics.ipynb"
ISOLATED = _isolation.plan("labkit-grader", [], []).uid is not None  #: root, namespaces: the full sandbox
LIMITS = GradeLimits(cell_timeout_s=8, notebook_timeout_s=60, interrupt_grace_s=2, memory_max_bytes=256 * 2**20,
                     max_processes=64, address_space_max_bytes=2 * 2**30)

ADD = "def add(a, b):\n    return a + b"
MEAN = "def mean(values):\n    if not values:\n        raise ValueError('empty')\n    return sum(values) / len(values)"
NORM = "import math\n\ndef norm(v):\n    return math.sqrt(sum(x * x for x in v))"
RIGHT = {"add_answer": ADD, "mean_answer": MEAN, "norm_answer": NORM}
LOOP = "while True:\n    pass"
DEAF = "import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nwhile True:\n    pass"
SUICIDE = "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)"
FORKER = """import os, subprocess
subprocess.Popen(["sleep", "3517"], start_new_session=True)
for _ in range(400):  # daemons: fork, setsid, fork again; until the process limit refuses
    try:
        pid = os.fork()
    except OSError:
        break
    if pid == 0:
        try:
            os.setsid()
            if os.fork() == 0:
                os.execvp("sleep", ["sleep", "3518"])
        finally:
            os._exit(0)
    os.waitpid(pid, 0)"""
PARRICIDE = """import os, signal, subprocess
subprocess.Popen(["sleep", "3523"], start_new_session=True)
os.kill(os.getppid(), signal.SIGKILL)  # the sandbox: then nothing reaps, nothing kills for it"""
CHATTY = "while True:\n    print('x' * 100_000)"
HOG = """chunks = []
while True:
    try:
        chunks.append(bytearray(32 * 2**20))
    except MemoryError:
        pass  # and keep asking"""


def exercise() -> dict:
    return json.loads(EXERCISE.read_text())


def with_answers(answers: dict[str, str], nb: dict | None = None) -> dict:
    nb = nb or exercise()
    for cell in nb["cells"]:
        grade_id = cell["metadata"].get("nbgrader", {}).get("grade_id")
        if grade_id in answers:
            cell["source"] = answers[grade_id]
    return nb


def tamper_tests(nb: dict) -> dict:
    """Empty every test cell, claim 100 points for each, drop one, add a free bonus test."""
    for cell in nb["cells"]:
        meta = cell["metadata"].get("nbgrader", {})
        if meta.get("grade"):
            cell["source"], meta["points"] = "pass", 100
    nb["cells"] = [cell for cell in nb["cells"] if cell["id"] != "norm-tests"]
    bonus = {"cell_type": "code", "id": "bonus", "execution_count": None, "outputs": [], "source": "pass",
             "metadata": {"nbgrader": {"grade": True, "solution": False, "locked": True, "points": 1000,
                                       "grade_id": "bonus", "schema_version": 3}}}
    nb["cells"].append(bonus)
    return nb


def rename_answer(nb: dict) -> dict:
    next(cell for cell in nb["cells"] if cell["id"] == "add-answer")["metadata"]["nbgrader"]["grade_id"] = "my_add"
    return nb


CLASS = {  # student -> the notebook's content (dict), or raw file text
    "solution": json.loads(SOLUTION.read_text()),
    "untouched": exercise(),
    "partial": with_answers({"add_answer": ADD, "mean_answer": "def mean(values):\n    return 0"}),
    "tampered": tamper_tests(with_answers({"add_answer": "def add(a, b):\n    return a - b"})),
    "tampered-right": tamper_tests(with_answers(RIGHT)),
    "renamed": rename_answer(with_answers(RIGHT)),
    "stuck-once": with_answers({**RIGHT, "mean_answer": LOOP}),
    "loop": with_answers({"add_answer": LOOP}),
    "deaf": with_answers({"add_answer": DEAF}),
    "suicide": with_answers({"add_answer": SUICIDE}),
    "forker": with_answers({"add_answer": FORKER}),
    "hog": with_answers({"add_answer": HOG}),
    "chatty": with_answers({"add_answer": CHATTY}),
    "parricide": with_answers({"add_answer": PARRICIDE}),
    "invalid-json": '{"cells": [',
    "not-a-notebook": '{"cells": "none", "nbformat": 4}',
}


def write_class(folder: Path, students=CLASS) -> list[Path]:
    paths = []
    for student, content in students.items():
        path = folder / "submitted" / student / "10_basics.ipynb"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content if isinstance(content, str) else json.dumps(content))
        paths.append(path)
    return paths


def grader_processes() -> list[psutil.Process]:
    """Processes started for grading (sandboxes, kernels, all they started) by this test session."""
    found = []
    for proc in psutil.process_iter():
        try:
            env = proc.environ()
        except psutil.Error:
            continue
        if TOKEN_VAR in env and env.get("LABKIT_TEST_TAG") == os.environ["LABKIT_TEST_TAG"]:
            found.append(proc)
    return found


def cgroups_can(controller: str) -> bool:
    groups = _cgroup.create("probe", 2**30 if controller == "memory" else None, 64 if controller == "pids" else None)
    try:
        return controller in groups.folders
    finally:
        groups.remove()


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    """The class graded with --jobs 2: {student: GradeResult}, and the output folder."""
    folder = tmp_path_factory.mktemp("class")
    paths = write_class(folder)
    results = grade(paths, folder / "graded", solutions_dir=SOLUTIONS, jobs=2, limits=LIMITS)
    return {result.student: result for result in results}, folder


def test_every_submission_gets_one_row(batch):
    results, folder = batch
    rows = read_gradebook(folder / "graded" / "gradebook.csv")
    assert [(row["student"], row["notebook"]) for row in rows] == sorted((s, "10_basics") for s in CLASS)
    assert all(row["max_score"] == "10" for row in rows)
    assert {row["student"]: row["score"] for row in rows} == {s: f"{r.score:g}" for s, r in results.items()}
    assert not grader_processes(), "a submission left processes behind"
    assert not list((folder / "graded").glob(".tmp-*"))


def test_the_solution_gets_full_marks_and_the_untouched_exercise_zero(batch):
    results, _ = batch
    assert (results["solution"].score, results["solution"].status) == (10, "ok")
    assert all(test.passed for test in results["solution"].tests)
    assert (results["untouched"].score, results["untouched"].status) == (0, "not answered")


def test_a_partly_right_submission_gets_partial_marks(batch):
    partial = batch[0]["partial"]
    assert (partial.score, partial.status) == (2, "ok")
    assert [(t.grade_id, t.points, t.passed) for t in partial.tests] == [
        ("add_tests", 2, True), ("mean_tests", 0, False), ("norm_tests", 0, False)]
    assert partial.tests[1].message == "AssertionError: mean([1, 2, 3]) should be 2"


def test_tests_and_points_come_from_the_solution_whatever_the_submission_did_to_them(batch):
    results, _ = batch
    assert (results["tampered"].score, results["tampered"].max_score) == (0, 10)
    assert (results["tampered-right"].score, results["tampered-right"].status) == (10, "ok")
    # the hidden test (add(-5, 5)) ran although the student's notebook never had it
    assert [t.grade_id for t in results["tampered-right"].tests] == ["add_tests", "mean_tests", "norm_tests"]


def test_a_renamed_answer_cell_counts_as_not_answered(batch):
    renamed = batch[0]["renamed"]
    assert (renamed.score, renamed.status) == (8, "ok")
    assert "NotImplementedError" in renamed.tests[0].message


def test_an_endless_loop_is_interrupted_and_costs_only_its_own_tests(batch):
    results, _ = batch
    assert (results["loop"].score, results["loop"].status) == (0, "timeout in cell 3 (add_answer)")
    stuck = results["stuck-once"]
    assert (stuck.score, stuck.status) == (7, "timeout in cell 6 (mean_answer)")


def test_a_kernel_that_ignores_interrupts_is_killed(batch):
    deaf = batch[0]["deaf"]
    assert (deaf.score, deaf.status) == (0, "timeout in cell 3 (add_answer): kernel killed, it ignored the interrupt")
    assert deaf.tests[0].message.startswith("not run: timeout in cell 3")


def test_a_kernel_that_kills_itself_is_reported_dead(batch):
    suicide = batch[0]["suicide"]
    assert (suicide.score, suicide.status) == (0, "kernel died in cell 3 (add_answer): killed by SIGKILL")


def test_a_kernel_that_kills_its_sandbox_dies_with_all_it_started(batch):
    parricide = batch[0]["parricide"]
    if ISOLATED:  # its parent is the namespace's init, which SIGKILL from inside cannot touch
        assert (parricide.score, parricide.status) == (0, "ok")
    else:
        assert (parricide.score, parricide.status) == (0, "kernel died in cell 3 (add_answer)")
    assert not [p for p in psutil.process_iter(["cmdline"]) if p.info["cmdline"] == ["sleep", "3523"]]


def test_forks_and_daemons_are_limited_and_all_killed(batch):
    forker = batch[0]["forker"]
    assert forker.score == 0
    if cgroups_can("pids"):
        assert forker.status == "ok; process limit (64) reached"
    else:
        assert forker.status == "ok"
    assert not [p for p in psutil.process_iter(["cmdline"]) if p.info["cmdline"] in (["sleep", "3517"], ["sleep", "3518"])]


def test_without_cgroups_the_sandbox_and_the_token_sweep_still_kill_everything(tmp_path, monkeypatch):
    monkeypatch.setattr(_cgroup, "create", lambda *args: _cgroup.Cgroups())  # as on a machine without any
    paths = write_class(tmp_path, {student: CLASS[student] for student in ("forker", "parricide", "solution")})
    results = grade(paths, tmp_path / "graded", solutions_dir=SOLUTIONS, jobs=2, limits=LIMITS)
    statuses = {result.student: (result.score, result.status) for result in results}
    assert statuses["parricide"] == ((0, "ok") if ISOLATED else (0, "kernel died in cell 3 (add_answer)"))
    assert statuses["solution"] == (10, "ok") and statuses["forker"][0] == 0
    assert not grader_processes()


def test_unbounded_allocation_ends_in_a_clear_status(batch):
    hog = batch[0]["hog"]
    assert hog.score == 0
    if cgroups_can("memory"):
        assert hog.status == "kernel died in cell 3 (add_answer): out of memory (limit 256 MiB)"
    else:  # RLIMIT_AS only: MemoryError, which this submission swallows forever
        assert hog.status == "timeout in cell 3 (add_answer)"


def test_endless_output_is_contained(batch):
    chatty = batch[0]["chatty"]
    assert chatty.score == 0
    assert chatty.status.startswith(("timeout in cell 3 (add_answer)", "kernel died in cell 3 (add_answer)"))


def test_output_beyond_the_cap_is_dropped():
    printer = "import sys, time\nfor _ in range(5):\n    print('y' * 60_000)\n    sys.stdout.flush()\n    time.sleep(0.3)"
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(printer), nbformat.v4.new_code_cell("print('next')")])
    outcome = asyncio.run(run_notebook(nb, GradeLimits(output_max_bytes=100_000)))
    assert outcome.status == "ok"
    texts = [output.get("text", "") for output in nb.cells[0].outputs]
    assert sum(map(len, texts)) < 100_000 + 200 and "output beyond 100000 bytes dropped" in texts[-1]
    assert nb.cells[1].outputs[0]["text"] == "next\n"


def test_a_flood_of_errors_is_cut_to_the_cap_too():
    flood = ("kernel = get_ipython().kernel\nparent = kernel.get_parent('shell')\nfor _ in range(300):\n"
             "    kernel.session.send(kernel.iopub_socket, 'error', {'ename': 'ValueError', 'evalue': 'v' * 200_000,"
             " 'traceback': ['x' * 200_000]}, parent=parent)")
    answer = nbformat.v4.new_code_cell(flood, metadata={"nbgrader": {"solution": True, "grade_id": "flood"}})
    nb = nbformat.v4.new_notebook(cells=[answer, nbformat.v4.new_code_cell("print('next')")])
    outcome = asyncio.run(run_notebook(nb, GradeLimits(output_max_bytes=100_000)))
    assert outcome.status == "ok"
    kept = json.dumps(nb.cells[0].outputs)  # the grader's own memory: what it kept of the flood
    assert len(kept) < 100_000 + 150_000 and kept.count('"ValueError"') < 15
    assert nb.cells[1].outputs[0]["text"] == "next\n"


def test_unreadable_notebooks_are_reported_not_fatal(batch):
    results, _ = batch
    assert results["invalid-json"].status.startswith("invalid notebook: not JSON (")
    assert results["not-a-notebook"].status == "invalid notebook: not a Jupyter notebook (no list of cells)"
    assert results["invalid-json"].score == 0 and results["invalid-json"].max_score == 10


def test_feedback_shows_each_test_result_but_never_hidden_tests(batch):
    _, folder = batch
    page = re.sub(r"<[^>]+>", "", (folder / "graded" / "feedback" / "partial" / "10_basics.html").read_text())
    assert "passed: 2 / 2 points\n" in page
    assert "failed: 0 / 3 points: AssertionError: mean([1, 2, 3]) should be 2" in page
    assert "return 0" in page  # the student's own answer
    assert "add(-5, 5)" not in page and "HIDDEN" not in page
    renamed = html.unescape((folder / "graded" / "feedback" / "renamed" / "10_basics.html").read_text())
    assert "no cell with grade_id 'add_answer' (deleted or renamed)" in renamed
    invalid = (folder / "graded" / "feedback" / "invalid-json" / "10_basics.html").read_text()
    assert "invalid notebook: not JSON" in invalid


def test_jobs_do_not_change_results(batch, tmp_path):
    results, _ = batch
    students = ["solution", "partial", "tampered", "suicide", "invalid-json", "untouched"]
    paths = write_class(tmp_path, {student: CLASS[student] for student in students})
    alone = grade(paths, tmp_path / "graded", solutions_dir=SOLUTIONS, jobs=1, limits=LIMITS)
    assert [r.row() for r in alone] == [results[student].row() for student in students]


def test_a_rerun_grades_only_what_changed(batch, tmp_path):
    _, folder = batch
    shutil.copytree(folder / "submitted", tmp_path / "submitted")
    shutil.copytree(folder / "graded", tmp_path / "graded")
    paths = sorted((tmp_path / "submitted").glob("*/10_basics.ipynb"))
    started = time.monotonic()
    again = grade(paths, tmp_path / "graded", solutions_dir=SOLUTIONS, limits=LIMITS)
    assert all(result.resumed for result in again) and time.monotonic() - started < 5
    resubmitted = tmp_path / "submitted" / "partial" / "10_basics.ipynb"
    resubmitted.write_text(json.dumps(with_answers(RIGHT)))
    third = {r.student: r for r in grade(paths, tmp_path / "graded", solutions_dir=SOLUTIONS, limits=LIMITS)}
    assert [s for s, r in third.items() if not r.resumed] == ["partial"]
    rows = {row["student"]: row for row in read_gradebook(tmp_path / "graded" / "gradebook.csv")}
    assert rows["partial"]["score"] == "10" and len(rows) == len(CLASS)


def test_regrade_grades_again(tmp_path):
    paths = write_class(tmp_path, {"solution": CLASS["solution"], "untouched": CLASS["untouched"]})
    grade(paths, tmp_path / "graded", solutions_dir=SOLUTIONS, limits=LIMITS)
    again = grade(paths, tmp_path / "graded", solutions_dir=SOLUTIONS, limits=LIMITS, regrade=True)
    assert [(r.resumed, r.score) for r in again] == [(False, 10), (False, 0)]


def test_the_whole_notebook_timeout_holds(tmp_path):
    slow = "import time\ntime.sleep(2)\n"
    nb = with_answers({"add_answer": slow + ADD, "mean_answer": slow + MEAN, "norm_answer": slow + NORM})
    path = write_class(tmp_path, {"slow": nb})[0]
    result = grade_notebook(path, SOLUTION, limits=GradeLimits(cell_timeout_s=10, notebook_timeout_s=4))
    assert result.status == "timeout in cell 6 (mean_answer): notebook over 4 s"
    assert result.score == 2  # add ran and passed before the deadline


def test_a_kernel_that_cannot_start_is_the_graders_failure_and_is_retried(tmp_path):
    path = write_class(tmp_path, {"solution": CLASS["solution"]})[0]
    tiny = GradeLimits(address_space_max_bytes=16 * 2**20)  # too small for Python itself
    first = grade([path], tmp_path / "graded", solutions_dir=SOLUTIONS, limits=tiny)[0]
    assert first.grader_error and first.status.startswith("grader error: the kernel did not start")
    second = grade([path], tmp_path / "graded", solutions_dir=SOLUTIONS, limits=LIMITS)[0]
    assert (second.resumed, second.score, second.status) == (False, 10, "ok")


STANDIN_CHECK = """import os
from labkit.checks import NotCheckable
if os.environ.get("LABKIT_TEST_STANDIN_TOOL") != "installed":
    raise NotCheckable("the stand-in tool is not installed here", "install it and grade again")
"""


def test_a_check_that_cannot_run_here_awards_nothing_and_is_graded_again_where_it_can(tmp_path, monkeypatch):
    """A test cell raising NotCheckable (the grading machine lacks a tool): 0 points, a grader error
    that names the test and why, and a rerun on a machine that has the tool grades it in full."""
    solutions = tmp_path / "solutions"
    solutions.mkdir()
    nb = json.loads(SOLUTION.read_text())
    norm = next(cell for cell in nb["cells"] if cell["metadata"].get("nbgrader", {}).get("grade_id") == "norm_tests")
    norm["source"] = STANDIN_CHECK + "".join(norm["source"])
    (solutions / SOLUTION.name).write_text(json.dumps(nb))
    path, unanswered = write_class(tmp_path, {"solution": CLASS["solution"],
                                              "no-norm": with_answers({"add_answer": ADD, "mean_answer": MEAN})})
    monkeypatch.delenv("LABKIT_TEST_STANDIN_TOOL", raising=False)
    first, no_norm = grade([path, unanswered], tmp_path / "graded", solutions_dir=solutions, limits=LIMITS)
    # an exercise left unanswered scores 0 on any machine: no reason to grade it again
    assert (no_norm.score, no_norm.status) == (5, "ok")
    assert no_norm.tests[-1].message == "not answered: the exercise's stub was run in its place"
    assert (first.score, first.grader_error) == (5, True)
    assert first.status == ("grader error: not checkable here: norm_tests "
                            "(the stand-in tool is not installed here; install it and grade again)")
    norm_result = next(test for test in first.tests if test.grade_id == "norm_tests")
    assert (norm_result.points, norm_result.passed) == (0, False)
    assert norm_result.message == "not checkable here: the stand-in tool is not installed here; install it and grade again"
    page = (tmp_path / "graded" / "feedback" / "solution" / "10_basics.html").read_text()
    assert "not checked yet: 0 / 5 points: not checkable here: the stand-in tool" in page
    assert "This score is provisional" in page and "failed: 0 / 5" not in page
    monkeypatch.setenv("LABKIT_TEST_STANDIN_TOOL", "installed")
    second = grade([path], tmp_path / "graded", solutions_dir=solutions, limits=LIMITS)[0]
    assert (second.resumed, second.score, second.status) == (False, 10, "ok")
    # --not-checkable zero: the instructor accepts the gap; the 0 stands and the status says why
    monkeypatch.delenv("LABKIT_TEST_STANDIN_TOOL")
    third = grade([path], tmp_path / "graded", solutions_dir=solutions, limits=LIMITS, regrade=True,
                  not_checkable="zero")[0]
    assert (third.score, third.grader_error) == (5, False)
    assert third.status == ("not checkable here: norm_tests (the stand-in tool is not installed here; "
                            "install it and grade again), scored 0")
    page = (tmp_path / "graded" / "feedback" / "solution" / "10_basics.html").read_text()
    assert "not checked: 0 / 5 points" in page and "by your instructor's choice" in page
    assert read_gradebook(tmp_path / "graded" / "gradebook.csv")[0]["score"] == "5"
    with pytest.raises(BadArgument, match="--not-checkable must be one of retry, zero"):
        grade([path], tmp_path / "graded", solutions_dir=solutions, not_checkable="skip")


def test_a_missing_solution_is_the_graders_failure(tmp_path):
    path = tmp_path / "submitted" / "ann" / "99_nothing.ipynb"
    path.parent.mkdir(parents=True)
    shutil.copy(EXERCISE, path)
    result = grade([path], tmp_path / "graded", solutions_dir=SOLUTIONS)[0]
    assert result.grader_error and result.status == f"grader error: no solution notebook {SOLUTIONS / '99_nothing.ipynb'}"
    assert read_gradebook(tmp_path / "graded" / "gradebook.csv")[0]["max_score"] == ""


_GRADE_SCRIPT = ("import sys; from labkit.course.grade import grade, GradeLimits; grade(sys.argv[1:-2], "
                 "sys.argv[-2], solutions_dir=sys.argv[-1], limits=GradeLimits(cell_timeout_s=60))")


def _start_grader(paths: list[Path], out: Path, solutions: Path) -> subprocess.Popen:
    """``grade()`` in a process of its own, to be interrupted or killed."""
    return subprocess.Popen([sys.executable, "-c", _GRADE_SCRIPT, *map(str, paths), str(out), str(solutions)],
                            stderr=subprocess.DEVNULL)


def _kernels_running() -> bool:
    return any("ipykernel_launcher" in " ".join(p.cmdline()) for p in grader_processes())


def _assert_no_grader_process_within(timeout_s: float, why: str) -> None:
    deadline = time.monotonic() + timeout_s
    while grader_processes() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not grader_processes(), why


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["ctrl-c", "sigkill"])
def test_stopping_the_grader_leaves_a_whole_gradebook_and_no_process(tmp_path, sig):
    paths = write_class(tmp_path, {"a-solution": CLASS["solution"], "b-loop": CLASS["loop"]})
    before = set(Path(tempfile.gettempdir()).glob("labkit-grade-*"))
    grader = _start_grader(paths, tmp_path / "graded", SOLUTIONS)
    try:
        deadline = time.monotonic() + 60
        while not (read_gradebook(tmp_path / "graded" / "gradebook.csv") and _kernels_running()):
            assert time.monotonic() < deadline and grader.poll() is None, "the grader never reached b-loop"
            time.sleep(0.05)
        time.sleep(0.5)
        grader.send_signal(sig)
        if sig == signal.SIGINT:  # the grader stops its kernels itself, records nothing half-done
            assert grader.wait(timeout=20) == -signal.SIGINT
    finally:
        grader.kill()
        grader.wait()
    _assert_no_grader_process_within(10, "every kernel must end with the grader")
    assert set(Path(tempfile.gettempdir()).glob("labkit-grade-*")) <= before, "and its folder be removed"
    assert [row["student"] for row in read_gradebook(tmp_path / "graded" / "gradebook.csv")] == ["a-solution"]
    rerun = grade(paths, tmp_path / "graded", solutions_dir=SOLUTIONS, limits=replace(LIMITS, cell_timeout_s=1.5))
    assert [(r.student, r.resumed, r.score) for r in rerun] == [("a-solution", True, 10), ("b-loop", False, 0)]


def _frozen_student_cgroups(grader: int) -> list[Path]:
    root = Path("/sys/fs/cgroup/freezer")  # the grader's cgroups are named labkit-grade-PID-TOKEN
    return [state.parent for state in root.glob(f"labkit-grade-{grader}-*/student/freezer.state")
            if state.read_text().strip() == "FROZEN"]


@pytest.mark.skipif(not Path("/sys/fs/cgroup/freezer").is_dir() or os.geteuid() != 0,
                    reason="needs root and the cgroup v1 freezer, where the grader freezes a learner's processes")
def test_a_grader_killed_while_the_learner_is_frozen_leaves_no_process(tmp_path):
    # A frozen process cannot act on SIGKILL until it is thawed: the sandbox must thaw what it kills.
    solutions = tmp_path / "solutions"
    shutil.copytree(SOLUTIONS, solutions)
    nb = json.loads((solutions / "10_basics.ipynb").read_text())
    check = next(cell for cell in nb["cells"] if cell["id"] == "add-tests")
    check["source"] = "import time\ntime.sleep(30)  # a long check: the learner stays frozen meanwhile\n" + "".join(check["source"])
    (solutions / "10_basics.ipynb").write_text(json.dumps(nb))
    paths = write_class(tmp_path, {"a-solution": with_answers(RIGHT)})
    grader = _start_grader(paths, tmp_path / "graded", solutions)
    try:
        deadline = time.monotonic() + 60
        while not _kernels_running() or not _frozen_student_cgroups(grader.pid):
            assert time.monotonic() < deadline and grader.poll() is None, "the learner was never frozen"
            time.sleep(0.05)
        grader.kill()
    finally:
        grader.kill()
        grader.wait()
    _assert_no_grader_process_within(15, "a kernel frozen when its grader died must end with it")


@pytest.mark.skipif(not ISOLATED, reason="no PID namespace here: no init inside the sandbox")
def test_a_sandbox_killed_outright_takes_its_namespace_with_it(tmp_path):
    # init (pid 1 of the namespace) drops to the sandbox user, which clears PR_SET_PDEATHSIG:
    # it must set it again, or a SIGKILLed sandbox leaves init, the judge and the kernel running
    paths = write_class(tmp_path, {"b-loop": CLASS["loop"]})
    grader = _start_grader(paths, tmp_path / "graded", SOLUTIONS)
    try:
        deadline = time.monotonic() + 60
        while True:  # the kernel itself, not only the sandbox whose command line names it
            tree = psutil.Process(grader.pid).children(recursive=True)
            kernels = [p for p in tree if p.cmdline()[1:3] == ["-m", "ipykernel_launcher"]]
            if kernels:
                break
            assert time.monotonic() < deadline and grader.poll() is None, "the kernel never started"
            time.sleep(0.05)
        outer = [p for p in psutil.Process(grader.pid).children() if "_sandbox.py" in " ".join(p.cmdline())]
        assert len(outer) == 1, outer
        outer[0].kill()
        grader.kill()  # at once: the grader's own sweep must not be what ends them
        gone, alive = psutil.wait_procs(tree, timeout=10)
        assert not alive, f"init, the judge and the kernel must die with their sandbox: {alive}"
    finally:
        grader.kill()
        grader.wait()
        for proc in locals().get("tree", []):
            with contextlib.suppress(psutil.Error):
                proc.kill()


def test_a_real_lesson_through_the_command_line_gets_full_partial_and_zero_marks(tmp_path, capsys):
    solution, exercise_ = ROOT / "solutions" / "00_welcome.ipynb", ROOT / "exercises" / "00_welcome.ipynb"
    lesson = load_lesson(solution)
    answer = lesson.answers["ex1_answer"]
    partial = json.loads(exercise_.read_text())
    next(c for c in partial["cells"] if c["id"] == answer.cell_id)["source"] = answer.source
    partial_path = tmp_path / "submitted" / "ann" / "00_welcome.ipynb"
    partial_path.parent.mkdir(parents=True)
    partial_path.write_text(json.dumps(partial))
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args([str(solution), str(exercise_), str(partial_path), "--out", str(tmp_path / "graded"),
                              "--jobs", "2", "--student", f"{solution}=instructor", "--student", f"{exercise_}=untouched"])
    assert main(args) == 0
    rows = {row["student"]: row for row in read_gradebook(tmp_path / "graded" / "gradebook.csv")}
    full = _number(lesson.max_score)
    ex1 = _number(sum(test.points for grade_id, test in lesson.tests.items() if grade_id.startswith("ex1_")))
    assert [(rows[s]["score"], rows[s]["max_score"], rows[s]["status"]) for s in ("instructor", "ann", "untouched")] \
        == [(full, full, "ok"), (ex1, full, "ok"), ("0", full, "not answered")]
    assert f"instructor 00_welcome: {full}/{full} ok" in capsys.readouterr().out
    assert (tmp_path / "graded" / "feedback" / "instructor" / "00_welcome.html").is_file()
    assert not grader_processes()



@pytest.mark.parametrize("options, words", [
    (["--out", "/dev/null/graded"], "--out /dev/null/graded: cannot create the folder: Not a directory"),
    (["--out", "{file}"], "cannot create the folder: File exists"),
    (["--out", "{tmp}/graded", "--solutions", "/dev/null/solutions"], "no solutions folder at /dev/null/solutions"),
    (["--out", "{tmp}/graded", "--solutions", "{file}"], "no solutions folder at"),
], ids=["out-under-a-file", "out-is-a-file", "solutions-missing", "solutions-is-a-file"])
def test_a_bad_path_option_is_one_line_and_exit_2(tmp_path, options, words):
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")
    options = [o.format(tmp=tmp_path, file=a_file) for o in options]
    done = subprocess.run([sys.executable, "-m", "labkit.cli", "grade", str(EXERCISE), *options],
                          capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout) == (2, ""), done.stderr
    assert len(done.stderr.splitlines()) == 1 and done.stderr.startswith("labkit: error:"), done.stderr
    assert words.format(file=a_file) in done.stderr, done.stderr
    assert not grader_processes()

def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(round(value, 4))


# -- the parts, without kernels --------------------------------------------------------------------

def test_students_are_named_by_their_folder_or_by_mapping(tmp_path):
    paths = [tmp_path / "submitted" / "ann" / "01_x.ipynb", tmp_path / "submitted" / "bo" / "ps1" / "01_x.ipynb",
             tmp_path / "inbox" / "02_y.ipynb"]
    for path in paths:
        path.parent.mkdir(parents=True)
        path.write_text("{}")
    named = submissions_from(paths)
    assert [(s.student, s.notebook) for s in named] == [("ann", "01_x"), ("bo", "01_x"), ("inbox", "02_y")]
    assert submissions_from(paths[2:], {paths[2]: "cy"})[0].student == "cy"
    with pytest.raises(BadArgument, match="both ann's 01_x"):
        submissions_from([paths[0], paths[0]])
    with pytest.raises(BadArgument, match="no submission at"):
        submissions_from([tmp_path / "missing.ipynb"])
    with pytest.raises(BadArgument, match="bad student name"):
        submissions_from(paths[:1], {paths[0]: ".."})


def test_answers_match_by_grade_id_preferring_the_original_cell():
    lesson = load_lesson(SOLUTION)
    nb = with_answers(RIGHT)
    copy = json.loads(json.dumps(next(c for c in nb["cells"] if c["id"] == "add-answer")))
    copy["id"], copy["source"] = "pasted", "def add(a, b):\n    return 0"
    nb["cells"].insert(0, copy)  # a copy pasted above, JupyterLab keeps its metadata
    answers = find_answers(lesson, nb)
    assert answers["add_answer"].source == ADD and answers["add_answer"].answered
    markdown = with_answers(RIGHT)
    next(c for c in markdown["cells"] if c["id"] == "norm-answer")["cell_type"] = "markdown"
    assert find_answers(lesson, markdown)["norm_answer"].note == "the cell is 'markdown', not 'code'"


def test_the_notebook_that_runs_is_the_solution_with_the_answers_put_in():
    lesson = load_lesson(SOLUTION)
    tampered = tamper_tests(with_answers({"add_answer": "def add(a, b):\n    return 7"}))
    run = notebook_to_run(lesson, find_answers(lesson, tampered))
    assert [cell.id for cell in run.cells] == [cell.id for cell in lesson.solution.cells]
    sources = {cell.id: cell.source for cell in run.cells}
    assert sources["add-answer"] == "def add(a, b):\n    return 7"
    assert sources["add-tests"] == lesson.solution.cells[4].source and "HIDDEN TESTS" in sources["add-tests"]
    assert sources["mean-answer"] == lesson.stubs["mean_answer"]


def test_the_gradebook_regrades_a_changed_submission(tmp_path):
    book = Gradebook(tmp_path)
    row = GradeResult("ann", "01_x", 2.5, 10, "ok", protections="judge").row()
    assert row == {"student": "ann", "notebook": "01_x", "score": "2.5", "max_score": "10", "status": "ok",
                   "protections": "judge"}
    book.record(row, digest(b"v1"))
    again = Gradebook(tmp_path)
    assert again.graded("ann", "01_x", digest(b"v1")) == row
    assert again.graded("ann", "01_x", digest(b"v2")) is None
    again.record({**row, "status": "grader error: x"}, digest(b"v2"))
    assert Gradebook(tmp_path).graded("ann", "01_x", digest(b"v2")) is None


def test_the_kernel_gets_no_credentials_and_a_home_of_its_own(monkeypatch, tmp_path):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "hunter2")
    monkeypatch.setenv("TMUX", "/tmp/tmux-0/default,1,0")
    env = _kernel_env(tmp_path, "token")
    assert "AWS_SECRET_ACCESS_KEY" not in env and "TMUX" not in env
    assert env["HOME"] == str(tmp_path) and env["LABKIT_HOME"] == str(tmp_path / ".labkit")
    assert env[TOKEN_VAR] == "token" and env["PATH"] == os.environ["PATH"]
    assert env["LABKIT_TEST_TAG"] == os.environ["LABKIT_TEST_TAG"]  # the suite's leak check sees kernels


def test_the_fixture_exercise_is_built_from_its_solution():
    assert build(SOLUTIONS, FIXTURES / "exercises", check=True).ok


def test_the_sandbox_kills_what_escaped_into_a_new_session(tmp_path):
    sandbox = ROOT / "labkit" / "course" / "_sandbox.py"
    child = ("import subprocess, sys; p = subprocess.Popen(['sleep', '3519'], start_new_session=True); "
             "print(p.pid, flush=True)")
    done = subprocess.run([sys.executable, "-I", "-S", str(sandbox), "--status", str(tmp_path / "s.json"), "--",
                           sys.executable, "-c", child], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0
    assert not psutil.pid_exists(int(done.stdout)) or psutil.Process(int(done.stdout)).status() == "zombie"
    assert json.loads((tmp_path / "s.json").read_text()) == {"left": 0, "stopped": False, "exit_code": 0, "signal": None}
    stopped = subprocess.Popen([sys.executable, "-I", "-S", str(sandbox), "--status", str(tmp_path / "t.json"), "--",
                                "sh", "-c", "setsid sleep 3520 & sleep 3521"])
    time.sleep(0.5)
    stopped.terminate()
    assert stopped.wait(timeout=10) == 0
    assert json.loads((tmp_path / "t.json").read_text())["stopped"] is True
    assert not [p for p in psutil.process_iter(["cmdline"]) if p.info["cmdline"] and p.info["cmdline"][-1] in ("3520", "3521")]


def test_the_sandbox_applies_rlimits_to_what_it_starts(tmp_path):
    sandbox = ROOT / "labkit" / "course" / "_sandbox.py"
    probe = ("import os, resource, sys\n"
             "print(resource.getrlimit(resource.RLIMIT_FSIZE)[0], resource.getrlimit(resource.RLIMIT_CPU)[0])\n"
             "fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT)\n"
             "try:\n    for _ in range(10):\n        os.write(fd, b'x' * 1000)\n"
             "except OSError as err:\n    print(err.strerror)")
    done = subprocess.run([sys.executable, "-I", "-S", str(sandbox), "--fsize", "4096", "--cpu", "30", "--",
                           sys.executable, "-c", probe, str(tmp_path / "big")], capture_output=True, text=True, timeout=30)
    assert done.stdout.splitlines() == ["4096 30", "File too large"]
    assert (tmp_path / "big").stat().st_size == 4096


@pytest.mark.skipif(not own_folders(_cgroup._WANTED_V1), reason="no writable cgroup on this machine")
def test_a_cgroup_lists_its_members_and_kills_them():
    groups = _cgroup.create("test", 2**30, 64)
    sleeper = subprocess.Popen(["sleep", "3522"])
    try:
        for folder in groups.folders.values():
            (folder / "cgroup.procs").write_text(str(sleeper.pid))
        assert groups.procs() == {sleeper.pid}
        assert groups.kill() == 0
        assert sleeper.wait(timeout=5) == -signal.SIGKILL
    finally:
        sleeper.kill()
        sleeper.wait()
        groups.remove()
    assert not any(folder.exists() for folder in groups.folders.values())


def test_every_graded_row_has_its_details_and_the_class_report_names_the_hostile_ones(batch, tmp_path):
    from labkit.course import report
    from labkit.course._gradebook import read_details

    results, folder = batch
    details = read_details(folder / "graded", "partial", "10_basics")
    assert [(t["grade_id"], t["passed"]) for t in details["tests"]] == [
        ("add_tests", True), ("mean_tests", False), ("norm_tests", False)]
    assert details["score"] == "2" and details["seconds"] > 0
    data = report.build(folder / "graded")
    kinds = {problem["student"]: problem["kind"] for problem in data["problems"]}
    assert kinds["invalid-json"] == kinds["not-a-notebook"] == "broken"
    assert kinds["loop"] == kinds["deaf"] == "hostile or stuck"
    assert not {"solution", "untouched", "partial"} & set(kinds)
    assert data["submissions"] == len(CLASS) and data["notebooks"]["10_basics"]["full_marks"] >= 1
    page = report.write(folder / "graded", tmp_path / "report")
    assert page.is_file() and (tmp_path / "report" / "scores.png").is_file()
