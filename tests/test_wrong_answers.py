"""The grading corpus: plausible wrong answers, each graded through the real ``labkit grade``.

Every graded exercise of the course has at least two wrong answers in
``tests/fixtures/wrong_answers/<lesson>/<name>.py``: what a student would really write, each
breaking one requirement the exercise states. A file is the source of one answer cell,
after a header that says which cell it replaces, which requirement it breaks and which test
cells must fail::

    # cell: ex1_answer
    # breaks: 1. refuse pid 1 and this notebook's own process
    # fails: ex1_refuses
    def stop_gracefully(pid, grace_s=10.0):
        ...

The submission graded is the lesson's solution with that one cell replaced, so every other
exercise must still get its full marks: the wrong answer costs only its own exercise, and at
least the tests it names. Each lesson is graded once (its solution, its untouched exercise and
all its wrong answers as one class, several kernels at a time).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil
import pytest

from labkit.course._merge import load_lesson
from labkit.course.grade import GradeResult, TestResult, grade, read_gradebook

ROOT = Path(__file__).resolve().parent.parent
CORPUS = Path(__file__).parent / "fixtures" / "wrong_answers"
LESSONS = sorted(path.stem for path in (ROOT / "solutions").glob("*.ipynb"))
JOBS = int(os.environ.get("LABKIT_GRADE_JOBS", "5"))  # the checks mostly wait: more kernels than cores
_HEADER = re.compile(r"^# (cell|breaks|fails): (.+)$")


@dataclass(frozen=True)
class WrongAnswer:
    lesson: str
    name: str
    cell: str  #: the answer cell's grade_id
    breaks: str  #: the requirement it breaks, in words
    fails: tuple[str, ...]  #: test cells that must fail
    source: str

    @property
    def exercise(self) -> str:
        return self.cell.split("_")[0]

    @property
    def student(self) -> str:
        return f"wrong-{self.name}"


def read_corpus() -> list[WrongAnswer]:
    found = []
    for path in sorted(CORPUS.glob("*/*.py")):
        lines = path.read_text().splitlines(keepends=True)
        header: dict[str, str] = {}
        while lines and (match := _HEADER.match(lines[0].rstrip("\n"))):
            header[match[1]] = match[2].strip()
            lines.pop(0)
        assert {"cell", "breaks", "fails"} <= set(header), f"{path}: the header needs cell, breaks and fails"
        fails = tuple(name.strip() for name in header["fails"].split(",") if name.strip())
        found.append(WrongAnswer(path.parent.name, path.stem, header["cell"], header["breaks"], fails,
                                 "".join(lines)))
    return found


CORPUS_ENTRIES = read_corpus()


def submission_for(lesson: str, replace: dict[str, str] | None = None) -> dict:
    """The lesson's solution notebook, with the answer cells named in ``replace`` rewritten."""
    notebook = json.loads((ROOT / "solutions" / f"{lesson}.ipynb").read_text())
    for cell in notebook["cells"]:
        grade_id = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
        if replace and grade_id in replace:
            cell["source"] = replace[grade_id]
    return notebook


def grade_class(folder: Path, lessons: list[str]) -> dict[str, dict[str, GradeResult]]:
    """Grade the solution, the untouched exercise and every wrong answer of ``lessons`` as one class:
    one ``labkit grade`` run, so its kernels stay busy across lessons."""
    paths, expected = [], {}
    for lesson in lessons:
        submitted = folder / lesson / "submitted"
        students = {"solution": submission_for(lesson),
                    "untouched": json.loads((ROOT / "exercises" / f"{lesson}.ipynb").read_text())}
        for wrong in CORPUS_ENTRIES:
            if wrong.lesson == lesson:
                students[wrong.student] = submission_for(lesson, {wrong.cell: wrong.source})
        for student, notebook in students.items():
            path = submitted / student / f"{lesson}.ipynb"
            path.parent.mkdir(parents=True)
            path.write_text(json.dumps(notebook))
            paths.append(path)
        expected[lesson] = set(students)
    # the slowest lessons first, so the last kernels to finish are short ones
    paths.sort(key=lambda path: -len(expected[path.stem]))
    out = folder / "graded"
    init = psutil.Process(1).create_time()
    results = grade(paths, out, jobs=JOBS)
    # no check, and no wrong answer, reached a process it did not start
    assert psutil.Process(1).create_time() == init
    rows = read_gradebook(out / "gradebook.csv")
    found = {}
    for lesson in lessons:
        assert {row["student"] for row in rows if row["notebook"] == lesson} == expected[lesson], \
            "one gradebook row per submission"
        found[lesson] = {result.student: result for result in results if result.notebook == lesson}
    return found


# The class is graded in a process of its own from the moment collection ends (tests/conftest.py
# calls start_in_background): its checks mostly wait, and so does the rest of the suite, so the two
# overlap instead of running one after the other. LABKIT_CORPUS_BACKGROUND=0 grades in the fixture.
_BACKGROUND: dict = {}
RESULTS_NAME = "results.json"
BACKGROUND_TIMEOUT_S = 45 * 60


def needed_lessons(items) -> set[str]:
    """The lessons whose grades the selected tests of this module read."""
    needed = set()
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        if getattr(getattr(item, "module", None), "__name__", None) == __name__:
            if isinstance(params.get("wrong"), WrongAnswer):
                needed.add(params["wrong"].lesson)
            elif "graded" in getattr(item, "fixturenames", ()) and params.get("lesson"):
                needed.add(params["lesson"])
    return needed


def start_in_background(items) -> None:
    lessons = needed_lessons(items)
    if not lessons or os.environ.get("LABKIT_CORPUS_BACKGROUND") == "0":
        return
    folder = Path(tempfile.mkdtemp(prefix="labkit-corpus-"))
    # Its own temporary folder and its own test tag: the grader tests running meanwhile look for
    # labkit-grade-* folders in the temporary folder and for grading processes with this session's
    # tag, and must not find this class's. The leak check still covers it (a tag it starts with).
    tmp = folder / "tmp"
    tmp.mkdir()
    folder.chmod(0o755)  # the sandbox user reaches its submission's folder through it
    tmp.chmod(0o1777)
    env = {**os.environ, "TMPDIR": str(tmp), "LABKIT_TEST_TAG": os.environ.get("LABKIT_TEST_TAG", "") + "-corpus"}
    log = open(folder / "grader.log", "wb")  # noqa: SIM115 (the child writes it; closed in stop_background)
    proc = subprocess.Popen([sys.executable, __file__, str(folder), *sorted(lessons)], stdout=log, env=env,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    _BACKGROUND.update(proc=proc, folder=folder, lessons=lessons, log=log)


def stop_background() -> None:
    """End the background grader if it still runs (an interrupted or -x run); remove its folder."""
    proc, folder = _BACKGROUND.pop("proc", None), _BACKGROUND.pop("folder", None)
    if proc is not None and proc.poll() is None:
        proc.terminate()  # the grader stops its kernels on SIGTERM and keeps its gradebook whole
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    if "log" in _BACKGROUND:
        _BACKGROUND.pop("log").close()
    if folder is not None:
        shutil.rmtree(folder, ignore_errors=True)


def _to_json(results: dict[str, dict[str, GradeResult]]) -> dict:
    return {lesson: {student: {**asdict(result), "submission": str(result.submission)}
                     for student, result in by_student.items()} for lesson, by_student in results.items()}


def _from_json(data: dict) -> dict[str, dict[str, GradeResult]]:
    def one(row: dict) -> GradeResult:
        tests = tuple(TestResult(**test) for test in row.pop("tests"))
        return GradeResult(**{**row, "submission": Path(row["submission"]), "tests": tests})
    return {lesson: {student: one(dict(row)) for student, row in by_student.items()}
            for lesson, by_student in data.items()}


def _background_results() -> dict[str, dict[str, GradeResult]]:
    proc, folder = _BACKGROUND["proc"], _BACKGROUND["folder"]
    try:
        code = proc.wait(BACKGROUND_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"the background grader ran over {BACKGROUND_TIMEOUT_S} s") from None
    if code != 0:
        tail = (folder / "grader.log").read_text(errors="replace")[-3000:]
        raise AssertionError(f"the background grader exited with {code}:\n{tail}")
    return _from_json(json.loads((folder / RESULTS_NAME).read_text()))


class _Graded:
    """The grades of every lesson the selected tests need: from the background grader where it
    graded them, else graded here on first use."""

    def __init__(self, folder: Path, lessons: set[str]) -> None:
        self.folder, self.lessons = folder, lessons
        self.results: dict[str, dict[str, GradeResult]] = {}

    def lesson(self, lesson: str) -> dict[str, GradeResult]:
        if lesson not in self.results and lesson in _BACKGROUND.get("lessons", ()):
            self.results.update(_background_results())
        if lesson not in self.results:
            self.results.update(grade_class(self.folder, sorted(self.lessons | {lesson})))
        return self.results[lesson]


@pytest.fixture(scope="module")
def graded(tmp_path_factory, request) -> _Graded:
    return _Graded(tmp_path_factory.mktemp("corpus"), needed_lessons(request.session.items))


def _points(result: GradeResult, exercise: str) -> tuple[float, float]:
    tests = [test for test in result.tests if test.grade_id.split("_")[0] == exercise]
    return sum(test.points for test in tests), sum(test.max_points for test in tests)


def _exercises(lesson: str) -> list[str]:
    return sorted({grade_id.split("_")[0] for grade_id in load_lesson(ROOT / "solutions" / f"{lesson}.ipynb").answers})


def _report(result: GradeResult) -> str:
    return f"{result.student} {result.notebook}: {result.score}/{result.max_score} ({result.status})\n" + "\n".join(
        f"  {test.grade_id}: {test.points}/{test.max_points} {test.message[:300]}" for test in result.tests)


def test_the_corpus_has_two_wrong_answers_per_exercise_and_45_in_all():
    counts: dict[tuple[str, str], int] = {}
    for wrong in CORPUS_ENTRIES:
        assert wrong.lesson in LESSONS, f"{wrong.lesson}/{wrong.name}: no such lesson"
        lesson = load_lesson(ROOT / "solutions" / f"{wrong.lesson}.ipynb")
        assert wrong.cell in lesson.answers, f"{wrong.lesson}/{wrong.name}: no answer cell {wrong.cell}"
        assert wrong.fails and set(wrong.fails) <= set(lesson.tests), \
            f"{wrong.lesson}/{wrong.name}: fails names unknown test cells {wrong.fails}"
        counts[wrong.lesson, wrong.exercise] = counts.get((wrong.lesson, wrong.exercise), 0) + 1
    missing = [f"{lesson} {exercise}" for lesson in LESSONS for exercise in _exercises(lesson)
               if counts.get((lesson, exercise), 0) < 2]
    assert not missing, f"fewer than two wrong answers for: {', '.join(missing)}"
    assert len(CORPUS_ENTRIES) >= 45


@pytest.mark.parametrize("lesson", LESSONS)
def test_every_requirement_has_its_own_test_cell_with_points(lesson):
    solution = load_lesson(ROOT / "solutions" / f"{lesson}.ipynb")
    for exercise in _exercises(lesson):
        tests = [test for grade_id, test in solution.tests.items() if grade_id.split("_")[0] == exercise]
        assert len(tests) >= 2 and all(test.points for test in tests), \
            f"{lesson} {exercise}: each stated requirement needs a test cell of its own, with points"


@pytest.mark.parametrize("lesson", LESSONS)
def test_the_solution_gets_full_marks_and_the_untouched_exercise_zero(graded, lesson):
    results = graded.lesson(lesson)
    solution, untouched = results["solution"], results["untouched"]
    assert solution.score == solution.max_score and solution.status == "ok", _report(solution)
    assert untouched.score == 0, _report(untouched)


@pytest.mark.parametrize("wrong", CORPUS_ENTRIES, ids=[f"{w.lesson}/{w.name}" for w in CORPUS_ENTRIES])
def test_a_wrong_answer_scores_less_than_full_on_its_exercise_only(graded, wrong):
    result = graded.lesson(wrong.lesson)[wrong.student]
    got, full = _points(result, wrong.exercise)
    assert got < full, f"{wrong.breaks}: full marks for a wrong answer\n{_report(result)}"
    by_id = {test.grade_id: test for test in result.tests}
    passed = [name for name in wrong.fails if by_id[name].passed]
    assert not passed, f"{wrong.breaks}: {passed} passed\n{_report(result)}"
    for exercise in _exercises(wrong.lesson):
        if exercise != wrong.exercise:
            other, other_full = _points(result, exercise)
            assert other == other_full, f"{wrong.name} cost points on {exercise}\n{_report(result)}"


if __name__ == "__main__":  # the background grader: FOLDER LESSON...
    from labkit._atomic import write_json_atomic

    _folder = Path(sys.argv[1])
    write_json_atomic(_folder / RESULTS_NAME, _to_json(grade_class(_folder, sys.argv[2:])))
