"""A real terminal hang-up: which jobs of a login shell survive it, and how the others died."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import psutil
import pytest

from labkit import _sshd, jobs, sessions
from labkit.errors import BadArgument, LabkitError, ToolMissing


def assert_all_gone(report):
    for fate in report.values():
        assert not psutil.pid_exists(fate.pid) or psutil.Process(fate.pid).status() == psutil.STATUS_ZOMBIE, fate


def test_a_hangup_kills_the_plain_job_with_sighup_and_every_other_method_survives(home):
    report = sessions.simulate_disconnect(settle_s=1.0)
    expected = {"plain", "nohup", "setsid", "disown", "labkit-setsid", "labkit-nohup"}
    expected |= {m for m in ("tmux", "screen", "labkit-tmux", "labkit-screen") if shutil.which(m.split("-")[-1])}
    assert set(report) == expected
    plain = report.pop("plain")
    assert not plain.survived and plain.exit_code in (129, None), plain  # None: bash reaped it first
    assert plain.describe() in ("killed by SIGHUP (exit 129)", "died (its shell collected the exit status)")
    assert all(fate.survived for fate in report.values()), sessions.format_report(report)
    assert_all_gone(report)  # survivors were killed before returning: nothing is left behind
    if shutil.which("tmux"):  # and the tmux server on the private socket ended with its last session
        listing = subprocess.run(["tmux", "-L", os.environ["LABKIT_TMUX_SOCKET"], "list-sessions"],
                                 capture_output=True, text=True)
        assert listing.returncode != 0, listing.stdout


def test_logging_out_spares_a_plain_job_unless_huponexit_is_set(home):
    logged_out = sessions.simulate_disconnect(["plain", "disown"], how="exit")
    assert logged_out["plain"].survived and logged_out["disown"].survived
    strict = sessions.simulate_disconnect(["plain", "disown"], how="exit", huponexit=True)
    assert not strict["plain"].survived and strict["plain"].exit_code in (129, None)
    assert strict["disown"].survived  # disown took it off the job table bash hangs up
    assert_all_gone(logged_out)
    assert_all_gone(strict)


def test_labkit_jobs_survive_and_then_stop_cleanly_with_their_sessions(home):
    methods = [m for m in ("labkit-setsid", "labkit-nohup", "labkit-tmux", "labkit-screen")
               if shutil.which(m.split("-")[1])]
    report = sessions.simulate_disconnect(methods, keep=True)
    for name in methods:
        job = jobs.Job(name)
        assert report[name].survived and job.pid == report[name].pid and job.is_alive()
        result = job.stop(grace_s=5)
        assert result.exit_code == 143 and not result.escalated  # sleep dies of the SIGTERM
        if job.terminal is not None:
            assert not job.terminal.exists()


def test_the_exit_code_of_a_job_that_outlives_its_shell_is_reported():
    # ignores the hang-up, then dies of SIGHUP half a second later, when bash is long gone
    late = ("(trap '' HUP; sleep 0.5; exec " + sys.executable + " -c 'import os, signal; "
            "signal.signal(signal.SIGHUP, signal.SIG_DFL); os.kill(os.getpid(), signal.SIGHUP)') & echo $! > late.pid")
    report = sessions.simulate_disconnect({"late": late}, settle_s=2.0)
    assert not report["late"].survived and report["late"].exit_code == 129, report
    assert report["late"].describe() == "killed by SIGHUP (exit 129)"


def test_keep_leaves_survivors_to_the_caller(tmp_path):
    report = sessions.simulate_disconnect({"kept": "nohup sleep 300 > /dev/null 2>&1 & echo $! > kept.pid"},
                                          keep=True, cwd=tmp_path)
    survivor = psutil.Process(report["kept"].pid)
    try:
        assert report["kept"].survived and survivor.status() in ("sleeping", "running")
        assert not (tmp_path / "kept.pid").exists()  # the pid files are cleaned up
    finally:
        survivor.kill()
        survivor.wait(5)


def test_a_line_that_records_no_pid_fails_with_what_the_shell_printed():
    with pytest.raises(LabkitError, match=r"no pid file for \['quiet'\].*nonexistent-command"):
        sessions.simulate_disconnect({"quiet": "nonexistent-command-xyz"}, timeout_s=2)


def test_bad_input_is_refused():
    with pytest.raises(BadArgument):
        sessions.simulate_disconnect({"no spaces": "sleep 1 &"})
    with pytest.raises(BadArgument, match="how must be"):
        sessions.simulate_disconnect(["plain"], how="reboot")
    with pytest.raises(BadArgument, match="unknown method"):
        sessions.simulate_disconnect(["teleport"])


def test_methods_lines_and_report_formatting():
    assert sessions.job_line("plain", "mine", seconds=5) == "sleep 5 & echo $! > mine.pid"
    assert "tmux -L" in sessions.job_line("tmux")
    table = sessions.format_report({"plain": sessions.JobFate("plain", 1, False, "gone", 129),
                                    "nohup": sessions.JobFate("nohup", 2, True, "sleeping")})
    assert table.splitlines() == ["plain  died      killed by SIGHUP (exit 129)", "nohup  survived  sleeping"]


NO_SSH = _sshd.why_unavailable()


@pytest.mark.skipif(NO_SSH is not None, reason=f"no real SSH connection here: {NO_SSH}")
def test_a_real_ssh_connection_drop_kills_the_plain_job_and_spares_the_others(home):
    methods = ["plain", "nohup", "setsid", "disown", "labkit-setsid"] + (["tmux"] if shutil.which("tmux") else [])
    shells = []
    report = sessions.simulate_disconnect(methods, via="ssh", before_hangup=lambda pids, shell: shells.append(shell))
    assert psutil.pid_exists(shells[0]) is False or psutil.Process(shells[0]).status() == psutil.STATUS_ZOMBIE
    plain = report.pop("plain")
    assert not plain.survived and plain.exit_code in (129, None), plain
    assert all(fate.survived for fate in report.values()), sessions.format_report(report)
    assert_all_gone(report)


def test_asking_for_ssh_without_sshd_says_what_to_install(monkeypatch):
    monkeypatch.setattr(_sshd, "_sshd_path", lambda: None)
    with pytest.raises(ToolMissing, match="apt install openssh-server"):
        sessions.simulate_disconnect(["plain"], via="ssh")
    with pytest.raises(BadArgument, match="via must be"):
        sessions.simulate_disconnect(["plain"], via="carrier-pigeon")


@pytest.mark.parametrize("tool", ["tmux", "screen"])
def test_02_exercise_2_without_the_tool_awards_nothing_and_says_why(tool):
    """Lesson 02's own check cells where tmux or screen is missing: NotCheckable, never a silent pass."""
    import json
    from pathlib import Path

    from labkit import checks
    from labkit.errors import NotCheckable

    notebook = Path(__file__).resolve().parent.parent / "solutions" / "02_sessions.ipynb"
    cells = {cell["metadata"].get("nbgrader", {}).get("grade_id"): "".join(cell["source"])
             for cell in json.loads(notebook.read_text())["cells"]}

    def never(*args, **kwargs):
        raise AssertionError("a check that cannot run started something")

    scope = {"METHODS": ["nohup"], "LAUNCH_SCRIPT": "#!/bin/sh\n", "checks": checks,
             "ex2_observe": never, "expect_session": never}
    with pytest.raises(NotCheckable, match=f"not checkable here: {tool} is not installed here; install it"):
        exec(cells[f"ex2_{tool}"], scope)
