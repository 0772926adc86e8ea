"""Scenarios: each check fails after start, passes after the right fix (real commands), fails after
plausible wrong fixes, and reset leaves no process, file or cgroup."""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from labkit.scenarios import base, cli, engine
from labkit.scenarios.port_held import port_free
from labkit.scenarios.stalled_run import StalledRun


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A private LABKIT_HOME; every capability available unless a test says otherwise."""
    monkeypatch.setenv("LABKIT_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(engine, "capabilities", lambda: {name: (True, "test") for name in
                                                         ("ptrace", "cgroup-cpu", "cpulimit", "systemctl-user",
                                                          "tmux")})
    yield tmp_path / "home"
    engine.reset()


def ours(ctx: base.Context) -> list[psutil.Process]:
    """Every live process of the instance: the keeper and all under it."""
    keeper = ctx.keeper()
    return ([keeper] if keeper else []) + ctx.descendants()


def assert_all_gone(procs: list[psutil.Process], folder: Path) -> None:
    """Reset left nothing: no process (a zombie of ours counts as gone), no folder."""
    alive = [p for p in procs if base.verified(p.pid, p.create_time()) is not None] if procs else []
    assert alive == [], alive
    assert not folder.exists()


def sh(*argv: str | int) -> None:
    """Run a real command (kill, pkill...) and insist it worked."""
    subprocess.run([str(a) for a in argv], check=True, timeout=10)


def gone(proc: psutil.Process | None, timeout_s: float = 10.0) -> None:
    if proc is not None:
        base.wait_for(lambda: base.verified(proc.pid, proc.create_time()) is None, timeout_s, f"pid {proc.pid}")


def seed_for(scenario, **want) -> int:
    """The first seed whose plan has every ``want`` item."""
    return next(s for s in range(1, 500)
                if all(scenario.plan(random.Random(s))[k] == v for k, v in want.items()))


def finish(ctx: base.Context, **answers: str) -> list[str]:
    """Check; a passing check must have reset everything."""
    procs = ours(ctx)
    outcome = engine.check(answers)
    if not outcome.problems:
        assert_all_gone(procs, ctx.folder)
        assert engine.results()[-1]["outcome"] == "passed"
    return outcome.problems


# ---------------------------------------------------------------- the framework


@pytest.mark.parametrize("name", sorted(engine.registry()))
def test_two_seeds_give_different_instances(name):
    scenario = engine.get(name)
    plans = [scenario.plan(random.Random(seed)) for seed in (1, 2)]
    assert plans[0] != plans[1]
    assert scenario.story(plans[0]) != scenario.story(plans[1])
    assert scenario.topic in base.TOPICS
    assert 3 <= scenario.story(plans[0]).count(". ") + 1 and "Goal:" in scenario.story(plans[0])


def test_list_skips_what_cannot_run_and_start_refuses_it(home, monkeypatch, capsys):
    monkeypatch.setattr(engine, "capabilities", lambda: {"ptrace": (False, "Yama ptrace_scope=3"),
                                                         "cgroup-cpu": (False, "no writable cpu hierarchy"),
                                                         "cpulimit": (True, "/usr/bin/cpulimit")})
    assert cli.main(cli.parse(["list"])) == 0
    lines = {l.split()[0]: l for l in capsys.readouterr().out.splitlines()}
    assert "skipped: no ptrace (Yama ptrace_scope=3)" in lines["stalled-run"]
    assert "skipped: no cgroup-cpu (no writable cpu hierarchy)" in lines["cpu-limit"]
    assert "skipped" not in lines["zombies"]
    assert cli.main(cli.parse(["start", "cpu-limit"])) == 1
    assert "cannot run here: no cgroup-cpu" in capsys.readouterr().err
    assert cli.main(cli.parse(["start", "stalled-run", "--seed", "1"])) == 1
    err = capsys.readouterr().err
    assert "cannot run here: no ptrace" in err and err.count("\n") == 1
    assert not (home / "scenario").exists()  # never half-started


def test_python_dash_m_runs_the_same_commands(tmp_path):
    import sys

    env = {**os.environ, "LABKIT_HOME": str(tmp_path)}
    listed = subprocess.run([sys.executable, "-m", "labkit.scenarios", "list"], capture_output=True, text=True,
                            env=env, timeout=60)
    assert listed.returncode == 0 and len(listed.stdout.splitlines()) == len(engine.registry())
    bad = subprocess.run([sys.executable, "-m", "labkit.scenarios", "start"], capture_output=True, text=True,
                         env=env, timeout=60)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "Traceback" not in bad.stderr


def test_a_start_that_fails_part_way_leaves_nothing(home, monkeypatch, capsys):
    from labkit.scenarios.port_held import PortHeld

    started: list[psutil.Process] = []

    def half_start(self, ctx):
        started.append(psutil.Process(ctx.spawn("decoy", [base.python(), "-c", "import time; time.sleep(60)"])))
        started.append(ctx.keeper())
        raise base.ScenarioError("port 1234 is already in use")

    monkeypatch.setattr(PortHeld, "start", half_start)
    assert cli.main(cli.parse(["start", "port-held"])) == 1
    assert "nothing was left running" in capsys.readouterr().err
    assert_all_gone(started, home / "scenario")


def test_an_unreadable_state_is_cleared_by_reset(home):
    (home / "scenario").mkdir(parents=True)
    (home / "scenario" / "state.json").write_text("{not json")
    assert cli.main(cli.parse(["status"])) == 1
    assert cli.main(cli.parse(["reset"])) == 0
    assert not (home / "scenario").exists()


def test_real_doctor_verdicts_are_used(monkeypatch):
    monkeypatch.undo()
    caps = engine.capabilities()
    assert "ptrace" in caps and isinstance(caps["ptrace"][0], bool)


def test_bad_input_and_no_active_scenario(home, capsys):
    assert cli.main(cli.parse(["start", "no-such-thing"])) == 2
    assert cli.main(cli.parse(["check"])) == 1
    assert cli.main(cli.parse(["hint"])) == 1
    assert cli.main(cli.parse(["reset"])) == 0
    with pytest.raises(SystemExit) as exit_info:
        cli.parse(["start", "port-held", "--seed", "x"])
    assert exit_info.value.code == 2
    assert "Traceback" not in capsys.readouterr().err


# ---------------------------------------------------------------- port-held


def holder_of(port: int) -> int:
    """The pid listening on ``port``, as `ss -ltnpH` reports it."""
    out = subprocess.run(["ss", "-ltnpH", f"sport = :{port}"], capture_output=True, text=True, check=True).stdout
    return int(re.search(r"pid=(\d+)", out).group(1))


def test_port_held_through_the_cli(home, capsys):
    assert cli.main(cli.parse(["start", "port-held", "--seed", "7"])) == 0
    out = capsys.readouterr().out
    assert "Goal:" in out and "seed 7" in out
    scenario, ctx = engine.active()
    procs, port = ours(ctx), ctx.data["port"]
    assert cli.main(cli.parse(["start", "zombies"])) == 1  # one at a time
    assert "still active" in capsys.readouterr().err
    assert cli.main(cli.parse(["check"])) == 1
    assert "still taken" in capsys.readouterr().out
    assert cli.main(cli.parse(["hint"])) == 0 and "hint 1/3" in capsys.readouterr().out
    assert cli.main(cli.parse(["status"])) == 0
    assert re.search(r"seed 7 .*hints used 1", capsys.readouterr().out)
    pid = holder_of(port)
    assert pid == ctx.pid("holder") and pid != ctx.pid("decoy")
    sh("kill", pid)
    base.wait_for(lambda: port_free(port), 10, "the port")
    assert cli.main(cli.parse(["check"])) == 0
    assert "passed" in capsys.readouterr().out
    assert_all_gone(procs, ctx.folder)
    assert engine.results()[-1]["hints_used"] == 1
    assert re.match(r"scenario port-held +passed +\d+ s  1 hint", engine.summary_lines()[0])


def test_port_held_wrong_fixes(home):
    _, ctx = engine.start("port-held", 11)
    assert finish(ctx)  # a new port for the relaunch changes nothing here
    decoy = ctx.process("decoy")
    sh("kill", ctx.pid("decoy"))  # the colleague's exporter: wrong one
    gone(decoy)
    problems = finish(ctx)
    assert any("nothing to do" in p for p in problems) and any("still taken" in p for p in problems)
    sh("kill", holder_of(ctx.data["port"]))  # now the right one too: the decoy is still lost
    base.wait_for(lambda: port_free(ctx.data["port"]), 10, "the port")
    assert [p for p in finish(ctx) if "nothing to do" in p]
    procs = ours(ctx)
    engine.reset()
    assert_all_gone(procs, ctx.folder)


# ---------------------------------------------------------------- orphan-workers


def loader_processes(home: Path) -> list[tuple[int, int, str]]:
    """(pid, ppid, args) of this test's loader processes, read from `ps` as a learner would."""
    out = subprocess.run(["ps", "-wweo", "pid=,ppid=,args="], capture_output=True, text=True, check=True).stdout
    rows = [line.split(None, 2) for line in out.splitlines()]
    return [(int(p), int(pp), a) for p, pp, a in rows if str(home) in a and " loader " in a]


def test_orphan_workers_right_fix(home):
    _, ctx = engine.start("orphan-workers", 3)
    assert finish(ctx)
    trainers = {pid for pid, _, args in loader_processes(home) if ctx.data["new_run"] in args}
    new_trainer = ctx.pid(ctx.data["new_run"])
    orphans = [pid for pid, ppid, args in loader_processes(home)
               if pid != new_trainer and ppid != new_trainer]
    assert len(orphans) == ctx.data["orphans"] and new_trainer in trainers
    sh("kill", *orphans)
    for label in [l for l in ctx.procs if l.startswith(ctx.data["old_run"] + "/")]:
        gone(ctx.process(label))
    assert finish(ctx) == []


@pytest.mark.parametrize("wrong", ["pkill", "new-run", "some-orphans"])
def test_orphan_workers_wrong_fixes(home, wrong):
    _, ctx = engine.start("orphan-workers", 5)
    old = [l for l in ctx.procs if l.startswith(ctx.data["old_run"] + "/")]
    if wrong == "pkill":  # every loader on the box, by command line
        subprocess.run(["pkill", "-f", f"{home}/scenario/runs/.* --workers"], check=True)
        victims = old + [l for l in ctx.procs if l.startswith(ctx.data["new_run"] + "/")]
    elif wrong == "new-run":
        sh("kill", ctx.pid(ctx.data["new_run"]))
        victims = [ctx.data["new_run"]]
    else:
        sh("kill", ctx.pid(old[0]))
        victims = old[:1]
    for label in victims:
        gone(ctx.process(label))
    assert finish(ctx)
    procs = ours(ctx)
    engine.reset()
    assert_all_gone(procs, ctx.folder)


# ---------------------------------------------------------------- zombies


def zombie_parent(ctx: base.Context) -> int:
    """The parent of the zombies, as `ps -eo pid,ppid,stat` shows it."""
    out = subprocess.run(["ps", "-eo", "pid=,ppid=,stat="], capture_output=True, text=True, check=True).stdout
    zombie_pids = {z.pid for z in ctx.zombies()}
    parents = {int(pp) for p, pp, st in (l.split() for l in out.splitlines()) if st.startswith("Z")
               and int(p) in zombie_pids}
    assert len(parents) == 1
    return parents.pop()


def test_zombies_right_fix(home):
    _, ctx = engine.start("zombies", 4)
    assert any("zombie" in p for p in finish(ctx))
    parent = zombie_parent(ctx)
    assert parent == ctx.pid("parent")
    sh("kill", "-TERM", parent)
    gone(ctx.process("parent"))
    base.wait_for(lambda: not ctx.zombies(), 5, "the keeper to reap")
    assert finish(ctx) == []


@pytest.mark.parametrize("wrong", ["kill-zombies", "kill-9-parent"])
def test_zombies_wrong_fixes(home, wrong):
    _, ctx = engine.start("zombies", 9)
    if wrong == "kill-zombies":
        sh("kill", "-9", *[z.pid for z in ctx.zombies()])
        time.sleep(0.2)
        assert ctx.zombies()  # already dead: nothing happens
    else:
        sh("kill", "-9", ctx.pid("parent"))
        gone(ctx.process("parent"))
        base.wait_for(lambda: not ctx.zombies(), 5, "the keeper to reap")
    problems = finish(ctx)
    assert problems
    if wrong == "kill-9-parent":
        assert any("progress" in p for p in problems)
    procs = ours(ctx)
    engine.reset()
    assert_all_gone(procs, ctx.folder)


# ---------------------------------------------------------------- stalled-run


def pipe_fds(pid: int) -> list[str]:
    fd_dir = Path(f"/proc/{pid}/fd")
    return [str(fd_dir / fd) for fd in os.listdir(fd_dir) if os.readlink(fd_dir / fd).startswith("pipe:")]


def stalled(cause: str) -> base.Context:
    _, ctx = engine.start("stalled-run", seed_for(StalledRun(), cause=cause))
    log = (StalledRun().run_dir(ctx) / "train.log").read_text()
    assert "fault" not in log  # the log does not give the answer
    assert "no cause named" in " ".join(finish(ctx))
    return ctx


def dump_stacks(ctx: base.Context) -> None:
    sh("kill", "-USR1", ctx.pid("run"))
    log = StalledRun().run_dir(ctx) / "train.log"
    base.wait_for(lambda: re.search(r"(Current thread|Thread) 0x", log.read_text()), 10, "the stack dump")


def test_stalled_stopped_right_fix(home):
    ctx = stalled("stopped")
    assert psutil.Process(ctx.pid("run")).status() == psutil.STATUS_STOPPED
    for sig in ("-USR1", "-TERM", "-CONT"):
        sh("kill", sig, ctx.pid("run"))
    gone(ctx.process("run"))
    base.wait_for(lambda: ctx.exit_code("run") is not None, 5, "the keeper to reap the run")
    assert ctx.exit_code("run") == 0  # a clean stop, not a kill
    assert finish(ctx, cause="stopped") == []


def test_stalled_pipe_right_fix(home):
    ctx = stalled("pipe")
    dump_stacks(ctx)
    sh("kill", "-TERM", ctx.pid("run"))
    time.sleep(0.3)
    assert ctx.process("run") is not None  # SIGTERM alone: recorded, never acted on
    assert any("still there" in p for p in finish(ctx, cause="pipe"))
    with open(pipe_fds(ctx.pid("run"))[0], "wb") as pipe:
        pipe.write(b"x")
    gone(ctx.process("run"))
    assert finish(ctx, cause="pipe") == []


def test_stalled_deadlock_right_fix(home):
    ctx = stalled("deadlock")
    dump_stacks(ctx)
    sh("kill", "-9", ctx.pid("run"))
    gone(ctx.process("run"))
    assert finish(ctx, cause="deadlock") == []


@pytest.mark.parametrize("cause,wrong", [("stopped", "kill-9"), ("stopped", "cont-only"), ("pipe", "kill-9"),
                                         ("deadlock", "wrong-cause"), ("deadlock", "no-evidence"),
                                         ("deadlock", "delete-checkpoints")])
def test_stalled_wrong_fixes(home, cause, wrong):
    ctx = stalled(cause)
    named = cause
    if wrong == "kill-9":
        dump_stacks(ctx) if cause == "pipe" else None
        sh("kill", "-9", ctx.pid("run"))
        gone(ctx.process("run"))
    elif wrong == "cont-only":
        sh("kill", "-USR1", ctx.pid("run"))
        sh("kill", "-CONT", ctx.pid("run"))
    else:
        if wrong != "no-evidence":
            dump_stacks(ctx)
        if wrong == "delete-checkpoints":
            for path in (StalledRun().run_dir(ctx) / "checkpoints").iterdir():
                path.unlink()
        if wrong == "wrong-cause":
            named = "pipe"
        sh("kill", "-9", ctx.pid("run"))
        gone(ctx.process("run"))
    problems = finish(ctx, cause=named)
    assert problems
    expected = {"kill-9": "work was thrown away", "cont-only": "still there", "wrong-cause": "not why",
                "no-evidence": "no evidence", "delete-checkpoints": "missing"}[wrong]
    assert any(expected in p for p in problems), problems
    procs = ours(ctx)
    engine.reset()
    assert_all_gone(procs, ctx.folder)


def test_give_up_shows_the_fix_and_resets(home, capsys):
    _, ctx = engine.start("zombies", 2)
    procs = ours(ctx)
    assert cli.main(cli.parse(["give-up"])) == 0
    assert f"kill -TERM {ctx.pid('parent')}" in capsys.readouterr().out
    assert_all_gone(procs, ctx.folder)
    assert engine.results()[-1]["outcome"] == "gave-up"


# ---------------------------------------------------------------- cpu-limit


def limited(mechanism: str) -> base.Context:
    from labkit.scenarios.cpu_limit import CpuLimit

    _, ctx = engine.start("cpu-limit", seed_for(CpuLimit(), mechanism=mechanism))
    if mechanism == "cgroup":
        quota = Path(ctx.cgroups[0]) / "cpu.cfs_quota_us"
        assert quota.read_text().strip() == "10000"
        assert str(ctx.pid("job")) in (Path(ctx.cgroups[0]) / "cgroup.procs").read_text().split()
    return ctx


def test_cpu_limit_cgroup_right_fix(home):
    ctx = limited("cgroup")
    folder = Path(ctx.cgroups[0])
    assert "held to 10% of a core" in " ".join(finish(ctx))
    (folder / "cpu.cfs_quota_us").write_text("-1\n")  # echo -1 > .../cpu.cfs_quota_us
    assert finish(ctx) == []
    assert not folder.exists()  # reset removed the cgroup


def test_cpu_limit_cpulimit_right_fix(home):
    ctx = limited("cpulimit")
    assert "cpulimit" in " ".join(psutil.Process(ctx.pid("limiter")).cmdline())
    sh("kill", ctx.pid("limiter"))  # SIGTERM: cpulimit continues the job as it exits
    gone(ctx.process("limiter"))
    assert finish(ctx) == []


@pytest.mark.parametrize("mechanism", ["cgroup", "cpulimit"])
def test_cpu_limit_renice_is_wrong(home, mechanism):
    ctx = limited(mechanism)
    folders = [Path(p) for p in ctx.cgroups]
    sh("renice", "-n", "-10", "-p", ctx.pid("job"))
    problems = finish(ctx)
    assert any("held to 10%" in p or "holds the job back" in p for p in problems), problems
    procs = ours(ctx)
    engine.reset()
    assert_all_gone(procs, ctx.folder)
    assert not any(folder.exists() for folder in folders)


def test_cpu_limit_restart_is_wrong(home):
    ctx = limited("cpulimit")
    job = ctx.process("job")
    argv = job.cmdline()
    sh("kill", job.pid)
    gone(job)
    again = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # the same command, anew
    try:
        problems = finish(ctx)
        assert any("is gone" in p for p in problems), problems
    finally:
        again.kill()
        again.wait()


# ---------------------------------------------------------------- torn-checkpoint


def torn(seed: int) -> tuple[base.Context, Path]:
    from labkit.scenarios.torn_checkpoint import TornCheckpoint

    _, ctx = engine.start("torn-checkpoint", seed)
    run_dir = TornCheckpoint().run_dir(ctx)
    assert "not been started again" in " ".join(finish(ctx))
    return ctx, run_dir


def relaunch(run_dir: Path, *extra: str) -> None:
    """Run launch.sh's command again, as the learner would, plus ``extra``."""
    import shlex
    import sys

    argv = shlex.split((run_dir / "launch.sh").read_text().splitlines()[-1])
    subprocess.run([sys.executable, *argv[1:], *extra], check=False, timeout=120, capture_output=True)


@pytest.mark.parametrize("seed", [2, 3, 5])  # truncated, zeroed (size intact), empty
def test_torn_checkpoint_right_fix(home, seed):
    ctx, run_dir = torn(seed)
    relaunch(run_dir, "--resume")
    assert "skipped ckpt" in (run_dir / "train.log").read_text()
    assert finish(ctx) == []


@pytest.mark.parametrize("wrong", ["wipe", "no-resume", "older"])
def test_torn_checkpoint_wrong_fixes(home, wrong):
    ctx, run_dir = torn(4)
    files = sorted((run_dir / "checkpoints").iterdir())
    if wrong == "wipe":
        for path in files:
            path.unlink()
    elif wrong == "older":  # the torn file and the newest intact one
        files[-1].unlink()
        files[-2].unlink()
    relaunch(run_dir, *([] if wrong == "no-resume" else ["--resume"]))
    assert (run_dir / "final.json").exists()  # the run finished, but redid work
    problems = finish(ctx)
    assert any(("step 0" if wrong != "older" else "older") in p for p in problems), problems
    engine.reset()
    assert not ctx.folder.exists()


# ---------------------------------------------------------------- systemd: restart-loop, unit-limits, boot-order

SYSTEMD_UNAVAILABLE = os.environ.get("LABKIT_SYSTEMD_UNAVAILABLE")
needs_systemd = pytest.mark.skipif(bool(SYSTEMD_UNAVAILABLE), reason=f"no systemd user manager: {SYSTEMD_UNAVAILABLE}")


def systemctl(*args: str) -> subprocess.CompletedProcess:
    """`systemctl --user ARGS` as the learner types it (against the test run's manager)."""
    from labkit.systemd.manager import user_environment

    return subprocess.run(["systemctl", "--user", *args], capture_output=True, text=True, timeout=60,
                          env=user_environment())


def unit_file(name: str) -> Path:
    from labkit.scenarios import _units

    return _units.unit_dir() / name


def edit(path: Path, old: str, new: str) -> None:
    """Edit a unit file as `sed -i` would; the old text must be there."""
    text = path.read_text()
    assert re.search(old, text, re.M), (old, text)
    path.write_text(re.sub(old, new, text, flags=re.M))


def assert_units_gone(ctx: base.Context, *units: str) -> None:
    for unit in units:
        assert not unit_file(unit).exists()
        shown = systemctl("show", "-p", "LoadState,ActiveState", unit).stdout
        assert "LoadState=not-found" in shown and "ActiveState=inactive" in shown, shown
    assert not ctx.folder.exists()


def test_list_skips_the_systemd_and_tmux_scenarios_without_them(home, monkeypatch, capsys):
    monkeypatch.setattr(engine, "capabilities", lambda: {"systemctl-user": (False, "systemd is not PID 1"),
                                                         "tmux": (False, "not found on PATH")})
    assert cli.main(cli.parse(["list"])) == 0
    lines = {l.split()[0]: l for l in capsys.readouterr().out.splitlines()}
    for name in ("restart-loop", "unit-limits", "boot-order"):
        assert "skipped: no systemctl-user (systemd is not PID 1)" in lines[name]
    assert "skipped: no tmux (not found on PATH)" in lines["tmux-move"]
    assert "skipped" not in lines["logout"]
    assert cli.main(cli.parse(["start", "tmux-move"])) == 1
    assert "cannot run here: no tmux" in capsys.readouterr().err
    assert cli.main(cli.parse(["start", "boot-order"])) == 1
    assert "cannot run here: no systemctl-user" in capsys.readouterr().err
    assert not (home / "scenario").exists()


@needs_systemd
@pytest.mark.parametrize("fix", ["right", "stop-only", "restart-sec", "restart-no"])
def test_restart_loop(home, fix):
    _, ctx = engine.start("restart-loop", 3 if fix == "right" else 8)
    unit, path = ctx.data["unit"], unit_file(ctx.data["unit"])
    assert "SubState=auto-restart" in systemctl("show", "-p", "SubState", unit).stdout
    assert any("for ever" in p for p in finish(ctx))
    if fix == "stop-only":
        assert systemctl("stop", unit).returncode == 0
    elif fix == "restart-sec":
        edit(path, r"^RestartSec=.*", "RestartSec=10s")
    elif fix == "restart-no":
        edit(path, r"^Restart=.*", "Restart=no")
    else:  # a short RestartSec= and a wide window: 3-5 rounds of ~0.5 s fit in 30 s
        edit(path, r"^StartLimitIntervalSec=.*", "StartLimitIntervalSec=30s")
        edit(path, r"^RestartSec=.*", "RestartSec=200ms")
    if fix != "stop-only":
        assert any("changed on disk" in p for p in finish(ctx))
        assert systemctl("daemon-reload").returncode == 0
        systemctl("restart", unit)
    problems = finish(ctx)
    if fix == "right":
        assert problems == []
        assert_units_gone(ctx, unit)
        return
    expected = {"stop-only": "for ever", "restart-sec": "for ever", "restart-no": "no longer restarts"}[fix]
    assert any(expected in p for p in problems), problems
    engine.reset()
    assert_units_gone(ctx, unit)


@needs_systemd
@pytest.mark.parametrize("fix", ["right", "delete", "comment-out", "set-property"])
def test_unit_limits(home, fix):
    _, ctx = engine.start("unit-limits", 4)
    unit, path = ctx.data["unit"], unit_file(ctx.data["unit"])
    shown = systemctl("show", "-p", "CPUQuotaPerSecUSec,MemoryMax,TasksMax", unit).stdout
    assert "CPUQuotaPerSecUSec=infinity" in shown and "MemoryMax=infinity" in shown
    assert len(finish(ctx)) == 3
    if fix == "right":  # each note on its own line
        edit(path, r"^((?:CPUQuota|MemoryMax|TasksMax)=\S+)\s+(#.*)$", r"\2\n\1")
    elif fix == "delete":
        edit(path, r"^(CPUQuota|MemoryMax|TasksMax)=.*\n", "")
    elif fix == "comment-out":
        edit(path, r"^((?:CPUQuota|MemoryMax|TasksMax)=.*)$", r"# \1")
    else:  # the right values, on the command line only
        d = ctx.data
        assert systemctl("set-property", "--runtime", unit, f"CPUQuota={d['cpu_percent']}%",
                         f"MemoryMax={d['memory']}", f"TasksMax={d['tasks']}").returncode == 0
        assert "infinity" not in systemctl("show", "-p", "CPUQuotaPerSecUSec,MemoryMax", unit).stdout
        problems = finish(ctx)
        assert len(problems) == 1 and "set-property" in problems[0], problems
        control = [p for p in systemctl("show", "-p", "DropInPaths", unit).stdout.split("=", 1)[1].split()]
        assert control and all(Path(p).exists() for p in control)
        engine.reset()
        assert_units_gone(ctx, unit)
        assert not any(Path(p).exists() for p in control)
        return
    assert any("changed on disk" in p for p in finish(ctx))
    assert systemctl("daemon-reload").returncode == 0
    assert systemctl("restart", unit).returncode == 0
    problems = finish(ctx)
    if fix == "right":
        assert problems == []
    else:
        assert len(problems) == 3 and all("does not hold" in p for p in problems), problems
        engine.reset()
    assert_units_gone(ctx, unit)


@needs_systemd
@pytest.mark.parametrize("fix", ["right", "restart-by-hand", "wants-only", "sleep"])
def test_boot_order(home, fix):
    from labkit.scenarios.boot_order import BootOrder

    _, ctx = engine.start("boot-order", seed_for(BootOrder(), broken="none"))
    d = ctx.data
    api, model, path = d["api_unit"], d["model_unit"], unit_file(d["api_unit"])
    assert "ActiveState=failed" in systemctl("show", "-p", "ActiveState", api).stdout
    if fix == "restart-by-hand":
        assert systemctl("restart", api).returncode == 0  # the model server runs by now: it works, for now
    elif fix == "sleep":
        edit(path, r"^\[Service\]$", f"[Service]\nExecStartPre=/bin/sleep {d['warmup_s'] + 1}")
    else:
        deps = f"Wants={model}\n" + (f"After={model}\n" if fix == "right" else "")
        edit(path, r"^\[Unit\]$", f"[Unit]\n{deps}")
    if fix != "restart-by-hand":
        assert systemctl("daemon-reload").returncode == 0
    problems = finish(ctx)
    if fix == "right":
        assert problems == []
    else:
        expected = "fixed time" if fix == "sleep" else "simulated boot"
        assert any(expected in p for p in problems), problems
        engine.reset()
    assert_units_gone(ctx, api, model)


# ---------------------------------------------------------------- disk-full


def disk_full(seed: int) -> tuple[base.Context, Path]:
    from labkit.scenarios.disk_full import DiskFull

    _, ctx = engine.start("disk-full", seed)
    run_dir = DiskFull().run_dir(ctx)
    assert "No space left on device" in (run_dir / "train.log").read_text()
    df = subprocess.run(["df", "--output=avail", str(run_dir)], capture_output=True, text=True, check=True).stdout
    assert int(df.split()[-1]) < 200  # KiB: not room for another checkpoint
    assert "not been started again" in " ".join(finish(ctx))
    return ctx, run_dir


def rerun(ctx: base.Context, *extra: str, keep: str | None = None) -> None:
    """launch.sh's command again, as the learner would, with ``--keep`` changed and ``extra`` added."""
    import shlex
    import sys

    argv = shlex.split((ctx.folder / "launch.sh").read_text().splitlines()[-1])[1:]
    if keep is not None:
        argv[argv.index("--keep") + 1] = keep
    subprocess.run([sys.executable, *argv, *extra], check=False, timeout=120, capture_output=True)


def test_disk_full_right_fix(home):
    ctx, run_dir = disk_full(1)
    files = sorted((run_dir / "checkpoints").glob("ckpt-*.lkc"))
    for path in files[:-2]:  # ls ckpt-*.lkc | head -n -2 | xargs rm
        path.unlink()
    rerun(ctx, "--resume", keep="3")
    assert finish(ctx) == []
    assert "labkit-scenario" not in Path("/proc/self/mounts").read_text()


@pytest.mark.parametrize("wrong", ["wipe", "newest", "old-keep"])
def test_disk_full_wrong_fixes(home, wrong):
    ctx, run_dir = disk_full(2)
    files = sorted((run_dir / "checkpoints").glob("ckpt-*.lkc"))
    if wrong == "wipe":
        for path in files:
            path.unlink()
    elif wrong == "newest":  # frees room, but from the wrong end
        for path in files[-3:]:
            path.unlink()
    else:  # room for a few saves, the same --keep: it fills again
        for path in files[:-2]:
            path.unlink()
    rerun(ctx, "--resume", keep=None if wrong == "old-keep" else "3")
    problems = finish(ctx)
    expected = {"wipe": "step 0", "newest": "older", "old-keep": "filled up again"}[wrong]
    assert any(expected in p for p in problems), problems
    mount = str(ctx.folder / "scratch")
    engine.reset()
    assert not ctx.folder.exists() and mount not in Path("/proc/self/mounts").read_text()


def test_disk_full_is_refused_without_root(home, monkeypatch, capsys):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert cli.main(cli.parse(["list"])) == 0
    assert "skipped: not root" in next(l for l in capsys.readouterr().out.splitlines() if l.startswith("disk-full"))
    assert cli.main(cli.parse(["start", "disk-full"])) == 1
    assert "cannot run here: not root" in capsys.readouterr().err
    assert not (home / "scenario").exists()


# ---------------------------------------------------------------- tmux-move


@pytest.fixture
def tmux_socket():
    """A tmux socket of this test's own; its server is killed at the end."""
    name = f"labkit-scn-test-{os.getpid()}"
    yield name
    subprocess.run(["tmux", "-L", name, "kill-server"], capture_output=True, timeout=10)


def moved(ctx: base.Context, how: str, socket: str) -> None:
    """Stop the run with SIGTERM (it saves), then start it again ``how``."""
    import shlex
    import sys

    from labkit.scenarios.tmux_move import TmuxMove

    run_dir = TmuxMove().run_dir(ctx)
    sh("kill", "-TERM", ctx.pid("run"))
    base.wait_for(lambda: ctx.exit_code("run") is not None, 20, "the run to stop")
    assert ctx.exit_code("run") == 0 and "stopped cleanly on SIGTERM" in (run_dir / "train.log").read_text()
    command = shlex.split((run_dir / "launch.sh").read_text().splitlines()[-1])
    command = shlex.join([sys.executable, *command[1:]] + ([] if how == "tmux-fresh" else ["--resume"]))
    if how == "nohup":
        sh("sh", "-c", f"nohup {command} > /dev/null 2>&1 &")
    else:
        sh("tmux", "-L", socket, "new-session", "-d", "-s", ctx.data["session"], command)
    base.wait_for(lambda: (run_dir / "train.log").read_text().count("] start: ") == 2, 20, "the new start")
    time.sleep(0.3)


def test_tmux_move_right_fix(home, tmux_socket):
    from labkit.scenarios import _runs
    from labkit.scenarios.tmux_move import TmuxMove

    _, ctx = engine.start("tmux-move", 5)
    assert "outside tmux" in " ".join(finish(ctx))
    moved(ctx, "tmux", tmux_socket)
    [trainer] = _runs.trainers(TmuxMove().run_dir(ctx))
    assert finish(ctx) == []
    gone(trainer)
    panes = subprocess.run(["tmux", "-L", tmux_socket, "list-sessions"], capture_output=True, text=True)
    assert ctx.data["session"] not in panes.stdout  # reset closed the learner's session too


@pytest.mark.parametrize("wrong", ["tmux-fresh", "nohup"])
def test_tmux_move_wrong_fixes(home, tmux_socket, wrong):
    from labkit.scenarios import _runs
    from labkit.scenarios.tmux_move import TmuxMove

    _, ctx = engine.start("tmux-move", 6)
    moved(ctx, wrong, tmux_socket)
    problems = finish(ctx)
    expected = {"tmux-fresh": "step 0", "nohup": "not inside a tmux session"}[wrong]
    assert any(expected in p for p in problems), problems
    strays = _runs.trainers(TmuxMove().run_dir(ctx))
    assert strays
    engine.reset()
    for proc in strays:
        gone(proc)
    assert not ctx.folder.exists()


# ---------------------------------------------------------------- logout


def logged_in(seed: int) -> tuple[base.Context, Path, str]:
    """Start the scenario; the run is a job of a login shell on a terminal. Returns (ctx, run dir, command)."""
    import shlex
    import sys

    from labkit.scenarios.logout import Logout

    _, ctx = engine.start("logout", seed)
    run_dir = Logout().run_dir(ctx)
    run = psutil.Process(ctx.pid("run"))
    shell = psutil.Process(ctx.pid("shell"))
    tty = [int(Path(f"/proc/{p.pid}/stat").read_text().rsplit(")", 1)[1].split()[4]) for p in (run, shell)]
    assert tty[0] != 0 and tty[0] == tty[1]  # tty_nr: the login's terminal is the run's controlling one
    assert os.getsid(run.pid) == shell.pid  # in the login shell's session
    command = shlex.split((run_dir / "launch.sh").read_text().splitlines()[-1])
    return ctx, run_dir, shlex.join([sys.executable, *command[1:]])


def stop_cleanly(ctx: base.Context, run_dir: Path) -> None:
    run = ctx.process("run")
    sh("kill", "-TERM", ctx.pid("run"))
    gone(run, 20)
    assert "stopped cleanly on SIGTERM" in (run_dir / "train.log").read_text()


def test_logout_doing_nothing_loses_the_run(home):
    ctx, run_dir, _ = logged_in(3)
    problems = finish(ctx)  # the check logs out: the job gets SIGHUP from bash
    assert any("not running after the logout" in p and "SIGHUP" in p for p in problems), problems
    assert ctx.process("shell") is None and ctx.process("run") is None
    engine.reset()
    assert not ctx.folder.exists()


@pytest.fixture
def terminal():
    """The learner's own terminal: a login shell on a pty (labkit's `login` actor); typed(line) types one
    line into a new one. Each is hung up at the end (its shell exits; what it started is the test's)."""
    import sys

    opened: list[subprocess.Popen] = []

    def typed(line: str) -> None:
        opened.append(subprocess.Popen([sys.executable, "-m", "labkit.scenarios._actors", "login", "--line", line],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))

    yield typed
    for login in opened:
        login.send_signal(signal.SIGUSR1)
        login.wait(timeout=30)


@pytest.mark.parametrize("how", ["nohup-in-a-terminal"])  # setsid: no terminal (tty_nr 0), as in from-scratch
def test_logout_right_fix(home, terminal, how):
    from labkit.scenarios import _runs

    ctx, run_dir, command = logged_in(4)
    stop_cleanly(ctx, run_dir)
    if how == "setsid":
        sh("sh", "-c", f"setsid {command} --resume > {run_dir / 'stdout.log'} 2>&1 < /dev/null &")
    else:  # from a terminal of the learner's own: it keeps that terminal, but ignores SIGHUP
        terminal(f"nohup {command} --resume > {run_dir / 'stdout.log'} 2>&1 &")
    base.wait_for(lambda: (run_dir / "train.log").read_text().count("resume: from") == 1, 20, "the resume")
    [trainer] = _runs.trainers(run_dir)
    assert finish(ctx) == []
    gone(trainer)


@pytest.mark.parametrize("wrong", ["from-scratch", "plain-background"])
def test_logout_wrong_fixes(home, terminal, wrong):
    from labkit.scenarios import _runs

    ctx, run_dir, command = logged_in(5)
    stop_cleanly(ctx, run_dir)
    if wrong == "from-scratch":
        sh("sh", "-c", f"nohup {command} > {run_dir / 'stdout.log'} 2>&1 &")
    else:  # --resume, but as a plain job of the learner's own terminal
        terminal(f"{command} --resume > {run_dir / 'stdout.log'} 2>&1 &")
    base.wait_for(lambda: (run_dir / "train.log").read_text().count("] start: ") == 2 and
                  _runs.trainers(run_dir), 20, "the new start")
    problems = finish(ctx)
    expected = {"from-scratch": "step 0", "plain-background": "depends on a terminal"}[wrong]
    assert any(expected in p for p in problems), problems
    strays = _runs.trainers(run_dir)
    engine.reset()
    for proc in strays:
        gone(proc)
    assert not ctx.folder.exists()
