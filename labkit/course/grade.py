"""``labkit grade``: grade a whole class's exercise notebooks, safely, in parallel, honestly.

For each submission the grader takes only the learner's answer cells and runs them inside the
instructor's solution notebook (tests, hidden tests and points all come from there; see
``_merge.py``), in a fresh sandboxed kernel with timeouts and resource limits (``_run.py``,
``_sandbox.py``, ``_cgroup.py``). It writes ``DIR/gradebook.csv`` atomically after every
submission (a rerun skips what is graded, see ``_gradebook.py``) and
``DIR/feedback/<student>/<notebook>.html`` (``feedback.py``) and
``DIR/details/<student>/<notebook>.json`` (each test's result and the time taken).

At scale (issue 22): ``--shard K/N`` grades the students of one shard (``shard.py``), ``labkit
grade merge`` joins the shards (``merge_shards.py``), ``labkit grade report`` shows what the class
did not understand (``report.py``), ``labkit grade export`` writes what Canvas and Moodle import
(``export.py``); ``--jobs`` defaults from the cores, the measured share of waiting and the memory
(``capacity.py``).

>>> results = grade(["submitted/alice/01_signals.ipynb"], "graded")  # doctest: +SKIP
>>> results[0].score, results[0].max_score, results[0].status  # doctest: +SKIP
(10.0, 10.0, 'ok')
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import replace
from pathlib import Path
from typing import Any

from labkit.course._gradebook import (CSV_NAME, GRADER_ERROR, NOT_CHECKABLE_TEXT, SUBMISSION_STATUS, Gradebook, GradeResult, TestResult,
                                      _number, digest, read_gradebook, write_details)
from labkit.course._merge import (InvalidSubmission, Lesson, Submission, extra_cells, find_answers,
                                  load_lesson, notebook_to_run, read_submission, submissions_from)
from labkit.course._isolation import DEFAULT_USER, Isolation, plan
from labkit.course._relay import defined_names
from labkit.course._run import GradeLimits, run_notebook
from labkit.course.build import find_repo_root
from labkit.course.capacity import default_plan
from labkit.course.report import exercise_of
from labkit.course.shard import find_submissions, parse_shard, select
from labkit.course.shard import write_record as write_shard_record
from labkit.errors import BadArgument, LabkitError, NotCheckable

NOT_CHECKABLE = NotCheckable.__name__  #: the ename of a test cell that could not run here

__all__ = ["GradeLimits", "GradeResult", "Submission", "TestResult", "add_arguments", "grade",
           "grade_notebook", "main", "read_gradebook", "submissions_from"]




def grade(submissions: Iterable[str | os.PathLike[str] | Submission], out_dir: str | os.PathLike[str], *,
          solutions_dir: str | os.PathLike[str] | None = None,
          students: Mapping[str | os.PathLike[str], str] | None = None, jobs: int = 1,
          limits: GradeLimits | None = None, regrade: bool = False, progress: bool = False,
          on_result: Callable[[GradeResult], Any] | None = None,
          sandbox_user: str | None = DEFAULT_USER, not_checkable: str = "retry") -> list[GradeResult]:
    """Grade every submission; write the gradebook and the feedback pages under ``out_dir``.

    Args:
        submissions: notebook paths (students named as in :func:`submissions_from`) or
            :class:`Submission` objects.
        out_dir: gets ``gradebook.csv`` and ``feedback/<student>/<notebook>.html``.
        solutions_dir: solution notebooks, matched by file name (default: ``solutions/`` of
            the repository root, as ``labkit course build`` finds it).
        students: names by submission path, overriding the folder names.
        jobs: kernels run at once (results do not depend on it).
        limits: timeouts and resource limits of each submission.
        regrade: grade again what the gradebook already holds.
        progress: show a progress bar on stderr (tqdm when installed).
        on_result: called with each result as it is recorded (skipped ones included).
        sandbox_user: the unprivileged user student code runs as, created when missing (root
            only; see ``_isolation.py``); None: the grader's own user, no namespaces.
        not_checkable: a test that could not run on this machine (``NotCheckable``: no tmux,
            no cpu cgroup): "retry" makes the row a grader error, graded again by a rerun;
            "zero" lets its 0 stand (the status names the tests).

    Returns:
        One result per submission, in the order given.

    Raises:
        BadArgument: see :func:`submissions_from`; ``jobs`` < 1; ``not_checkable`` unknown.
    """
    if jobs < 1:
        raise BadArgument(f"--jobs must be at least 1, got {jobs}")
    _check_policy(not_checkable)
    items = list(submissions)
    named = iter(submissions_from([item for item in items if not isinstance(item, Submission)], students))
    todo = [item if isinstance(item, Submission) else next(named) for item in items]
    if len({(sub.student, sub.notebook) for sub in todo}) < len(todo):
        raise BadArgument("two submissions have the same student and notebook; grade them separately")
    solutions = _check_paths(out_dir, solutions_dir)
    isolation = _isolation_for(sandbox_user, solutions, Path(out_dir), [sub.path for sub in todo])
    coroutine = _grade_all(todo, Path(out_dir), solutions, limits or GradeLimits(), jobs, regrade,
                           progress, on_result, isolation, not_checkable)
    return _run_coroutine(coroutine)


NOT_CHECKABLE_POLICIES = ("retry", "zero")  #: ``--not-checkable``


def _check_policy(not_checkable: str) -> None:
    if not_checkable not in NOT_CHECKABLE_POLICIES:
        raise BadArgument(f"--not-checkable must be one of {', '.join(NOT_CHECKABLE_POLICIES)}, got {not_checkable!r}")


def _check_paths(out_dir: str | os.PathLike[str], solutions_dir: str | os.PathLike[str] | None) -> Path:
    """Create the output folder; the solutions folder (checked). Raises BadArgument."""
    solutions = Path(solutions_dir) if solutions_dir is not None else find_repo_root() / "solutions"
    _make_out_dir(Path(out_dir))
    if not solutions.is_dir():
        raise BadArgument(f"no solutions folder at {solutions}" + ("; pass --solutions DIR" if solutions_dir is None
                                                                   else ""))
    return solutions


def _make_out_dir(out: Path) -> None:
    """Create the output folder, or say in one line why it cannot be (a bad --out is bad input)."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise BadArgument(f"--out {out}: cannot create the folder: {err.strerror or err}") from err
    if not os.access(out, os.W_OK | os.X_OK):
        raise BadArgument(f"--out {out}: the folder is not writable")


def _isolation_for(user: str | None, solutions: Path, out: Path | None, submissions: list[Path]) -> Isolation:
    """Hide the solutions, the repository's tests, the gradebook and the submitted notebooks
    from student code; keep labkit, the Python environment and the temporary folder visible."""
    import tempfile

    import labkit

    hide = [solutions, *[path.parent for path in submissions]]
    try:
        root = find_repo_root()
        hide += [root / "solutions", root / "tests", root / ".git"]  # .git: every solution in its history
    except LabkitError:
        pass
    if out is not None:  # the gradebook and the feedback: created now, so there is a folder to hide
        out.mkdir(parents=True, exist_ok=True)
        hide.append(out)
    keep = [Path(labkit.__file__).parent, Path(sys.prefix), Path(sys.base_prefix), Path(tempfile.gettempdir())]
    return plan(user, hide, keep)


def grade_notebook(submission: str | os.PathLike[str], solution: str | os.PathLike[str], *,
                   student: str = "", limits: GradeLimits | None = None,
                   sandbox_user: str | None = DEFAULT_USER, not_checkable: str = "retry") -> GradeResult:
    """Grade one notebook against one solution and return the result; writes no files.

    Raises:
        BadArgument: the solution notebook is unreadable or its nbgrader metadata is wrong;
            ``not_checkable`` unknown (see :func:`grade`).
    """
    _check_policy(not_checkable)
    lesson = load_lesson(solution)
    sub = Submission(Path(submission), student, Path(submission).stem)
    isolation = _isolation_for(sandbox_user, Path(solution).parent, None, [Path(submission)])
    result, _ = _run_coroutine(_grade_one(sub, lesson, limits or GradeLimits(), isolation, not_checkable))
    return result


async def _grade_all(todo: list[Submission], out: Path, solutions: Path, limits: GradeLimits, jobs: int,
                     regrade: bool, progress: bool, on_result: Callable[[GradeResult], Any] | None,
                     isolation: Isolation, not_checkable: str) -> list[GradeResult]:
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    from labkit.course.capacity import LoadMeter

    book = Gradebook(out)
    lessons: dict[str, Lesson | str] = {}
    results: dict[int, GradeResult] = {}
    pending = []
    for number, sub in enumerate(todo):
        lesson = lessons.get(sub.notebook) or lessons.setdefault(sub.notebook, _lesson(solutions, sub.notebook))
        submission_digest = _digest(sub, lesson)
        done = None if regrade else book.graded(sub.student, sub.notebook, submission_digest)
        if done is not None:
            results[number] = _from_row(done, sub)
            if on_result:
                on_result(results[number])
        else:
            pending.append((number, sub, lesson, submission_digest))
    bar = _progress_bar(len(pending), progress)
    writer = ThreadPoolExecutor(1, thread_name_prefix="labkit-grade-writer")  # feedback + gradebook
    meter = LoadMeter()
    loop, slots = asyncio.get_running_loop(), asyncio.Semaphore(jobs)

    async def one(number: int, sub: Submission, lesson: Lesson | str, submission_digest: str) -> None:
        async with slots:
            try:
                result, feedback = await _grade_one(sub, lesson, limits, isolation, not_checkable)
            except Exception as err:  # noqa: BLE001 - a bug must not stop the class's grading
                print(f"labkit grade: internal error grading {sub.path}:", file=sys.stderr)
                traceback.print_exc()
                result, feedback = GradeResult(sub.student, sub.notebook, 0.0, None,
                                               f"{GRADER_ERROR}: {type(err).__name__}: {err}", sub.path), None
        # Rendering and writing happen in the writer thread while the next kernel starts.
        try:
            await loop.run_in_executor(writer, _record, book, out, result, feedback, submission_digest)
        except OSError as err:  # a full disk: this row is lost (and graded again next run), not the class
            print(f"labkit grade: cannot record {sub.student} {sub.notebook}: {err}", file=sys.stderr)
        results[number] = result
        meter.add_wall(result.seconds)
        bar.update(1)
        if on_result:
            on_result(result)

    try:
        # return_exceptions: on Ctrl-C every submission in flight must finish its clean-up
        # (kill its processes) before this returns; a plain gather returns at the first.
        for outcome in await asyncio.gather(*(one(*item) for item in pending), return_exceptions=True):
            if isinstance(outcome, BaseException):
                raise outcome
    finally:
        writer.shutdown(wait=True)
        bar.close()
        try:
            meter.save(out)
        except OSError:  # only a hint for the next run's --jobs
            pass
    return [results[number] for number in range(len(todo))]


async def _grade_one(sub: Submission, lesson: Lesson | str, limits: GradeLimits,
                     isolation: Isolation, not_checkable: str = "retry") -> tuple[GradeResult, Any]:
    from labkit.course.feedback import feedback_notebook

    started = time.monotonic()
    base = GradeResult(sub.student, sub.notebook, 0.0, None, "", sub.path, protections=isolation.describe())
    if isinstance(lesson, str):
        return replace(base, status=f"{GRADER_ERROR}: {lesson}"), None
    base = replace(base, max_score=lesson.max_score)
    try:
        data = read_submission(sub.path)
    except InvalidSubmission as err:
        result = replace(base, status=f"invalid notebook: {err}", tests=_not_run(lesson, "the notebook is invalid"))
        return result, feedback_notebook(result)
    answers = find_answers(lesson, data)
    if not any(answer.answered for answer in answers.values()):
        result = replace(base, status="not answered", tests=_not_run(lesson, "nothing was answered"))
    else:
        nb = notebook_to_run(lesson, answers)
        names = {cell.index: defined_names(cell.source, imports=False) for cell in lesson.answers.values()}
        outcome = await run_notebook(nb, limits, isolation, names)
        unanswered = {exercise_of(gid) for gid, answer in answers.items() if not answer.answered}
        tests = _score(lesson, outcome, limits, unanswered)
        result = replace(base, score=sum(test.points for test in tests), status=_status(outcome.status, tests, not_checkable),
                         tests=tests, protections=isolation.describe(outcome.missing))
    result = replace(result, seconds=time.monotonic() - started)
    return result, feedback_notebook(result, lesson, answers, extra_cells(lesson, data))


def _score(lesson: Lesson, outcome, limits: GradeLimits,
           unanswered: AbstractSet[str] = frozenset()) -> tuple[TestResult, ...]:
    from labkit.course.feedback import clean_message

    tests = []
    for grade_id, test in sorted(lesson.tests.items(), key=lambda item: item[1].index):
        cell = outcome.cells.get(test.index)
        max_points = float(test.points or 0)
        if cell is None:
            message = f"not run: {outcome.status}"
        elif cell.state == "ok":
            message = "passed"
        elif cell.state == "timeout":
            cut = "notebook over" in outcome.status and test.index == max(outcome.cells)
            message = "timed out: the notebook ran out of time" if cut else \
                f"timed out after {limits.cell_timeout_s:g} s (interrupted)"
        elif cell.ename == NOT_CHECKABLE and exercise_of(grade_id) in unanswered:
            message = "not answered: the exercise's stub was run in its place"  # 0 on any machine
        elif cell.ename == NOT_CHECKABLE:
            said = cell.evalue or ""
            message = clean_message(said if said.startswith(NOT_CHECKABLE_TEXT) else f"{NOT_CHECKABLE_TEXT}: {said}")
        else:
            message = clean_message(f"{cell.ename}: {cell.evalue}" if cell.evalue else cell.ename)
        passed = cell is not None and cell.state == "ok"
        tests.append(TestResult(grade_id, test.index, max_points if passed else 0.0, max_points, passed, message))
    return tuple(tests)


def _status(status: str, tests: tuple[TestResult, ...], not_checkable: str = "retry") -> str:
    """The submission's status, saying which tests could not be checked on this machine.

    A test cell that raised :class:`~labkit.errors.NotCheckable` scored 0 because the grading
    machine, not the learner, lacks something. With ``not_checkable`` "retry" (the default) the
    row must not look graded: a grader error (exports leave it blank, a rerun grades it again,
    ``labkit grade`` exits 1). With "zero" the instructor accepts the gap: the 0 stands, and the
    status still names the tests.
    """
    unchecked = [test for test in tests if not test.checked]
    if not unchecked:
        return status
    first = unchecked[0].message[len(NOT_CHECKABLE_TEXT):].lstrip(": ")
    more = f" and {len(unchecked) - 1} more" if len(unchecked) > 1 else ""
    what = f"{NOT_CHECKABLE_TEXT}: {unchecked[0].grade_id}{more} ({first})"
    head = f"{GRADER_ERROR}: {what}" if not_checkable == "retry" else f"{what}, scored 0"
    return head + ("" if status == "ok" else f"{SUBMISSION_STATUS}{status}")


def _not_run(lesson: Lesson, why: str) -> tuple[TestResult, ...]:
    return tuple(TestResult(grade_id, test.index, 0.0, float(test.points or 0), False, f"not run: {why}")
                 for grade_id, test in sorted(lesson.tests.items(), key=lambda item: item[1].index))


def _record(book: Gradebook, out: Path, result: GradeResult, feedback, submission_digest: str) -> None:
    from labkit._atomic import write_atomic

    if feedback is not None:
        from labkit.course.feedback import render_html

        folder = out / "feedback" / result.student
        folder.mkdir(parents=True, exist_ok=True)
        write_atomic(folder / f"{result.notebook}.html", render_html(feedback))
    write_details(out, result)  # before the row: a recorded row always has its details
    book.record(result.row(), submission_digest)


def _lesson(solutions: Path, notebook: str) -> Lesson | str:
    path = solutions / f"{notebook}.ipynb"
    if not path.is_file():
        return f"no solution notebook {path}"
    try:
        return load_lesson(path)
    except LabkitError as err:
        return f"bad solution notebook: {err}"


def _digest(sub: Submission, lesson: Lesson | str) -> str:
    try:
        data = sub.path.read_bytes()
    except OSError:
        data = b""
    return digest(data, lesson.digest if isinstance(lesson, Lesson) else lesson.encode())


def _from_row(row: Mapping[str, str], sub: Submission) -> GradeResult:
    max_score = float(row["max_score"]) if row["max_score"] else None
    return GradeResult(row["student"], row["notebook"], float(row["score"] or 0), max_score, row["status"],
                       sub.path, resumed=True, protections=row.get("protections", ""))


def _run_coroutine(coroutine):
    """Run ``coroutine`` to its end, also from a thread (a notebook) whose event loop runs."""
    import asyncio

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(coroutine)
        except BaseException as err:  # noqa: BLE001 - handed to the caller's thread
            box["error"] = err

    thread = threading.Thread(target=target, name="labkit-grade")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


class _NoBar:
    def __init__(self, total: int, show: bool) -> None:
        self.total, self.count, self.show = total, 0, show

    def update(self, count: int) -> None:
        self.count += count
        if self.show:
            print(f"\rgraded {self.count}/{self.total}", end="", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.show and self.total:
            print(file=sys.stderr)


def _progress_bar(total: int, show: bool):
    if show:
        try:
            from tqdm import tqdm
        except ImportError:
            return _NoBar(total, show)
        return tqdm(total=total, desc="grading", unit="notebook", file=sys.stderr, dynamic_ncols=True)
    return _NoBar(total, False)



# -- the command line ----------------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the arguments of ``labkit grade`` to ``parser``."""
    parser.description = ("Grade exercise notebooks. Also: `labkit grade merge SHARD_DIR... --out DIR` (join "
                          "shards), `labkit grade report DIR` (the class report), `labkit grade export DIR` "
                          "(Canvas/Moodle CSV, feedback zip); each has its own --help.")
    parser.add_argument("submissions", nargs="+", type=Path, metavar="SUBMISSION",
                        help="notebooks or folders to grade: a notebook's student is the folder after submitted/ "
                             "(or its own folder); a folder is read as nbgrader's exchange (inbound/), nbgrader's "
                             "submitted/<student>/<assignment>/ or <student>/*.ipynb")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR",
                        help="where gradebook.csv and feedback/<student>/<notebook>.html go")
    parser.add_argument("--solutions", type=Path, default=None, metavar="DIR",
                        help="solution notebooks, matched by file name (default: solutions/ of the repository)")
    parser.add_argument("--student", action="append", default=[], metavar="PATH=NAME",
                        help="name the student of a submission (repeatable); a bare NAME with one submission")
    parser.add_argument("--jobs", "-j", type=_whole, default=None, metavar="N",
                        help="kernels at once (default: from the cores, the share of grading time spent waiting "
                             "and the memory, said on stderr)")
    parser.add_argument("--shard", default=None, metavar="K/N",
                        help="grade only the students of shard K of N (a stable hash of the student's name); "
                             "join the shards' folders with `labkit grade merge`")
    parser.add_argument("--timeout", type=_seconds, default=GradeLimits.cell_timeout_s, metavar="SEC",
                        help=f"per cell; then it is interrupted (default {GradeLimits.cell_timeout_s:g})")
    parser.add_argument("--notebook-timeout", type=_seconds, default=GradeLimits.notebook_timeout_s,
                        metavar="SEC", help=f"whole notebook (default {GradeLimits.notebook_timeout_s:g})")
    parser.add_argument("--memory-max", type=_size, default=GradeLimits.memory_max_bytes, metavar="SIZE",
                        help="memory of one submission, all its processes (default 2G; cgroup when writable)")
    parser.add_argument("--regrade", action="store_true", help="grade again what the gradebook already holds")
    parser.add_argument("--not-checkable", choices=NOT_CHECKABLE_POLICIES, default="retry",
                        help="a check this machine cannot run (no tmux, no cpu cgroup): 'retry' (default) makes "
                             "the row a grader error, graded again by a rerun where it can run; 'zero' lets it "
                             "score 0 (the status names the tests)")
    parser.add_argument("--sandbox-user", default=DEFAULT_USER, metavar="NAME",
                        help=f"unprivileged user student code runs as, created when missing (default {DEFAULT_USER}; "
                             "'none': the grader's own user); needs root, else each row says what was missing")


def main(args: argparse.Namespace) -> int:
    """Run ``labkit grade`` with parsed ``args``; 0 when every submission got a grade, 1 when the
    grader failed on some (no solution, kernel did not start). Bad input raises BadArgument."""
    limits = GradeLimits(cell_timeout_s=args.timeout, notebook_timeout_s=args.notebook_timeout,
                         memory_max_bytes=args.memory_max)
    show = sys.stderr.isatty()
    shard = parse_shard(args.shard) if args.shard is not None else None
    if args.student:
        named = submissions_from(args.submissions, _students(args.student, args.submissions))
    else:
        named = find_submissions(args.submissions)
    todo = select(named, shard)
    _check_paths(args.out, args.solutions)  # before anything is said on stderr: bad input is one line
    jobs = args.jobs
    if jobs is None:
        capacity = default_plan(args.out, limits.memory_max_bytes)
        jobs = capacity.jobs
        print(f"labkit grade: {capacity.describe()}", file=sys.stderr)

    def report(result: GradeResult) -> None:
        score = f"{_number(result.score)}/{'' if result.max_score is None else _number(result.max_score)}"
        line = f"{result.student} {result.notebook}: {score} {result.status}" + (" (already graded)" if result.resumed else "")
        if show:
            try:
                from tqdm import tqdm

                tqdm.write(line)
                return
            except ImportError:
                pass
        print(line, flush=True)

    if shard is not None:
        write_shard_record(args.out, shard, todo)
        print(f"labkit grade: shard {shard}: {len({sub.student for sub in todo})} of "
              f"{len({sub.student for sub in named})} students", file=sys.stderr)
    results = grade(todo, args.out, solutions_dir=args.solutions, jobs=jobs, limits=limits,
                    regrade=args.regrade, progress=show, on_result=report,
                    sandbox_user=None if args.sandbox_user.lower() in ("", "none") else args.sandbox_user,
                    not_checkable=args.not_checkable)
    failed = [result for result in results if result.grader_error]
    graded = sum(1 for result in results if not result.resumed)
    print(f"{graded} graded, {len(results) - graded} already graded, {len(failed)} failed on the grader's "
          f"side; gradebook: {args.out / CSV_NAME}")
    return 1 if failed else 0


ACTIONS = ("merge", "report", "export")  #: ``labkit grade ACTION ...``


def run_action(argv: list[str]) -> int:
    """Run ``labkit grade merge|report|export ...`` (``argv`` starts with the action).

    Raises:
        BadArgument: bad usage or input (one line, exit 2).
    """
    from importlib import import_module

    module = import_module({"merge": "labkit.course.merge_shards", "report": "labkit.course.report",
                            "export": "labkit.course.export"}[argv[0]])
    summary = (module.__doc__ or "").splitlines()[0].replace("``", "")
    parser = _ActionParser(prog=f"labkit grade {argv[0]}", description=summary)
    module.add_arguments(parser)
    return int(module.main(parser.parse_args(argv[1:])))


class _ActionParser(argparse.ArgumentParser):
    """Usage errors as one line (BadArgument), like the other ``labkit`` commands."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise BadArgument(f"{message} (see `{self.prog} --help`)")


def _students(values: list[str], submissions: list[Path]) -> dict[str | os.PathLike[str], str]:
    names: dict[str | os.PathLike[str], str] = {}
    for value in values:
        path, sep, name = value.rpartition("=")
        if not sep:
            if len(submissions) != 1:
                raise BadArgument("--student NAME needs exactly one submission; use --student PATH=NAME")
            path, name = str(submissions[0]), value
        names[path] = name
    return names


def _whole(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return int(text)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _size(text: str) -> int:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?", text.strip().lower())
    if not match:
        raise argparse.ArgumentTypeError(f"expected a size like 512M or 2G, got {text!r}")
    return int(float(match[1]) * 1024 ** " kmgt".index(match[2] or " "))
