"""Grading a class at scale (issue 22): shards, their merge, --jobs, the class report, LMS export.

Graded submissions are a handful of tiny notebooks of the fixture lesson ``10_basics`` (helpers from
``test_grade.py``); the merge, the report and the export are also tested on gradebooks written
directly, with no kernel at all.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from test_grade import CLASS, RIGHT, SOLUTIONS, grader_processes, with_answers, write_class

from labkit import cli
from labkit.course import capacity, export, merge_shards, report, shard
from labkit.course._gradebook import (CSV_NAME, GradeResult, TestResult, read_gradebook, write_details,
                                      write_gradebook)
from labkit.course.grade import GradeLimits, grade
from labkit.errors import BadArgument

LIMITS = GradeLimits(cell_timeout_s=8, notebook_timeout_s=60, memory_max_bytes=256 * 2**20)
CLI_LIMITS = ["--timeout", "8", "--notebook-timeout", "60", "--memory-max", "256M"]
SMALL_CLASS = {  # in shards of 2: "wrong" in 1/2, the others in 2/2 (both shards start kernels)
    "solution": CLASS["solution"], "untouched": CLASS["untouched"],
    "invalid-json": CLASS["invalid-json"], "wrong": with_answers({**RIGHT, "add_answer": "def add(a, b):\n    return a - b"}),
}


# -- the split -----------------------------------------------------------------------------------

def test_the_split_is_a_stable_hash_of_the_student_whatever_the_hash_seed():
    names = [f"student{number:03d}" for number in range(200)]
    here = [shard.shard_of(name, 4) for name in names]
    code = "from labkit.course.shard import shard_of; print([shard_of(f'student{n:03d}', 4) for n in range(200)])"
    for seed in ("1", "2"):
        other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                               env={**os.environ, "PYTHONHASHSEED": seed}).stdout
        assert json.loads(other) == here
    assert shard.shard_of("alice", 4) == 4  # sha256("alice")[:8] % 4 + 1: the same on every machine
    assert set(here) == {1, 2, 3, 4} and max(here.count(k) for k in range(1, 5)) < 75  # roughly even


def test_shards_are_disjoint_and_cover_the_class(tmp_path):
    write_class(tmp_path, {name: CLASS["untouched"] for name in ("a", "b", "c", "d", "e", "f")})
    everyone = shard.find_submissions([tmp_path / "submitted"])
    parts = [shard.select(everyone, shard.Shard(k, 3)) for k in (1, 2, 3)]
    assert sorted(sub.student for part in parts for sub in part) == ["a", "b", "c", "d", "e", "f"]


@pytest.mark.parametrize("text", ["0/4", "5/4", "1", "a/b", "1/0", ""])
def test_a_bad_shard_is_bad_input(text):
    with pytest.raises(BadArgument, match="--shard"):
        shard.parse_shard(text)


def _notebook(path: Path, content: str = "{}") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)
    return path


def test_submissions_are_found_in_nbgraders_exchange_its_course_folder_and_a_flat_folder(tmp_path):
    inbound = tmp_path / "exchange" / "course101" / "inbound"
    _notebook(inbound / "alice+ps1+2026-11-01 10:00:00.000000 UTC+abc" / "10_basics.ipynb")
    late = _notebook(inbound / "alice+ps1+2026-11-02 09:00:00.000000 UTC+def" / "10_basics.ipynb")
    bob = _notebook(inbound / "bob+ps1+2026-11-01 11:00:00.000000 UTC+ghi" / "10_basics.ipynb")
    _notebook(inbound / "bob+ps1+2026-11-01 11:00:00.000000 UTC+ghi" / ".ipynb_checkpoints" / "x.ipynb")
    found = shard.find_submissions([tmp_path / "exchange" / "course101"])
    assert [(s.student, s.notebook, s.path) for s in found] == [("alice", "10_basics", late), ("bob", "10_basics", bob)]

    course = _notebook(tmp_path / "course" / "submitted" / "carol" / "ps1" / "10_basics.ipynb")
    assert [(s.student, s.path) for s in shard.find_submissions([tmp_path / "course"])] == [("carol", course)]

    flat = _notebook(tmp_path / "lms" / "dave" / "10_basics.ipynb")
    assert [(s.student, s.path) for s in shard.find_submissions([tmp_path / "lms"])] == [("dave", flat)]
    (tmp_path / "empty").mkdir()
    with pytest.raises(BadArgument, match="no submission found"):
        shard.find_submissions([tmp_path / "empty"])


# -- shards as separate processes, merged ----------------------------------------------------------

DOCS = Path(__file__).resolve().parent.parent / "docs" / "instructors.md"
GRADE_OPTIONS = ["--solutions", str(SOLUTIONS), "--sandbox-user", "none", "--jobs", "2", *CLI_LIMITS]


def recipe(name: str) -> str:
    """The code block after ``<!-- recipe: NAME -->`` in docs/instructors.md."""
    text = DOCS.read_text()
    after = text[text.index(f"<!-- recipe: {name} -->"):]
    start = after.index("```") + after[after.index("```"):].index("\n") + 1
    return after[start:start + after[start:].index("```")]


def _shard_command(folder: Path, k: int, n: int, out: Path) -> list[str]:
    return [sys.executable, "-m", "labkit", "grade", str(folder), "--shard", f"{k}/{n}", "--out", str(out),
            *GRADE_OPTIONS]


def _slurm_task(k: int, n: int, submissions: Path, out: Path) -> subprocess.Popen:
    """The SLURM recipe of docs/instructors.md as one array task: bash, with what sbatch would set."""
    env = {**os.environ, "SLURM_ARRAY_TASK_ID": str(k), "SLURM_ARRAY_TASK_COUNT": str(n),
           "SUBMISSIONS": str(submissions), "OUT": str(out), "GRADE_OPTIONS": " ".join(GRADE_OPTIONS),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.Popen(["bash", "-c", recipe("slurm")], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def test_shards_graded_by_separate_processes_merge_into_the_single_runs_gradebook(tmp_path, capsys):
    """Two SLURM array tasks (the docs' script, run by bash), merged: the single run's gradebook."""
    write_class(tmp_path, SMALL_CLASS)
    submitted = tmp_path / "submitted"
    single = grade(shard.find_submissions([submitted]), tmp_path / "single", solutions_dir=SOLUTIONS, jobs=2,
                   limits=LIMITS, sandbox_user=None)
    assert {r.student: r.score for r in single} == {"solution": 10, "untouched": 0, "invalid-json": 0, "wrong": 8}
    shards = [tmp_path / "graded" / f"shard-{k}" for k in (1, 2)]
    running = [_slurm_task(k, 2, submitted, tmp_path / "graded") for k in (1, 2)]
    outputs = [proc.communicate(timeout=180) for proc in running]
    assert [proc.returncode for proc in running] == [0, 0], outputs
    assert [shard.shard_of(student, 2) for student in SMALL_CLASS] == [2, 2, 2, 1]
    assert "shard 1/2: 1 of 4 students" in outputs[0][1] and "shard 2/2: 3 of 4 students" in outputs[1][1]
    assert not grader_processes()

    assert cli.main(["grade", "merge", *map(str, shards), "--out", str(tmp_path / "merged"),
                     "--submissions", str(submitted)]) == 0
    assert "merged 4 rows from 2 folder(s)" in capsys.readouterr().out
    merged = tmp_path / "merged"
    assert (merged / CSV_NAME).read_bytes() == (tmp_path / "single" / CSV_NAME).read_bytes()
    assert sorted(p.relative_to(merged).as_posix() for p in (merged / "feedback").rglob("*.html")) == \
        sorted(p.relative_to(tmp_path / "single").as_posix() for p in (tmp_path / "single" / "feedback").rglob("*.html"))
    assert sorted(p.name for p in (merged / "details").rglob("*.json")) == ["10_basics.json"] * 4
    assert not list(merged.rglob(".tmp-*"))

    first = (merged / CSV_NAME).read_bytes()  # idempotent: merging again changes and copies nothing
    result = merge_shards.merge(shards, merged)
    assert (result.written, result.copied, result.conflicts, result.missing) == (True, 0, [], [])
    assert (merged / CSV_NAME).read_bytes() == first

    # resumable: a shard run again grades nothing, and says how --jobs was chosen when not given
    command = _shard_command(submitted, 1, 2, shards[0])
    at = command.index("--jobs")
    del command[at:at + 2]
    assert cli.main(command[3:]) == 0
    out, err = capsys.readouterr()
    assert "0 graded, 1 already graded" in out and "--jobs " in err, (out, err)
    # the share of waiting comes from the shard's earlier run when it measured one (not when the
    # grading took no measurable wall time); test_the_measured_share_of_waiting_is_kept_for_the_next_run covers it
    assert "measured in this folder" in err or "not yet measured here" in err, err
    assert capacity.read_wait_share(shards[1]) is not None


# -- merge without kernels -----------------------------------------------------------------------

def _row(student: str, score: str, status: str = "ok", notebook: str = "10_basics") -> dict[str, str]:
    return {"student": student, "notebook": notebook, "score": score, "max_score": "10", "status": status,
            "protections": "judge"}


def _folder(path: Path, rows: list[dict[str, str]], k: int | None = None, n: int = 2) -> Path:
    write_gradebook(path, rows, {f"{r['student']}/{r['notebook']}": f"digest-{r['student']}" for r in rows})
    if k is not None:
        subs = [shard.Submission(Path("x"), r["student"], r["notebook"]) for r in rows]
        shard.write_record(path, shard.Shard(k, n), subs)
    return path


def test_the_kubernetes_recipe_is_an_indexed_job_whose_pods_grade_shards_1_to_n(tmp_path):
    import yaml

    job = yaml.safe_load(recipe("kubernetes"))
    spec = job["spec"]
    assert (job["kind"], spec["completionMode"], spec["template"]["spec"]["restartPolicy"]) == ("Job", "Indexed", "Never")
    container = spec["template"]["spec"]["containers"][0]
    fake = tmp_path / "bin" / "labkit"  # the pod's command, run by sh with the index Kubernetes sets
    _notebook(fake, '#!/bin/sh\necho "$@"\n').chmod(0o755)
    seen = []
    for index in range(spec["completions"]):
        done = subprocess.run([*container["command"], *container["args"]], capture_output=True, text=True, check=True,
                              env={"PATH": f"{fake.parent}:/usr/bin:/bin", "JOB_COMPLETION_INDEX": str(index)})
        seen.append(done.stdout.split())
    n = spec["completions"]
    assert [words[words.index("--shard") + 1] for words in seen] == [f"{k}/{n}" for k in range(1, n + 1)]
    assert [words[words.index("--out") + 1] for words in seen] == [f"/data/graded/shard-{k}" for k in range(1, n + 1)]
    args = cli.build_parser().parse_args(seen[0])  # what the pod runs is a valid `labkit grade` command line
    assert (args.shard, args.solutions) == (f"1/{n}", Path("/home/jovyan/solutions"))


def test_the_gnu_parallel_recipe_runs_valid_shard_and_merge_commands():
    lines = [line.strip(" \\") for line in recipe("parallel").splitlines()]
    n = int(next(line for line in lines if line.startswith("N=")).split("=")[1])
    shard_line = next(line for line in lines if line.startswith("labkit grade /"))
    for k in range(1, n + 1):
        argv = shard_line.replace("{}", str(k)).replace('"$N"', str(n)).split()[1:]
        assert cli.build_parser().parse_args(argv).shard == f"{k}/{n}"
    merge_line = next(line for line in lines if line.startswith("labkit grade merge"))
    parser = __import__("argparse").ArgumentParser()
    merge_shards.add_arguments(parser)
    assert parser.parse_args(merge_line.split()[3:]).out == Path("/shared/course/graded/all")


def test_a_conflict_is_reported_and_nothing_is_written(tmp_path, capsys):
    one = _folder(tmp_path / "one", [_row("alice", "10"), _row("bob", "5")], 1)
    two = _folder(tmp_path / "two", [_row("alice", "4"), _row("carol", "7")], 2)
    assert cli.main(["grade", "merge", str(one), str(two), "--out", str(tmp_path / "m")]) == 1
    err = capsys.readouterr().err
    assert "conflict: alice 10_basics: 10/10 ok in" in err and "4/10 ok in" in err
    assert "nothing written" in err and not (tmp_path / "m" / CSV_NAME).exists()


def test_a_grader_error_gives_way_to_a_grade_and_an_identical_row_is_no_conflict(tmp_path):
    one = _folder(tmp_path / "one", [_row("alice", "0", "grader error: the kernel did not start"), _row("bob", "5")])
    two = _folder(tmp_path / "two", [_row("alice", "9"), _row("bob", "5")])
    result = merge_shards.merge([one, two], tmp_path / "m")
    assert result.written and not result.conflicts
    assert [(r["student"], r["score"]) for r in read_gradebook(tmp_path / "m" / CSV_NAME)] == [("alice", "9"), ("bob", "5")]


def test_grader_errors_everywhere_merge_without_conflict_and_never_give_way_to_an_older_grade(tmp_path):
    unchecked = "grader error: not checkable here: ex1_tmux (tmux is not installed here)"
    one = _folder(tmp_path / "one", [_row("alice", "3", unchecked), _row("bob", "0", "grader error: the kernel did not start")])
    two = _folder(tmp_path / "two", [_row("alice", "5", unchecked + "; timeout in cell 9"), _row("bob", "5")])
    result = merge_shards.merge([one, two], tmp_path / "m")
    assert result.written and not result.conflicts  # alice: both failed on the grader's side
    assert [(r["student"], r["status"]) for r in read_gradebook(tmp_path / "m" / CSV_NAME)] == \
        [("alice", unchecked), ("bob", "ok")]
    old = tmp_path / "old"  # bob's older submission, graded; his newer one failed on the grader's side
    write_gradebook(old, [_row("bob", "5")], {"bob/10_basics": "digest-old"})
    new = tmp_path / "new"
    write_gradebook(new, [_row("bob", "0", "grader error: the kernel did not start")], {"bob/10_basics": "digest-new"})
    result = merge_shards.merge([old, new], tmp_path / "m2")
    assert not result.written and result.conflicts and "another submission or solution" in result.conflicts[0]


def test_missing_shards_students_and_unfinished_shards_are_reported(tmp_path, capsys):
    one = _folder(tmp_path / "one", [_row("alice", "10")], 1, n=3)
    shard.write_record(one, shard.Shard(1, 3), [shard.Submission(Path("x"), s, "10_basics") for s in ("alice", "dan")])
    roster = tmp_path / "roster.csv"
    roster.write_text("Student,email\nalice,a@x.edu\nerin,e@x.edu\n")
    assert cli.main(["grade", "merge", str(one), "--out", str(tmp_path / "m"), "--roster", str(roster)]) == 1
    err = capsys.readouterr().err
    assert "missing: shard 2/3: no folder given" in err and "missing: shard 3/3: no folder given" in err
    assert "shard 1/3" in err and "did not grade 1 of its 2 submissions, e.g. dan/10_basics" in err
    assert "missing: erin: no row at all (on the roster)" in err
    assert read_gradebook(tmp_path / "m" / CSV_NAME)[0]["student"] == "alice"  # what is there is merged


@pytest.mark.parametrize("argv, words", [
    (["grade", "merge", "{tmp}/nowhere", "--out", "{tmp}/m"], "no folder at"),
    (["grade", "merge", "{tmp}", "--out", "{tmp}/m"], "not a grading folder"),
    (["grade", "merge"], "required"),
    (["grade", "report", "{tmp}"], "no gradebook.csv"),
    (["grade", "export", "{tmp}"], "no gradebook.csv"),
    (["grade", "{tmp}", "--out", "{tmp}/g", "--shard", "3/2"], "--shard 3/2"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, argv, words):
    assert cli.main([arg.format(tmp=tmp_path) for arg in argv]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and words in err, err


# -- --jobs ------------------------------------------------------------------------------------------

def test_jobs_follow_cores_and_waiting_and_never_oversubscribe_memory():
    assert capacity.plan_jobs(2, 0.7, 64 * 2**30, 2 * 2**30).jobs == 7  # 2 cores / 0.3 of a core each
    assert capacity.plan_jobs(2, 0.8, 64 * 2**30, 2 * 2**30).jobs == 8  # 10 would fill them; 4 per core at most
    assert capacity.plan_jobs(2, 0.0, 64 * 2**30, 2 * 2**30).jobs == 2  # all CPU: one per core
    assert capacity.plan_jobs(16, 0.8, 8 * 2**30, 2 * 2**30).jobs == 4  # memory for 4 capped kernels only
    assert capacity.plan_jobs(1, 0.999, 64 * 2**30, 2**30).jobs == 4  # at most 4 per core
    assert capacity.plan_jobs(4, 0.5, 2**20, 2**30).jobs == 1  # always at least one


def test_the_measured_share_of_waiting_is_kept_for_the_next_run(tmp_path):
    assert capacity.default_plan(tmp_path, 2**30).measured is False
    meter = capacity.LoadMeter()
    meter.add_wall(100.0)  # 100 s of submissions, almost no CPU spent here: nearly all waiting
    meter.save(tmp_path)
    plan = capacity.default_plan(tmp_path, 2**30)
    assert plan.measured and plan.wait_share > 0.5 and "measured in this folder" in plan.describe()


# -- the class report --------------------------------------------------------------------------------

def _graded_folder(path: Path) -> Path:
    """A gradebook with details, as `labkit grade` writes them, without running anything."""
    def result(student, status, passes, messages, seconds):
        tests = tuple(TestResult(gid, i, pts if ok else 0.0, pts, ok, "passed" if ok else messages.get(gid, "failed"))
                      for i, (gid, pts, ok) in enumerate(zip(("ex1_stops", "ex1_waits", "ex2_saves"), (2.0, 3.0, 5.0),
                                                                 passes)))
        return GradeResult(student, "01_signals", sum(t.points for t in tests), 10.0, status, tests=tests,
                           seconds=seconds)
    alive = {"ex1_waits": "AssertionError: pid 4242 still alive after 2.5 s (/tmp/tmpab12/run.log)"}
    results = [result("ann", "ok", (True, True, True), {}, 3.0),
               result("ben", "ok", (True, False, True), alive, 4.0),
               result("cat", "ok", (True, False, False),
                      {"ex1_waits": "AssertionError: pid 977 still alive after 3.0 s (/tmp/tmpzz9/run.log)",
                       "ex2_saves": "<script>alert(1)</script>"}, 5.0),
               result("dan", "timeout in cell 7 (ex1_answer); process limit (64) reached", (False, False, False), {}, 60.0)]
    for item in results:
        write_details(path, item)
    write_gradebook(path, [item.row() for item in results] + [_row("eve", "0", "invalid notebook: not JSON")], {})
    return path


def test_the_report_groups_failures_and_lists_hostile_submissions(tmp_path, capsys):
    folder = _graded_folder(tmp_path / "graded")
    assert cli.main(["grade", "report", str(folder)]) == 0
    data = json.loads((folder / "report" / "report.json").read_text())
    assert data["notebooks"]["01_signals"]["histogram"] == {"0": 1, "2": 1, "7": 1, "10": 1}
    rates = {(t["test"]): t["pass_rate"] for t in data["tests"]}
    assert rates == {"ex1_stops": 0.75, "ex1_waits": 0.25, "ex2_saves": 0.5}
    assert {e["exercise"]: e["pass_rate"] for e in data["exercises"]} == {"ex1": 0.25, "ex2": 0.5}
    top = data["failures"][0]
    assert (top["test"], top["count"], top["students"]) == ("ex1_waits", 2, ["ben", "cat"])
    assert top["message"] == "AssertionError: pid <n> still alive after <n> s (<path>)"
    assert {(p["student"], p["kind"]) for p in data["problems"]} == {("dan", "hostile or stuck"), ("eve", "broken")}
    assert data["time_s"]["max"] == 60.0 and data["time_s"]["count"] == 4
    page = (folder / "report" / "report.html").read_text()
    assert "<script>alert" not in page and "&lt;script&gt;" in page
    for name in ("scores.png", "tests.png", "times.png"):
        assert (folder / "report" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f'src="{name}"' in page


# -- export -------------------------------------------------------------------------------------------

def test_canvas_and_moodle_csv_and_the_feedback_zip(tmp_path, capsys):
    folder = tmp_path / "graded"
    write_gradebook(folder, [_row("alice", "10"), _row("bob", "0", "grader error: the kernel did not start"),
                             _row("zed", "3"), _row("alice", "7", notebook="20_trust")], {})
    for student in ("alice", "zed"):
        _notebook(folder / "feedback" / student / "10_basics.html", f"<p>{student}</p>")
    roster = tmp_path / "roster.csv"
    roster.write_text("student,first_name,last_name,id,sis_user_id,sis_login_id,section,email,idnumber\n"
                      "alice,Alice,Liddell,1001,A17,aliddell,S1,alice@x.edu,A17\n"
                      "bob,Bob,Stone,1002,B22,bstone,S2,bob@x.edu,B22\n")
    argv = ["grade", "export", str(folder), "--roster", str(roster), "--assignment", "10_basics=Basics (4242)"]
    assert cli.main(argv) == 0
    out, err = capsys.readouterr()
    assert "bob 10_basics: left blank, the grader failed" in err and "zed: graded but not on the roster" in err
    canvas = list(csv.reader(io.StringIO((folder / "export" / "canvas.csv").read_text())))
    assert canvas[0] == ["Student", "ID", "SIS User ID", "SIS Login ID", "Section", "Basics (4242)", "20_trust"]
    assert canvas[1] == ["    Points Possible", "", "", "", "", "10", "10"]
    assert canvas[2:] == [["Liddell, Alice", "1001", "A17", "aliddell", "S1", "10", "7"],
                          ["Stone, Bob", "1002", "B22", "bstone", "S2", "", ""],
                          ["zed", "", "", "", "", "3", ""]]
    moodle = list(csv.reader(io.StringIO((folder / "export" / "moodle.csv").read_text())))
    assert moodle[0] == ["First name", "Last name", "ID number", "Email address", "Basics (4242)", "20_trust"]
    assert moodle[1] == ["Alice", "Liddell", "A17", "alice@x.edu", "10", "7"]
    archive = (folder / "export" / "feedback.zip").read_bytes()
    assert zipfile.ZipFile(io.BytesIO(archive)).namelist() == ["alice/10_basics.html", "zed/10_basics.html"]
    assert cli.main(argv) == 0 and (folder / "export" / "feedback.zip").read_bytes() == archive  # repeatable
    with pytest.raises(BadArgument, match="NOTEBOOK=COLUMN"):
        export.parse_names(["10_basics"])


def test_a_roster_without_a_student_column_is_bad_input(tmp_path):
    roster = tmp_path / "roster.csv"
    roster.write_text("name,email\nAlice,a@x.edu\n")
    from labkit.course.roster import read_roster

    with pytest.raises(BadArgument, match="no 'student' column"):
        read_roster(roster)


def test_a_student_name_from_the_exchange_that_is_not_one_folder_is_refused(tmp_path):
    """Students can write to nbgrader's inbound/: a name like '..' would put feedback outside its folder."""
    inbound = tmp_path / "exchange" / "course101" / "inbound"
    _notebook(inbound / "..+ps1+2026-11-01 10:00:00.000000 UTC+abc" / "10_basics.ipynb")
    with pytest.raises(BadArgument, match="bad student name '..'"):
        shard.find_submissions([tmp_path / "exchange" / "course101"])


def test_exported_names_cannot_run_as_spreadsheet_formulas(tmp_path, capsys):
    folder = tmp_path / "graded"
    write_gradebook(folder, [_row("=cmd", "10"), _row("bob", "5")], {})
    roster = tmp_path / "roster.csv"
    roster.write_text('student,first_name,last_name,email\nbob,"=HYPERLINK(""http://x"",""a"")",@Stone,-b@x.edu\n')
    assert cli.main(["grade", "export", str(folder), "--roster", str(roster)]) == 0
    canvas = list(csv.reader(io.StringIO((folder / "export" / "canvas.csv").read_text())))
    cells = [cell for row in canvas[2:] for cell in row[:5] if cell]
    assert cells and not any(cell.startswith(("=", "+", "-", "@")) for cell in cells), cells
    assert "'=cmd" in cells
    moodle = list(csv.reader(io.StringIO((folder / "export" / "moodle.csv").read_text())))
    assert moodle[1:] == [["'=HYPERLINK(\"http://x\",\"a\")", "'@Stone", "", "'-b@x.edu", "5"],
                          ["'=cmd", "", "", "", "10"]], moodle  # the scores stay plain numbers


@pytest.mark.parametrize("status, kind", [
    ("ok", None),
    ("grader error: the kernel did not start", "grader"),
    ("grader error: not checkable here: ex2_tmux (tmux is not installed here; install it)", "grader"),
    ("grader error: not checkable here: ex2_tmux (tmux is not installed here; install it)"
     "; the submission: the checks' process (judge) was killed", "hostile or stuck"),
    ("invalid notebook: not JSON", "broken"),
])
def test_the_report_classes_a_row_by_what_the_submission_did_before_what_the_machine_lacked(status, kind):
    assert report.problem_kind(status) == kind
