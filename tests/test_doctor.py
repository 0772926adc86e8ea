"""Tests for labkit.doctor: what does `labkit doctor` tell a learner about this machine?"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import types

import pytest

from labkit import doctor

EXPECTED_NAMES = [
    "tmux", "screen", "strace", "lsof", "gdb", "py-spy", "cpulimit", "prlimit", "taskset", "stress-ng",
    "systemd-analyze", "nohup", "setsid", "sshd", "systemctl-user", "systemd-pid1", "logout", "cgroup", "cgroup-memory",
    "cgroup-cpu", "ptrace", "grading-sandbox", "gpu",
]
PLATFORM_KEYS = {"python", "os", "kernel_release", "machine", "user", "euid", "is_root", "in_container",
                 "container_evidence"}


@pytest.fixture(scope="module")
def report() -> doctor.Report:
    return doctor.check()


@pytest.fixture
def empty_path(tmp_path, monkeypatch):
    """PATH holds only an empty folder, as on a machine where nothing is installed."""
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    return empty


def test_report_lists_every_capability_in_a_fixed_order(report):
    assert [c.name for c in report.capabilities] == EXPECTED_NAMES == list(doctor.CAPABILITY_NAMES)
    assert {c.category for c in report.capabilities} <= {"tool", "kernel", "gpu"}
    assert report.get("gpu").category == "gpu"
    assert report.get("no-such-thing") is None


def test_every_missing_capability_says_what_to_do(report):
    for cap in report.capabilities:
        assert cap.detail, cap
        if not cap.ok:
            assert cap.hint, cap


def test_json_is_one_object_with_stable_keys(report):
    data = json.loads(json.dumps(report.as_dict()))
    assert set(data) == {"platform", "capabilities"}
    assert PLATFORM_KEYS <= set(data["platform"])
    assert isinstance(data["platform"]["is_root"], bool)
    assert isinstance(data["platform"]["in_container"], bool)
    assert list(data["capabilities"]) == EXPECTED_NAMES
    for entry in data["capabilities"].values():
        assert set(entry) == {"ok", "detail", "hint", "category"}
        assert isinstance(entry["ok"], bool)


def test_tmux_detection_matches_shutil_which(report):
    tmux = report.get("tmux")
    where = shutil.which("tmux")
    assert tmux.ok == (where is not None)
    if where:
        assert where in tmux.detail


def test_a_tool_absent_from_path_is_missing_with_a_hint(empty_path):
    rep = doctor.check()
    tmux = rep.get("tmux")
    assert not tmux.ok
    assert "not found" in tmux.detail
    assert "lesson 02" in tmux.hint
    for name in doctor.TOOL_NAMES:  # only a venv's own bin may still offer pip-installed tools
        assert rep.get(name).ok == (doctor.find_tool(name) is not None)
    assert not rep.get("systemctl-user").ok


def test_a_tool_that_hangs_does_not_hang_doctor(tmp_path, monkeypatch):
    fake = tmp_path / "tmux"
    fake.write_text(f"#!/bin/sh\nexec {shutil.which('sleep')} 30\n")  # exec: the timeout's kill reaches sleep
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    start = time.monotonic()
    rep = doctor.check(timeout_s=0.3)
    assert time.monotonic() - start < 3
    assert rep.get("tmux").ok
    assert rep.get("tmux").detail == f"{fake} (version unknown: no answer within 0.3 s)"


def test_a_tool_that_fails_is_found_without_a_made_up_version(tmp_path, monkeypatch):
    fake = tmp_path / "strace"
    fake.write_text("#!/bin/sh\necho 'line 2: 3.14: not found' >&2\nexit 127\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert doctor.check().get("strace").detail == f"{fake} (version unknown: exit code 127)"


def test_cgroup_probe_leaves_nothing_behind(monkeypatch):
    made, removed = [], []
    real_mkdir, real_rmdir = os.mkdir, os.rmdir

    def mkdir(path, *args, **kwargs):
        real_mkdir(path, *args, **kwargs)
        made.append(os.fspath(path))

    def rmdir(path, *args, **kwargs):
        real_rmdir(path, *args, **kwargs)
        removed.append(os.fspath(path))

    monkeypatch.setattr(os, "mkdir", mkdir)
    monkeypatch.setattr(os, "rmdir", rmdir)
    rep = doctor.check()
    probes = [p for p in made if os.path.basename(p).startswith("labkit-doctor-")]
    assert sorted(probes) == sorted(p for p in removed if p in probes)
    for path in probes:
        assert not os.path.exists(path)
        siblings = os.listdir(os.path.dirname(path))
        assert not [s for s in siblings if s.startswith("labkit-doctor-")]
    assert rep.get("cgroup").detail.split(":")[0] in {"v2", "hybrid", "v1", "none"}
    for name in ("cgroup-memory", "cgroup-cpu"):
        if rep.get(name).ok:  # a usable controller was proven by a real mkdir
            assert probes


HYBRID_MOUNTINFO = """\
22 27 0:21 / /proc rw,relatime - proc proc rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""
HYBRID_CGROUP = "9:name=systemd:/\n4:memory:/process_api/abc\n1:cpu:/\n0::/\n"


@pytest.mark.parametrize("mountinfo, self_cgroup, expected", [
    (HYBRID_MOUNTINFO, HYBRID_CGROUP,
     ("hybrid", "/sys/fs/cgroup/unified",
      {"cpu": "/sys/fs/cgroup/cpu", "memory": "/sys/fs/cgroup/memory/process_api/abc"})),
    ("30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n", "0::/user.slice/session-2.scope\n",
     ("v2", "/sys/fs/cgroup/user.slice/session-2.scope", {})),
    # a container without a cgroup namespace: the mount's root is the host path of our cgroup
    ("50 40 0:31 /docker/f00 /sys/fs/cgroup/cpu,cpuacct ro,nosuid - cgroup cgroup ro,cpu,cpuacct\n",
     "3:cpu,cpuacct:/docker/f00\n",
     ("v1", None, {"cpu": "/sys/fs/cgroup/cpu,cpuacct", "cpuacct": "/sys/fs/cgroup/cpu,cpuacct"})),
    ("22 27 0:21 / /proc rw - proc proc rw\n", "", ("none", None, {})),
])
def test_cgroup_layout_is_read_from_proc(mountinfo, self_cgroup, expected):
    assert doctor._cgroup_layout(mountinfo, self_cgroup) == expected


def test_text_mentions_every_capability_and_the_hints(report):
    text = report.to_text()
    for cap in report.capabilities:
        assert cap.name in text
        if not cap.ok:
            assert cap.hint in text
        mark = "ok" if cap.ok else "missing"
        assert re.search(rf"^  {mark} +{re.escape(cap.name)} ", text, re.M), cap.name


class _FakeNVMLError(Exception):
    pass


def _fake_pynvml(**functions) -> types.ModuleType:
    module = types.ModuleType("pynvml")
    module.nvmlShutdown = lambda: None
    for name, function in functions.items():
        setattr(module, name, function)
    return module


def test_gpu_is_missing_not_an_error_when_nvml_fails(monkeypatch, empty_path):
    def init():
        raise _FakeNVMLError("Driver Not Loaded")

    monkeypatch.setitem(sys.modules, "pynvml", _fake_pynvml(nvmlInit=init))
    gpu = doctor.check().get("gpu")
    assert not gpu.ok
    assert "Driver Not Loaded" in gpu.detail
    assert gpu.hint == "no GPU needed; GPU parts of lesson 06 are skipped"


def test_gpu_names_come_from_nvml(monkeypatch):
    names = [b"NVIDIA H200", "NVIDIA A100"]  # older nvidia-ml-py returns bytes
    monkeypatch.setitem(sys.modules, "pynvml", _fake_pynvml(
        nvmlInit=lambda: None, nvmlDeviceGetCount=lambda: 2, nvmlDeviceGetHandleByIndex=lambda i: i,
        nvmlDeviceGetName=lambda handle: names[handle]))
    gpu = doctor.check().get("gpu")
    assert gpu.ok
    assert "2 GPU(s) via NVML: NVIDIA H200, NVIDIA A100" == gpu.detail


def test_gpu_falls_back_to_nvidia_smi_without_pynvml(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # `import pynvml` now raises ImportError
    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho 'GPU 0: NVIDIA H200 (UUID: GPU-0a1b2c3d)'\n")
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    gpu = doctor.check().get("gpu")
    assert gpu.ok
    assert gpu.detail == "1 GPU(s) via nvidia-smi: GPU 0: NVIDIA H200 (pynvml not installed)"


def test_without_proc_kernel_features_are_missing(tmp_path, monkeypatch):
    """As on macOS: no /proc, so every kernel feature is reported missing, not a crash."""
    monkeypatch.setattr(doctor, "_PROC", str(tmp_path / "no-proc"))
    rep = doctor.check()
    for name in ("systemd-pid1", "cgroup", "cgroup-memory", "cgroup-cpu", "ptrace"):
        cap = rep.get(name)
        assert not cap.ok and cap.hint, cap
    assert rep.get("systemctl-user").detail  # a tool probe: it answers (or not) without /proc of doctor's


def test_an_unexpected_error_in_one_probe_is_reported_not_raised(monkeypatch):
    def broken():
        raise RuntimeError("boom")

    monkeypatch.setattr(doctor, "_ptrace", broken)
    rep = doctor.check()
    ptrace = rep.get("ptrace")
    assert not ptrace.ok and "boom" in ptrace.detail and ptrace.hint
    assert rep.get("tmux") is not None


@pytest.mark.parametrize("output, version", [
    ("tmux 3.3a", "3.3a"),
    ("GNU gdb (Debian 13.1-3) 13.1", "13.1"),
    ("systemd 252 (252.38-1~deb12u1)\n+PAM +AUDIT", "252"),
    ("lsof version information:\n    revision: 4.95.0", "4.95.0"),
    ("stress-ng, version 0.15.06 (gcc 12.2.0, x86_64 Linux 6.18.44-fc-v669)", "0.15.06"),
])
def test_versions_are_read_from_the_first_line_that_has_one(output, version):
    found = next(m.group(0) for line in output.splitlines() if (m := doctor._VERSION_RE.search(line)))
    assert found == version


def test_main_prints_json_or_a_table_and_returns_0(capsys):
    assert doctor.main(as_json=True) == 0
    data = json.loads(capsys.readouterr().out)
    assert list(data["capabilities"]) == EXPECTED_NAMES
    assert doctor.main() == 0
    out = capsys.readouterr().out
    assert out.startswith("labkit doctor:") and "cgroup-memory" in out


def test_importing_doctor_pulls_in_nothing_heavy():
    code = ("import sys, labkit; before = set(sys.modules); import labkit.doctor; "
            "print(sorted(m for m in set(sys.modules) - before if m.split('.')[0] in "
            "('numpy', 'psutil', 'pynvml', 'concurrent', 'platform', 'getpass')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__)))).stdout
    assert out.strip() == "[]"


def test_a_jupyterhub_or_binder_server_is_named_as_the_container(monkeypatch):
    monkeypatch.setenv("JUPYTERHUB_USER", "alice")
    info = doctor._platform_info()
    assert info["in_container"] and "a JupyterHub server ($JUPYTERHUB_USER is set)" in info["container_evidence"]


def test_the_grading_sandbox_is_reported_as_the_grader_would_find_it(monkeypatch):
    from labkit import doctor as doctor_module

    monkeypatch.setattr(doctor_module.os, "geteuid", lambda: 1000)
    cap = doctor_module._grading_sandbox()
    assert not cap.ok and "not root" in cap.detail and "gradebook row" in cap.hint


def test_kill_user_processes_is_read_as_logind_does_the_last_drop_in_wins(tmp_path):
    main = tmp_path / "logind.conf"
    main.write_text("[Login]\n#KillUserProcesses=no\nKillUserProcesses=no\n")
    drop_ins = tmp_path / "logind.conf.d"
    drop_ins.mkdir()
    paths = (str(main), str(drop_ins))
    assert doctor.kill_user_processes(paths) == "no"
    (drop_ins / "50-site.conf").write_text("[Login]\nKillUserProcesses=yes\n")
    (drop_ins / "10-early.conf").write_text("[Login]\nKillUserProcesses=no\n")
    assert doctor.kill_user_processes(paths) == "yes"
    main.write_text("[Login]\n")
    (drop_ins / "50-site.conf").unlink()
    (drop_ins / "10-early.conf").unlink()
    assert doctor.kill_user_processes(paths) is None


def test_logout_says_what_survives(monkeypatch):
    import psutil

    logout = doctor.check().get("logout")
    if not any(p.info["name"] == "systemd-logind" for p in psutil.process_iter(["name"])):
        assert logout.ok and "no systemd-logind" in logout.detail and "tmux" in logout.detail
    monkeypatch.setattr(psutil, "process_iter", lambda attrs=None: [type("P", (), {"info": {"name": "systemd-logind"}})()])
    monkeypatch.setattr(doctor, "kill_user_processes", lambda: "yes")
    killed = doctor._logout()
    assert not killed.ok and "nohup, setsid, tmux and screen jobs alike" in killed.detail
    assert "enable-linger" in killed.hint and "systemd-run --user --scope" in killed.hint


def test_without_cap_sys_ptrace_doctor_names_the_restriction():
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to drop CAP_SYS_PTRACE")
    done = subprocess.run(["setpriv", "--bounding-set=-sys_ptrace", "--inh-caps=-sys_ptrace", sys.executable, "-m",
                           "labkit", "doctor", "--json"], capture_output=True, text=True, timeout=120)
    ptrace = json.loads(done.stdout)["capabilities"]["ptrace"]
    assert "CAP_SYS_PTRACE=no" in ptrace["detail"] and "--cap-add SYS_PTRACE" in ptrace["detail"], ptrace
    here = doctor.check().get("ptrace")
    assert "CAP_SYS_PTRACE=yes" in here.detail and "but:" not in here.detail
