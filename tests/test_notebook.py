"""labkit.notebook: the lessons' set-up, and which systemd a notebook drives."""

from __future__ import annotations

import os
import subprocess

import pytest

from labkit import notebook
from labkit.systemd import manager

UNAVAILABLE = os.environ.get("LABKIT_SYSTEMD_UNAVAILABLE")


@pytest.fixture
def clean_env(monkeypatch):
    """use_systemd() sets variables for the kernel's `!` cells: give them back after each test."""
    for name in ("XDG_RUNTIME_DIR", "XDG_CONFIG_HOME", "SYSTEMD_PAGER", "SYSTEMD_URLIFY", "DBUS_SESSION_BUS_ADDRESS"):
        monkeypatch.setenv(name, os.environ.get(name, "")) if name in os.environ else monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.mark.skipif(bool(UNAVAILABLE), reason=f"no systemd user manager here: {UNAVAILABLE}")
def test_use_systemd_points_the_kernels_systemctl_at_the_running_manager(clean_env, tmp_path):
    here = notebook.use_systemd(tmp_path, start=False)
    found = manager.find()
    assert here.real and here.manager == found and not here.started_here
    assert os.environ["XDG_RUNTIME_DIR"] == found.runtime_dir and here.unit_dir == found.unit_dir
    # what a `!systemctl --user ...` cell runs: this process's environment, nothing passed by hand
    unit = here.unit_dir / "labkit-test-notebook.service"
    unit.write_text("[Service]\nType=oneshot\nExecStart=/bin/true\n[Install]\nWantedBy=default.target\n")
    try:
        assert subprocess.run(["systemctl", "--user", "daemon-reload"], timeout=30).returncode == 0
        enabled = subprocess.run(["systemctl", "--user", "enable", unit.name], capture_output=True, text=True,
                                 timeout=30)
        assert enabled.returncode == 0, enabled.stderr
        state = subprocess.run(["systemctl", "--user", "is-enabled", unit.name], capture_output=True, text=True,
                               timeout=30)
        assert state.stdout.strip() == "enabled"
    finally:
        subprocess.run(["systemctl", "--user", "disable", unit.name], capture_output=True, timeout=30)
        unit.unlink()
        subprocess.run(["systemctl", "--user", "daemon-reload"], timeout=30)


def test_without_a_manager_use_systemd_says_why_and_gives_a_folder_for_the_runner(clean_env, tmp_path, capsys):
    clean_env.setenv("LABKIT_SYSTEMD_UNAVAILABLE", "no systemd here (a test)")
    here = notebook.use_systemd(tmp_path)
    assert not here.real and here.why_not == "no systemd here (a test)" and here.manager is None
    assert here.unit_dir == tmp_path / "units" and here.unit_dir.is_dir()
    here.fallback("running the unit with labkit's runner")
    assert capsys.readouterr().out.strip() == ("no systemd manager here (no systemd here (a test)): "
                                               "running the unit with labkit's runner")
