"""GPU memory a process holds, and a way for the trainer to hold some, without a deep-learning framework.

Reading uses NVML (the library behind ``nvidia-smi``; the ``[gpu]`` extra installs its Python
binding, nvidia-ml-py). Holding uses the CUDA driver API through ctypes (``libcuda.so``, part
of the driver): a context and one allocation, which the driver frees when the process exits,
however it exits. Where either is missing, the functions say why instead of failing.
"""

from __future__ import annotations

import ctypes
import functools
from dataclasses import dataclass


@functools.lru_cache(maxsize=1)  # the answer does not change while a process runs; panels ask twice a second
def nvml_unavailable() -> str | None:
    """None if NVML answers here, else why not (one line)."""
    try:
        import pynvml
    except ImportError:
        return "nvidia-ml-py is not installed (pip install 'labkit[gpu]')"
    try:
        pynvml.nvmlInit()
        count = pynvml.nvmlDeviceGetCount()
    except Exception as err:  # NVMLError_LibraryNotFound, DriverNotLoaded, ...
        return f"NVML is not usable here (no NVIDIA driver or GPU): {err}"
    return None if count else "NVML found no GPU"


def process_gpu_memory(pid: int) -> int | None:
    """Bytes of GPU memory NVML charges to ``pid`` on all GPUs (0 if none), or None where NVML is
    unavailable or its pids are not this PID namespace's.

    NVML charges memory to the process that created the CUDA context: measured on an H200
    (bench/bench_gpu.py), it went on listing a SIGKILLed parent's pid while a child it had forked kept
    the memory alive (:func:`device_holders` names the child). In a container with a PID namespace of
    its own, NVML reports the host's pids; when it lists a pid that /proc does not know here, a
    missing ``pid`` proves nothing, and the answer is None (unknown), not 0.
    """
    if nvml_unavailable():
        return None
    import pynvml

    charged: dict[int, int] = {}
    for index in range(pynvml.nvmlDeviceGetCount()):
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        for proc in pynvml.nvmlDeviceGetComputeRunningProcesses(handle):
            charged[proc.pid] = charged.get(proc.pid, 0) + (proc.usedGpuMemory or 0)
    if pid in charged:
        return charged[pid]
    from labkit._linux import proc

    if any(not proc.exists(other) for other in charged):
        return None
    return 0


@dataclass(frozen=True)
class DeviceHolders:
    """Who has an NVIDIA device file open: what ``fuser -v /dev/nvidia*`` reports."""

    pids: tuple[int, ...]  #: processes with a ``/dev/nvidia*`` file open, ascending
    unreadable: int  #: processes whose fds could not be read (another user's, without root): they may hold one too

    def describe(self) -> str:
        """One line for people; says when the answer may be incomplete."""
        found = ", ".join(map(str, self.pids)) or "none"
        if self.unreadable:
            return f"{found} ({self.unreadable} process(es) could not be read: run as root to see them all)"
        return found


def device_holders(prefix: str = "/dev/nvidia") -> DeviceHolders:
    """Every process with a file whose path starts with ``prefix`` open (by default an NVIDIA device
    file), read from ``/proc/PID/fd`` as ``fuser -v /dev/nvidia*`` does.

    This, not NVML, names the process that keeps GPU memory alive after its owner died: measured on
    an H200 (driver 580.159.04, bench/bench_gpu.py), a parent holding 512 MiB was SIGKILLed while a
    child it had forked after CUDA's initialisation slept on; the memory stayed in use, NVML (and so
    ``nvidia-smi --query-compute-apps``) went on listing the dead parent's pid, and only the fds named
    the child. Killing the child gave the memory back within 80 ms.
    """
    from labkit._linux import proc, tree

    held, unreadable = [], 0
    for pid in tree.pids():
        try:
            targets = proc.fd_targets(pid)
        except PermissionError:
            unreadable += 1
            continue
        except OSError:  # gone meanwhile
            continue
        if any(target.startswith(prefix) for target in targets.values()):
            held.append(pid)
    return DeviceHolders(tuple(sorted(held)), unreadable)


class GpuMemory:
    """``mib`` MiB allocated on GPU 0 through the CUDA driver API, held until :meth:`free` or exit."""

    def __init__(self, mib: int) -> None:
        self.mib = mib
        self._cuda = self._context = None
        self._pointer = ctypes.c_uint64(0)
        try:
            self._cuda = ctypes.CDLL("libcuda.so.1")
        except OSError as err:
            raise OSError(f"no CUDA driver here (libcuda.so.1: {err})") from None
        device, context = ctypes.c_int(0), ctypes.c_void_p()
        self._check(self._cuda.cuInit(0), "cuInit")
        self._check(self._cuda.cuDeviceGet(ctypes.byref(device), 0), "cuDeviceGet")
        self._check(self._cuda.cuCtxCreate_v2(ctypes.byref(context), 0, device), "cuCtxCreate")
        self._context = context
        self._check(self._cuda.cuMemAlloc_v2(ctypes.byref(self._pointer), ctypes.c_size_t(mib << 20)), "cuMemAlloc")

    def _check(self, result: int, call: str) -> None:
        if result != 0:
            raise OSError(f"{call} failed with CUDA error {result}")

    def free(self) -> None:
        """Give the memory back (also what the driver does at exit, even after SIGKILL)."""
        if self._cuda is not None and self._pointer.value:
            self._cuda.cuMemFree_v2(self._pointer)
            self._pointer = ctypes.c_uint64(0)
        if self._cuda is not None and self._context:
            self._cuda.cuCtxDestroy_v2(self._context)
            self._context = None
