"""The batch grader's overhead against bare nbclient, and its speed-up with two kernels.

Run: python bench/bench_grade.py [--submissions 20] [--rounds 3]

A class of 20 submissions of one exercise (the fixture lesson tests/fixtures/grade, answers
right, partly right or wrong, nothing hostile) is, in each round and in turn:

- executed with bare nbclient, one notebook after the other (``NotebookClient(nb).execute()``,
  a fresh kernel each, the way nbval or nbconvert --execute run a notebook): the baseline;
- graded with ``labkit grade`` --jobs 1: sandboxed kernel, cgroups, limits, feedback HTML,
  gradebook written atomically after each submission;
- graded with --jobs 2.

Per-submission time of grading is the time between consecutive recorded results (the first
counted from the start), so it includes everything the grader does; the bare figure is one
``execute()`` call. Targets: grading overhead (median per submission, grade / bare - 1) < 10 %,
and --jobs 2 speed-up (median batch time, jobs 1 / jobs 2) >= 1.7x.

``--course``: the real course instead. The solutions of every lesson (00-06), graded as one
student with --jobs 1, in each round: executed with bare nbclient (one fresh kernel per
notebook), graded with every protection (the judge, the freezer, the sandbox user, PID and
mount namespaces where root), and graded with the judge alone (no freezer, the grader's own
user, no namespaces). Target: the protections add < 10 % to the student's wall time (median of
rounds); the figures against bare nbclient show what the judge itself costs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOLUTIONS = ROOT / "tests" / "fixtures" / "grade" / "solutions"
EXERCISE = ROOT / "tests" / "fixtures" / "grade" / "exercises" / "10_basics.ipynb"
ANSWERS = [  # right, then wrong, for each answer cell
    {"add_answer": ("def add(a, b):\n    return a + b", "def add(a, b):\n    return a - b"),
     "mean_answer": ("def mean(values):\n    if not values:\n        raise ValueError('empty')\n"
                     "    return sum(values) / len(values)", "def mean(values):\n    return 0"),
     "norm_answer": ("import math\n\ndef norm(v):\n    return math.sqrt(sum(x * x for x in v))",
                     "def norm(v):\n    return sum(v)")},
]


def make_class(folder: Path, count: int) -> list[Path]:
    """``count`` submissions: student i gets answer k right when bit k of i is set."""
    paths = []
    for number in range(count):
        nb = json.loads(EXERCISE.read_text())
        for cell in nb["cells"]:
            grade_id = cell["metadata"].get("nbgrader", {}).get("grade_id")
            choices = ANSWERS[0].get(grade_id)
            if choices:
                bit = list(ANSWERS[0]).index(grade_id)
                cell["source"] = choices[0] if number >> bit & 1 else choices[1]
        path = folder / "submitted" / f"student{number:02d}" / EXERCISE.name
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps(nb))
        paths.append(path)
    return paths


def bare(paths: list[Path], work: Path, shutdown: str) -> list[float]:
    """Each notebook in a fresh kernel; ``shutdown``: nbclient's "graceful" (its default:
    a shutdown request, then wait for the kernel to exit) or "immediate" (SIGKILL)."""
    import nbformat
    from nbclient import NotebookClient

    times = []
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        started = time.perf_counter()
        NotebookClient(nb, timeout=120, kernel_name="python3", allow_errors=True, shutdown_kernel=shutdown,
                       resources={"metadata": {"path": str(work)}}).execute(stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - started)
    return times


def graded(paths: list[Path], out: Path, jobs: int) -> tuple[list[float], float, list]:
    from labkit.course.grade import GradeLimits, grade

    stamps: list[float] = []
    started = time.perf_counter()
    results = grade(paths, out, solutions_dir=SOLUTIONS, jobs=jobs, limits=GradeLimits(),
                    on_result=lambda result: stamps.append(time.perf_counter()))
    total = time.perf_counter() - started
    per = [b - a for a, b in zip([started, *stamps[:-1]], stamps)]
    return per, total, results


def course(rounds: int) -> int:
    """One student's whole course: bare nbclient, graded with and without the protections."""
    from dataclasses import replace

    from labkit.course.grade import GradeLimits, grade

    lessons = sorted((ROOT / "solutions").glob("*.ipynb"))
    walls: dict[str, list[float]] = {"bare": [], "protected": [], "judge only": []}
    scores: dict[str, list[str]] = {"protected": [], "judge only": []}
    protections = ""
    top = Path(tempfile.mkdtemp(prefix="bench-grade-course-"))
    try:
        for number in range(rounds):
            work = top / f"bare-{number}"
            work.mkdir()
            started = time.perf_counter()
            bare(lessons, work, "graceful")
            walls["bare"].append(time.perf_counter() - started)
            for name, user, freeze in (("protected", "labkit-grader", True), ("judge only", None, False)):
                started = time.perf_counter()
                results = grade(lessons, top / f"{name}-{number}".replace(" ", "-"), jobs=1,
                                limits=replace(GradeLimits(), freeze_student=freeze), sandbox_user=user,
                                students={path: "student" for path in lessons})
                walls[name].append(time.perf_counter() - started)
                scores[name].append(" ".join(f"{r.notebook[:2]}:{r.score:g}/{r.max_score:g}" for r in results))
                protections = protections or (results[0].protections if name == "protected" else "")
            print(f"round {number + 1}: bare nbclient {walls['bare'][-1]:.1f} s, labkit grade with the protections "
                  f"{walls['protected'][-1]:.1f} s, judge only {walls['judge only'][-1]:.1f} s", flush=True)
    finally:
        shutil.rmtree(top, ignore_errors=True)
    median = {name: statistics.median(values) for name, values in walls.items()}
    added = median["protected"] / median["judge only"] - 1
    print(f"one student, {len(lessons)} notebooks, median of {rounds}: bare nbclient {median['bare']:.1f} s, "
          f"judge only {median['judge only']:.1f} s ({median['judge only'] / median['bare']:.2f}x bare), with the "
          f"protections {median['protected']:.1f} s ({median['protected'] / median['bare']:.2f}x bare)")
    print(f"protections in force: {protections}")
    print(f"scores with the protections: {scores['protected'][0]}")
    full = all(s.split(":")[1].split("/")[0] == s.split("/")[1] for s in scores["protected"][0].split())
    checks = [(f"the protections add {added * 100:+.1f} % to one student's wall time (target < 10 %)", added < 0.10),
              ("every solution gets full marks with the protections", full),
              ("same scores with and without the protections", scores["protected"] == scores["judge only"])]
    for line, ok in checks:
        print(f"{'PASS' if ok else 'FAIL'}  {line}")
    return 0 if all(ok for _, ok in checks) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--submissions", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--course", action="store_true", help="grade the real course's solutions as one student")
    args = parser.parse_args(argv)
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    if args.course:
        return course(args.rounds)
    import jupyter_client
    import nbclient

    print(f"machine: {platform.system()} {platform.release()} {platform.machine()}, {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}, nbclient {nbclient.__version__}, "
          f"jupyter_client {jupyter_client.__version__}")
    top = Path(tempfile.mkdtemp(prefix="bench-grade-"))
    try:
        paths = make_class(top, args.submissions)
        bare_times: dict[str, list[float]] = {"graceful": [], "immediate": []}
        grade_times: list[float] = []
        totals: dict[str, list[float]] = {"graceful": [], "immediate": [], "jobs1": [], "jobs2": []}
        rows = {}
        for number in range(args.rounds):
            for shutdown in ("graceful", "immediate"):
                work = top / f"bare-{shutdown}-{number}"
                work.mkdir()
                started = time.perf_counter()
                bare_times[shutdown] += bare(paths, work, shutdown)
                totals[shutdown].append(time.perf_counter() - started)
            per, total, results = graded(paths, top / f"jobs1-{number}", 1)
            grade_times += per
            totals["jobs1"].append(total)
            rows[(number, 1)] = [r.row() for r in results]
            _, total, results = graded(paths, top / f"jobs2-{number}", 2)
            totals["jobs2"].append(total)
            rows[(number, 2)] = [r.row() for r in results]
            print(f"round {number + 1} of {args.submissions} notebooks: bare nbclient {totals['graceful'][-1]:.2f} s "
                  f"(immediate shutdown {totals['immediate'][-1]:.2f} s), labkit grade --jobs 1 "
                  f"{totals['jobs1'][-1]:.2f} s, --jobs 2 {totals['jobs2'][-1]:.2f} s", flush=True)
    finally:
        shutil.rmtree(top, ignore_errors=True)

    same = all(value == rows[(0, 1)] for value in rows.values())
    scores = sorted({row["score"] for row in rows[(0, 1)]}, key=float)
    grade_p50 = statistics.median(grade_times)
    p50 = {shutdown: statistics.median(times) for shutdown, times in bare_times.items()}
    baseline = min(p50, key=p50.get)  # the faster baseline: the stricter comparison
    overhead = grade_p50 / p50[baseline] - 1
    speedup = statistics.median(totals["jobs1"]) / statistics.median(totals["jobs2"])
    print(f"per submission, median (p95) of {len(grade_times)}: bare nbclient {p50['graceful'] * 1000:.0f} ms "
          f"({_p95(bare_times['graceful']) * 1000:.0f}), bare nbclient with immediate shutdown "
          f"{p50['immediate'] * 1000:.0f} ms ({_p95(bare_times['immediate']) * 1000:.0f}), labkit grade --jobs 1 "
          f"{grade_p50 * 1000:.0f} ms ({_p95(grade_times) * 1000:.0f})")
    print(f"batch of {args.submissions}, median of {args.rounds}: bare {statistics.median(totals['graceful']):.2f} s, "
          f"immediate {statistics.median(totals['immediate']):.2f} s, --jobs 1 {statistics.median(totals['jobs1']):.2f} s, "
          f"--jobs 2 {statistics.median(totals['jobs2']):.2f} s")
    checks = [
        (f"grading overhead per submission {overhead * 100:+.1f} % against bare nbclient with {baseline} "
         "shutdown, the faster baseline (target < 10 %)", overhead < 0.10),
        (f"--jobs 2 speed-up {speedup:.2f}x (target >= 1.7x)", speedup >= 1.7),
        (f"same gradebook rows in every round and with --jobs 1 and 2 (scores seen: {', '.join(scores)})", same),
    ]
    for line, ok in checks:
        print(f"{'PASS' if ok else 'FAIL'}  {line}")
    return 0 if all(ok for _, ok in checks) else 1


def _p95(values: list[float]) -> float:
    return sorted(values)[max(0, round(0.95 * len(values)) - 1)]


if __name__ == "__main__":
    sys.exit(main())
