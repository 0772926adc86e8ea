"""GPU memory held by a trainer and given back at exit (only where an NVIDIA GPU and NVML exist)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import wait_for
from labkit import gpu
from labkit.jobs import trainer_command

NO_GPU = gpu.nvml_unavailable()


def test_without_a_gpu_the_trainer_says_so_and_trains(tmp_path):
    if NO_GPU is None:
        pytest.skip("this machine has a GPU: the real test below runs instead")
    done = subprocess.run(trainer_command(tmp_path, "--epochs", "1", "--steps-per-epoch", "5", "--step-time", "0",
                                          "--gpu-mb", "64"), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0
    assert "--gpu-mb 64: not holding GPU memory" in (tmp_path / "train.log").read_text()
    assert gpu.process_gpu_memory(1) is None


@pytest.mark.skipif(NO_GPU is not None, reason=f"no NVIDIA GPU here: {NO_GPU}")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_gpu_memory_is_held_while_training_and_released_at_exit(spawn, tmp_path, sig):
    proc = spawn.popen(trainer_command(tmp_path, "--epochs", "1000", "--gpu-mb", "256"))
    wait_for(lambda: (gpu.process_gpu_memory(proc.pid) or 0) >= 256 << 20, 30, "256 MiB on the GPU")
    proc.send_signal(sig)
    proc.wait(30)
    time.sleep(0.5)
    assert gpu.process_gpu_memory(proc.pid) == 0  # the driver frees it, even after SIGKILL


_OPENS_AND_FORKS = r"""
import os, sys, time
held = open(sys.argv[1], "rb")   # the parent opens the "device"
child = os.fork()                # the child inherits the open file, as a forked DataLoader worker does
if child == 0:
    time.sleep(60)
    os._exit(0)
print(child, flush=True)
time.sleep(60)
"""


def test_device_holders_names_every_process_with_the_file_open_and_no_other(spawn, tmp_path):
    device = tmp_path / "nvidia0"
    device.write_bytes(b"")
    assert gpu.device_holders(str(tmp_path / "nvidia")).pids == ()
    parent = spawn.popen([sys.executable, "-c", _OPENS_AND_FORKS, str(device)], stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    holders = gpu.device_holders(str(tmp_path / "nvidia"))
    assert holders.pids == tuple(sorted((parent.pid, child)))
    parent.kill()
    parent.wait(10)
    # the parent is gone; the child still holds the file: it is the one to stop
    wait_for(lambda: gpu.device_holders(str(tmp_path / "nvidia")).pids == (child,), 10, "only the child left")
    assert "could not be read" not in holders.describe()


_HOLDS_AND_FORKS = r"""
import os, sys, time
from labkit.gpu import GpuMemory
held = GpuMemory(256)
child = os.fork()
if child == 0:
    time.sleep(60)   # never touches CUDA itself
    os._exit(0)
print(child, flush=True)
time.sleep(60)
"""


@pytest.mark.skipif(NO_GPU is not None, reason=f"no NVIDIA GPU here: {NO_GPU}")
def test_a_forked_child_keeps_the_memory_after_its_parents_sigkill_and_only_the_fds_name_it(spawn):
    import pynvml

    handle = pynvml.nvmlDeviceGetHandleByIndex(0)
    used = lambda: pynvml.nvmlDeviceGetMemoryInfo(handle).used  # noqa: E731
    before = used()
    parent = spawn.popen([sys.executable, "-c", _HOLDS_AND_FORKS], stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    wait_for(lambda: used() >= before + (256 << 20), 30, "256 MiB in use")
    parent.send_signal(signal.SIGKILL)
    parent.wait(30)
    time.sleep(1.0)
    assert used() >= before + (256 << 20), "the memory came back while the forked child still lived"
    assert child in gpu.device_holders().pids
    os.kill(child, signal.SIGKILL)
    wait_for(lambda: used() < before + (16 << 20), 10, "the memory back once the child is gone")


class _FakeNvml:
    """A stand-in for pynvml: one GPU listing the given {pid: bytes}."""

    def __init__(self, listed: dict[int, int]) -> None:
        self.listed = listed

    def nvmlDeviceGetCount(self) -> int:  # noqa: N802 (pynvml's names)
        return 1

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:  # noqa: N802
        return index

    def nvmlDeviceGetComputeRunningProcesses(self, handle: int) -> list:  # noqa: N802
        from types import SimpleNamespace
        return [SimpleNamespace(pid=pid, usedGpuMemory=used) for pid, used in self.listed.items()]


@pytest.mark.parametrize("listed, asked, expected", [
    ({"self": 256 << 20}, "self", 256 << 20),
    ({}, "self", 0),
    ({"self": 256 << 20}, "other", 0),  # every listed pid is ours to see: the other one holds nothing
    ({4_194_305: 256 << 20}, "self", None),  # above PID_MAX_LIMIT (2**22): the host's pids, so unknown
], ids=["charged", "nothing-listed", "another-pid", "foreign-pids"])
def test_process_gpu_memory_says_unknown_when_nvml_lists_pids_of_another_namespace(
        monkeypatch, listed, asked, expected):
    me, other = os.getpid(), os.getppid()
    fake = _FakeNvml({me if pid == "self" else pid: used for pid, used in listed.items()})
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    monkeypatch.setattr(gpu, "nvml_unavailable", lambda: None)
    assert gpu.process_gpu_memory(me if asked == "self" else other) == expected
