"""A pytest plugin: one real systemd user manager for the whole run, where this machine allows it.

Started when the run begins (after the leak check has set LABKIT_HOME and its tag, so the
manager and every service it starts carry the tag), found by every test and notebook through
``$LABKIT_SYSTEMD_MANAGER``, stopped before the leak check looks for leftovers. Where no manager
can start, ``LABKIT_SYSTEMD_UNAVAILABLE`` says why and the tests that need one skip with it.
``LABKIT_TEST_SYSTEMD=0`` turns it off.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

UNAVAILABLE = "LABKIT_SYSTEMD_UNAVAILABLE"


@pytest.hookimpl(trylast=True)
def pytest_configure(config) -> None:
    if os.environ.get("LABKIT_TEST_SYSTEMD") == "0":
        os.environ[UNAVAILABLE] = "LABKIT_TEST_SYSTEMD=0"
        return
    from labkit.errors import LabkitError
    from labkit.systemd import manager

    home = Path(os.environ["LABKIT_HOME"])
    os.environ["LABKIT_SYSTEMD_MANAGER"] = str(home / "systemd" / "manager.json")
    reason = manager.why_cannot_start()
    if reason is None:
        try:
            manager.start(config_home=home / "systemd" / "config")
        except LabkitError as err:
            reason = str(err)
    if reason is not None:
        os.environ[UNAVAILABLE] = reason
        os.environ.pop("LABKIT_SYSTEMD_MANAGER")


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session, exitstatus) -> None:
    if os.environ.get("LABKIT_SYSTEMD_MANAGER"):
        from labkit.systemd import manager

        manager.stop()
