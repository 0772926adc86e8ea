"""A learner's progress: "Check my work" buttons in each exercise notebook, and ``labkit progress``.

:class:`CheckMyWork` reads the exercise notebook it is shown in, and gives each exercise a
button that runs that exercise's *visible* checks again, in this kernel, on the learner's
current answers and live processes. It shows what passed, what the checks saw, and a hint.
Every check is recorded in ``$LABKIT_HOME/progress.json`` (atomically), which
``labkit progress`` and :func:`show_progress` summarise across the course.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from labkit._atomic import write_json_atomic
from labkit.errors import BadArgument

_HINTS = {
    "NotImplementedError": "the answer is not written yet: replace the placeholder in the answer cell",
    "NameError": "run the cells above first (the setup cell, then your answer cell)",
    "CheckFailed": "the process did not do what the exercise asks; the message says what was seen",
    "AssertionError": "the check's message says what was expected and what was seen",
    "NotCheckable": "this machine lacks what the check needs (`labkit doctor` says what exists): "
                    "not a mistake of yours, but no points until it runs where it can",
}


@dataclass
class CheckResult:
    """The outcome of one exercise's visible checks."""

    lesson: str
    exercise: str
    passed: bool
    points: float
    seen: str = ""
    error: str = ""
    hint: str = ""
    at: float = 0.0

    def line(self) -> str:
        """One line for people."""
        mark = "passed" if self.passed else "not yet"
        return f"{self.exercise}: {mark}" + (f" - {self.error}" if self.error else "") + \
            (f"\n    hint: {self.hint}" if self.hint else "")


def progress_path() -> Path:
    """Where progress is kept: ``$LABKIT_HOME/progress.json``."""
    from labkit.jobs import labkit_home

    return labkit_home() / "progress.json"


def exercises_of(notebook: str | Path) -> list[dict]:
    """The exercises of an nbgrader notebook: id, points, visible check source, task title.

    Raises:
        BadArgument: the notebook cannot be read.
    """
    path = Path(notebook)
    try:
        cells = json.loads(path.read_text())["cells"]
    except (OSError, ValueError, KeyError) as err:
        raise BadArgument(f"cannot read exercise notebook {path}: {err}") from None
    found: list[dict] = []
    titles: dict[str, str] = {}
    for cell in cells:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        grade_id = meta.get("grade_id", "")
        source = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
        if cell["cell_type"] == "markdown" and grade_id.endswith("_task"):
            titles[grade_id[:-5]] = next((line.lstrip("# ") for line in source.splitlines() if line.strip()), "")
        if meta.get("grade") and cell["cell_type"] == "code":
            exercise = _exercise_of(grade_id)
            check = {"grade_id": grade_id, "points": meta.get("points", 0), "source": source}
            if found and found[-1]["exercise"] == exercise:
                found[-1]["checks"].append(check)
                found[-1]["points"] += check["points"]
                found[-1]["source"] += "\n" + source
            else:
                found.append({"exercise": exercise, "points": check["points"], "source": source,
                              "title": titles.get(exercise, exercise), "checks": [check]})
    return found


def _exercise_of(grade_id: str) -> str:
    """``ex2_status`` and ``ex2_tests`` belong to ``ex2``: one test cell per stated requirement."""
    match = re.match(r"^(ex\d+)_", grade_id)
    return match[1] if match else grade_id.removesuffix("_tests")


class CheckMyWork:
    """Buttons that re-run each exercise's visible checks in this kernel."""

    def __init__(self, notebook: str | Path) -> None:
        self.notebook = Path(notebook)
        self.lesson = self.notebook.stem
        self.problem = ""
        try:
            self.exercises = exercises_of(self.notebook)
        except BadArgument as err:  # e.g. run under another name (a grader's copy): show it, do not fail
            self.exercises, self.problem = [], f"{err}; open the exercise notebook from exercises/ to use these buttons"
        self._widget = None

    def check(self, exercise: str) -> CheckResult:
        """Run one exercise's visible checks now; record and return the result."""
        wanted = next((e for e in self.exercises if e["exercise"] == exercise), None)
        if wanted is None:
            names = ", ".join(e["exercise"] for e in self.exercises)
            raise BadArgument(f"{self.lesson} has no exercise {exercise!r}; it has {names}")
        result = _run_checks(self.lesson, wanted)
        record(result)
        return result

    def check_all(self) -> list[CheckResult]:
        """Run every exercise's visible checks, in order."""
        return [self.check(e["exercise"]) for e in self.exercises]

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget())

    def widget(self):
        """The panel: one button and one result area per exercise."""
        import ipywidgets as widgets

        rows = []
        for exercise in self.exercises:
            button = widgets.Button(description=f"Check {exercise['exercise']}", icon="check",
                                    tooltip=exercise["title"])
            output = widgets.Output()
            button.on_click(lambda _b, name=exercise["exercise"], out=output: self._clicked(name, out))
            rows.append(widgets.VBox([widgets.HBox([button, widgets.Label(exercise["title"])]), output]))
        note = [widgets.HTML(f"<i>{self.problem}</i>")] if self.problem else []
        self._widget = widgets.VBox([widgets.HTML(f"<b>Check my work</b> ({self.lesson})"), *note, *rows])
        return self._widget

    def _clicked(self, exercise: str, output) -> None:
        output.clear_output()
        with output:
            print(self.check(exercise).line())


def _run_checks(lesson: str, exercise: dict) -> CheckResult:
    """Run each requirement's visible checks in the user's namespace (IPython: magics work);
    the exercise passes when every one does. Returns what they printed and the first failure."""
    started = time.time()
    seen, errors, hint, earned = [], [], "", 0.0
    for check in exercise.get("checks") or [{"grade_id": exercise["exercise"], "points": exercise["points"],
                                              "source": exercise["source"]}]:
        printed, error, kind = _run_one(check["source"], check["grade_id"])
        seen.append(printed)
        if error:
            errors.append(f"{check['grade_id']}: {error}")
            hint = hint or _HINTS.get(kind, f"re-read the task: {exercise['title']}")
        else:
            earned += check["points"] or 0
    passed = not errors
    text = "\n".join(part for part in seen if part).strip()[-800:]
    return CheckResult(lesson, exercise["exercise"], passed, exercise["points"], text, "\n".join(errors)[:1500],
                       hint, started)


def _run_one(source: str, name: str) -> tuple[str, str, str]:
    """(what it printed, the error in words or "", the error's class name)."""
    import contextlib
    import io

    buffer = io.StringIO()
    error, kind = "", ""
    try:
        from IPython import get_ipython

        shell = get_ipython()
    except ImportError:
        shell = None
    with contextlib.redirect_stdout(buffer):
        try:
            if shell is not None:
                code = shell.transform_cell(source)
                exec(compile(code, f"<checks of {name}>", "exec"), shell.user_ns)  # noqa: S102
            else:
                exec(compile(source, "<checks>", "exec"), {})  # noqa: S102
        except Exception as err:  # a failed check, or a broken answer: both are the learner's to see
            kind = type(err).__name__
            error = f"{kind}: {err}".strip()[:500]
    return buffer.getvalue().strip(), error, kind


def record(result: CheckResult) -> None:
    """Add a check's result to progress.json (atomically; the latest result per exercise wins)."""
    path = progress_path()
    data = read_progress()
    entry = asdict(result)
    data.setdefault(result.lesson, {})[result.exercise] = {k: entry[k] for k in ("passed", "points", "error", "at")}
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, data)


def read_progress() -> dict:
    """``{lesson: {exercise: {passed, points, error, at}}}``; empty if nothing was checked yet."""
    try:
        return json.loads(progress_path().read_text())
    except (FileNotFoundError, ValueError):
        return {}


def course_table(exercises_dir: str | Path | None = None) -> list[dict]:
    """Every exercise of the course with its status: passed, not yet, or not tried."""
    folder = Path(exercises_dir) if exercises_dir else _default_exercises()
    done = read_progress()
    rows = []
    for notebook in sorted(folder.glob("*.ipynb")):
        for exercise in exercises_of(notebook):
            state = done.get(notebook.stem, {}).get(exercise["exercise"])
            status = "not tried" if state is None else "passed" if state["passed"] else "not yet"
            rows.append({"lesson": notebook.stem, "exercise": exercise["exercise"], "title": exercise["title"],
                         "points": exercise["points"], "status": status,
                         "checked_at": time.strftime("%Y-%m-%d %H:%M", time.localtime(state["at"])) if state else ""})
    return rows


def show_progress(exercises_dir: str | Path | None = None) -> str:
    """The course's progress as a small table (printed and returned)."""
    rows = course_table(exercises_dir)
    earned = sum(r["points"] for r in rows if r["status"] == "passed")
    total = sum(r["points"] for r in rows)
    lines = [f"{r['lesson']:22} {r['exercise']:4} {r['status']:9} {r['points']:>3} pts  {r['title'][:50]}" for r in rows]
    lines.append(f"{earned:g} of {total:g} points from the visible checks (the graded checks include hidden ones)")
    from labkit.scenarios.engine import summary_lines

    lines += summary_lines()  # one line per scenario played: best outcome, seconds, hints
    text = "\n".join(lines)
    print(text)
    return text


def _default_exercises() -> Path:
    for candidate in (Path.cwd() / "exercises", Path.cwd().parent / "exercises",
                      Path(__file__).resolve().parents[2] / "exercises"):
        if candidate.is_dir():
            return candidate
    raise BadArgument("no exercises/ folder found here; pass --exercises DIR")


def add_arguments(parser) -> None:
    """The options of ``labkit progress``."""
    parser.add_argument("--exercises", type=Path, default=None, help="the exercises folder (default: ./exercises)")
    parser.add_argument("--json", action="store_true")


def main(args) -> int:
    """``labkit progress``: the learner's progress across the course."""
    if args.json:
        print(json.dumps(course_table(args.exercises)))
    else:
        show_progress(args.exercises)
    return 0

