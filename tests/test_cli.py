"""The `labkit` command as users type it: exit codes, one-line errors, JSON contract."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from conftest import wait_for_step


def labkit(*args: str, timeout_s: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "labkit.cli", *args], capture_output=True, text=True,
                          timeout=timeout_s)


@pytest.mark.parametrize("args, words", [
    (["jobs", "stop", "no-such-job"], "no job named 'no-such-job'"),
    (["jobs", "status", "no-such-job"], "no job named"),
    (["train", "--run-dir", "x", "--epochs", "-3"], "--epochs: must be at least 1"),
    (["train", "--run-dir", "x", "--epochs", "many"], "expected a number"),
    (["train", "--epochs", "2"], "--run-dir"),
    (["jobs", "signal", "anything", "SIGFOO"], "unknown signal 'SIGFOO'"),
    (["jobs", "stop", "x", "--timeout", "-1"], "must be a number >= 0"),
    (["jobs", "stop", "x", "--timeout", "nan"], "must be a number >= 0"),
    (["train", "--run-dir", "/proc/labkit-cannot-exist"], "cannot use run folder"),
    (["jobs", "start", "bad/name"], "bad job name"),
    (["jobs", "frobnicate"], "invalid choice"),
    (["scenario", "start", "no-such-scenario"], "no-such-scenario"),
    (["preempt-test", "--interruptions", "-1", "--", "true"], "interruptions"),
    (["preempt-test"], "command"),
    (["nonsense"], "invalid choice"),
    ([], "required"),
])
def test_bad_input_exits_2_with_one_line(home, args, words):
    done = labkit(*args)
    assert done.returncode == 2
    assert done.stdout == ""
    assert len(done.stderr.splitlines()) == 1, done.stderr
    assert done.stderr.startswith("labkit: error:") and words in done.stderr


def test_help_and_import_stay_light():
    code = ("import sys, labkit, labkit.cli, labkit.jobs; labkit.cli.build_parser();"
            "heavy = [m for m in sys.modules if m.split('.')[0] in "
            "('matplotlib', 'ipywidgets', 'nbclient', 'jupyter', 'jupyterlab', 'jupyter_server', 'IPython')];"
            "print(heavy)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "[]"
    done = labkit("--help")
    assert done.returncode == 0 and "jobs" in done.stdout and "train" in done.stdout


def test_train_runs_in_the_foreground(tmp_path):
    done = labkit("train", "--run-dir", str(tmp_path), "--epochs", "1", "--steps-per-epoch", "5",
                  "--step-time", "0")
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "final.json").read_text())["global_step"] == 5


def test_jobs_start_status_stop_as_json(home):
    started = labkit("jobs", "start", "cli1", "--json", "--", "sleep", "30")
    assert started.returncode == 0, started.stderr
    record = json.loads(started.stdout)
    assert record["alive"] and record["name"] == "cli1"
    status = json.loads(labkit("jobs", "status", "cli1", "--json").stdout)
    assert {"name", "pid", "alive", "state", "mode", "run_dir"} <= status.keys()
    stopped = labkit("jobs", "stop", "cli1", "--json", "--timeout", "2")
    result = json.loads(stopped.stdout)
    assert result == {**result, "name": "cli1", "signal_sent": "SIGTERM", "escalated": False, "exit_code": 143}
    listed = [json.loads(line) for line in labkit("jobs", "list", "--json").stdout.splitlines()]
    assert [row["name"] for row in listed] == ["cli1"] and not listed[0]["alive"]


def test_stop_of_a_trainer_that_ignores_sigterm_escalates_after_the_timeout(home):
    run_dir = home / "stubborn"
    started = labkit("jobs", "start", "stubborn", "--run-dir", str(run_dir), "--", sys.executable, "-m",
                     "labkit.trainer", "--run-dir", str(run_dir), "--fault", "ignore-sigterm", "--epochs", "100")
    assert started.returncode == 0, started.stderr
    wait_for_step(run_dir, 2)
    stopped = labkit("jobs", "stop", "stubborn", "--timeout", "1")
    assert stopped.returncode == 0
    assert "did not exit within 1 s, sent SIGKILL" in stopped.stdout and "137 = 128 + 9" in stopped.stdout


def test_default_job_is_the_trainer_and_logs_show_its_output(home):
    assert labkit("jobs", "start", "default").returncode == 0
    wait_for_step(home / "jobs" / "default" / "run", 1)
    assert labkit("jobs", "signal", "default", "USR1").stdout.startswith("sent SIGUSR1 to job default")
    stopped = json.loads(labkit("jobs", "stop", "default", "--json").stdout)
    assert stopped["exit_code"] == 0
    logs = labkit("jobs", "logs", "default", "--lines", "3")
    assert "stopped cleanly on SIGTERM" in logs.stdout
    assert len(logs.stdout.splitlines()) == 3


def test_lab_opens_jupyterlab_on_the_course_root(spawn, tmp_path):
    import socket
    import time
    import urllib.request

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"), "HOME": str(tmp_path)}
    server = spawn.popen([sys.executable, "-m", "labkit.cli", "lab", "--", f"--ServerApp.port={port}",
                          "--ServerApp.port_retries=0", "--ServerApp.open_browser=False",
                          "--IdentityProvider.token=labkit-test", "--ServerApp.ip=127.0.0.1"],
                         env=env, stderr=subprocess.PIPE)
    deadline, page = time.monotonic() + 60, ""
    while time.monotonic() < deadline and server.poll() is None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/contents?token=labkit-test") as reply:
                page = reply.read().decode()
            break
        except OSError:
            time.sleep(0.3)
    assert server.poll() is None, server.stderr.read().decode()[-2000:]
    names = [item["name"] for item in json.loads(page)["content"]]
    assert {"notebooks", "exercises", "README.md"} <= set(names)  # the course root: lessons and exercises
    server.terminate()
    server.wait(timeout=20)


def test_course_build_check_passes_on_the_shipped_course():
    done = labkit("course", "build", "--check")
    assert done.returncode == 0, done.stderr
    assert "up to date" in done.stdout


def test_monitor_writes_the_csv_contract_and_a_plot(spawn, tmp_path):
    proc = spawn.trainer(tmp_path / "run", "--epochs", "100", "--workers", "1")
    csv_path, png = tmp_path / "m.csv", tmp_path / "m.png"
    done = labkit("monitor", str(proc.pid), "--interval", "0.2", "--duration", "1.5", "--csv", str(csv_path),
                  "--plot", str(png))
    assert done.returncode == 0, done.stderr
    header = csv_path.read_text().splitlines()[0]
    assert header == "t,pid,cpu_percent,rss_bytes,num_threads,num_children,status,read_bytes,write_bytes"
    assert len(csv_path.read_text().splitlines()) >= 5
    assert png.read_bytes().startswith(b"\x89PNG")


def test_monitor_of_a_missing_pid_is_one_line():
    done = labkit("monitor", "999999999")
    assert done.returncode in (1, 2) and len(done.stderr.splitlines()) == 1
    assert done.stderr.startswith("labkit: error:")


def test_logs_follow_prints_the_tail_then_new_lines_once(home):
    script = "import time\nfor i in range(8):\n print('line', i, flush=True); time.sleep(0.15)"
    assert labkit("jobs", "start", "chatty", "--", sys.executable, "-c", script).returncode == 0
    followed = labkit("jobs", "logs", "chatty", "--follow", "--lines", "2")
    lines = [line for line in followed.stdout.splitlines() if line.startswith("line")]
    assert lines[-1] == "line 7" and len(lines) == len(set(lines)), followed.stdout


def test_doctor_json_is_one_object_with_every_capability():
    done = labkit("doctor", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert {"tmux", "strace", "cgroup", "ptrace", "gpu"} <= report["capabilities"].keys()
    assert all({"ok", "detail", "hint"} <= entry.keys() for entry in report["capabilities"].values())


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_a_tmux_job_from_the_command_line_with_a_pid_file_and_attach(home, tmp_path):
    pid_file = tmp_path / "run.pid"
    started = labkit("jobs", "start", "mux", "--mode", "tmux", "--pid-file", str(pid_file), "--", "sleep", "30")
    assert started.returncode == 0, started.stderr
    socket = os.environ["LABKIT_TMUX_SOCKET"]
    assert f"reattach with: tmux -L {socket} attach -t mux" in started.stdout
    pid = int(pid_file.read_text())
    status = json.loads(labkit("jobs", "status", "mux", "--json").stdout)
    assert status["pid"] == pid and status["mode"] == "tmux" and status["alive"]
    attach = labkit("jobs", "attach", "mux")
    assert attach.returncode == 0 and attach.stdout == f"tmux -L {socket} attach -t mux\n"
    stopped = json.loads(labkit("jobs", "stop", "mux", "--json", "--timeout", "5").stdout)
    assert stopped["exit_code"] == 143
    ended = labkit("jobs", "attach", "mux")
    assert ended.returncode == 1 and len(ended.stderr.splitlines()) == 1 and "has ended" in ended.stderr


def test_attach_to_a_setsid_job_is_one_line_saying_how_to_read_its_output(home):
    assert labkit("jobs", "start", "bg", "--", "sleep", "30").returncode == 0
    try:
        done = labkit("jobs", "attach", "bg")
        assert done.returncode == 1 and done.stdout == ""
        assert len(done.stderr.splitlines()) == 1 and "labkit jobs logs -f bg" in done.stderr
    finally:
        labkit("jobs", "stop", "bg", "--timeout", "5")


def test_lab_help_names_the_folder_it_really_opens(tmp_path):
    done = subprocess.run([sys.executable, "-m", "labkit.cli", "lab", "--help"], capture_output=True, text=True,
                          cwd=tmp_path)  # no course here: labkit's own checkout is the default
    assert done.returncode == 0, done.stderr
    text = " ".join(done.stdout.split())
    root = os.path.dirname(os.path.dirname(os.path.abspath(__import__("labkit").__file__)))
    assert "the course root" in text and f"here: {root})" in text, text
    assert "JUPYTER_OPTION" in text


def test_lab_passes_jupyter_options_through_in_order():
    from labkit.cli import _split_lab

    own, jupyter = _split_lab(["lab", "--port", "8899", "--notebook-dir", "x", "--no-browser", "--",
                               "--notebook-dir=y", "-h"])
    assert own == ["lab", "--notebook-dir", "x"]
    assert jupyter == ["--port", "8899", "--no-browser", "--notebook-dir=y", "-h"]


def test_a_jupyterlab_terminal_finds_labkit_when_the_server_was_started_without_it_on_path(spawn, tmp_path):
    """`labkit lab --port P` (an option of Jupyter's, typed as is) from a service-like launch:
    PATH without the venv, no terminal. A terminal opened through Jupyter's REST and websocket
    API (what JupyterLab's Terminal tab does) still runs this environment's `labkit`."""
    import asyncio
    import socket
    import time
    import urllib.request

    from tornado.websocket import websocket_connect

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    token = "labkit-terminal-test"
    env = {**os.environ, "PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "LABKIT_HOME": str(tmp_path / "lk"),
           "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"), "SHELL": "/bin/bash"}
    env.pop("VIRTUAL_ENV", None)
    log = open(tmp_path / "server.log", "wb")
    server = spawn.popen([sys.executable, "-m", "labkit.cli", "lab", "--port", str(port), "--no-browser",
                          "--ServerApp.port_retries=0", "--ServerApp.ip=127.0.0.1",
                          f"--IdentityProvider.token={token}"], env=env, stdout=log, stderr=log)
    base = f"http://127.0.0.1:{port}"

    def api(method: str, path: str) -> bytes:
        request = urllib.request.Request(f"{base}{path}", method=method,
                                         headers={"Authorization": f"token {token}"})
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.read()

    async def type_in(name: str, line: str, marker: str, timeout_s: float) -> str:
        ws = await websocket_connect(f"ws://127.0.0.1:{port}/terminals/websocket/{name}?token={token}")
        try:
            await ws.write_message(json.dumps(["stdin", line + "\r"]))
            out, deadline = "", time.monotonic() + timeout_s
            while marker not in out and time.monotonic() < deadline:
                try:
                    message = await asyncio.wait_for(ws.read_message(), deadline - time.monotonic())
                except asyncio.TimeoutError:
                    break
                if message is None:
                    break
                kind, *rest = json.loads(message)
                if kind == "stdout":
                    out += rest[0]
            return out
        finally:
            ws.close()

    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and server.poll() is None:
            try:
                api("GET", "/api/status")
                break
            except OSError:
                time.sleep(0.3)
        assert server.poll() is None, (tmp_path / "server.log").read_text()[-2000:]
        name = json.loads(api("POST", "/api/terminals"))["name"]
        try:
            # LABKIT-$((40+2)) prints LABKIT-42, which the terminal's echo of the typed line does not hold
            out = asyncio.run(type_in(name, "labkit doctor --json | head -c 100; echo; command -v python; "
                                            "echo LABKIT-$((40+2))", "LABKIT-42", timeout_s=30))
        finally:
            api("DELETE", f"/api/terminals/{name}")
        assert "command not found" not in out, out
        assert '"platform"' in out, out  # the first 100 bytes of doctor's JSON
        assert os.path.join(os.path.dirname(sys.executable), "python") in out, out
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


def test_scenario_and_preempt_test_are_labkit_commands(home):
    listed = labkit("scenario", "list")
    assert listed.returncode == 0, listed.stderr
    assert "stalled-run" in listed.stdout and "torn-checkpoint" in listed.stdout
    helped = labkit("preempt-test", "--help")
    assert helped.returncode == 0 and "--grace-s" in helped.stdout


def test_progress_lists_the_scenarios_played(home):
    from labkit._atomic import write_json_atomic
    from labkit.scenarios import engine

    write_json_atomic(engine.home() / engine.RESULTS_FILE, {"results": [
        {"name": "zombies", "seed": 3, "outcome": "passed", "seconds": 95.0, "hints_used": 1, "checks": 2,
         "finished_at": 0.0}]})
    shown = labkit("progress")
    assert shown.returncode == 0, shown.stderr
    assert "scenario zombies" in shown.stdout and "passed" in shown.stdout and "1 hint(s)" in shown.stdout


def test_binders_server_config_gives_terminals_the_course_environment(home):
    """repo2docker copies the repository into $HOME, so Jupyter reads .jupyter/ from it."""
    from pathlib import Path
    from types import SimpleNamespace

    config = Path(__file__).resolve().parent.parent / ".jupyter" / "jupyter_server_config.py"
    c = SimpleNamespace(ServerApp=SimpleNamespace())
    exec(compile(config.read_text(), str(config), "exec"), {"get_config": lambda: c})
    shell = c.ServerApp.terminado_settings["shell_command"]
    assert shell[1] == "--rcfile" and shell[-1] == "-i"
    rc = Path(shell[2]).read_text()
    assert f'PATH="{Path(sys.executable).parent}:$PATH"' in rc and rc.index("/etc/profile") < rc.index("PATH=")
