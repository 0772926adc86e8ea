"""Real misbehaviour for the lessons: each fault puts the process in the state it claims.

The kernel, ``ps`` and ``/proc`` see the real thing: a read blocked in ``pipe_read``
(state S), two threads waiting on each other's futex, a spinning loop (state R),
growing resident memory, an unreaped child (state Z), children left running after
their parent died. Nothing here is a label printed to the log and nothing else.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from typing import Callable

import numpy as np

LEAK_MB_PER_STEP = 2
ORPHAN_LIFETIME_S = 600  # safety net on a student's laptop; a real orphan would live forever


class Faults:
    """Inject the fault named by ``--fault`` at ``--fault-step``."""

    def __init__(self, kind: str | None, fault_step: int, log: Callable[[str], None],
                 shutdown_s: float = 30.0) -> None:
        self.kind = kind
        self.fault_step = fault_step
        self.shutdown_s = shutdown_s
        self._log = log
        self._leaked: list[np.ndarray] = []
        self._leak_cap_bytes = _leak_cap_bytes()
        self.zombies: list[int] = []

    @property
    def ignores_sigterm(self) -> bool:
        """True when SIGTERM must be received and ignored."""
        return self.kind == "ignore-sigterm"

    @property
    def slow_shutdown_s(self) -> float:
        """Extra seconds the shutdown takes (``slow-shutdown``)."""
        return self.shutdown_s if self.kind == "slow-shutdown" else 0.0

    def after_step(self, global_step: int) -> None:
        """Run the fault's effect after ``global_step`` completed."""
        if self.kind == "memory-leak" and global_step >= self.fault_step:
            if global_step == self.fault_step:
                self._log(f"fault memory-leak: starting at step {global_step}, "
                          f"{LEAK_MB_PER_STEP} MiB more held every step")
            self._leak()
        if global_step != self.fault_step:
            return
        action = {
            "hang-io": hang_in_read,
            "deadlock": deadlock,
            "busy-loop": busy_loop,
            "crash": crash,
            "zombie-worker": self._make_zombie,
            "orphan-workers": self._orphan_workers,
        }.get(self.kind or "")
        if action is not None:
            self._log(f"fault {self.kind}: starting at step {global_step}")
            action()

    def reap_zombies(self) -> None:
        """Reap the zombie we made so a clean exit leaves nothing behind."""
        for pid in self.zombies:
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
        self.zombies.clear()

    def _leak(self) -> None:
        held = sum(block.nbytes for block in self._leaked)
        if held >= self._leak_cap_bytes:
            return
        block = np.ones(LEAK_MB_PER_STEP * 2**20 // 8)  # np.ones touches every page
        self._leaked.append(block)
        if held + block.nbytes >= self._leak_cap_bytes:
            self._log(f"fault memory-leak: reached the safety cap of {self._leak_cap_bytes >> 20} MiB; "
                      "holding it")

    def _orphan_workers(self) -> None:
        pids = start_orphans()
        self._log(f"fault orphan-workers: the trainer dies now (exit 1), leaving workers {pids} running")
        os._exit(1)

    def _make_zombie(self) -> None:
        pid = os.fork()
        if pid == 0:  # the child: a worker that exits at once and is never waited for
            os._exit(0)
        self.zombies.append(pid)
        self._log(f"fault zombie-worker: worker pid {pid} exited and is never reaped (state Z)")


def _leak_cap_bytes() -> int:
    try:
        available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        available = 2 << 30
    return min(8 << 30, available // 2)


def hang_in_read() -> None:
    """Block forever in read(2) on a pipe whose writer never writes (wchan pipe_read)."""
    read_end, write_end = os.pipe()  # we hold the write end, so the read never sees EOF
    os.read(read_end, 1)


def deadlock() -> None:
    """Two threads take two locks in opposite order and wait for each other forever."""
    first, second = threading.Lock(), threading.Lock()

    def prefetcher() -> None:
        with second:
            time.sleep(0.1)
            with first:
                pass

    threading.Thread(target=prefetcher, name="prefetcher", daemon=True).start()
    with first:
        time.sleep(0.1)
        with second:
            pass


def busy_loop() -> None:
    """Spin at 100% of a core forever without making progress."""
    counter = 0
    while True:
        counter = (counter + 1) % 1_000_003


def crash() -> None:
    """Fail the way a real job does: an exception that ends the run with exit code 1."""
    raise RuntimeError("simulated crash (--fault crash): CUDA error: an illegal memory access")


def start_orphans(count: int = 2) -> list[int]:
    """Start helper processes that do not watch their parent (no PDEATHSIG, SIGHUP ignored)."""
    code = (
        "import signal, time\n"
        "signal.signal(signal.SIGHUP, signal.SIG_IGN)\n"
        f"time.sleep({ORPHAN_LIFETIME_S})\n"
    )
    return [subprocess.Popen([sys.executable, "-c", code]).pid for _ in range(count)]
