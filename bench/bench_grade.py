"""The batch grader's overhead against bare nbclient, and its speed-up with two kernels.

Run: python bench/bench_grade.py [--submissions 20] [--rounds 3]
     python bench/bench_grade.py --class 4 [--lessons 00_welcome,01_signals] [--jobs-list 1,2,4] [--shards 4]

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

``--class N`` (issue 22): N simulated students of the real course (right: the solution; partly
right: the solution with one wrong answer of the corpus ``tests/fixtures/wrong_answers``; wrong:
one wrong answer in every answer cell), lessons ``--lessons`` (default 00_welcome,01_signals: keep
it small on a shared machine; ``--lessons all`` for 00-06). Graded with each ``--jobs`` of
``--jobs-list`` and with the default ``--jobs`` (``labkit.course.capacity``), then as
``--shards`` shards run as separate ``labkit grade --shard K/S`` processes at once and merged
with ``labkit grade merge``. Reports students per hour, the CPU floor (total CPU time of the
--jobs 1 run / cores) and checks: every gradebook equals --jobs 1's (scores and statuses), the
merged shards equal the single run and keep within 10 % of its throughput, the default --jobs
within 1.5x of the CPU floor.
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


def class_bench(students: int, lessons: list[str], jobs_list: list[int], shards: int) -> int:
    """The class benchmark of issue 22 (see the module docstring)."""
    import resource

    from labkit.course.capacity import default_plan
    from labkit.course.grade import GradeLimits, grade
    from labkit.course.shard import find_submissions

    def cpu_s() -> float:
        return sum(getattr(resource.getrusage(who), field) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
                   for field in ("ru_utime", "ru_stime"))

    top = Path(tempfile.mkdtemp(prefix="bench-grade-class-"))
    runs: dict[str, tuple[float, float, list[tuple[str, ...]]]] = {}  # name -> (wall s, cpu s, rows)
    longest_s = 0.0  # the longest single submission at --jobs 1: no schedule finishes before it
    try:
        submitted = make_course_class(top / "class", students, lessons)
        subs = find_submissions([submitted])
        plan = default_plan(top / "plan", GradeLimits().memory_max_bytes)
        print(f"class: {students} students x {len(lessons)} lessons = {len(subs)} submissions; default {plan.describe()}",
              flush=True)
        for jobs in [*jobs_list, *([] if plan.jobs in jobs_list else [plan.jobs])]:
            name = f"--jobs {jobs}" + (" (default)" if jobs == plan.jobs else "")
            started, cpu = time.perf_counter(), cpu_s()
            results = grade(subs, top / f"jobs{jobs}", solutions_dir=ROOT / "solutions", jobs=jobs)
            runs[name] = (time.perf_counter() - started, cpu_s() - cpu, _rows(results))
            longest_s = max(longest_s, max((r.seconds for r in results), default=0.0)) if jobs == 1 else longest_s
            _say(name, runs[name], students)
        per_shard = max(1, plan.jobs // shards)
        started, cpu = time.perf_counter(), cpu_s()
        procs = [subprocess.Popen([sys.executable, "-m", "labkit", "grade", str(submitted), "--shard", f"{k}/{shards}",
                                   "--out", str(top / f"shard{k}"), "--jobs", str(per_shard)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                 for k in range(1, shards + 1)]
        errors = [proc.communicate()[1] for proc in procs]
        merged = subprocess.run([sys.executable, "-m", "labkit", "grade", "merge",
                                 *[str(top / f"shard{k}") for k in range(1, shards + 1)], "--out", str(top / "merged"),
                                 "--submissions", str(submitted)], capture_output=True, text=True)
        from labkit.course.grade import read_gradebook

        rows = sorted(tuple(row[key] for key in ("student", "notebook", "score", "max_score", "status"))
                      for row in read_gradebook(top / "merged" / "gradebook.csv"))
        name = f"{shards} shards x --jobs {per_shard}, merged"
        runs[name] = (time.perf_counter() - started, cpu_s() - cpu, rows)
        _say(name, runs[name], students)
        if any(proc.returncode for proc in procs) or merged.returncode:
            print("shard or merge failed:", *[e.strip() for e in errors if e.strip()], merged.stderr.strip(), sep="\n")
    finally:
        shutil.rmtree(top, ignore_errors=True)
    base_wall, base_cpu, base_rows = runs[next(iter(runs))]
    floor = base_cpu / (plan.cores or 1)
    default_name = next(key for key in runs if key.endswith("(default)"))
    shard_name = list(runs)[-1]
    print(f"CPU floor: {base_cpu:.1f} s of CPU / {plan.cores} core(s) = {floor:.1f} s")
    if longest_s > floor:  # a small class: the longest submission, not the CPU, bounds every schedule
        print(f"INFO  the longest submission alone took {longest_s:.1f} s (--jobs 1), above the CPU floor: no "
              f"--jobs can finish sooner; the default took {runs[default_name][0] / longest_s:.2f}x that. The CPU "
              f"floor is the bound only for a class large enough that this path is short beside it (--class 40)")
    checks = [
        ("every gradebook equals --jobs 1's (scores and statuses)", all(rows == base_rows for _, _, rows in runs.values())),
        (f"merged shards within 10 % of the default run's throughput ({runs[default_name][0] / runs[shard_name][0]:.2f}x)",
         runs[shard_name][0] <= 1.1 * runs[default_name][0]),
        (f"default --jobs within 1.5x of the CPU floor ({runs[default_name][0]:.1f} s vs {floor:.1f} s: "
         f"{runs[default_name][0] / max(floor, 1e-9):.2f}x)", runs[default_name][0] <= 1.5 * floor),
    ]
    for line, ok in checks:
        print(f"{'PASS' if ok else 'FAIL'}  {line}")
    return 0 if all(ok for _, ok in checks) else 1


def _rows(results) -> list[tuple[str, ...]]:
    return sorted((r.student, r.notebook, r.row()["score"], r.row()["max_score"], r.status) for r in results)


def _say(name: str, run: tuple[float, float, list], students: int) -> None:
    wall, cpu, rows = run
    print(f"{name}: {wall:.1f} s wall, {cpu:.1f} s CPU, {students / wall * 3600:.0f} students/hour; "
          f"scores {' '.join(row[2] for row in rows)}", flush=True)


def make_course_class(folder: Path, students: int, lessons: list[str]) -> Path:
    """``submitted/studentNN/<lesson>.ipynb``: right, partly right and wrong answers in turn."""
    corpus: dict[str, list[tuple[str, str]]] = {}
    for path in sorted((ROOT / "tests" / "fixtures" / "wrong_answers").glob("*/*.py")):
        lines = path.read_text().splitlines(keepends=True)
        cell = next(line.split(":", 1)[1].strip() for line in lines if line.startswith("# cell:"))
        body = "".join(line for line in lines if not line.startswith(("# cell:", "# breaks:", "# fails:")))
        corpus.setdefault(path.parent.name, []).append((cell, body))
    for number in range(students):
        for lesson in lessons:
            nb = json.loads((ROOT / "solutions" / f"{lesson}.ipynb").read_text())
            wrong = corpus.get(lesson, [])
            if number % 3 == 1 and wrong:  # partly right: one requirement broken
                replace = dict([wrong[number // 3 % len(wrong)]])
            elif number % 3 == 2:  # wrong: the first wrong answer of every answer cell
                replace = {}
                for cell, body in wrong:
                    replace.setdefault(cell, body)
            else:
                replace = {}
            for cell in nb["cells"]:
                grade_id = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
                if grade_id in replace:
                    cell["source"] = replace[grade_id]
                if cell["cell_type"] == "code":
                    cell["outputs"], cell["execution_count"] = [], None
            path = folder / "submitted" / f"student{number:02d}" / f"{lesson}.ipynb"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(nb))
    return folder / "submitted"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--submissions", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--course", action="store_true", help="grade the real course's solutions as one student")
    parser.add_argument("--class", dest="class_size", type=int, default=None, metavar="N",
                        help="issue 22: N simulated students of the real course (try 4; 40 is the issue's figure)")
    parser.add_argument("--lessons", default="00_welcome,01_signals",
                        help="with --class: lessons, comma-separated, or 'all' (default 00_welcome,01_signals)")
    parser.add_argument("--jobs-list", default="1,2,4", help="with --class: --jobs values besides the default")
    parser.add_argument("--shards", type=int, default=4, help="with --class: shards run at once and merged (default 4)")
    args = parser.parse_args(argv)
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    if args.course:
        return course(args.rounds)
    if args.class_size is not None:
        lessons = (sorted(path.stem for path in (ROOT / "solutions").glob("*.ipynb")) if args.lessons == "all"
                   else [name.strip() for name in args.lessons.split(",") if name.strip()])
        return class_bench(args.class_size, lessons, [int(j) for j in args.jobs_list.split(",")], args.shards)
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
