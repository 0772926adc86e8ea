"""``labkit preempt-test`` on the corpus in tests/fixtures/preempt/: each broken script fails on the check
that names its bug, the correct one passes every check, bad options are one line and exit 2, and nothing
it starts outlives it, even when it is stopped itself.

Timings are kept small (2-3 stops, runs of ~1.7 s; a grace of 2 s, which a correct stop never waits
for, and 0.5 s where the grace is the bug); the broken scripts compare against the
digest of one uninterrupted run (``--reference-digest``) instead of running a reference each time.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from labkit.preempt.__main__ import run as preempt_main

FIX = Path(__file__).parent / "fixtures" / "preempt"
PY = sys.executable
CORPUS = ("correct_numpy", "no_handler", "exit_in_handler", "nonatomic_save", "rng_not_saved", "ignore_sigterm",
          "slow_save", "workers_die", "orphan_worker")


def common(tmp_path: Path) -> list[str]:
    return ["--grace-s", "2", "--min-s", "0.4", "--max-s", "0.7", "--settle-s", "0.3",
            "--slurm-warning-s", "0.2", "--work-dir", str(tmp_path / "work"), "--json", str(tmp_path / "report.json"),
            "--checkpoint", "{run}/ckpt/*.npz", "--verify-command", f"{PY} {FIX / 'verify_npz.py'} {{}}",
            "--result", "{run}/result.npy"]


def ours(tmp_path: Path) -> list[psutil.Process]:
    """Live processes started for a run under ``tmp_path`` (they carry LABKIT_PREEMPT_RUN)."""
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get("LABKIT_PREEMPT_RUN", "").startswith(str(tmp_path)) \
                    and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except psutil.Error:
            continue
    return found


def preempt(tmp_path: Path, script: str, *options: str) -> tuple[int, dict, str]:
    done = subprocess.run([PY, "-m", "labkit.preempt", *common(tmp_path), *options, "--", PY, str(FIX / f"{script}.py"),
                           "{run}"], capture_output=True, text=True, timeout=90)
    assert ours(tmp_path) == [], "preempt-test left processes running"
    path = tmp_path / "report.json"
    report = json.loads(path.read_text()) if path.exists() else {}
    return done.returncode, report, done.stdout + done.stderr


def verdicts(report: dict, check: str) -> list[str]:
    """The check's verdict in each interrupted run (the last, uninterrupted run has no stop)."""
    return [run["checks"][check]["verdict"] for run in report["runs"] if run["stop"] and check in run["checks"]]


@pytest.fixture(scope="module")
def digest(tmp_path_factory) -> str:
    """sha256 of an uninterrupted run's result (every script of the corpus trains the same toy model)."""
    import hashlib

    folder = tmp_path_factory.mktemp("reference")
    subprocess.run([PY, str(FIX / "correct_numpy.py"), str(folder)], check=True, timeout=60)
    return hashlib.sha256((folder / "result.npy").read_bytes()).hexdigest()


def test_the_corpus_has_its_scripts_and_each_finishes_fast_and_alike_when_left_alone(tmp_path, digest):
    assert len(CORPUS) >= 8 and all((FIX / f"{name}.py").is_file() for name in CORPUS)
    import hashlib

    for name in ("no_handler", "workers_die"):  # the others differ only in their stop paths
        started = time.monotonic()
        subprocess.run([PY, str(FIX / f"{name}.py"), str(tmp_path / name)], check=True, timeout=60)
        assert time.monotonic() - started < 3.0
        assert hashlib.sha256((tmp_path / name / "result.npy").read_bytes()).hexdigest() == digest


def test_the_correct_script_passes_every_check_under_every_stop_kind(tmp_path):
    # No --reference-digest here: the reference run and the default window (its duration / (N + 1)) are tested too.
    options = [o for o in common(tmp_path) if o not in ("--max-s", "0.7")]
    done = subprocess.run([PY, "-m", "labkit.preempt", *options, "-n", "4", "--min-s", "0.3",
                           "--stop", "term,slurm,int-group,kill", "--", PY, str(FIX / "correct_numpy.py"), "{run}"],
                          capture_output=True, text=True, timeout=90)
    assert ours(tmp_path) == []
    report = json.loads((tmp_path / "report.json").read_text())
    assert done.returncode == 0 and report["passed"] and report["failures"] == [], done.stdout + done.stderr
    assert [run["stop"] for run in report["runs"]] == ["term", "slurm", "int-group", "kill", None]
    assert report["reference"]["checks"]["finished"]["verdict"] == "pass"
    for run in report["runs"][:3]:
        assert {name: c["verdict"] for name, c in run["checks"].items()} == dict.fromkeys(
            ("exit-code", "grace", "checkpoint", "intact", "leftovers"), "pass"), run
    assert report["runs"][3]["checks"]["intact"]["verdict"] == "pass"  # after SIGKILL: only intact and leftovers apply
    assert report["runs"][3]["checks"]["exit-code"]["verdict"] == "skip"
    assert {name: c["verdict"] for name, c in report["final"].items()} == \
        {"finished": "pass", "interruptions": "pass", "result": "pass"}
    assert "PASS: every check passed" in done.stdout and "exit-code" in done.stdout.splitlines()[0]


@pytest.mark.parametrize("script, stop, check", [
    ("no_handler", "term", "exit-code"),        # SIGTERM's default action: exit 143
    ("ignore_sigterm", "term", "grace"),        # runs on until SIGKILL
    ("slow_save", "term", "grace"),             # the save outlasts the grace
    ("workers_die", "int-group", "checkpoint"),  # the worker dies of Ctrl-C before the parent saves
    ("orphan_worker", "term", "leftovers"),     # a helper process outlives the run
])
def test_each_broken_script_fails_on_the_check_that_names_its_bug(tmp_path, digest, script, stop, check):
    extra = ["--grace-s", "0.5"] if check == "grace" else []  # shorter than what these two need
    # ignore_sigterm works on through each grace: a second stop could find less work left than the grace
    stops = 1 if script == "ignore_sigterm" else 2
    code, report, output = preempt(tmp_path, script, "-n", str(stops), "--stop", stop, "--reference-digest", digest,
                                   *extra)
    assert code == 1, output
    assert verdicts(report, check) == ["fail"] * stops, output
    assert f"run 1: {check}" in report["failures"] and "FAIL" in output
    if check != "exit-code":
        assert report["final"]["result"]["verdict"] == "pass"  # the damage is the stop itself, not the result
    if script == "no_handler":
        assert verdicts(report, "grace") == ["pass"] * stops  # quick to die: the exit code is the bug
    if script == "ignore_sigterm":  # what the JSON says of a stop
        first = report["runs"][0]
        assert [s.split("@")[0] for s in first["signals"]] == ["SIGTERM", "SIGKILL"]
        assert first["escalated"] and first["exit_code"] == 137 and 0.4 <= first["moment_s"] <= 0.7
        assert os.path.isfile(first["log"])
    if script == "orphan_worker":
        assert verdicts(report, "exit-code") == ["pass"] * stops
        assert report["runs"][-1]["checks"]["leftovers"]["verdict"] == "fail"


@pytest.mark.parametrize("script", ["exit_in_handler", "rng_not_saved"])
def test_a_resume_that_is_not_exact_fails_on_the_result_alone(tmp_path, digest, script):
    # A later window: a stop before the first step would leave nothing for these bugs to spoil.
    code, report, output = preempt(tmp_path, script, "-n", "2", "--min-s", "0.5", "--max-s", "0.8",
                                   "--reference-digest", digest)
    assert code == 1, output
    assert report["final"]["result"]["verdict"] == "fail", output
    assert report["failures"] == ["end: result"], output  # every stop looked clean: exit 0, in time, saved


def test_a_non_atomic_save_is_caught_torn_after_a_kill(tmp_path, digest):
    code, report, output = preempt(tmp_path, "nonatomic_save", "-n", "3", "--stop", "kill", "--reference-digest", digest)
    assert code == 1, output
    assert "fail" in verdicts(report, "intact"), output
    torn = next(run for run in report["runs"] if run["checks"].get("intact", {}).get("verdict") == "fail")
    assert "does not load" in torn["checks"]["intact"]["detail"]


@pytest.mark.parametrize("argv, words", [
    ([], "no command"),
    (["--stop", "sigterm", "--", PY, "x.py"], "unknown stop kind"),
    (["--grace-s", "nan", "--", PY, "x.py"], "--grace-s"),
    (["-n", "0", "--", PY, "x.py"], "--interruptions"),
    (["--reference-digest", "ab" * 32, "--", PY, "x.py"], "needs --result"),
    (["--result", "r", "--reference-digest", "xyz", "--max-s", "1", "--", PY, "x.py"], "sha256"),
    (["--min-s", "2", "--max-s", "1", "--", PY, "x.py"], "--max-s"),
    (["--verify-command", "v {}", "--", PY, "x.py"], "needs --checkpoint"),
    (["--stop-exit-codes", "0,300", "--", PY, "x.py"], "exit codes"),
    (["--resume-command", "python 'unclosed", "--", PY, "x.py"], "cannot split"),
    (["--min-s", "0", "--max-s", "0.1", "--", "/nonexistent/train"], "command not found"),
])
def test_bad_options_are_one_line_and_exit_2(tmp_path, capsys, argv, words):
    code = preempt_main(["--work-dir", str(tmp_path / "work"), *argv])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("labkit preempt-test: error:") and words in err, err
    assert ours(tmp_path) == []


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_preempt_test_stopped_itself_kills_what_it_started_and_exits_128_plus_n(tmp_path, sig):
    # orphan_worker starts a helper in its session: the clean-up must find more than the main process.
    proc = subprocess.Popen([PY, "-m", "labkit.preempt", *common(tmp_path), "--", PY, str(FIX / "orphan_worker.py"),
                             "{run}"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while len(ours(tmp_path)) < 2:  # the reference run and its helper
            assert time.monotonic() < deadline and proc.poll() is None, "the reference run did not start"
            time.sleep(0.05)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 128 + sig, out + err
    assert err.strip().splitlines() == [f"labkit preempt-test: error: interrupted by {sig.name}: "
                                        "stopped every process it had started"]
    assert ours(tmp_path) == []


@pytest.mark.parametrize("stops", ["term,int-group,kill"])
def test_a_pytorch_script_survives_every_stop_kind(tmp_path, stops):
    """With the [torch] extra, tests/fixtures/preempt/correct_torch.py: torch.save made atomic, the whole
    state saved (optimizer momentum, LR scheduler, the data RNG), handlers set before ``import torch``."""
    pytest.importorskip("torch", reason="the [torch] extra is not installed: pip install -e '.[torch]'")
    verify = f"{PY} -c 'import sys, torch; torch.load(sys.argv[1], weights_only=True)' {{}}"
    done = subprocess.run([PY, "-m", "labkit.preempt", "--grace-s", "5", "--min-s", "2.2", "--max-s", "2.8",
                           "--settle-s", "0.3", "--work-dir", str(tmp_path / "work"), "--json",
                           str(tmp_path / "report.json"), "--checkpoint", "{run}/ckpt/*.pt", "--verify-command", verify,
                           "--result", "{run}/result.bin", "-n", "3", "--stop", stops, "--seed", "2", "--",
                           PY, str(FIX / "correct_torch.py"), "{run}"], capture_output=True, text=True, timeout=180)
    assert ours(tmp_path) == []
    report = json.loads((tmp_path / "report.json").read_text())
    assert done.returncode == 0 and report["failures"] == [], done.stdout + done.stderr
    assert [run["stop"] for run in report["runs"]] == ["term", "int-group", "kill", None]
    assert report["final"]["result"]["verdict"] == "pass"
