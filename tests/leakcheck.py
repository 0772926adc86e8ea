"""A pytest plugin that fails the run if any process started by the tests outlives them.

Every process the suite starts (directly, through a job's waiter, or from a notebook's
kernel under nbval) inherits ``LABKIT_TEST_TAG`` from the environment set here. When the
session ends, any process still carrying the tag is killed and the run fails, naming it.
"""

from __future__ import annotations

import os
import sys
import time
import uuid

import psutil
import pytest

TAG = "LABKIT_TEST_TAG"


def pytest_configure(config) -> None:
    os.environ.setdefault(TAG, uuid.uuid4().hex)
    if "LABKIT_HOME" not in os.environ:  # never touch the user's own jobs
        import tempfile

        os.environ["LABKIT_HOME"] = tempfile.mkdtemp(prefix="labkit-test-home-")
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")


def tagged_processes() -> list[psutil.Process]:
    """Live processes other than this one that carry this session's tag."""
    tag, me, found = os.environ[TAG], os.getpid(), []
    for proc in psutil.process_iter(["pid"]):
        if proc.pid == me:
            continue
        try:
            if proc.environ().get(TAG) == tag and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except psutil.Error:
            continue
    return found


def pytest_sessionfinish(session, exitstatus) -> None:
    deadline = time.monotonic() + 3.0  # let waiters write exit.json and exit on their own
    leaked = tagged_processes()
    while leaked and time.monotonic() < deadline:
        time.sleep(0.1)
        leaked = tagged_processes()
    if not leaked:
        return
    names = []
    for proc in leaked:
        try:
            names.append(f"pid {proc.pid}: {' '.join(proc.cmdline())[:120]}")
            proc.kill()
        except psutil.Error:
            pass
    print("\nLEAKED PROCESSES (killed now):\n  " + "\n  ".join(names), file=sys.stderr)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED
