"""The real nbgrader (0.9.6, from the ``test`` extra) on the course, beside ``labkit grade``.

For instructors who already run nbgrader: its ``generate_assignment`` must release the same cells
as ``exercises/`` (checksums included, so ``nbgrader validate`` spots an edited test cell), and its
``autograde`` must give every lesson the same scores as ``labkit grade``, test cell by test cell.

One module-scoped run does the expensive part once. Three students submit: ``solution`` (every
lesson answered as the solutions do), ``partly`` (lesson 01 only: one wrong answer from the corpus,
and one right answer that also writes to its stderr, which nbgrader scores as a failure wherever
it reaches the kernel's stderr) and ``untouched`` (lesson 00 as released). nbgrader grades one
notebook after the other and the checks mostly wait, so the submissions are split over
``SHARDS`` nbgrader course folders of about equal grading time; each releases its lessons and
grades all its submissions in ONE ``nbgrader autograde`` call, all at once, while ``labkit grade``
grades the same files beside them. Skipped, with the reason, where nbgrader cannot be imported.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

try:
    import nbgrader  # noqa: F401 - only to know it is there: its commands run in their own processes
except ImportError as err:  # missing, or installed with a broken dependency
    pytest.skip(f"nbgrader cannot be imported ({err}); pip install -e '.[test]' installs it",
                allow_module_level=True)

from labkit.course.cells import nbgrader_checksum  # noqa: E402 - after the skip
from labkit.course.grade import GradeResult, grade  # noqa: E402
from labkit.course.transform import check_my_work_first  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
LESSONS = sorted(path.stem for path in (ROOT / "solutions").glob("[0-9][0-9]_*.ipynb"))
CORPUS = Path(__file__).parent / "fixtures" / "wrong_answers"
ASSIGNMENT = "labkit"
WRONG = CORPUS / "01_signals" / "ex1_reports_sigkill.py"  #: the partly right student's one wrong answer
#: what a cell's metadata carries in a released notebook that the course defines (nbgrader also
#: passes the author's other metadata through, such as labkit's grader hints; we drop those)
RELEASED_KEYS = ("nbgrader", "tags", "deletable", "editable")
AUTOGRADE_TIMEOUT_S = 1200


def _grade_id(cell: dict) -> str | None:
    return cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")


def _source(cell: dict) -> str:
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def _answers(lesson: str) -> dict[str, str]:
    notebook = json.loads((ROOT / "solutions" / f"{lesson}.ipynb").read_text())
    return {_grade_id(cell): _source(cell) for cell in notebook["cells"]
            if cell.get("metadata", {}).get("nbgrader", {}).get("solution")}


def _wrong_answer(path: Path) -> tuple[str, str]:
    """(the answer cell it replaces, its source) from a corpus file's ``# cell:`` header."""
    lines = path.read_text().splitlines(keepends=True)
    cell = next(line.split(":", 1)[1].strip() for line in lines if line.startswith("# cell:"))
    return cell, "".join(line for line in lines if not line.startswith(("# cell:", "# breaks:", "# fails:")))


def _chatty_ex3() -> str:
    """01 exercise 3 answered right, the toy also saying on its stderr which signal it got: a
    training loop that logs to stderr is no mistake, and must not cost a point under nbgrader."""
    right = _answers("01_signals")["ex3_answer"]
    told = "    stop_requested = signal.Signals(signum).name\n"
    assert told in right, "the 01 ex3 solution changed: update _chatty_ex3"
    return right.replace(told, told + "    print('stopping on', stop_requested, file=sys.stderr, flush=True)\n")


def _submission(lesson: str, replace: dict[str, str]) -> dict:
    """Our exercise as a student would hand it in: the solution's answers, some replaced."""
    notebook = json.loads((ROOT / "exercises" / f"{lesson}.ipynb").read_text())
    answers = {**_answers(lesson), **replace}
    for cell in notebook["cells"]:
        if _grade_id(cell) in answers and cell["metadata"]["nbgrader"].get("solution"):
            cell["source"] = answers[_grade_id(cell)]
    return notebook


#: nbgrader autograde's seconds per lesson (solution answers), measured on 2 cores: for the split below
COST_S = {"00_welcome": 5, "01_signals": 30, "02_sessions": 35, "03_systemd": 16, "04_limits": 27,
          "05_diagnostics": 38, "06_graceful_shutdown": 22}
#: nbgrader grades one notebook at a time; the checks mostly wait, so several course folders are
#: graded at once, each by ONE nbgrader autograde call (all of its students and lessons)
SHARDS = int(os.environ.get("LABKIT_NBGRADER_SHARDS", "3"))
LABKIT_JOBS = int(os.environ.get("LABKIT_GRADE_JOBS", "3"))  #: labkit grade's kernels at once, beside them


@dataclass
class Run:
    courses: dict[str, Path]  #: lesson -> the nbgrader course folder that released it
    folders: list[Path]  #: every course folder
    nbgrader_scores: dict[tuple[str, str], dict[str, tuple[float, float]]]  #: (student, lesson) -> grade_id -> points
    labkit: dict[tuple[str, str], GradeResult]
    autograded: dict[tuple[str, str], dict]  #: nbgrader's autograded notebooks, as JSON
    feedback: list[subprocess.CompletedProcess]
    export: list[subprocess.CompletedProcess]
    home: Path  #: the LABKIT_HOME nbgrader's kernels ran with
    seconds: dict[str, float]  #: wall time of each step, and "all"


def _split(items: list[tuple[str, str]], shards: int) -> list[list[tuple[str, str]]]:
    """(student, lesson) submissions into ``shards`` groups of about equal grading time (longest first)."""
    groups: list[list[tuple[str, str]]] = [[] for _ in range(max(1, min(shards, len(items))))]
    for item in sorted(items, key=lambda item: -COST_S.get(item[1], 30)):
        min(groups, key=lambda group: sum(COST_S.get(lesson, 30) for _, lesson in group)).append(item)
    return groups


def _course(folder: Path, group: list[tuple[str, str]], students: dict[str, dict[str, dict]]) -> list[Path]:
    """An nbgrader course folder releasing the group's lessons, with its submissions; their paths."""
    (folder / "nbgrader_config.py").write_text(
        "c = get_config()\n"
        f"c.CourseDirectory.root = {str(folder)!r}\n"
        f"c.CourseDirectory.course_id = {ASSIGNMENT!r}\n"
        "c.ExecutePreprocessor.timeout = 300  # per cell; nbgrader's default of 30 s is short for the checks\n")
    source = folder / "source" / ASSIGNMENT
    source.mkdir(parents=True)
    for lesson in sorted({lesson for _, lesson in group}):
        shutil.copy(ROOT / "solutions" / f"{lesson}.ipynb", source)
    paths = []
    for student, lesson in group:
        path = folder / "submitted" / student / ASSIGNMENT / f"{lesson}.ipynb"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(students[student][lesson]))
        paths.append(path)
    return paths


def _all(commands: list[tuple[Path, list[str]]], env: dict[str, str], timeout_s: float) -> list[subprocess.CompletedProcess]:
    """Run ``python -m nbgrader ARGS`` in each course folder at once; their results, in order."""
    procs = []
    for folder, args in commands:
        log = open(folder / f"{args[0]}.log", "w")
        procs.append((folder, args, log, subprocess.Popen([sys.executable, "-m", "nbgrader", *args], cwd=folder,
                                                          stdout=log, stderr=subprocess.STDOUT, env=env)))
    results = []
    try:
        for folder, args, log, proc in procs:
            code = proc.wait(timeout=timeout_s)
            log.close()
            results.append(subprocess.CompletedProcess(args, code, (folder / f"{args[0]}.log").read_text(), ""))
    finally:
        for _, _, log, proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            log.close()
    return results


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Run:
    started = time.monotonic()
    top = tmp_path_factory.mktemp("nbgrader")
    students = {"solution": {lesson: _submission(lesson, {}) for lesson in LESSONS}}
    wrong_cell, wrong_source = _wrong_answer(WRONG)
    students["partly"] = {"01_signals": _submission("01_signals", {wrong_cell: wrong_source,
                                                                     "ex3_answer": _chatty_ex3()})}
    students["untouched"] = {"00_welcome": json.loads((ROOT / "exercises" / "00_welcome.ipynb").read_text())}
    items = [(student, lesson) for student, notebooks in students.items() for lesson in notebooks]
    folders, paths, courses = [], [], {}
    for index, group in enumerate(_split(items, SHARDS)):
        folder = top / f"course{index}"
        folder.mkdir()
        folders.append(folder)
        paths += _course(folder, group, students)
        courses.update({lesson: folder for _, lesson in group})
    # nbgrader's kernels get a LABKIT_HOME of this test: the runs must go there, not beside the notebooks
    home = top / "labkit-home"
    env = {**os.environ, "LABKIT_HOME": str(home)}
    for result in _all([(folder, ["generate_assignment", ASSIGNMENT, "--force"]) for folder in folders], env, 300):
        assert result.returncode == 0, result.stdout[-3000:]
    # every course folder's one autograde call, and labkit grade on the same files, all at once
    autograde = [(folder, ["autograde", ASSIGNMENT, "--force"]) for folder in folders]
    results: list[subprocess.CompletedProcess] = []
    timing = {"released": time.monotonic() - started}

    def nbgrader_autograde() -> None:
        results.extend(_all(autograde, env, AUTOGRADE_TIMEOUT_S))
        timing["nbgrader autograde"] = time.monotonic() - started - timing["released"]

    thread = threading.Thread(target=nbgrader_autograde)
    thread.start()
    try:
        ours = grade(paths, top / "labkit-graded", jobs=LABKIT_JOBS)
        timing["labkit grade"] = time.monotonic() - started - timing["released"]
    finally:
        thread.join()
    assert len(results) == len(folders) and all(result.returncode == 0 for result in results), \
        "\n".join(result.stdout[-3000:] for result in results if result.returncode)
    feedback = _all([(folder, ["generate_feedback", ASSIGNMENT, "--force"]) for folder in folders], env, 300)
    export = _all([(folder, ["export", "--to", str(folder / "grades.csv")]) for folder in folders], env, 300)

    from nbgrader.api import Gradebook

    scores: dict[tuple[str, str], dict[str, tuple[float, float]]] = {}
    autograded: dict[tuple[str, str], dict] = {}
    for folder in folders:
        with Gradebook(f"sqlite:///{folder / 'gradebook.db'}") as gradebook:
            for path in (folder / "submitted").glob(f"*/{ASSIGNMENT}/*.ipynb"):
                student, lesson = path.parent.parent.name, path.stem
                submitted = gradebook.find_submission_notebook(lesson, ASSIGNMENT, student)
                scores[student, lesson] = {g.name: (g.score, g.max_score) for g in submitted.grades
                                           if g.cell_type == "code"}
                autograded[student, lesson] = json.loads(
                    (folder / "autograded" / student / ASSIGNMENT / f"{lesson}.ipynb").read_text())
    assert set(scores) == set(items)
    timing["all"] = time.monotonic() - started
    return Run(courses, folders, scores, {(r.student, r.notebook): r for r in ours}, autograded, feedback, export,
               home, timing)


def _table(run: Run, student: str, lesson: str) -> str:
    ours = {test.grade_id: (test.points, test.max_points, test.message[:200])
            for test in run.labkit[student, lesson].tests}
    theirs = run.nbgrader_scores[student, lesson]
    return "\n".join(f"  {grade_id}: nbgrader {theirs.get(grade_id)} labkit {ours.get(grade_id)}"
                     for grade_id in sorted(set(ours) | set(theirs)))


# -- what nbgrader releases is what we build ----------------------------------------------------

@pytest.mark.parametrize("lesson", LESSONS)
def test_nbgrader_releases_the_same_cells_as_our_exercises(run, lesson):
    released = json.loads((run.courses[lesson] / "release" / ASSIGNMENT / f"{lesson}.ipynb").read_text())
    ours = json.loads((ROOT / "exercises" / f"{lesson}.ipynb").read_text())

    def cells(notebook):
        return {cell["id"]: (cell["cell_type"], _source(cell),
                             {key: cell["metadata"][key] for key in RELEASED_KEYS if key in cell["metadata"]})
                for cell in notebook["cells"]}

    theirs, mine = cells(released), cells(ours)
    assert set(theirs) == set(mine), "the same cell ids"
    differ = [cell_id for cell_id in theirs if theirs[cell_id] != mine[cell_id]]
    assert not differ, "\n".join(f"{cell_id}:\n  nbgrader {theirs[cell_id]}\n  ours     {mine[cell_id]}"
                                 for cell_id in differ[:3])
    # the same order, but for the Check my work cells we move up behind the set-up cell
    assert [cell["id"] for cell in check_my_work_first(released["cells"])] == [cell["id"] for cell in ours["cells"]]
    assert released["metadata"]["kernelspec"] == ours["metadata"]["kernelspec"]
    assert released["metadata"]["language_info"]["name"] == ours["metadata"]["language_info"]["name"]
    # every checksum nbgrader wrote is the one ours computes
    assert all(cell["metadata"]["nbgrader"]["checksum"] == nbgrader_checksum(cell)
               for cell in released["cells"] if "nbgrader" in cell["metadata"])


def test_nbgrader_validate_spots_an_edited_test_cell_in_our_exercise(tmp_path):
    """Without our checksums nbgrader validate saw no change at all."""
    from labkit.course import build_notebook, read_notebook, render

    exercise = build_notebook(read_notebook(Path(__file__).parent / "fixtures" / "course" / "solution.ipynb"))
    test_cell = next(cell for cell in exercise.cells if cell.id == "tests-visible")
    test_cell.source = test_cell.source.replace("assert", "assert True or", 1)
    (tmp_path / "edited.ipynb").write_bytes(render(exercise))
    validate = subprocess.run(
        [sys.executable, "-c", "import json, sys\nfrom nbgrader.validator import Validator\n"
                               "print(json.dumps(Validator().validate(sys.argv[1])))", "edited.ipynb"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert validate.returncode == 0, validate.stderr[-2000:]
    result = json.loads(validate.stdout.strip().splitlines()[-1])
    assert [cell["source"] for cell in result.get("changed", [])] == [test_cell.source]


# -- nbgrader's grades are labkit's ---------------------------------------------------------------

@pytest.mark.parametrize("lesson", LESSONS)
def test_the_solution_gets_full_marks_from_nbgrader_and_labkit_alike(run, lesson):
    theirs = run.nbgrader_scores["solution", lesson]
    ours = run.labkit["solution", lesson]
    assert {grade_id: score for grade_id, (score, _) in theirs.items()} == \
        {test.grade_id: test.points for test in ours.tests}, _table(run, "solution", lesson)
    assert sum(score for score, _ in theirs.values()) == sum(top for _, top in theirs.values()) == ours.max_score \
        == ours.score, _table(run, "solution", lesson)


def test_a_partly_right_answer_scores_the_same_under_nbgrader_and_labkit(run):
    theirs = run.nbgrader_scores["partly", "01_signals"]
    ours = {test.grade_id: test.points for test in run.labkit["partly", "01_signals"].tests}
    assert {grade_id: score for grade_id, (score, _) in theirs.items()} == ours, _table(run, "partly", "01_signals")
    lost = {grade_id for grade_id, points in ours.items() if points == 0}
    assert lost and all(grade_id.startswith("ex1_") for grade_id in lost), _table(run, "partly", "01_signals")
    # the chatty but right exercise 3 keeps its points under nbgrader too
    assert all(theirs[grade_id][0] == theirs[grade_id][1] for grade_id in theirs if grade_id.startswith("ex3_"))


def test_an_untouched_exercise_gets_0_from_nbgrader_and_labkit_alike(run):
    theirs = run.nbgrader_scores["untouched", "00_welcome"]
    ours = run.labkit["untouched", "00_welcome"]
    assert theirs and all(score == 0 for score, _ in theirs.values()), _table(run, "untouched", "00_welcome")
    assert ours.score == 0 and {test.grade_id for test in ours.tests} == set(theirs)


def test_no_test_cell_writes_to_stderr_under_nbgrader(run):
    """nbgrader scores a test cell 0 as soon as it shows anything on stderr."""
    noisy = [f"{student} {lesson} {_grade_id(cell)}: {''.join(output.get('text', ''))[:300]!r}"
             for (student, lesson), notebook in run.autograded.items() for cell in notebook["cells"]
             if cell["metadata"].get("nbgrader", {}).get("grade")
             for output in cell.get("outputs", []) if output.get("name") == "stderr"]
    assert not noisy, "\n".join(noisy)


def test_runs_stay_out_of_nbgraders_folders_and_feedback_and_export_work(run):
    for result in run.feedback + run.export:
        assert result.returncode == 0, result.stdout[-2000:]
    for course in run.folders:
        for folder in ("release", "autograded", "feedback"):
            left = [path.relative_to(course) for path in (course / folder).rglob("*")
                    if path.is_file() and path.suffix not in (".ipynb", ".html")]
            assert not left, f"beside the notebooks: {left[:10]}"
        assert list((course / "feedback").rglob("*.html")), "generate_feedback wrote the feedback pages"
        assert "raw_score" in (course / "grades.csv").read_text().splitlines()[0]
    assert any((run.home / "runs").iterdir()), "the runs went to $LABKIT_HOME/runs"
    print(f"\nnbgrader ({len(run.folders)} course folders at once) and labkit grade on {len(LESSONS)} lessons: "
          + ", ".join(f"{step} {seconds:.0f} s" for step, seconds in run.seconds.items()))
    for (student, lesson), grades in sorted(run.nbgrader_scores.items()):
        ours = run.labkit[student, lesson]
        print(f"  {student:9} {lesson:22} nbgrader {sum(s for s, _ in grades.values()):g}/"
              f"{sum(m for _, m in grades.values()):g}  labkit {ours.score:g}/{ours.max_score:g}")
