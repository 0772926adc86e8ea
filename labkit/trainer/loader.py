"""Micro-batches for the trainer: computed in-process, or by real worker processes.

Workers share the process group of the trainer, so a Ctrl-C in a terminal (SIGINT to the
foreground group) or systemd's control-group kill (SIGTERM to every process of the
service) reaches them as well as the trainer.
PyTorch's DataLoader workers die of that signal and the trainer then fails while saving;
ours ignore SIGINT, SIGTERM and SIGHUP (set before exec, so there is no window) and stop
only when the trainer closes their pipe. If the trainer dies, even of SIGKILL, they exit
at once: the kernel sends them SIGKILL (``PR_SET_PDEATHSIG``), and their pipe reaches EOF.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import deque
from multiprocessing.connection import Connection

import numpy as np

from labkit._prctl import set_parent_death_signal
from labkit.errors import LabkitError
from labkit.trainer.model import make_batch, make_dataset

WORKER_SIGNALS_IGNORED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class WorkerDied(LabkitError, RuntimeError):
    """A data-loader worker exited while the trainer still needed it."""


def _prepare_worker() -> None:  # runs in the child between fork and exec
    for sig in WORKER_SIGNALS_IGNORED:
        signal.signal(sig, signal.SIG_IGN)
    set_parent_death_signal()


class InlineLoader:
    """Computes each micro-batch in the trainer's own process (``--workers 0``)."""

    def __init__(self, seed: int, samples: int) -> None:
        self._seed = seed
        self._data = make_dataset(seed, samples)
        self._epoch = 0
        self._perm = np.arange(samples)
        self._batch_size = 1

    def start_epoch(self, epoch: int, perm: np.ndarray, batch_size: int, first_index: int) -> None:
        """Prepare to serve micro-batches ``first_index, first_index + 1, ...`` of ``epoch``."""
        self._epoch, self._perm, self._batch_size = epoch, perm, batch_size

    def get(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Return micro-batch ``index`` of the current epoch."""
        rows = self._perm[index * self._batch_size:(index + 1) * self._batch_size]
        return make_batch(self._data, self._seed, self._epoch, index, rows)

    @property
    def pids(self) -> list[int]:
        """Process ids of the workers (none here)."""
        return []

    def close(self) -> None:
        """Nothing to release."""


class WorkerPool(InlineLoader):
    """N worker processes (``python -m labkit.trainer.worker``) computing micro-batches ahead.

    Micro-batch ``i`` of an epoch goes to worker ``i % N``; each worker answers in order,
    so the trainer receives batches in exactly the order an inline loader would make them.
    """

    PREFETCH_PER_WORKER = 2

    def __init__(self, seed: int, samples: int, workers: int) -> None:
        self._seed, self._epoch, self._batch_size = seed, 0, 1
        self._perm = np.arange(samples)
        self._procs: list[subprocess.Popen] = []
        self._conns: list[tuple[Connection, Connection]] = []
        self._sent: deque[int] = deque()
        self._next_to_send = 0
        self._limit = 0
        for rank in range(workers):
            self._spawn(rank, samples)

    def _spawn(self, rank: int, samples: int) -> None:
        to_worker_r, to_worker_w = os.pipe()
        from_worker_r, from_worker_w = os.pipe()
        command = [
            sys.executable, "-m", "labkit.trainer.worker",
            "--rank", str(rank), "--seed", str(self._seed), "--samples", str(samples),
            "--read-fd", str(to_worker_r), "--write-fd", str(from_worker_w),
            "--parent", str(os.getpid()),
        ]
        proc = subprocess.Popen(
            command, pass_fds=(to_worker_r, from_worker_w), stdin=subprocess.DEVNULL,
            preexec_fn=_prepare_worker,
        )
        os.close(to_worker_r)
        os.close(from_worker_w)
        self._procs.append(proc)
        self._conns.append((Connection(to_worker_w, readable=False), Connection(from_worker_r, writable=False)))

    @property
    def pids(self) -> list[int]:
        """Process ids of the workers."""
        return [proc.pid for proc in self._procs]

    def start_epoch(self, epoch: int, perm: np.ndarray, batch_size: int, first_index: int) -> None:
        """Drop any prefetched batches and start requesting from ``first_index`` of ``epoch``."""
        self._drain()
        self._epoch, self._perm, self._batch_size = epoch, perm, batch_size
        self._next_to_send = first_index
        self._limit = len(perm) // batch_size

    def get(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Return micro-batch ``index``; requests must come in order within an epoch."""
        window = self.PREFETCH_PER_WORKER * len(self._procs)
        while self._next_to_send < min(index + window, self._limit):
            self._request(self._next_to_send)
        if not self._sent or self._sent[0] != index:
            raise ValueError(f"micro-batch {index} requested out of order")
        self._sent.popleft()
        return self._receive(index)

    def close(self, timeout_s: float = 1.0) -> None:
        """Close the workers' pipes (they exit on EOF), wait for them, kill stragglers."""
        for sender, receiver in self._conns:
            sender.close()
            receiver.close()
        self._conns = []
        for proc in self._procs:
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def _request(self, index: int) -> None:
        rows = self._perm[index * self._batch_size:(index + 1) * self._batch_size]
        rank = index % len(self._procs)
        try:
            self._conns[rank][0].send((self._epoch, index, rows))
        except OSError as err:
            raise self._died(rank) from err
        self._sent.append(index)
        self._next_to_send = index + 1

    def _receive(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        rank = index % len(self._procs)
        try:
            epoch, got, x, y = self._conns[rank][1].recv()
        except (EOFError, OSError) as err:
            raise self._died(rank) from err
        if (epoch, got) != (self._epoch, index):
            raise RuntimeError(f"worker {rank} answered batch {got} of epoch {epoch}, expected {index}")
        return x, y

    def _drain(self) -> None:
        while self._sent:
            self._receive(self._sent.popleft())

    def _died(self, rank: int) -> WorkerDied:
        proc = self._procs[rank]
        try:
            code = proc.wait(timeout=1.0)
        except subprocess.TimeoutExpired:
            code = None
        how = f"killed by {signal.Signals(-code).name}" if code is not None and code < 0 else f"exit code {code}"
        return WorkerDied(f"data-loader worker {rank} (pid {proc.pid}) died unexpectedly ({how})")
