"""labkit.systemd.manager: a real systemd user manager where systemd is not PID 1.

The suite's own manager (tests/usermanager.py) serves most tests; the start/stop tests here start
a second one with a LABKIT_HOME of their own, which runs beside it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from conftest import wait_for

from labkit.errors import LabkitError, PermissionDenied, ToolMissing
from labkit.systemd import manager

UNAVAILABLE = os.environ.get("LABKIT_SYSTEMD_UNAVAILABLE")
needs_manager = pytest.mark.skipif(bool(UNAVAILABLE), reason=f"no systemd user manager here: {UNAVAILABLE}")


def labkit(*args: str, env: dict | None = None, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "labkit", *args], capture_output=True, text=True, timeout=60,
                          env=env, **kwargs)


def systemctl(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["systemctl", "--user", *args], capture_output=True, text=True, timeout=30, env=env)


@pytest.fixture
def own_home(tmp_path, monkeypatch) -> Path:
    """A LABKIT_HOME of this test's, not pointed at the suite's manager."""
    home = tmp_path / "h"
    monkeypatch.setenv("LABKIT_HOME", str(home))
    monkeypatch.delenv("LABKIT_SYSTEMD_MANAGER", raising=False)
    yield home
    manager.stop()


@needs_manager
def test_the_suites_manager_answers_systemctl_and_systemd_run_without_dbus():
    found = manager.find()
    assert found is not None and found.alive()
    env = manager.user_environment()
    assert env["XDG_RUNTIME_DIR"] == found.runtime_dir and "DBUS_SESSION_BUS_ADDRESS" not in env
    assert (Path(found.runtime_dir) / "systemd" / "private").is_socket()
    assert systemctl(env, "show-environment").returncode == 0
    assert not manager.MARKER.exists(), "the sd_booted() marker must exist only while a manager starts"


@needs_manager
def test_a_service_runs_in_a_cgroup_of_its_own_and_its_output_reaches_journalctl():
    env = manager.user_environment()
    name = f"labkit-test-echo-{os.getpid()}"
    started = subprocess.run(["systemd-run", "--user", "--unit", name, "-p", "RemainAfterExit=yes", "/bin/sh", "-c",
                              # shell builtins only, and the shell lives on: journald tags a line with
                              # its unit from the cgroup of the process that wrote it, read when it
                              # processes the line; a short-lived `cat` is often gone by then on a busy
                              # machine, and its lines come without _SYSTEMD_USER_UNIT (measured)
                              "echo hello from $$; while read -r line; do echo \"$line\"; done < /proc/self/cgroup;"
                              " sleep 1; exit 0"],
                             capture_output=True, text=True, timeout=30, env=env)
    try:
        assert started.returncode == 0, started.stderr
        cgroup = f"/user@{os.geteuid()}.service/app.slice/{name}.service"

        def journal() -> list[str]:
            return subprocess.run(["journalctl", "--user-unit", f"{name}.service", "-o", "cat", "--no-pager"],
                                  capture_output=True, text=True, timeout=30, env=env).stdout.splitlines()

        wait_for(lambda: any(line.endswith(cgroup) for line in journal()), what="the service's lines in the journal")
        assert any(line.startswith("hello from ") for line in journal()), journal()
        shown = systemctl(env, "show", f"{name}.service", "-p", "Result,ExecMainStatus,ActiveState").stdout
        assert "Result=success" in shown and "ExecMainStatus=0" in shown
    finally:
        systemctl(env, "stop", f"{name}.service")
        systemctl(env, "reset-failed", f"{name}.service")


@needs_manager
def test_start_and_stop_leave_nothing_behind(own_home):
    started = manager.start(config_home=own_home / "config")
    assert manager.start(config_home=own_home / "config") == started  # idempotent
    assert not manager.MARKER.exists()
    env = started.environment()
    name = f"labkit-test-sleeper-{os.getpid()}"
    assert subprocess.run(["systemd-run", "--user", "--unit", name, "sleep", "600"], capture_output=True,
                          timeout=30, env=env).returncode == 0
    main = int(wait_for(lambda: systemctl(env, "show", name, "-p", "MainPID", "--value").stdout.strip() not in
                        ("", "0") and systemctl(env, "show", name, "-p", "MainPID", "--value").stdout, what="MainPID"))
    assert psutil.pid_exists(main)
    status = json.loads(labkit("systemd", "status", "--json").stdout)
    assert status["running"] and status["answers"] and status["pid"] == started.pid
    assert manager.stop() is True
    assert not psutil.pid_exists(started.pid) or psutil.Process(started.pid).status() == psutil.STATUS_ZOMBIE
    assert not psutil.pid_exists(main)
    for folder in started.cgroups:
        assert not Path(folder).exists(), f"{folder} was left"
        assert not Path(folder).parents[1].exists(), f"the labkit slice above {folder} was left"
    assert not Path(started.runtime_dir).exists()
    assert manager.find() is None and manager.stop() is False


@needs_manager
def test_the_cli_starts_prints_the_environment_and_stops(own_home):
    env = {**os.environ}
    done = labkit("systemd", "start", "--config-home", str(own_home / "config"), "--json", env=env)
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)
    assert record["already_running"] is False
    printed = labkit("systemd", "env", env=env).stdout
    assert printed.startswith(f"export XDG_RUNTIME_DIR={record['runtime_dir']} "
                              f"XDG_CONFIG_HOME={record['config_home']};")
    shell = subprocess.run(["bash", "-c", f"{printed}\nsystemctl --user show-environment >/dev/null && echo reached"],
                           capture_output=True, text=True, timeout=30, env=env)
    assert shell.stdout.strip() == "reached", shell.stderr
    assert json.loads(labkit("systemd", "start", "--json", env=env).stdout)["already_running"] is True
    stopped = labkit("systemd", "stop", env=env)
    assert stopped.returncode == 0 and "stopped" in stopped.stderr
    gone = labkit("systemd", "env", env=env)
    assert gone.returncode == 1 and len(gone.stderr.splitlines()) == 1 and "labkit systemd start" in gone.stderr


def test_a_stale_record_is_not_a_running_manager(own_home):
    path = manager.state_path()
    path.parent.mkdir(parents=True)
    dead = subprocess.Popen(["true"])
    dead.wait()
    path.write_text(json.dumps({"pid": dead.pid, "create_time": 1.0, "runtime_dir": "/nonexistent",
                                "config_home": "/nonexistent", "cgroups": [], "controllers": []}))
    assert manager.find() is None
    assert manager.status()["running"] is False
    assert manager.user_environment({"XDG_RUNTIME_DIR": "/run/user/1000"}) == {"XDG_RUNTIME_DIR": "/run/user/1000"}


def test_without_the_systemd_package_start_says_so(own_home, monkeypatch):
    monkeypatch.setattr(manager, "systemd_binary", lambda: None)
    assert "not installed" in manager.why_cannot_start()
    with pytest.raises(ToolMissing, match="systemd is not installed"):
        manager.start()


def as_nobody(*args: str, home: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "LABKIT_HOME": home, "HOME": home}
    env.pop("LABKIT_SYSTEMD_MANAGER", None)
    return subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-m",
                           "labkit", *args], capture_output=True, text=True, timeout=60, env=env)


@pytest.fixture
def nobody_home():
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to become an ordinary user")
    import tempfile

    home = tempfile.mkdtemp(prefix="labkit-nobody-")
    os.chmod(home, 0o777)
    yield home
    shutil.rmtree(home, ignore_errors=True)


def test_as_an_ordinary_user_start_is_refused_in_one_line(nobody_home):
    if manager.MARKER.is_dir():
        pytest.skip("systemd is PID 1 here: the refusal says so instead")
    done = as_nobody("systemd", "start", home=nobody_home)
    assert done.returncode == 1, done.stderr
    assert len(done.stderr.splitlines()) == 1 and "needs root" in done.stderr, done.stderr


def test_an_unwritable_labkit_home_is_one_line_not_a_traceback(nobody_home):
    os.chmod(nobody_home, 0o755)  # root's: nobody cannot write the record or its lock there
    done = as_nobody("systemd", "start", home=os.path.join(nobody_home, "sub"))
    assert done.returncode == 1 and len(done.stderr.splitlines()) == 1, done.stderr
    assert "permission denied" in done.stderr and "LABKIT_HOME" in done.stderr


def test_a_refusal_is_a_typed_error(monkeypatch, own_home):
    monkeypatch.setattr(manager, "why_cannot_start", lambda: "not permitted: needs root, to create the marker")
    with pytest.raises(PermissionDenied, match="needs root"):
        manager.start()
    monkeypatch.setattr(manager, "why_cannot_start", lambda: "systemd is PID 1 here: use the login's manager")
    with pytest.raises(LabkitError, match="systemd is PID 1"):
        manager.start()


@needs_manager
def test_the_manager_logs_to_the_journal_so_journalctl_shows_its_own_lines():
    env = manager.user_environment()
    name = f"labkit-test-fails-{os.getpid()}"
    subprocess.run(["systemd-run", "--user", "--unit", name, "/bin/sh", "-c", "exit 3"], capture_output=True,
                   timeout=30, env=env)
    try:
        lines = wait_for(lambda: "Main process exited, code=exited, status=3" in subprocess.run(
            ["journalctl", "--user-unit", f"{name}.service", "-o", "cat", "--no-pager"], capture_output=True,
            text=True, timeout=30, env=env).stdout, what="the manager's own line in the journal")
        assert lines
    finally:
        systemctl(env, "reset-failed", f"{name}.service")


@needs_manager
def test_a_start_killed_by_sigterm_leaves_no_marker_no_manager_and_no_record(own_home):
    """SIGTERM while the manager starts (a cancelled CI job, a closed terminal): everything is undone."""
    import signal as signals

    env = {**os.environ}
    script = ("import os, signal, threading\n"
              "from labkit.systemd import manager\n"
              "original = manager._wait_until_it_answers\n"
              "def interrupted(*args):\n"
              "    os.kill(os.getpid(), signal.SIGTERM)  # arrives inside the start-up window\n"
              "    original(*args)\n"
              "manager._wait_until_it_answers = interrupted\n"
              f"manager.start(config_home={str(own_home / 'config')!r})\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode != 0 and "SIGTERM while the manager was starting" in done.stderr, done.stderr
    assert not manager.MARKER.exists() or manager.pid1_is_systemd()
    assert manager.find() is None and not manager.state_path().exists()
    leftovers = [p for p in psutil.process_iter(["cmdline", "environ"])
                 if (p.info["cmdline"] or [])[:2] == [manager.systemd_binary(), "--user"]
                 and (p.info["environ"] or {}).get("XDG_CONFIG_HOME") == str(own_home / "config")]
    assert not leftovers, leftovers
    assert signals.SIGTERM  # (the name is used in the script above)


def test_a_marker_left_by_a_dead_labkit_start_is_removed_and_a_foreign_one_kept(monkeypatch, tmp_path):
    marker = tmp_path / "system"
    monkeypatch.setattr(manager, "MARKER", marker)
    monkeypatch.setattr(manager, "pid1_is_systemd", lambda: False)
    dead = subprocess.Popen(["true"])
    dead.wait()
    marker.mkdir()
    (marker / f".labkit-{dead.pid}").touch()
    manager._remove_stale_marker()
    assert not marker.exists()
    marker.mkdir()
    (marker / "something-else").touch()  # not labkit's: never removed
    manager._remove_stale_marker()
    assert marker.exists()
    (marker / "something-else").unlink()
    (marker / f".labkit-{os.getpid()}").touch()  # its owner still runs: a start under way
    manager._remove_stale_marker()
    assert marker.exists()


@needs_manager
@pytest.mark.parametrize("hardening, script, seen", [
    ("ProtectHome=yes", "ls -A /root | wc -l", "0"),  # the home folders look empty
    ("InaccessiblePaths=/etc", "cat /etc/hostname >/dev/null 2>&1; echo $?", "1"),
], ids=["ProtectHome", "InaccessiblePaths"])
def test_hardening_that_mounts_inaccessible_nodes_works_as_under_a_booted_systemd(hardening, script, seen):
    # Without /run/systemd/inaccessible (made by PID 1 at boot) these failed with 226/NAMESPACE.
    env = manager.user_environment()
    done = subprocess.run(["systemd-run", "--user", "--wait", "--pipe", "--quiet", "-p", hardening,
                           "/bin/sh", "-c", script], capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 0, f"{hardening}: {done.stdout}{done.stderr}"
    assert done.stdout.strip() == seen, f"{hardening}: the service saw {done.stdout!r}"
