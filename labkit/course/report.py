"""``labkit grade report``: what the class did and did not understand, as HTML with plots and JSON.

From a grading folder (one run's, or a merge's): the score distribution of each notebook, the
pass rate of each exercise (every test of it passed) and of each test, the most common failure
messages, the time each submission took, and the submissions that were hostile or broken
(timeouts, kernels killed, limits reached, unreadable notebooks, the grader's own failures).

Failure messages are grouped after :func:`normalise`: numbers, pids, hex addresses and paths
become placeholders, so "pid 4242 still alive after 2.0 s" and "pid 977 still alive after 2.5 s"
are one failure seen twice, listed with one real example. Per-test results and times come from
``details/`` (written by ``labkit grade``); a row without them (graded by an older labkit) counts
in the score distribution only.

Writes ``report.html``, ``report.json`` and the PNG plots it shows (matplotlib, Agg backend: no
display needed) into ``DIR/report/`` or ``--out``.
"""

from __future__ import annotations

import argparse
import html
import json
import os
import re
import statistics
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from labkit.course._gradebook import (CSV_NAME, GRADER_ERROR, NOT_CHECKABLE_TEXT, SUBMISSION_STATUS, read_details,
                                      read_gradebook)
from labkit.errors import BadArgument

TOP_FAILURES = 25
_PATH = re.compile(r"(?<![\w.<>])(?:~|\.{0,2})/[^\s'\"`,;:()\[\]{}<>]+")
_HEX = re.compile(r"\b0x[0-9a-fA-F]+\b")
_NUMBER = re.compile(r"(?<![A-Za-z_<])[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?")
_NORMAL = ("ok", "not answered")


def normalise(message: str) -> str:
    """``message`` with what varies between runs replaced: paths, hex addresses, numbers.

    >>> normalise("pid 4242 alive after 2.5 s; see /tmp/tmpab12/run.log at 0x7f3a")
    'pid <n> alive after <n> s; see <path> at <hex>'
    """
    text = _PATH.sub("<path>", message)
    text = _HEX.sub("<hex>", text)
    return _NUMBER.sub("<n>", text).strip()


def exercise_of(grade_id: str) -> str:
    """``ex1_refuses`` -> ``ex1``: the course names tests ``<exercise>_<requirement>``."""
    return grade_id.split("_", 1)[0]


def problem_kind(status: str) -> str | None:
    """None for a normal status, else "broken", "grader", "not checkable (scored 0)" (``--not-checkable
    zero``) or "hostile or stuck"."""
    if status in _NORMAL:
        return None
    if status.startswith("invalid notebook"):
        return "broken"
    if status.startswith((GRADER_ERROR, NOT_CHECKABLE_TEXT)):
        # "grader error: not checkable here: ...; the submission: timeout in cell 9": what the
        # submission itself did comes first (a hostile one must not hide behind the machine)
        _, found, own = status.partition(SUBMISSION_STATUS)
        return (problem_kind(own) if found else None) or \
            ("grader" if status.startswith(GRADER_ERROR) else "not checkable (scored 0)")
    return "hostile or stuck"


def build(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """The report of the grading folder ``folder`` as plain data (what report.json holds).

    Raises:
        BadArgument: no folder, or no gradebook in it.
    """
    folder = Path(folder)
    if not (folder / CSV_NAME).is_file():
        raise BadArgument(f"{folder}: no {CSV_NAME} (the --out folder of `labkit grade` or `labkit grade merge`)")
    rows = read_gradebook(folder / CSV_NAME)
    scores: dict[str, list[float]] = defaultdict(list)
    max_scores: dict[str, float] = {}
    tests: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
    exercises: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
    failures: dict[tuple[str, str, str], list[tuple[str, str]]] = defaultdict(list)
    times: list[tuple[float, str, str]] = []
    problems, without_details = [], 0
    for row in rows:
        student, notebook = row["student"], row["notebook"]
        kind = problem_kind(row["status"])
        if kind:
            problems.append({"student": student, "notebook": notebook, "kind": kind, "status": row["status"]})
        if row["status"].startswith(GRADER_ERROR):
            continue  # not the student's score (whatever the submission did besides)
        scores[notebook].append(_float(row["score"]))
        if row["max_score"]:
            max_scores[notebook] = _float(row["max_score"])
        data = read_details(folder, student, notebook)
        if data is None:
            without_details += 1
            continue
        if data.get("seconds"):
            times.append((float(data["seconds"]), student, notebook))
        passed_by_exercise: dict[str, bool] = {}
        for test in data.get("tests", []):
            if str(test.get("message", "")).startswith(NOT_CHECKABLE_TEXT):
                continue  # not judged either way: counts neither as passed nor as failed
            grade_id, passed = str(test.get("grade_id", "")), bool(test.get("passed"))
            tests[(notebook, grade_id)]["passed" if passed else "failed"] += 1
            exercise = exercise_of(grade_id)
            passed_by_exercise[exercise] = passed_by_exercise.get(exercise, True) and passed
            if not passed:
                message = str(test.get("message", ""))
                failures[(notebook, grade_id, normalise(message))].append((student, message))
        for exercise, passed in passed_by_exercise.items():
            exercises[(notebook, exercise)]["passed" if passed else "failed"] += 1
    return {
        "folder": str(folder),
        "students": len({row["student"] for row in rows}),
        "submissions": len(rows),
        "without_details": without_details,
        "notebooks": {notebook: _distribution(values, max_scores.get(notebook)) for notebook, values in sorted(scores.items())},
        "exercises": [_rate({"notebook": nb, "exercise": ex}, counts) for (nb, ex), counts in sorted(exercises.items())],
        "tests": [_rate({"notebook": nb, "test": test}, counts) for (nb, test), counts in sorted(tests.items())],
        "failures": [{"notebook": nb, "test": test, "message": pattern, "count": len(seen),
                      "example": seen[0][1], "students": sorted({student for student, _ in seen})[:10]}
                     for (nb, test, pattern), seen in sorted(failures.items(), key=lambda item: (-len(item[1]), item[0]))
                     ][:TOP_FAILURES],
        "time_s": _times(times),
        "problems": sorted(problems, key=lambda item: (item["kind"], item["student"], item["notebook"])),
    }


def write(folder: str | os.PathLike[str], out: str | os.PathLike[str] | None = None) -> Path:
    """Write report.json, the PNG plots and report.html; returns the HTML's path."""
    from labkit._atomic import write_atomic, write_json_atomic

    data = build(folder)
    target = Path(out) if out is not None else Path(folder) / "report"
    try:
        target.mkdir(parents=True, exist_ok=True)
        write_json_atomic(target / "report.json", data)
        plots = _plots(data, target)
        write_atomic(target / "report.html", _html(data, plots).encode("utf-8"))
    except OSError as err:
        raise BadArgument(f"--out {target}: cannot write the report: {err.strerror or err}") from err
    return target / "report.html"


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return 0.0


def _distribution(values: list[float], max_score: float | None) -> dict[str, Any]:
    return {"max_score": max_score, "count": len(values), "mean": round(statistics.fmean(values), 3),
            "median": statistics.median(values), "min": min(values), "max": max(values),
            "full_marks": sum(1 for value in values if max_score is not None and value >= max_score),
            "zero": sum(1 for value in values if value == 0),
            "histogram": {f"{score:g}": count for score, count in sorted(Counter(values).items())}}


def _rate(item: dict[str, Any], counts: Counter[str]) -> dict[str, Any]:
    total = counts["passed"] + counts["failed"]
    return {**item, "passed": counts["passed"], "failed": counts["failed"],
            "pass_rate": round(counts["passed"] / total, 4) if total else None}


def _times(times: list[tuple[float, str, str]]) -> dict[str, Any]:
    if not times:
        return {"count": 0}
    seconds = sorted(value for value, _, _ in times)
    return {"count": len(seconds), "all": [round(value, 2) for value in seconds], "total": round(sum(seconds), 2),
            "median": round(statistics.median(seconds), 2),
            "p95": round(seconds[max(0, round(0.95 * len(seconds)) - 1)], 2), "max": round(seconds[-1], 2),
            "slowest": [{"student": student, "notebook": notebook, "seconds": round(value, 2)}
                        for value, student, notebook in sorted(times, reverse=True)[:10]]}


def _plots(data: dict[str, Any], target: Path) -> list[tuple[str, str]]:
    """The PNG files (name, caption) drawn into ``target``."""
    from matplotlib.figure import Figure  # no pyplot: no global state, no display, any backend

    drawn = []
    notebooks = data["notebooks"]
    if notebooks:
        fig = Figure(figsize=(7, 2.2 * len(notebooks)))
        axes = fig.subplots(len(notebooks), 1, squeeze=False)
        for ax, (name, dist) in zip(axes[:, 0], notebooks.items()):
            ax.bar([float(score) for score in dist["histogram"]], list(dist["histogram"].values()),
                   width=max(0.4, (dist["max_score"] or 1) / 40), color="#4c72b0")
            ax.set_title(f"{name}: {dist['count']} submissions, median {dist['median']:g}/{dist['max_score'] or 0:g}",
                         fontsize=9)
            ax.set_ylabel("students")
        axes[-1, 0].set_xlabel("score")
        drawn.append(_save(fig, target / "scores.png", "Score distribution per notebook"))
    if data["tests"]:
        tests = data["tests"]
        fig = Figure(figsize=(7, 0.25 * len(tests) + 1))
        ax = fig.subplots()
        ax.barh([f"{t['notebook']} {t['test']}" for t in tests], [t["pass_rate"] or 0 for t in tests], color="#55a868")
        ax.set_xlim(0, 1)
        ax.invert_yaxis()
        ax.set_xlabel("share of submissions passing")
        ax.tick_params(axis="y", labelsize=7)
        drawn.append(_save(fig, target / "tests.png", "Pass rate per test"))
    if data["time_s"]["count"]:
        fig = Figure(figsize=(7, 2.5))
        ax = fig.subplots()
        ax.hist(data["time_s"]["all"], bins=20, color="#c44e52")
        ax.set_xlabel("seconds per submission")
        ax.set_ylabel("submissions")
        drawn.append(_save(fig, target / "times.png", "Time per submission"))
    return drawn


def _save(fig: Any, path: Path, caption: str) -> tuple[str, str]:
    import io

    from labkit._atomic import write_atomic

    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=90, metadata={"Software": None})  # no version stamp: same data, same file
    write_atomic(path, buffer.getvalue())
    return path.name, caption


def _html(data: dict[str, Any], plots: list[tuple[str, str]]) -> str:
    esc = html.escape

    def table(headers: list[str], rows: list[list[Any]]) -> str:
        head = "".join(f"<th>{esc(h)}</th>" for h in headers)
        body = "".join("<tr>" + "".join(f"<td>{esc(str(cell))}</td>" for cell in row) + "</tr>" for row in rows)
        return f"<table><tr>{head}</tr>{body}</table>" if rows else "<p>none</p>"

    def pct(rate: float | None) -> str:
        return "-" if rate is None else f"{rate:.0%}"

    parts = [f"<h1>Class report: {esc(data['folder'])}</h1>",
             f"<p>{data['students']} students, {data['submissions']} submissions"
             + (f" ({data['without_details']} without per-test details)" if data["without_details"] else "") + "</p>",
             "<h2>Scores</h2>",
             table(["notebook", "submissions", "mean", "median", "min", "max", "full marks", "zero"],
                   [[nb, d["count"], d["mean"], d["median"], d["min"], d["max"], d["full_marks"], d["zero"]]
                    for nb, d in data["notebooks"].items()])]
    parts += [f'<figure><img src="{esc(name)}" alt="{esc(caption)}"><figcaption>{esc(caption)}</figcaption></figure>'
              for name, caption in plots]
    parts += ["<h2>Exercises</h2>", table(["notebook", "exercise", "pass rate", "passed", "failed"],
                                           [[e["notebook"], e["exercise"], pct(e["pass_rate"]), e["passed"], e["failed"]]
                                            for e in data["exercises"]]),
              "<h2>Tests</h2>", table(["notebook", "test", "pass rate", "passed", "failed"],
                                      [[t["notebook"], t["test"], pct(t["pass_rate"]), t["passed"], t["failed"]]
                                       for t in data["tests"]]),
              "<h2>Most common failures</h2>", table(["count", "notebook", "test", "failure (normalised)", "example", "students"],
                                                     [[f["count"], f["notebook"], f["test"], f["message"], f["example"],
                                                       ", ".join(f["students"])] for f in data["failures"]]),
              "<h2>Time per submission</h2>",
              table(["submissions", "total s", "median s", "p95 s", "max s"],
                    [[data["time_s"].get(key, "-") for key in ("count", "total", "median", "p95", "max")]]),
              "<h2>Hostile or broken submissions</h2>",
              table(["kind", "student", "notebook", "status"],
                    [[p["kind"], p["student"], p["notebook"], p["status"]] for p in data["problems"]])]
    style = ("body{font-family:sans-serif;max-width:1000px;margin:2em auto}table{border-collapse:collapse;margin:1em 0}"
             "td,th{border:1px solid #ccc;padding:3px 8px;text-align:left;vertical-align:top}img{max-width:100%}")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>Class report</title><style>{style}</style>"
            f"</head><body>{''.join(parts)}</body></html>\n")


# -- the command line ----------------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``labkit grade report``."""
    parser.add_argument("folder", type=Path, metavar="DIR", help="a grading folder (with gradebook.csv)")
    parser.add_argument("--out", type=Path, default=None, metavar="DIR",
                        help="where report.html, report.json and the plots go (default DIR/report)")
    parser.add_argument("--json", action="store_true", help="also print report.json on stdout")


def main(args: argparse.Namespace) -> int:
    """Write the report; 0."""
    page = write(args.folder, args.out)
    if args.json:
        print((page.parent / "report.json").read_text(), end="")
    else:
        print(f"report: {page} (and report.json, plots beside it)")
    return 0
