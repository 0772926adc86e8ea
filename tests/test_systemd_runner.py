"""The unit runner against systemd.service(5) and systemd.kill(5): restarts, limits, stops."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from labkit.errors import LabkitError
from labkit.systemd import journal
from labkit.systemd.control import UnitRun, run_unit

SH = "/bin/sh"


def unit(tmp_path: Path, service: str, unit_section: str = "", name: str = "demo.service") -> Path:
    path = tmp_path / name
    text = f"[Unit]\nDescription=test\n{textwrap.dedent(unit_section)}\n[Service]\n{textwrap.dedent(service)}"
    path.write_text(text)
    return path


def named(events: list[dict], event: str, **where) -> list[dict]:
    return [e for e in events if e["event"] == event and all(e.get(k) == v for k, v in where.items())]


def starts(events: list[dict]) -> int:
    return len(named(events, "start", phase="ExecStart"))


def test_on_failure_restarts_a_crash_until_the_start_limit_puts_it_in_failed(home, tmp_path):
    path = unit(tmp_path, f"ExecStart={SH} -c 'exit 1'\nRestart=on-failure\nRestartSec=50ms\n",
                "StartLimitIntervalSec=10s\nStartLimitBurst=3\n")
    state, events = run_unit(path)
    assert state == "failed"
    assert starts(events) == 3  # burst 3: the fourth start is refused
    assert len(named(events, "restart")) == 3
    assert named(events, "failed")[-1]["result"] == "start-limit-hit"
    assert all(e["code"] == 1 for e in named(events, "exit", phase="ExecStart"))


def test_a_clean_exit_is_not_restarted_under_on_failure(home, tmp_path):
    state, events = run_unit(unit(tmp_path, f"ExecStart={SH} -c 'exit 0'\nRestart=on-failure\nRestartSec=50ms\n"))
    assert state == "inactive" and starts(events) == 1
    assert not named(events, "restart") and named(events, "stopped")[-1]["result"] == "success"


def test_restart_always_restarts_a_clean_exit_too(home, tmp_path):
    path = unit(tmp_path, f"ExecStart={SH} -c 'exit 0'\nRestart=always\nRestartSec=50ms\n",
                "StartLimitBurst=4\nStartLimitIntervalSec=10s\n")
    state, events = run_unit(path)
    assert starts(events) == 4 and state == "failed"
    assert named(events, "failed")[-1]["result"] == "start-limit-hit"


@pytest.mark.parametrize("restart, command, restarted, result", [
    # the table in systemd.service(5): which exits restart under which Restart=
    ("on-abnormal", "exit 1", False, "exit-code"),
    ("on-abnormal", "kill -KILL $$", True, "signal"),
    ("on-abort", "kill -KILL $$", True, "signal"),
    ("on-abort", "exit 3", False, "exit-code"),
    ("on-failure", "kill -TERM $$", False, "success"),  # SIGTERM counts as a clean exit
    ("on-success", "kill -TERM $$", True, "success"),
    ("on-success", "exit 1", False, "exit-code"),
    ("no", "exit 1", False, "exit-code"),
])
def test_the_restart_table(home, tmp_path, restart, command, restarted, result):
    path = unit(tmp_path, f"ExecStart={SH} -c '{command}'\nRestart={restart}\nRestartSec=50ms\n",
                "StartLimitBurst=2\nStartLimitIntervalSec=10s\n")
    state, events = run_unit(path)
    assert (starts(events) == 2) is restarted, [e["event"] for e in events]
    final = named(events, "failed") or named(events, "stopped")
    if not restarted:
        assert final[-1]["result"] == result
    else:
        assert final[-1]["result"] == "start-limit-hit"


def test_success_exit_status_and_restart_prevent_exit_status(home, tmp_path):
    path = unit(tmp_path, f"ExecStart={SH} -c 'exit 42'\nRestart=on-failure\nSuccessExitStatus=42\n")
    state, events = run_unit(path)
    assert state == "inactive" and starts(events) == 1
    path = unit(tmp_path, f"ExecStart={SH} -c 'exit 3'\nRestart=always\nRestartPreventExitStatus=3\n")
    state, events = run_unit(path)
    assert state == "failed" and starts(events) == 1 and named(events, "failed")[-1]["result"] == "exit-code"


def test_stop_escalates_to_sigkill_after_timeout_stop_sec(home, tmp_path):
    path = unit(tmp_path, f"ExecStart={sys.executable} -m labkit.trainer --run-dir {tmp_path / 'run'} "
                          "--epochs 100 --fault ignore-sigterm --fault-step 1\nTimeoutStopSec=1s\nKillMode=mixed\n")
    with UnitRun(path) as run:
        run.wait_for("start", where=lambda e: e["phase"] == "ExecStart")
        run.wait_for("limits", timeout_s=1) if False else None
        import time
        time.sleep(1.5)  # past --fault-step 1: SIGTERM is ignored now
        state = run.stop()
    events = run.events
    kills = named(events, "kill")
    assert [k["signal"] for k in kills][:2] == ["SIGTERM", "SIGKILL"]
    assert 0.9 <= kills[1]["t"] - kills[0]["t"] < 2.5
    assert state == "failed" and named(events, "failed")[-1]["result"] == "timeout"


def test_a_trainer_stopped_with_kill_mode_mixed_saves_and_ends_inactive(home, tmp_path):
    run_dir = tmp_path / "run"
    path = unit(tmp_path, f"ExecStart={sys.executable} -m labkit.trainer --run-dir {run_dir} --epochs 100 "
                          "--workers 2\nKillMode=mixed\nTimeoutStopSec=30s\n", name="train.service")
    with UnitRun(path) as run:
        from conftest import wait_for_step

        wait_for_step(run_dir, 5)
        state = run.stop()
    kills = named(run.events, "kill")
    main = named(run.events, "start", phase="ExecStart")[0]["pid"]
    assert kills[0]["signal"] == "SIGTERM" and kills[0]["pids"] == [main]  # mixed: the trainer only
    assert state == "inactive"
    assert "stopped cleanly on SIGTERM" in (run_dir / "train.log").read_text()


def test_control_group_mode_signals_every_process_of_the_unit(home, tmp_path):
    path = unit(tmp_path, f"ExecStart={SH} -c 'sleep 300 & exec sleep 301'\nKillMode=control-group\n")
    with UnitRun(path, stop_after=0.5) as run:
        state = run.wait(30)
    first = named(run.events, "kill")[0]
    assert first["signal"] == "SIGTERM" and len(first["pids"]) == 2 and state == "inactive"


def test_mixed_mode_kills_the_leftovers_with_sigkill_after_the_main_process(home, tmp_path):
    path = unit(tmp_path, f"ExecStart={SH} -c 'sleep 300 & exec sleep 301'\nKillMode=mixed\n")
    with UnitRun(path, stop_after=0.5) as run:
        run.wait(30)
    kills = named(run.events, "kill")
    assert [k["signal"] for k in kills] == ["SIGTERM", "SIGKILL"]
    assert len(kills[0]["pids"]) == 1 and len(kills[1]["pids"]) == 1 and kills[0]["pids"] != kills[1]["pids"]


def test_exec_start_pre_failure_fails_the_start_and_exec_stop_post_still_runs(home, tmp_path):
    marker = tmp_path / "post-ran"
    path = unit(tmp_path, f"ExecStartPre={SH} -c 'exit 2'\nExecStart={SH} -c 'sleep 30'\n"
                          f"ExecStopPost={SH} -c 'echo $SERVICE_RESULT $EXIT_STATUS > {marker}'\n")
    state, events = run_unit(path)
    assert state == "failed" and starts(events) == 0
    assert marker.read_text().split() == ["exit-code", "2"]
    path = unit(tmp_path, f"ExecStartPre=-{SH} -c 'exit 2'\nExecStart={SH} -c 'exit 0'\n")
    state, events = run_unit(path)
    assert state == "inactive" and starts(events) == 1  # '-': the failure is ignored


def test_a_missing_program_is_203_exec_and_type_exec_fails_the_start(home, tmp_path):
    state, events = run_unit(unit(tmp_path, "ExecStart=/no/such/program\nType=simple\n"))
    assert state == "failed" and named(events, "exit", phase="ExecStart")[0]["status"] == "EXEC"
    assert named(events, "exit", phase="ExecStart")[0]["code"] == 203
    state, events = run_unit(unit(tmp_path, "ExecStart=/no/such/program\nType=exec\n"))
    assert state == "failed" and named(events, "failed")[-1]["result"] == "exit-code"


def test_oneshot_runs_each_exec_start_in_order(home, tmp_path):
    out = tmp_path / "order"
    path = unit(tmp_path, f"Type=oneshot\nExecStart={SH} -c 'echo one >> {out}'\n"
                          f"ExecStart={SH} -c 'echo two >> {out}'\nExecStartPost={SH} -c 'echo post >> {out}'\n")
    state, events = run_unit(path)
    assert state == "inactive" and out.read_text().split() == ["one", "two", "post"]


def test_environment_files_specifiers_and_the_journal(home, tmp_path):
    (tmp_path / "env").write_text("# comment\nGREETING=\"hello there\"\n")
    path = unit(tmp_path, f"EnvironmentFile={tmp_path / 'env'}\nEnvironmentFile=-/no/such/file\n"
                          "Environment=TARGET=world \"SPACED=a b\"\n"
                          f"ExecStart={SH} -c 'echo \"$GREETING $TARGET [$SPACED] %n %N\"'\n",
                name="greet.service")
    state, _ = run_unit(path)
    assert state == "inactive"
    text = journal.read("greet.service")
    assert "hello there world [a b] greet.service greet" in text
    assert "Deactivated successfully." in text


def test_exec_stop_gets_mainpid(home, tmp_path):
    seen = tmp_path / "mainpid"
    path = unit(tmp_path, f"ExecStart={SH} -c 'sleep 30'\nExecStop={SH} -c 'echo $MAINPID > {seen}; kill $MAINPID'\n")
    with UnitRun(path, stop_after=0.5) as run:
        assert run.wait(30) == "inactive"
    main = named(run.events, "start", phase="ExecStart")[0]["pid"]
    assert seen.read_text().strip() == str(main)


def test_the_command_line_refuses_bad_units_in_one_line(home, tmp_path):
    bad = unit(tmp_path, "ExecStart=/bin/true\nRestart=sometimes\n")
    done = subprocess.run([sys.executable, "-m", "labkit", "unit", "run", str(bad)], capture_output=True, text=True)
    assert done.returncode == 2 and len(done.stderr.splitlines()) == 1
    assert "Restart=sometimes" in done.stderr and "labkit unit lint" in done.stderr
    done = subprocess.run([sys.executable, "-m", "labkit", "unit", "run", str(tmp_path / "none.service")],
                          capture_output=True, text=True)
    assert done.returncode == 2 and "cannot read unit file" in done.stderr
    with pytest.raises(LabkitError, match="Restart=sometimes"):
        run_unit(bad)


def test_run_prints_journal_lines_and_logs_reads_them(home, tmp_path):
    path = unit(tmp_path, f"ExecStart={SH} -c 'echo working'\n", name="cli.service")
    done = subprocess.run([sys.executable, "-m", "labkit", "unit", "run", str(path)], capture_output=True, text=True)
    assert done.returncode == 0 and "Deactivated successfully." in done.stdout
    logs = subprocess.run([sys.executable, "-m", "labkit", "unit", "logs", "cli.service"], capture_output=True,
                          text=True)
    assert "cli.service[" in logs.stdout and "]: working" in logs.stdout
    events = [json.loads(line) for line in (journal.units_root() / "cli.service" / "events.jsonl").read_text().splitlines()]
    assert events[-1]["event"] == "stopped"


def test_real_mode_builds_the_systemd_run_command_from_the_unit(tmp_path):
    from labkit.systemd.real import systemd_run_argv
    from labkit.systemd.unitfile import parse

    unit = parse("[Unit]\nStartLimitBurst=3\n[Service]\nExecStart=/usr/bin/python3 -m labkit.trainer --run-dir 'a b'\n"
                 "Restart=on-failure\nKillMode=mixed\nEnvironment=A=1\nEnvironment=B=2\n", "train.service")
    argv = systemd_run_argv(unit, "labkit-train.service")
    assert argv[:6] == ["systemd-run", "--user", "--unit", "labkit-train.service", "--collect", "--quiet"]
    assert ["-p", "Restart=on-failure"] == argv[6:8] and "KillMode=mixed" in argv and "StartLimitBurst=3" in argv
    assert argv.count("-p") == 5 and argv[argv.index("--") + 1:] == ["/usr/bin/python3", "-m", "labkit.trainer",
                                                                      "--run-dir", "a b"]


NO_USER_MANAGER = __import__("labkit.systemd.real", fromlist=["why_unavailable"]).why_unavailable()


@pytest.mark.skipif(NO_USER_MANAGER is not None, reason=f"no real systemd user manager: {NO_USER_MANAGER}")
def test_real_mode_restarts_under_the_user_manager(home, tmp_path):
    path = unit(tmp_path, f"ExecStart={SH} -c 'exit 1'\nRestart=on-failure\nRestartSec=100ms\n",
                "StartLimitIntervalSec=10s\nStartLimitBurst=3\n", name="labkit-real-test.service")
    done = subprocess.run([sys.executable, "-m", "labkit", "unit", "run", "--real", "--json", str(path)],
                          capture_output=True, text=True, timeout=60)
    events = [json.loads(line) for line in done.stdout.splitlines()]
    assert done.returncode == 1 and events[-1]["event"] == "failed", done.stdout + done.stderr


def test_real_mode_without_a_user_manager_is_one_line(home, tmp_path, monkeypatch):
    if NO_USER_MANAGER is None:
        pytest.skip("a user manager exists here")
    path = unit(tmp_path, f"ExecStart={SH} -c 'exit 0'\n")
    done = subprocess.run([sys.executable, "-m", "labkit", "unit", "run", "--real", str(path)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and len(done.stderr.splitlines()) == 1 and "user manager" in done.stderr


def test_a_missing_working_directory_is_200_chdir_unless_optional(home, tmp_path):
    state, events = run_unit(unit(tmp_path, f"ExecStart={SH} -c 'pwd'\nWorkingDirectory={tmp_path / 'nope'}\n"))
    exit_ = named(events, "exit", phase="ExecStart")[0]
    assert state == "failed" and (exit_["code"], exit_["status"]) == (200, "CHDIR")
    state, _ = run_unit(unit(tmp_path, f"ExecStart={SH} -c 'pwd'\nWorkingDirectory=-{tmp_path / 'nope'}\n"))
    assert state == "inactive"
