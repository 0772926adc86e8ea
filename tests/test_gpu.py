"""GPU memory held by a trainer and given back at exit (only where an NVIDIA GPU and NVML exist)."""

from __future__ import annotations

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
