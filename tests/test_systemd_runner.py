"""The unit runner against systemd.service(5) and systemd.kill(5): restarts, limits, stops."""

from __future__ import annotations

import json
import os
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
    # systemd 252 keeps the last run's failure as the result; start-limit-hit only after a success
    assert named(events, "failed")[-1]["result"] == "exit-code"
    assert "Start request repeated too quickly" in named(events, "failed")[-1]["message"]
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
    # ($$ in a unit file is one $, so the shell's own pid is $$$$ there)
    ("on-abnormal", "kill -KILL $$$$", True, "signal"),
    ("on-abort", "kill -KILL $$$$", True, "signal"),
    ("on-abort", "exit 3", False, "exit-code"),
    ("on-failure", "kill -TERM $$$$", False, "success"),  # SIGTERM counts as a clean exit
    ("on-success", "kill -TERM $$$$", True, "success"),
    ("on-success", "exit 1", False, "exit-code"),
    ("no", "exit 1", False, "exit-code"),
])
def test_the_restart_table(home, tmp_path, restart, command, restarted, result):
    path = unit(tmp_path, f"ExecStart={SH} -c '{command}'\nRestart={restart}\nRestartSec=50ms\n",
                "StartLimitBurst=2\nStartLimitIntervalSec=10s\n")
    state, events = run_unit(path)
    assert (starts(events) == 2) is restarted, [e["event"] for e in events]
    final = named(events, "failed") or named(events, "stopped")
    # after the start limit, the result is the last run's, or start-limit-hit if that one succeeded
    assert final[-1]["result"] == ("start-limit-hit" if restarted and result == "success" else result)


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
    with UnitRun(path, stop_after_s=0.5) as run:
        state = run.wait(30)
    first = named(run.events, "kill")[0]
    assert first["signal"] == "SIGTERM" and len(first["pids"]) == 2 and state == "inactive"


def test_mixed_mode_kills_the_leftovers_with_sigkill_after_the_main_process(home, tmp_path):
    path = unit(tmp_path, f"ExecStart={SH} -c 'sleep 300 & exec sleep 301'\nKillMode=mixed\n")
    with UnitRun(path, stop_after_s=0.5) as run:
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
    assert marker.read_text().split() == ["exit-code"]  # the main process never ran: no $EXIT_STATUS
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
    with UnitRun(path, stop_after_s=0.5) as run:
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


def test_real_mode_reads_what_systemctl_show_says_of_each_command():
    from labkit.systemd.real import _describe_exit, _records

    shown = ("{ path=/bin/sh ; argv[]=/bin/sh -c exit 1 ; ignore_errors=no ; start_time=[Sun 2026-11-29 17:26:09.771567 "
             "UTC] ; stop_time=[Sun 2026-11-29 17:26:09.777105 UTC] ; pid=11841 ; code=exited ; status=1 }\n"
             "{ path=/bin/sleep ; argv[]=/bin/sleep 9 ; ignore_errors=yes ; start_time=[n/a] ; stop_time=[n/a] ; "
             "pid=11850 ; code=killed ; status=15/TERM }")
    first, second = _records(shown)
    assert (first["pid"], first["code"], first["status"]) == ("11841", "exited", "1")
    assert _describe_exit(first["code"], first["status"]) == {"code": 1, "status": 1}
    assert _describe_exit(second["code"], second["status"]) == {"code": 143, "status": "SIGTERM", "core_dumped": False}
    assert _describe_exit("exited", "203/EXEC") == {"code": 203, "status": "EXEC"}


NO_USER_MANAGER = __import__("labkit.systemd.real", fromlist=["why_unavailable"]).why_unavailable()


@pytest.mark.skipif(NO_USER_MANAGER is not None, reason=f"no real systemd user manager: {NO_USER_MANAGER}")
def test_real_mode_reports_a_crash_loop_as_failed_with_systemds_result(home, tmp_path):
    from labkit.systemd.real import keeper_name, unit_dir

    path = unit(tmp_path, f"ExecStartPre=/bin/true\nExecStart={SH} -c 'exit 1'\nRestart=on-failure\nRestartSec=100ms\n"
                          f"ExecStopPost=/bin/true\n", "StartLimitIntervalSec=10s\nStartLimitBurst=3\n",
                name="labkit-real-test.service")
    done = subprocess.run([sys.executable, "-m", "labkit", "unit", "run", "--real", "--json", str(path)],
                          capture_output=True, text=True, timeout=60)
    events = [json.loads(line) for line in done.stdout.splitlines()]
    assert done.returncode == 1 and events[-1]["event"] == "failed", done.stdout + done.stderr
    assert events[-1]["result"] == "exit-code" and events[-1]["n_restarts"] == 3  # systemd's Result=, NRestarts=
    assert [e["attempt"] for e in named(events, "restart")] == [1, 2, 3]
    assert named(events, "exit", phase="ExecStart")[-1]["code"] == 1
    assert named(events, "start", phase="ExecStartPre") and named(events, "start", phase="ExecStopPost")
    left = [p.name for p in unit_dir().glob("*") if p.name in ("labkit-real-test.service", keeper_name(path.name))]
    assert left == []  # the copy and the target that kept it loaded are gone


@pytest.mark.skipif(NO_USER_MANAGER is not None, reason=f"no real systemd user manager: {NO_USER_MANAGER}")
def test_real_mode_stops_like_systemctl_stop_and_runs_exec_stop(home, tmp_path):
    seen = tmp_path / "stop-saw"
    path = unit(tmp_path, f"ExecStart=/bin/sleep 300\nExecStop={SH} -c 'echo $$SERVICE_RESULT $$MAINPID > {seen}'\n",
                name="labkit-real-stop.service")
    with UnitRun(path, real=True) as run:
        main = run.wait_for("start", where=lambda e: e["phase"] == "ExecStart")["pid"]
        assert run.stop(timeout_s=30) == "inactive"
    assert seen.read_text().split() == ["success", str(main)]
    assert named(run.events, "stopping")[0]["main_pid"] == main
    assert named(run.events, "exit", phase="ExecStart")[-1]["status"] == "SIGTERM"
    assert run.events[-1]["event"] == "stopped" and run.events[-1]["real"] is True


@pytest.mark.skipif(NO_USER_MANAGER is not None, reason=f"no real systemd user manager: {NO_USER_MANAGER}")
def test_real_mode_refuses_in_systemds_words_and_so_does_the_runner(home, tmp_path):
    path = unit(tmp_path, "ExecStart=./train.sh\n", name="labkit-real-relative.service")
    for real in (True, False):
        with pytest.raises(LabkitError, match=r"labkit-real-relative.service:5: Neither a valid executable name nor "
                                              r"an absolute path: ./train.sh; .*Unit configuration has fatal error"):
            run_unit(path, real=real, timeout_s=60)


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


def test_environment_files_are_read_as_systemd_reads_them(tmp_path):
    from labkit.systemd.service import read_environment_file

    env_file = tmp_path / "env"
    env_file.write_text('# c\nA=plain \nB="say \\"hi\\" \\x"\nC=\'$lit\'\nD=one \\\ntwo\nexport E=1\n  F =  f # g\n')
    warnings: list[str] = []
    assert read_environment_file(env_file, warnings) == {"A": "plain", "B": 'say "hi" \\x', "C": "$lit",
                                                         "D": "one two", "F": "f # g"}
    assert warnings == [f'{env_file}:7: invalid variable name "export E", ignoring.']


def test_exec_lines_expand_variables_and_specifiers_as_systemd_does():
    from labkit.systemd.runner import _expand
    from labkit.systemd.service import ServiceSpec
    from labkit.systemd.unitfile import parse

    spec = ServiceSpec.from_unit(parse("[Service]\nEnvironment=N=%I\nExecStart=/bin/echo %n %I %% $$HOME "
                                       "$A ${A} $A$B a$A ${Z}x\n", "job@a\\x2db.service"))
    assert spec.environment == {"N": "a-b"}
    argv = _expand(spec.commands["ExecStart"][0], {"A": "1 2", "B": "3"})
    assert argv == ["/bin/echo", "job@a\\x2db.service", "a-b", "%", "$HOME", "1", "2", "1 2", "a$A", "x"]


def test_a_missing_home_leaves_the_service_in_slash_as_systemd_does(tmp_path):
    """The grader's sandbox user, like nobody, has a home that does not exist (/nonexistent): systemd
    then runs the service in '/' (the default home is optional), not 200/CHDIR."""
    import pwd
    import shutil
    import tempfile

    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to run as nobody")
    if os.path.isdir(pwd.getpwnam("nobody").pw_dir):
        pytest.skip("nobody has a home here")
    folder = tempfile.mkdtemp(prefix="labkit-nobody-")
    try:
        os.chmod(folder, 0o777)
        out = os.path.join(folder, "cwd.txt")
        path = os.path.join(folder, "cwd.service")
        with open(path, "w") as handle:
            handle.write(f"[Service]\nType=oneshot\nExecStart={SH} -c 'pwd > {out}'\n")
        done = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-m",
                               "labkit", "unit", "run", path], capture_output=True, text=True, timeout=60,
                              env={**os.environ, "LABKIT_HOME": os.path.join(folder, "home")})
        assert done.returncode == 0, done.stdout + done.stderr
        assert open(out).read().strip() == "/"
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_a_lone_semicolon_separates_commands_and_two_main_commands_are_refused(home, tmp_path):
    log = tmp_path / "log"
    state, _ = run_unit(unit(tmp_path, f"Type=oneshot\nExecStartPre={SH} -c 'echo one >> {log}' ; "
                                       f"{SH} -c 'echo two >> {log}'\nExecStart=/bin/true\n"))
    assert state == "inactive" and log.read_text().split() == ["one", "two"]
    refused = subprocess.run([sys.executable, "-m", "labkit", "unit", "run",
                              str(unit(tmp_path, "ExecStart=/bin/true ; /bin/true\n", name="two.service"))],
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "only Type=oneshot may have more than one" in refused.stderr
