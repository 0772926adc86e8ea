"""Hostile submissions: student code that tries to fool ``labkit grade`` earns nothing unearned.

The fixture lesson ``tests/fixtures/grade/solutions/20_trust.ipynb`` has a run to complete
(checked against a reference run the check makes itself), a ``stop(pid)`` that must refuse
pid 1 (checked against the sandbox's recording init), and a probe whose test fails on purpose
and reports, in its message, what the learner's code could see from inside the sandbox.
"""

from __future__ import annotations

import json
import os
import signal
import tempfile
from pathlib import Path

import psutil
import pytest

from labkit.course._isolation import plan
from labkit.course.grade import grade, read_gradebook
from test_grade import LIMITS, grader_processes

ROOT = Path(__file__).resolve().parent.parent
SOLUTIONS = Path(__file__).parent / "fixtures" / "grade" / "solutions"
LESSON = "20_trust"
SOLUTION_ANSWERS = {cell["metadata"]["nbgrader"]["grade_id"]: cell["source"]
                    for cell in json.loads((SOLUTIONS / f"{LESSON}.ipynb").read_text())["cells"]
                    if cell["metadata"].get("nbgrader", {}).get("solution")}
ISOLATED = plan("labkit-grader", [], []).uid is not None
needs_isolation = pytest.mark.skipif(not ISOLATED, reason="needs root and namespaces (the sandbox user, PID and "
                                                         "mount namespaces); without them the gradebook says so")

MONKEYPATCH = """import labkit.checks as checks
checks.expect_completed = lambda *args, **kwargs: "the run completed"
checks.CheckFailed = Exception
import subprocess
subprocess.run = lambda *args, **kwargs: None  # the check's own reference run, if it ran here
"""
BUILTINS = """import builtins, json, sys, types
builtins.AssertionError = type("AssertionError", (Exception,), {})
real_loads = json.loads
json.loads = lambda *a, **k: {"status": "completed", "global_step": 20, "epoch": 1, "loss": 0.1,
                              "weights_sha256": "same"}
fake = types.ModuleType("labkit.checks")
fake.expect_completed = lambda *a, **k: "ok"
sys.modules["labkit.checks"] = fake
builtins.print = lambda *a, **k: None
"""
FORGED = """import json
run = RUNS / "run"
(run / "checkpoints").mkdir(parents=True, exist_ok=True)
(run / "final.json").write_text(json.dumps({"status": "completed", "epoch": 1, "global_step": 20, "loss": 0.5,
                                            "weights_sha256": "0" * 64}))
(run / "train.log").write_text("step 20 epoch 0 loss 0.5\\ncompleted: step 20\\n")
print("run_completed: passed")
print("Score: 5/5")
"""
DAEMON = """import json, subprocess, sys, textwrap
# a forger in the background: rewrites the run's and every reference's final.json, all the time
forger = textwrap.dedent('''
    import json, os, pathlib, time
    fake = json.dumps({"status": "completed", "epoch": 1, "global_step": 20, "loss": 0.5, "weights_sha256": "f" * 64})
    while True:
        for final in [pathlib.Path("runs/run/final.json"), *pathlib.Path(os.environ["TMPDIR"]).glob("*/final.json"),
                      *pathlib.Path("runs").glob("*/final.json")]:
            try:
                final.parent.mkdir(parents=True, exist_ok=True)
                final.write_text(fake)
            except OSError:
                pass
        time.sleep(0.001)
''')
subprocess.Popen([sys.executable, "-c", forger], start_new_session=True)
"""
NO_GUARD = """def stop(pid, grace_s=5.0):
    proc = psutil.Process(pid)
    proc.terminate()
    proc.wait(grace_s)
    return "stopped"


import labkit.course.standin as standin
standin.call_guarded = lambda *args, **kwargs: standin.GuardedCall(1, "ValueError", "refusing to stop pid 1")
standin.expect_refusal = lambda *args, **kwargs: "stop refuses pid 1"
"""
PROBE = """import json, os, pathlib, signal
import labkit
root = pathlib.Path(labkit.__file__).resolve().parents[1]
found = {}


def attempt(name, read):
    try:
        found[name] = read()
    except Exception as err:
        found[name] = type(err).__name__


def cmdline(pid):
    return open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\\0", b" ").decode()


# short keys and values: the report travels in a test's failure message (400 characters)
attempt("sol", lambda: sorted(os.listdir(root / "solutions")))
attempt("tests", lambda: sorted(os.listdir(root / "tests")))
attempt("git", lambda: sorted(os.listdir(root / ".git")) if (root / ".git").is_dir() else [])
attempt("hidden", lambda: "BEGIN HIDDEN" in (root / "solutions" / "01_signals.ipynb").read_text())
attempt("fix", lambda: sorted(os.listdir({solutions!r})))
attempt("subs", lambda: sorted(os.listdir({submitted!r})))
attempt("book", lambda: sorted(os.listdir({out!r})))
attempt("tmp", lambda: sorted(os.listdir({tmp!r})))
attempt("pids", lambda: [len(pids := [int(p) for p in os.listdir("/proc") if p.isdigit()]), max(pids)])
attempt("init", lambda: "_sandbox.py" in cmdline(1))
attempt("grader", lambda: "pytest" in cmdline({grader}))
if {isolated} and found["init"] is True:  # never outside the sandbox: the real grader, the real PID 1
    attempt("kill_grader", lambda: os.kill({grader}, signal.SIGTERM))
    attempt("kill_1", lambda: os.kill(1, signal.SIGTERM))
attempt("uid", os.getuid)
attempt("root", lambda: sorted(os.listdir("/root")))
PROBE = found
"""
PLANTED = r"""import json, pathlib
# a labkit of its own in the working folder, for the checks' `python -m labkit.trainer` to find first
fake = {"status": "completed", "epoch": 1, "global_step": 20, "loss": 0.5, "weights_sha256": "0" * 64}
(RUNS / "run").mkdir(parents=True, exist_ok=True)
(RUNS / "run" / "final.json").write_text(json.dumps(fake))
trainer = pathlib.Path("labkit/trainer")
trainer.mkdir(parents=True, exist_ok=True)
pathlib.Path("labkit/__init__.py").write_text("")
(trainer / "__init__.py").write_text("")
(trainer / "__main__.py").write_text(
    "import pathlib, sys\n"
    "folder = pathlib.Path(sys.argv[sys.argv.index('--run-dir') + 1])\n"
    "folder.mkdir(parents=True, exist_ok=True)\n"
    f"(folder / 'final.json').write_text({json.dumps(fake)!r})\n")
"""
WIRE = """PROBE = {"seen": "nothing"}


class Evil:
    def __repr__(self):
        return "__import__('os').system('touch /tmp/labkit-pwned-by-wire')"


class Deep:
    def __repr__(self):
        return "[" * 100000 + "]" * 100000


# what the grader reads back from this kernel: a repr that would run code, or nest without end
__labkit__["get"] = lambda name: Evil() if name == "PROBE" else Deep()
"""
KILL_ALL = """import os, signal
if "_sandbox.py" in open("/proc/1/cmdline").read():  # only ever inside the grader's PID namespace
    os.kill(-1, signal.SIGKILL)  # every process this user may signal
"""


def submit(folder: Path, student: str, answers: dict[str, str]) -> Path:
    notebook = json.loads((SOLUTIONS / f"{LESSON}.ipynb").read_text())
    for cell in notebook["cells"]:
        grade_id = cell["metadata"].get("nbgrader", {}).get("grade_id")
        if grade_id in answers:
            cell["source"] = answers[grade_id]
    path = folder / "submitted" / student / f"{LESSON}.ipynb"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(notebook))
    return path


def points(result, *grade_ids: str) -> float:
    return sum(test.points for test in result.tests if test.grade_id in grade_ids)


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hostile")
    out = folder / "graded"
    probe = PROBE
    for name, value in (("solutions", repr(str(SOLUTIONS))), ("submitted", repr(str(folder / "submitted"))),
                        ("out", repr(str(out))), ("tmp", repr(tempfile.gettempdir())), ("grader", str(os.getpid())),
                        ("isolated", str(ISOLATED))):
        probe = probe.replace("{" + name + "!r}", value).replace("{" + name + "}", value)
    students = {
        "solution": {},
        "monkeypatch": {"run_answer": MONKEYPATCH},
        "builtins": {"run_answer": BUILTINS},
        "forged": {"run_answer": FORGED},
        "daemon": {"run_answer": DAEMON},
        "no-guard": {"stop_answer": NO_GUARD},
        "probe": {"probe_answer": probe},
        "wire": {"probe_answer": WIRE},
        "planted": {"run_answer": PLANTED},
    }
    paths = [submit(folder, student, answers) for student, answers in students.items()]
    pid1 = psutil.Process(1).create_time()
    results = grade(paths, out, solutions_dir=SOLUTIONS, jobs=3, limits=LIMITS)
    assert psutil.Process(1).create_time() == pid1
    return {result.student: result for result in results}, out


def test_the_solution_gets_every_point_but_the_probe(hostile):
    results, _ = hostile
    assert results["solution"].score == 4 and results["solution"].max_score == 5, results["solution"].tests


@pytest.mark.parametrize("student", ["monkeypatch", "builtins", "forged", "daemon", "planted"])
def test_replacing_checks_builtins_or_forging_evidence_earns_nothing(hostile, student):
    results, _ = hostile
    result = results[student]
    assert points(result, "run_completed") == 0, result.tests
    if student != "builtins":  # that one breaks its own kernel too (ipykernel decodes with json.loads)
        assert points(result, "stop_refuses", "stop_works") == 2  # the rest of its answers are right
    assert result.score <= results["solution"].score - 2


@needs_isolation
def test_a_refusal_rests_on_what_the_stand_in_init_received_not_on_the_kernels_word(hostile):
    result = hostile[0]["no-guard"]
    refuses = next(test for test in result.tests if test.grade_id == "stop_refuses")
    assert not refuses.passed and "SIGTERM" in refuses.message, refuses
    assert points(result, "stop_works", "run_completed") == 3


def test_values_read_back_from_the_student_kernel_are_literals_only(hostile):
    result = hostile[0]["wire"]
    assert result.status == "ok" and not Path("/tmp/labkit-pwned-by-wire").exists()
    probe = next(test for test in result.tests if test.grade_id == "probe_report")
    assert "NameError" in probe.message, "an unreadable value is not brought into the judge"
    assert points(result, "run_completed") == 2


def test_every_row_says_which_protections_held(hostile):
    results, out = hostile
    rows = read_gradebook(out / "gradebook.csv")
    assert {row["student"] for row in rows} == set(results)
    for row in rows:
        assert row["protections"].startswith("judge")
        assert ("pid+mount namespaces" in row["protections"]) == ISOLATED, row
        assert ISOLATED or "missing:" in row["protections"]


def _probe(hostile) -> dict:
    message = next(test.message for test in hostile[0]["probe"].tests if test.grade_id == "probe_report")
    return json.loads(message.split("PROBE=", 1)[1].splitlines()[0].rstrip("."))


@needs_isolation
def test_student_code_cannot_read_solutions_submissions_or_the_gradebook(hostile):
    seen = _probe(hostile)
    assert seen["sol"] == [] and seen["tests"] == [] and seen["git"] == [], seen
    assert seen["hidden"] == "FileNotFoundError"
    assert seen["fix"] in ([], "FileNotFoundError") and seen["book"] in ([], "FileNotFoundError"), seen
    assert seen["subs"] in ([], "FileNotFoundError"), seen
    runs = [name for name in seen["tmp"] if name.startswith("labkit-grade-")]
    assert len(runs) == 1, f"only its own run's folder, not other submissions': {seen['tmp']}"
    assert seen["uid"] != 0
    assert seen["root"] in ("PermissionError", [".pyenv"], []), seen


@needs_isolation
def test_student_code_sees_and_signals_only_its_own_processes(hostile):
    seen = _probe(hostile)
    assert seen["init"] is True, "pid 1 is the grader's recording init, not the machine's"
    count, highest = seen["pids"]
    assert count < 30 and highest < 200, seen["pids"]
    assert seen["grader"] is not True  # no such pid in its namespace, or not the grader
    assert seen["kill_grader"] in ("ProcessLookupError", "PermissionError", None)
    assert seen["kill_1"] is None  # delivered, to the stand-in: recorded, nothing stopped


@needs_isolation
def test_a_kill_of_every_process_it_may_signal_ends_only_its_own_submission(tmp_path):
    paths = [submit(tmp_path, "killer", {"run_answer": KILL_ALL}), submit(tmp_path, "neighbour", {})]
    results = {r.student: r for r in grade(paths, tmp_path / "graded", solutions_dir=SOLUTIONS, jobs=2,
                                           limits=LIMITS)}
    assert results["neighbour"].score == 4, results["neighbour"].tests
    # kill(-1) spares the caller: the kernel lives on, its judge (the same user) does not
    assert results["killer"].status.startswith("the checks' process (judge) was killed in cell 4")
    assert results["killer"].score == 0
    assert not grader_processes()


def test_nothing_of_any_submission_is_left_running(hostile):
    assert not grader_processes()


def test_without_a_sandbox_user_the_judge_alone_still_grades_and_the_row_says_what_was_missing(tmp_path):
    paths = [submit(tmp_path, "solution", {}), submit(tmp_path, "monkeypatch", {"run_answer": MONKEYPATCH})]
    results = {r.student: r for r in grade(paths, tmp_path / "graded", solutions_dir=SOLUTIONS, jobs=2,
                                           limits=LIMITS, sandbox_user=None)}
    assert results["solution"].score == 4 and points(results["monkeypatch"], "run_completed") == 0
    assert results["solution"].protections == "judge; missing: sandbox user and namespaces (no sandbox user asked for)"
    assert not grader_processes()
