"""Detached jobs: start, status, stop with escalation, recycled pids, orphans, modes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import psutil
import pytest

from conftest import wait_for, wait_for_step
from labkit import jobs
from labkit._multiplexer import Multiplexer
from labkit.errors import BadArgument, JobExists, LabkitError, NoSuchJob, NotOurProcess, ToolMissing

TRAIN = ("--epochs", "50", "--steps-per-epoch", "20", "--step-time", "0.02")


def trainer_job(home, name, *args, run_dir=None):
    run_dir = run_dir or home / f"{name}-run"
    return jobs.start(name, jobs.trainer_command(run_dir, *TRAIN, *args), run_dir=run_dir), run_dir


def test_a_job_runs_in_its_own_session_and_group_with_its_state_recorded(home):
    job, run_dir = trainer_job(home, "t1")
    record = json.loads((home / "jobs" / "t1" / "job.json").read_text())
    assert record["pid"] == job.pid == record["pgid"] == record["sid"]
    assert record["create_time"] == pytest.approx(psutil.Process(job.pid).create_time(), abs=0.05)
    assert record["mode"] == "setsid" and record["run_dir"] == str(run_dir)
    assert os.getsid(job.pid) != os.getsid(0)
    status = job.status()
    assert status["alive"] and status["state"] in ("running", "sleeping")
    assert status["group_members"] == [job.pid]
    job.stop()


def test_stop_a_normal_trainer_without_escalation(home):
    job, run_dir = trainer_job(home, "calm")
    wait_for_step(run_dir, 3)
    result = job.stop(grace_s=10)
    assert result.as_dict().keys() == {"name", "pid", "signal_sent", "escalated", "exit_code", "seconds"}
    assert (result.signal_sent, result.escalated, result.exit_code) == ("SIGTERM", False, 0)
    assert result.seconds < 2
    assert "stopped cleanly on SIGTERM" in (run_dir / "train.log").read_text()
    assert job.status()["state"] == "exited" and not job.is_alive()


def test_stop_escalates_to_sigkill_after_the_timeout(home):
    job, run_dir = trainer_job(home, "stubborn", "--fault", "ignore-sigterm")
    wait_for_step(run_dir, 2)
    result = job.stop(grace_s=1)
    assert result.escalated and result.signal_sent == "SIGTERM"
    assert result.exit_code == 128 + signal.SIGKILL
    assert 0.9 < result.seconds < 3
    assert "received SIGTERM and ignored it" in (run_dir / "train.log").read_text()
    assert job.exit_info()["signal"] == "SIGKILL"


def test_stop_reaches_workers_through_the_process_group(home):
    job, run_dir = trainer_job(home, "pool", "--workers", "2")
    wait_for_step(run_dir, 2)
    assert len(job.members()) == 3
    result = job.stop(grace_s=10)
    assert (result.escalated, result.exit_code) == (False, 0)
    assert job.members() == []


def test_a_recycled_pid_is_never_signalled(home, spawn):
    victim = spawn.popen([sys.executable, "-c", "import time; time.sleep(60)"])
    folder = home / "jobs" / "ghost"
    folder.mkdir(parents=True)
    fake = {"name": "ghost", "pid": victim.pid, "create_time": psutil.Process(victim.pid).create_time() - 500,
            "pgid": victim.pid, "sid": victim.pid, "mode": "setsid", "command": ["x"], "run_dir": None,
            "started_at": time.time() - 500}
    (folder / "job.json").write_text(json.dumps(fake))
    job = jobs.Job("ghost")
    assert job.state == "recycled" and not job.is_alive()
    with pytest.raises(NotOurProcess, match="recycled"):
        job.stop(grace_s=1)
    with pytest.raises(NotOurProcess):
        job.send_signal("SIGKILL")
    assert victim.poll() is None  # still alive: nothing was sent


def test_exit_codes_of_ended_jobs_are_recorded(home):
    crashed, run_dir = trainer_job(home, "crash", "--fault", "crash", "--fault-step", "2")
    assert crashed.wait(timeout_s=20) == 1
    assert "simulated crash" in (run_dir / "train.log").read_text()
    killed = jobs.start("sleeper", ["sleep", "30"])
    killed.send_signal("KILL")
    assert killed.wait(timeout_s=5) == 137
    assert killed.exit_info()["signal"] == "SIGKILL"
    result = killed.stop()
    assert (result.signal_sent, result.exit_code) == (None, 137)


def test_orphaned_workers_are_found_and_stopped_with_the_group(home):
    job, run_dir = trainer_job(home, "orphans", "--fault", "orphan-workers", "--fault-step", "2")
    wait_for(lambda: job.exit_code is not None, 20, "the trainer to die")
    assert job.exit_code == 1
    orphans = job.members()
    assert len(orphans) == 2 and all(p.pid != job.pid for p in orphans)
    status = job.status()
    assert status["state"] == "exited" and len(status["group_members"]) == 2
    result = job.stop(grace_s=2)
    assert result.signal_sent == "SIGTERM" and job.members() == []


def test_nohup_mode_ignores_sighup_and_stays_in_the_callers_session(home):
    job = jobs.start("hup", ["sleep", "30"], mode="nohup")
    proc_status = open(f"/proc/{job.pid}/status").read()
    ignored = int(proc_status.split("SigIgn:")[1].split()[0], 16)
    assert ignored & (1 << (signal.SIGHUP - 1))
    assert os.getsid(job.pid) == os.getsid(0)
    assert job.pgid == job.pid != os.getpgrp()
    job.send_signal("HUP")
    time.sleep(0.2)
    assert job.is_alive()
    assert job.stop(grace_s=2).exit_code == 128 + signal.SIGTERM


def test_a_running_name_cannot_be_reused_but_an_ended_one_can(home):
    job = jobs.start("twice", ["sleep", "30"])
    with pytest.raises(JobExists, match="still running"):
        jobs.start("twice", ["sleep", "30"])
    job.stop(grace_s=2)
    again = jobs.start("twice", ["sleep", "30"])
    assert again.pid != job.pid and again.exit_code is None
    again.stop(grace_s=2)


def test_bad_input_gives_typed_errors(home):
    with pytest.raises(NoSuchJob, match="labkit jobs list"):
        jobs.Job("nobody")
    with pytest.raises(BadArgument, match="bad job name"):
        jobs.start("../escape", ["true"])
    with pytest.raises(BadArgument, match="unknown mode"):
        jobs.start("m", ["true"], mode="fork")
    with pytest.raises(BadArgument, match="No such file"):
        jobs.start("nocmd", ["/nonexistent/program"])
    with pytest.raises(BadArgument, match="unknown signal"):
        jobs.start("s", ["sleep", "30"]).stop(sig="SIGFOO")


def test_logs_and_follow_show_the_console_output(home):
    job = jobs.start("echo", [sys.executable, "-c",
                              "import time\nfor i in range(5):\n print('line', i, flush=True); time.sleep(0.05)"])
    followed = "".join(job.follow(poll_s=0.02))
    assert [line for line in followed.splitlines() if line.startswith("line")] == [f"line {i}" for i in range(5)]
    assert job.logs(lines=2).splitlines() == ["line 3", "line 4"]
    assert job.wait(timeout_s=5) == 0


def test_list_and_remove(home):
    first = jobs.start("a", ["true"])
    jobs.start("b", ["sleep", "30"])
    assert [job.name for job in jobs.list_jobs()] == ["a", "b"]
    first.wait(timeout_s=5)
    jobs.remove("a")
    with pytest.raises(JobExists):
        jobs.remove("b")
    assert [job.name for job in jobs.list_jobs()] == ["b"]
    jobs.Job("b").stop(grace_s=2)


def test_a_nohup_trainer_survives_sighup_and_still_stops_on_sigterm(home):
    run_dir = home / "nohup-run"
    job = jobs.start("nohup-trainer", jobs.trainer_command(run_dir, *TRAIN), mode="nohup", run_dir=run_dir)
    wait_for_step(run_dir, 2)
    job.send_signal("HUP")  # what a closed terminal sends
    step = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])["step"]
    wait_for_step(run_dir, step + 5)
    assert job.is_alive()
    assert "SIGHUP is ignored, as inherited (nohup)" in (run_dir / "train.log").read_text()
    result = job.stop(grace_s=10)
    assert (result.escalated, result.exit_code) == (False, 0)


def test_stopping_a_stopped_job_wakes_it_so_it_can_save(home):
    job, run_dir = trainer_job(home, "frozen")
    wait_for_step(run_dir, 2)
    job.send_signal("STOP")
    wait_for(lambda: job.state == "stopped", 5, "state T")
    result = job.stop(grace_s=10)
    assert (result.escalated, result.exit_code) == (False, 0)
    assert "stopped cleanly on SIGTERM" in (run_dir / "train.log").read_text()


def test_stop_refuses_signals_that_do_not_end_a_process(home):
    job = jobs.start("usr", ["sleep", "30"])
    with pytest.raises(BadArgument, match="labkit jobs signal usr SIGUSR1"):
        job.stop(sig="SIGUSR1")
    with pytest.raises(BadArgument, match="grace period"):
        job.stop(grace_s=float("nan"))
    assert job.stop(grace_s=2, sig="SIGINT").exit_code == 128 + signal.SIGINT


def test_a_damaged_record_is_reported_without_hiding_other_jobs(home, capsys):
    jobs.start("good", ["true"]).wait(timeout_s=5)
    bad = home / "jobs" / "bad"
    bad.mkdir(parents=True)
    (bad / "job.json").write_text('{"pid": 1}')
    assert [job.name for job in jobs.list_jobs()] == ["good"]
    assert "lacks create_time" in capsys.readouterr().err


# --- tmux and screen modes --------------------------------------------------------------

needs = {tool: pytest.mark.skipif(shutil.which(tool) is None, reason=f"{tool} is not installed")
         for tool in ("tmux", "screen")}
TERMINAL_MODES = [pytest.param(tool, marks=needs[tool]) for tool in ("tmux", "screen")]


@pytest.mark.parametrize("mode", TERMINAL_MODES)
def test_a_terminal_job_runs_in_its_session_logs_its_output_and_stop_ends_the_session(home, mode):
    run_dir = home / "run"
    job = jobs.start("tt", jobs.trainer_command(run_dir, *TRAIN), mode=mode, run_dir=run_dir)
    terminal = job.terminal
    assert job.record["mode"] == mode and terminal.exists()
    # the job leads its own group and is the foreground group of the session's terminal
    stat = open(f"/proc/{job.pid}/stat").read().rsplit(")", 1)[1].split()
    tty_nr, foreground = int(stat[4]), int(stat[5])
    assert job.pgid == job.pid == foreground and tty_nr != 0
    wait_for_step(run_dir, 12)
    wait_for(lambda: "step 10 " in job.logs(), 10, "the step line in job.log")
    assert "\r" not in job.logs()
    wait_for(lambda: "step" in job.screen_text(), 10, "the step line on the session's screen")
    result = job.stop(grace_s=10)
    assert result.exit_code == 0 and not result.escalated
    wait_for(lambda: not terminal.exists(), 5, "the session to end")
    assert "stopped cleanly on SIGTERM" in (run_dir / "train.log").read_text()


@pytest.mark.parametrize("mode", TERMINAL_MODES)
def test_attach_prints_the_reattach_command_for_the_private_socket(home, mode):
    job = jobs.start("att.1", ["sleep", "30"], mode=mode)
    try:
        command = job.attach_command()
        if mode == "tmux":
            assert command == f"tmux -L {os.environ['LABKIT_TMUX_SOCKET']} attach -t att_1"
        else:
            assert command == f"SCREENDIR={home / 'screen'} screen -r att.1"
    finally:
        job.stop(grace_s=5)
    with pytest.raises(LabkitError, match="has ended"):
        job.attach_command()


def test_attach_explains_that_setsid_jobs_have_no_terminal(home):
    job = jobs.start("plainjob", ["sleep", "30"])
    try:
        with pytest.raises(LabkitError, match="no terminal to reattach.*logs -f plainjob"):
            job.attach_command()
    finally:
        job.stop(grace_s=5)


@needs["tmux"]
def test_ctrl_c_typed_into_the_session_reaches_the_job_not_the_waiter(home):
    run_dir = home / "run"
    job = jobs.start("ctrlc", jobs.trainer_command(run_dir, *TRAIN), mode="tmux", run_dir=run_dir)
    wait_for_step(run_dir, 5)
    terminal = job.terminal
    subprocess.run(["tmux", "-L", terminal.socket, "send-keys", "-t", f"={terminal.session}:", "C-c"], check=True)
    assert job.wait(timeout_s=10) == 0  # the trainer stops cleanly on SIGINT
    assert "SIGINT" in (run_dir / "train.log").read_text()
    wait_for(lambda: not terminal.exists(), 5, "the session to end with its job")


@needs["tmux"]
def test_a_terminal_job_gets_the_callers_environment_and_working_folder(home, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    env = {**os.environ, "LABKIT_DEMO_VALUE": "from-the-caller"}
    job = jobs.start("envjob", ["sh", "-c", "echo value=$LABKIT_DEMO_VALUE cwd=$PWD tmux=${TMUX:+yes}; sleep 30"],
                     mode="tmux", env=env)
    try:
        wait_for(lambda: "value=" in job.logs(), 10, "the job's first line")
        assert f"value=from-the-caller cwd={tmp_path} tmux=yes" in job.logs()
        assert not list((home / "jobs" / "envjob").glob(".environment*"))  # the private copy is gone
    finally:
        job.stop(grace_s=5)


@pytest.mark.parametrize("mode", TERMINAL_MODES)
def test_a_command_that_cannot_start_in_a_terminal_is_a_clear_error_and_leaves_no_session(home, mode):
    with pytest.raises(BadArgument, match="cannot start '/no/such/program'"):
        jobs.start("broken", ["/no/such/program"], mode=mode)
    assert not Multiplexer.for_job(mode, "broken", home).exists()


def test_a_missing_multiplexer_is_reported_with_how_to_install_it(home, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(ToolMissing, match="tmux is not installed; apt install tmux"):
        jobs.start("nomux", ["sleep", "1"], mode="tmux")


@needs["tmux"]
def test_an_ended_terminal_job_can_be_started_again_and_its_old_log_is_kept(home):
    job = jobs.start("again", ["sh", "-c", "echo first run"], mode="tmux")
    assert job.wait(timeout_s=10) == 0
    wait_for(lambda: not job.terminal.exists(), 5, "the session to end")
    job = jobs.start("again", ["sh", "-c", "echo second run; sleep 30"], mode="tmux")
    try:
        wait_for(lambda: "second run" in job.logs(), 10, "the second run's output")
        assert "first run" in (job.dir / "job.log.1").read_text()
    finally:
        job.stop(grace_s=5)
