"""A pytest plugin: one real systemd user manager for the whole run, where this machine allows it.

Started when the session starts (after the leak check has set LABKIT_HOME and its tag, so the
manager and every service it starts carry the tag; not for `pytest --help`, which has no
session), found by every test and notebook through ``$LABKIT_SYSTEMD_MANAGER``, and stopped
before the leak check looks for leftovers, but only if this run started it. Where no manager can
start, ``LABKIT_SYSTEMD_UNAVAILABLE`` says why and the tests that need one skip with it.
``LABKIT_TEST_SYSTEMD=0`` turns it off.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

UNAVAILABLE = "LABKIT_SYSTEMD_UNAVAILABLE"
_STARTED_HERE = False


@pytest.hookimpl(trylast=True)
def pytest_sessionstart(session) -> None:
    global _STARTED_HERE
    if os.environ.get("LABKIT_TEST_SYSTEMD") == "0":
        os.environ[UNAVAILABLE] = "LABKIT_TEST_SYSTEMD=0"
        return
    from labkit.systemd import manager

    home = Path(os.environ["LABKIT_HOME"])
    os.environ["LABKIT_SYSTEMD_MANAGER"] = str(home / "systemd" / "manager.json")
    if manager.find() is not None:
        return  # a manager of this LABKIT_HOME already runs: use it, and leave it running
    reason = manager.why_cannot_start()
    if reason is None:
        try:
            manager.start(config_home=home / "systemd" / "config")
            _STARTED_HERE = True
        except Exception as err:  # whatever went wrong, the tests that need a manager skip with it
            reason = f"{type(err).__name__}: {err}"
    if reason is not None:
        os.environ[UNAVAILABLE] = reason
        os.environ.pop("LABKIT_SYSTEMD_MANAGER")


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session, exitstatus) -> None:
    if _STARTED_HERE:
        from labkit.systemd import manager

        manager.stop()
