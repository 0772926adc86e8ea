"""CPU and memory limits on real processes: each mechanism holds, and says what it is."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import time
from typing import Callable

import psutil
import pytest

from labkit import cgroups, limits
from labkit.errors import BadArgument
from labkit.limits import LimitSpec, limit_pid, run_limited

BUSY = [sys.executable, "-c", "while True: pass"]
CAN = limits.available()
CPU_MECHANISMS = [m for m, key in (("cgroup", "cgroup-cpu"), ("throttle", "throttle"), ("cpulimit", "cpulimit"))
                  if CAN[key] is None]


def cpu_share(pid: int, seconds: float) -> float:
    """Percent of one CPU the process used over ``seconds`` (from the kernel's counters)."""
    proc = psutil.Process(pid)
    before, started = sum(proc.cpu_times()[:2]), time.monotonic()
    time.sleep(seconds)
    return (sum(proc.cpu_times()[:2]) - before) / (time.monotonic() - started) * 100


def tree_share(pid: int, seconds: float) -> float:
    """Percent of one CPU the process and all its descendants used over ``seconds``."""
    root = psutil.Process(pid)
    members = [root, *root.children(recursive=True)]

    def used() -> float:
        total = 0.0
        for member in members:
            try:
                total += sum(member.cpu_times()[:2])
            except psutil.Error:
                pass
        return total

    before, started = used(), time.monotonic()
    time.sleep(seconds)
    return (used() - before) / (time.monotonic() - started) * 100


def witnessed(measure: Callable[[], float]) -> tuple[float, float]:
    """(what ``measure`` returns, the share a free busy loop got over the same window).

    The free loop runs in a session of its own beside the measured process: load on a shared
    machine comes and goes within seconds, so only a witness of the same window says whether the
    machine had room then.
    """
    witness = subprocess.Popen(BUSY, start_new_session=True)
    try:
        time.sleep(0.2)
        proc = psutil.Process(witness.pid)
        before, started = sum(proc.cpu_times()[:2]), time.monotonic()
        share = measure()
        free = (sum(proc.cpu_times()[:2]) - before) / (time.monotonic() - started) * 100
    finally:
        witness.kill()
        witness.wait()
    return share, free


def assert_near(share: float, target: float, tolerance: float, what: str, free: float) -> None:
    """``share`` within ``tolerance`` of ``target``; too low counts only where the machine had room
    (``free``: what a free busy loop got over the same window, more than the target), else the check
    is skipped, saying so. Too high always fails."""
    if share < target - tolerance and free < target + tolerance:
        pytest.skip(f"the machine is too loaded to check {what}: a free busy loop got {free:.0f}% of a CPU "
                    f"(load average {os.getloadavg()[0]:.1f}); measured {share:.0f}%")
    assert abs(share - target) <= tolerance, f"{what}: {share:.1f}% of a CPU for {target}% (a free loop got {free:.0f}%)"


# a parent and two busy children, all busy: the shape of a trainer with data-loader workers
TREE = [sys.executable, "-c", "import subprocess, sys\n"
        "kids = [subprocess.Popen([sys.executable, '-c', 'while True: pass']) for _ in range(2)]\n"
        "while True: pass"]


def leftover_cgroups() -> list[str]:
    found = []
    for folder in cgroups.own_folders(("cpu", "memory")).values():
        found += [p.name for p in folder.glob(f"{limits.PREFIX}{os.getpid()}-*")]
    return found


@pytest.mark.parametrize("mechanism", CPU_MECHANISMS)
def test_a_30_percent_quota_holds_a_busy_loop(mechanism):
    tolerance = 5 if mechanism == "cgroup" else 8
    with run_limited(BUSY, LimitSpec(cpu_quota=30, mechanism=mechanism)) as run:
        time.sleep(0.5)  # let a throttle settle
        share, free = witnessed(lambda: cpu_share(run.pid, 2.5))
        assert_near(share, 30, tolerance, f"a 30% quota under {mechanism}", free)
        assert run.applied[0].limit == "cpu quota"
    assert not leftover_cgroups()


@pytest.mark.skipif(CAN["cgroup-memory"] is not None, reason=f"no memory cgroup here: {CAN['cgroup-memory']}")
def test_a_200m_cgroup_limit_oom_kills_a_600mb_allocation_and_says_so():
    allocate = [sys.executable, "-c", "a = bytearray(600 * 2**20)\nfor i in range(0, len(a), 4096): a[i] = 1"]
    run = run_limited(allocate, LimitSpec(memory_max=200 * 2**20), stdout=subprocess.DEVNULL)
    assert run.wait(60) == 137 and run.oom_killed
    assert run.poll() == 137 and run.oom_killed  # asking again keeps the answer
    assert "OOM killer" in run.how_it_ended() and "200M" in run.how_it_ended()
    assert "cgroup" in str(run.applied[0])
    assert not leftover_cgroups()


def test_an_address_space_rlimit_makes_python_raise_memory_error_instead():
    allocate = [sys.executable, "-c", "try:\n    a = bytearray(600 * 2**20)\nexcept MemoryError:\n    raise SystemExit(42)"]
    run = run_limited(allocate, LimitSpec(memory_max=200 * 2**20, mechanism="rlimit"))
    assert run.wait(60) == 42 and not run.oom_killed
    assert "MemoryError" in run.applied[0].detail


def test_nice_affinity_and_rlimits_are_inherited_by_children():
    probe = ("import os, resource, subprocess, sys\n"
             "code = 'import os, resource; print(os.getpriority(os.PRIO_PROCESS, 0), sorted(os.sched_getaffinity(0)), "
             "resource.getrlimit(resource.RLIMIT_NOFILE)[0])'\n"
             "print(subprocess.run([sys.executable, '-c', code], capture_output=True, text=True).stdout.strip())")
    run = run_limited([sys.executable, "-c", probe], LimitSpec(nice=7, cpus=[0], rlimits={"nofile": 128}),
                      stdout=subprocess.PIPE, text=True)
    out, _ = run.popen.communicate(timeout=30)
    run.wait()
    assert out.strip() == "7 [0] 128"  # what the grandchild got
    assert {a.mechanism for a in run.applied} >= {"setpriority(2)", "sched_setaffinity(2)"}


def test_limit_pid_renices_every_thread_and_sets_rlimits_of_a_running_process(spawn):
    threads = [sys.executable, "-c", "import threading, time\n"
               "for _ in range(3): threading.Thread(target=time.sleep, args=(60,), daemon=True).start()\n"
               "time.sleep(60)"]
    proc = spawn.popen(threads)
    deadline = time.monotonic() + 10
    while len(os.listdir(f"/proc/{proc.pid}/task")) < 4 and time.monotonic() < deadline:
        time.sleep(0.02)
    applied, helpers = limit_pid(proc.pid, LimitSpec(nice=12, rlimits={"nofile": 64}))
    assert not helpers and [a.limit for a in applied] == ["nice", "rlimit nofile"]
    for tid in os.listdir(f"/proc/{proc.pid}/task"):  # renice -p alone would change only the first
        assert int(open(f"/proc/{proc.pid}/task/{tid}/stat").read().rsplit(")", 1)[1].split()[16]) == 12
    assert psutil.Process(proc.pid).rlimit(psutil.RLIMIT_NOFILE) == (64, 64)


@pytest.mark.skipif(CAN["cgroup-cpu"] is not None, reason=f"no cpu cgroup here: {CAN['cgroup-cpu']}")
def test_limit_pid_moves_a_running_busy_loop_into_a_quota(spawn):
    proc = spawn.popen(BUSY)
    time.sleep(0.3)
    applied, helpers = limit_pid(proc.pid, LimitSpec(cpu_quota=20))
    try:
        share, free = witnessed(lambda: cpu_share(proc.pid, 2.0))
        assert_near(share, 20, 5, "a 20% quota on a running process", free)
        assert "cgroup" in applied[0].mechanism
    finally:
        proc.kill()
        proc.wait()
        for helper in helpers:
            helper.stop()
    deadline = time.monotonic() + 3
    while leftover_cgroups() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not leftover_cgroups()


@pytest.mark.parametrize("spec, words", [
    (LimitSpec(cpu_quota=30, mechanism="rlimit"), "cannot enforce a cpu quota"),
    (LimitSpec(memory_max=2**30, mechanism="throttle"), "does not limit its memory"),
    (LimitSpec(nice=30), "-20 to 19"),
    (LimitSpec(cpu_quota=0), "above 0"),
    (LimitSpec(memory_max=1000), "at least 1M"),
    (LimitSpec(cpus=[999]), "not a subset"),
    (LimitSpec(memory_high=2**30, mechanism="rlimit"), "needs a cgroup"),
])
def test_bad_limits_are_refused_before_anything_starts(spec, words):
    with pytest.raises(BadArgument, match=words):
        run_limited(["true"], spec)


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "labkit", "limit", *args], capture_output=True, text=True, timeout=60)


def test_the_command_reports_each_mechanism_and_exits_with_the_commands_code():
    done = cli("--nice", "5", "--nofile", "100", "--", sys.executable, "-c", "raise SystemExit(3)")
    assert done.returncode == 3
    assert "labkit limit: nice 5: setpriority(2)" in done.stderr and "rlimit nofile 100" in done.stderr
    for args, words in ((["--cpu-quota", "30", "--mechanism", "rlimit", "--", "true"], "cannot enforce"),
                        (["--memory-max", "lots", "--", "true"], "bad size"),
                        (["--cpu-quota", "30"], "no command"),
                        (["--", "/no/such/program"], "command not found")):
        bad = cli(*args)
        assert bad.returncode == 2 and len(bad.stderr.splitlines()) == 1 and words in bad.stderr, bad.stderr


def test_cgroup_version_is_detected():
    assert limits.cgroup_version() in ("v1", "v2", "hybrid", "none")
    assert set(CAN) == {"cgroup-cpu", "cgroup-memory", "scope", "rlimit", "throttle", "cpulimit"}


def test_doctor_and_limits_agree_about_this_machine():
    from labkit import doctor

    report, can = doctor.check(), limits.available()
    assert report.get("cgroup").detail.split(":")[0] == limits.cgroup_version()
    for name in ("cgroup-cpu", "cgroup-memory"):
        assert report.get(name).ok == (can[name] is None), (name, report.get(name).detail, can[name])
        if can[name] is not None:
            assert report.get(name).detail in can[name]  # the same reason, word for word


@pytest.mark.parametrize("offered, proven", [("cpu memory", {"cpu.max"}), ("memory", {"memory.max"}), ("", set())])
def test_doctor_and_limits_agree_on_a_played_machine(monkeypatch, tmp_path, offered, proven):
    """Both take their verdict from one reading: a v2 machine whose children get only some limits."""
    from labkit import doctor
    from labkit._linux import cgroup as _cgroup

    (tmp_path / "cgroup.controllers").write_text(offered)
    monkeypatch.setattr(doctor, "_cgroup_layout", lambda: _cgroup.Layout("v2", str(tmp_path), {}))
    monkeypatch.setattr(_cgroup, "layout", lambda proc=None: _cgroup.Layout("v2", str(tmp_path), {}))
    monkeypatch.setattr(_cgroup, "probe_child", lambda parent, needed, prefix="": (needed in proven, f"probed {needed}"))
    can = limits.available()
    for ctrl in ("cpu", "memory"):
        ok = doctor._cgroup_controller(ctrl).ok
        assert ok == (can[f"cgroup-{ctrl}"] is None) == (f"{ctrl}.max" in proven), ctrl


def test_a_systemd_scope_wraps_the_command_with_the_same_limits():
    from labkit.limits.scope import scope_command

    argv = scope_command(["python3", "train.py"], LimitSpec(cpu_quota=30, memory_max=200 * 2**20), cpu=True,
                         memory=True, unit="labkit-limit-1-2.scope")
    assert argv == ["systemd-run", "--user", "--scope", "--quiet", "--unit=labkit-limit-1-2.scope",
                    "-p", "CPUQuota=30%", "-p", "MemoryMax=209715200", "--", "python3", "train.py"]
    if CAN["scope"] is not None:
        with pytest.raises(BadArgument, match="not available here"):
            run_limited(["true"], LimitSpec(cpu_quota=30, mechanism="scope"))


def test_a_running_process_is_never_put_in_a_scope(spawn):
    proc = spawn.popen(["sleep", "30"])
    with pytest.raises(BadArgument, match="scope holds only a command it starts"):
        limit_pid(proc.pid, LimitSpec(cpu_quota=30, mechanism="scope"))


@pytest.mark.skipif(CAN["cpulimit"] is not None, reason=f"{CAN['cpulimit']}")
def test_cpulimit_cannot_hold_a_tree_so_the_throttle_takes_over_and_says_so(capsys):
    """cpulimit limits each process on its own (-m: 172% of a core for three at 40); labkit hands over."""
    run = run_limited(TREE, LimitSpec(cpu_quota=40, mechanism="cpulimit"), start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while len(psutil.Process(run.pid).children(recursive=True)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)  # let the throttle settle
        share, free = witnessed(lambda: tree_share(run.pid, 3.0))
        assert_near(share, 40, 8, "a tree's 40% quota after cpulimit handed it over", free)
        said = capsys.readouterr().err
        # the handover happens at the first child seen: on a loaded machine the second may come later
        assert re.search(r"cpulimit cannot hold pid \d+'s [12] child process", said) and "--mechanism throttle" in said
        assert len(said.strip().splitlines()) == 1
        assert "throttle" in run.applied[0].mechanism and "cpulimit" in run.applied[0].mechanism
    finally:
        os.killpg(run.pid, 9)
        run.wait(10)


@pytest.mark.skipif(CAN["cpulimit"] is not None, reason=f"{CAN['cpulimit']}")
def test_cpulimit_alone_holds_one_process_and_is_named():
    with run_limited(BUSY, LimitSpec(cpu_quota=40, mechanism="cpulimit")) as run:
        time.sleep(0.5)
        assert run.applied[0].mechanism.startswith("cpulimit")
        assert run.mechanisms[0].watched.handed_over is None
        assert run.verify()[run.mechanisms[0].describe()]["argv"].endswith(f"-p {run.pid} -l 40 -z")


@pytest.mark.skipif(CAN["cpulimit"] is not None, reason=f"{CAN['cpulimit']}")
def test_cpulimit_on_a_running_process_with_children_is_refused_in_one_line(spawn):
    proc = spawn.popen(TREE)
    deadline = time.monotonic() + 10
    while len(psutil.Process(proc.pid).children()) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    with pytest.raises(BadArgument, match="cpulimit refuses pid .* it limits each process on its own"):
        limit_pid(proc.pid, LimitSpec(cpu_quota=40, mechanism="cpulimit"))
    refused = cli("--pid", str(proc.pid), "--cpu-quota", "40", "--mechanism", "cpulimit")
    assert refused.returncode == 2 and len(refused.stderr.splitlines()) == 1, refused.stderr
    assert "2 child processes" in refused.stderr and "--mechanism throttle or cgroup" in refused.stderr
    assert not [p for p in psutil.process_iter(["name", "cmdline"]) if p.info["name"] == "cpulimit"
                and str(proc.pid) in (p.info["cmdline"] or [])]


def survivors(procs: list[psutil.Process]) -> list[int]:
    """Pids of ``procs`` still running (a zombie has ended)."""
    left = []
    for proc in procs:
        try:
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                left.append(proc.pid)
        except psutil.NoSuchProcess:
            pass
    return left


def started_tree(run, size: int) -> list[psutil.Process]:
    root = psutil.Process(run.pid)
    deadline = time.monotonic() + 10
    while len(root.children(recursive=True)) < size - 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    return [root, *root.children(recursive=True)]


@pytest.mark.parametrize("mechanism", [m for m in ("throttle", "cpulimit") if CAN[m] is None])
def test_stopping_a_throttled_tree_without_a_cgroup_ends_every_process_it_started(mechanism):
    """No cgroup holds these: the stop must find the workers itself (its process group, its tree)."""
    run = run_limited(TREE, LimitSpec(cpu_quota=40, mechanism=mechanism))
    procs = started_tree(run, 3)
    try:
        assert len(procs) == 3 and os.getpgid(procs[1].pid) == run.pid  # a group of its own, by default
        time.sleep(0.5)  # let the throttle stop them at least once
        assert run.stop(grace_s=2) == 128 + 15
        assert survivors(procs) == []
        assert "cgroup" not in run.applied[0].mechanism
    finally:
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        run.wait()


def test_stop_ends_workers_that_ignore_sigterm_after_the_grace():
    stubborn = [sys.executable, "-c", "import signal, subprocess, sys, time\n"
                "code = 'import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)'\n"
                "kids = [subprocess.Popen([sys.executable, '-c', code]) for _ in range(2)]\n"
                "time.sleep(60)"]
    run = run_limited(stubborn, LimitSpec(cpu_quota=50, mechanism="throttle"))
    procs = started_tree(run, 3)
    time.sleep(0.3)  # the workers have set their handlers
    started = time.monotonic()
    assert run.stop(grace_s=0.5) == 128 + 15  # the top process ends on SIGTERM; its workers on SIGKILL
    assert survivors(procs) == [] and time.monotonic() - started < 5


def test_an_ended_command_leaves_no_orphan_behind():
    """The top process exits at once; its worker, re-parented, is still in its group and goes with it."""
    orphaning = [sys.executable, "-c", "import subprocess\nsubprocess.Popen(['sleep', '60'])"]
    run = run_limited(orphaning, LimitSpec(cpu_quota=50, mechanism="throttle"))
    started = time.time()
    assert run.wait(30) == 0
    left = [p for p in psutil.process_iter(["cmdline", "create_time"])
            if p.info["cmdline"] == ["sleep", "60"] and p.info["create_time"] >= started - 1
            and survivors([p]) and os.getpgid(p.pid) == run.pid]
    assert left == []


def test_verify_reads_the_limits_back_from_the_kernel():
    mechanism = "cgroup" if CAN["cgroup-cpu"] is None else "throttle"
    with run_limited(["sleep", "30"], LimitSpec(cpu_quota=30, rlimits={"nofile": 64}, mechanism=mechanism)) as run:
        found = run.verify()
        assert len(found) == 2 and all("\n" not in line for line in found)
        knobs = {knob: value for seen in found.values() for knob, value in seen.items()}
        assert knobs["RLIMIT_NOFILE"] == "64/64"
        if mechanism == "cgroup":
            assert "30000" in (knobs.get("cpu:cpu.cfs_quota_us") or knobs["v2:cpu.max"])
            assert {value for knob, value in knobs.items() if knob.endswith(":member")} == {"true"}
        else:
            assert knobs["running"] == "true"
    assert not leftover_cgroups()


@pytest.mark.parametrize("args, words", [
    (["--nofile", "-3"], "must be 0 or more"),
    (["--nofile", str(2**40)], "fs.nr_open"),
    (["--cpu-quota", "-5"], "above 0"),
    (["--cpu-quota", "0"], "above 0"),
    (["--memory-max", "12Q"], "bad size"),
    (["--memory-max", "lots"], "bad size"),
    (["--cpu-quota", "30", "--for", "5"], "without --pid"),
])
def test_bad_input_is_one_line_and_exit_2_before_anything_starts(args, words, tmp_path):
    marker = tmp_path / "ran"
    done = cli(*args, "--", "touch", str(marker))
    assert done.returncode == 2, done.stderr
    assert len(done.stderr.splitlines()) == 1 and words in done.stderr and "Traceback" not in done.stderr
    assert not marker.exists()


def test_a_limit_the_kernel_refuses_in_the_child_is_one_line_and_exit_1(monkeypatch, capsys):
    """Were fs.nr_open unreadable, setrlimit(2) in the child would refuse it (EPERM, even for root)."""
    from labkit import cli
    from labkit.limits import spec

    monkeypatch.setattr(spec, "nofile_ceiling", lambda: None)
    assert cli.main(["limit", "--nofile", str(2**40), "--", "true"]) == 1
    said = capsys.readouterr().err
    assert len(said.splitlines()) == 1 and "the kernel refused a limit" in said, said


def test_durations_carry_their_unit():
    from labkit.cli import build_parser

    assert build_parser().parse_args(["limit", "--pid", "5", "--for", "2.5"]).hold_for_s == 2.5


def test_every_mechanism_describes_itself_in_one_line():
    from labkit.limits.chooser import mechanisms

    spec = LimitSpec(cpu_quota=30, memory_max=2**30, nice=3)
    for chosen in ({"cpu": "throttle", "memory": "rlimit"}, {"cpu": "cpulimit", "memory": "scope"}):
        for mechanism in mechanisms(spec, chosen):
            line = mechanism.describe()
            assert line and "\n" not in line and len(line) < 160, line
            assert mechanism.applied(), mechanism.name


def test_sigterm_to_labkit_limit_ends_the_whole_throttled_tree():
    cmd = [sys.executable, "-m", "labkit", "limit", "--cpu-quota", "40", "--mechanism", "throttle", "--", *TREE]
    labkit = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    procs: list[psutil.Process] = []
    try:
        deadline = time.monotonic() + 20
        while len(procs) < 4 and time.monotonic() < deadline:  # labkit, the command and its two workers
            time.sleep(0.1)
            procs = [psutil.Process(labkit.pid), *psutil.Process(labkit.pid).children(recursive=True)]
        assert len(procs) == 4
        labkit.terminate()  # what systemd or a shell's kill does: labkit passes it on to the command's group
        _, said = labkit.communicate(timeout=30)
        assert labkit.returncode == 128 + 15, said
        assert survivors(procs) == []
    finally:
        for proc in procs[1:]:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        labkit.kill()
        labkit.communicate()


@pytest.mark.skipif(CAN["scope"] is not None, reason=f"{CAN['scope']}")
def test_a_real_scope_holds_the_command_and_systemd_reports_its_quota():
    with run_limited(["sleep", "30"], LimitSpec(cpu_quota=30, mechanism="scope")) as run:
        assert run.applied[0].mechanism == "systemd-run --user --scope (CPUQuota=)"
        deadline = time.monotonic() + 10
        while (found := run.verify()[run.mechanisms[0].describe()]).get("ActiveState") != "active":
            assert time.monotonic() < deadline, found
            time.sleep(0.1)
        assert found["CPUQuotaPerSecUSec"] == "300ms"
        # systemd-run --scope execs the command (same pid) once the scope exists: on a loaded machine
        # that exec can come just after the scope reports active
        while psutil.Process(run.pid).name() != "sleep":
            assert time.monotonic() < deadline, psutil.Process(run.pid).cmdline()
            time.sleep(0.05)
    assert run.returncode == 128 + 15


@pytest.mark.parametrize("seconds", ["-1", "nan", "inf"])
def test_a_bad_hold_time_is_one_line_and_exit_2(seconds):
    done = cli("--cpu-quota", "30", "--pid", str(os.getpid()), "--for", seconds)
    assert done.returncode == 2 and len(done.stderr.splitlines()) == 1 and "--for" in done.stderr, done.stderr


def test_a_command_that_cannot_be_executed_is_one_line_and_exit_2(tmp_path):
    script = tmp_path / "train.sh"
    script.write_text("#!/bin/sh\necho hi\n")  # no execute bit
    for command in (script, tmp_path):
        done = cli("--nice", "5", "--", str(command))
        assert done.returncode == 2 and len(done.stderr.splitlines()) == 1, done.stderr
        assert "not executable" in done.stderr and "Traceback" not in done.stderr
