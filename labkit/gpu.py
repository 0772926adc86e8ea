"""GPU memory a process holds, and a way for the trainer to hold some, without a deep-learning framework.

Reading uses NVML (the library behind ``nvidia-smi``; the ``[gpu]`` extra installs its Python
binding, nvidia-ml-py). Holding uses the CUDA driver API through ctypes (``libcuda.so``, part
of the driver): a context and one allocation, which the driver frees when the process exits,
however it exits. Where either is missing, the functions say why instead of failing.
"""

from __future__ import annotations

import ctypes
import functools


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
    """Bytes of GPU memory ``pid`` holds on all GPUs (0 if none), or None where NVML is unavailable."""
    if nvml_unavailable():
        return None
    import pynvml

    total = 0
    for index in range(pynvml.nvmlDeviceGetCount()):
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        for proc in pynvml.nvmlDeviceGetComputeRunningProcesses(handle):
            if proc.pid == pid and proc.usedGpuMemory:
                total += proc.usedGpuMemory
    return total


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
