"""Shared fixtures and helpers; the leak check lives in ``leakcheck.py``."""

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

from labkit.jobs import trainer_command




class Spawner:
    """Start processes for a test and make sure each is gone when the test ends."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []
        self.started: dict[int, float] = {}

    def popen(self, command: list[str], **kwargs) -> subprocess.Popen:
        kwargs.setdefault("start_new_session", True)
        kwargs.setdefault("stdout", subprocess.DEVNULL)
        kwargs.setdefault("stderr", subprocess.DEVNULL)
        proc = subprocess.Popen(command, **kwargs)
        self.procs.append(proc)
        try:
            self.started[proc.pid] = psutil.Process(proc.pid).create_time()
        except psutil.NoSuchProcess:
            pass
        return proc

    def trainer(self, run_dir: Path, *args: str, **kwargs) -> subprocess.Popen:
        return self.popen(trainer_command(run_dir, *args), **kwargs)

    def cleanup(self) -> None:
        from labkit.signals import group_members

        for proc in self.procs:
            started = self.started.get(proc.pid, 0.0)
            # The whole group (workers too), but only while it still holds processes of ours:
            # once they are all gone, the group id may belong to a stranger.
            if proc.poll() is None or group_members(proc.pid, started):
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            try:
                proc.kill()
            except ProcessLookupError:
                pass
            proc.wait()


@pytest.fixture
def spawn():
    spawner = Spawner()
    yield spawner
    spawner.cleanup()


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """A private LABKIT_HOME; jobs still running at the end are killed with their group."""
    folder = tmp_path / "home"
    monkeypatch.setenv("LABKIT_HOME", str(folder))
    yield folder
    from labkit import jobs

    for job in jobs.list_jobs(folder):
        for proc in job.members():
            try:
                proc.kill()
            except psutil.Error:
                pass
        if job.terminal is not None:
            job.terminal.kill()


FAST = ("--epochs", "2", "--steps-per-epoch", "15", "--step-time", "0", "--checkpoint-every", "5")


def run_trainer(run_dir: Path, *args: str, timeout_s: float = 60) -> subprocess.CompletedProcess:
    """Run the trainer to its end and return the completed process."""
    return subprocess.run(trainer_command(run_dir, *args), capture_output=True, text=True, timeout=timeout_s)


def final_hash(run_dir: Path) -> str:
    return json.loads((run_dir / "final.json").read_text())["weights_sha256"]


def metrics(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            pass
    return rows


def wait_for(condition, timeout_s: float = 20.0, what: str = "condition"):
    """Poll ``condition()`` until it returns something true, and return that; AssertionError after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not (found := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.02)
    return found


def wait_for_step(run_dir: Path, step: int, timeout_s: float = 20.0) -> None:
    wait_for(lambda: any(row["step"] >= step for row in metrics(run_dir)[-3:]), timeout_s,
             f"step {step} in {run_dir}/metrics.jsonl")


def log_text(run_dir: Path) -> str:
    path = run_dir / "train.log"
    return path.read_text() if path.exists() else ""


#: Modules run before the corpus starts grading: their cell timeouts are seconds long and they
#: count the grading processes of the run, so the corpus's kernels must not be running meanwhile.
_BEFORE_THE_CORPUS = {"test_grade", "test_grade_hostile", "test_grade_scale"}
_CORPUS_START: dict = {}  # "after": the node id after which the corpus starts; "items": what it grades


def pytest_collection_finish(session) -> None:
    # The wrong-answer corpus grades its class in a process of its own (it mostly waits, as the
    # rest of the suite does); its tests collect the grades when they run. It starts once the
    # grader's own tests are done, or now if none of them runs.
    corpus = sys.modules.get("test_wrong_answers")
    if corpus is None or session.config.option.collectonly:
        return
    first = [item.nodeid for item in session.items
             if getattr(getattr(item, "module", None), "__name__", None) in _BEFORE_THE_CORPUS]
    if first:
        _CORPUS_START.update(after=first[-1], items=list(session.items))
    else:
        corpus.start_in_background(session.items)


def pytest_runtest_logfinish(nodeid, location) -> None:
    if _CORPUS_START and nodeid == _CORPUS_START["after"]:
        corpus = sys.modules.get("test_wrong_answers")
        if corpus is not None:
            corpus.start_in_background(_CORPUS_START.pop("items"))
        _CORPUS_START.clear()


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session, exitstatus) -> None:
    corpus = sys.modules.get("test_wrong_answers")
    if corpus is not None:
        corpus.stop_background()  # before the leak check and before the user manager stops
