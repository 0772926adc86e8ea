"""Micro-batches through a real ``torch.utils.data.DataLoader``, resumable mid-epoch.

Each item the loader yields is one micro-batch, named by ``(epoch, index, rows)``: the sampler
(in the trainer's process) decides which rows, the dataset (in a worker, or inline with
``--workers 0``) gathers them and adds input noise seeded by ``(seed, epoch, index)``. Nothing
depends on which worker computed what, nor on the workers' own seeds, so 0 or N workers give
the same batches (the data are :func:`labkit.trainer.model.make_dataset`'s, as in the NumPy
trainer). The sampler's state (its generator, this epoch's permutation) is checkpointed and
``start`` resumes at any micro-batch.

Workers and signals: DataLoader workers are forked children in the trainer's process group,
so a Ctrl-C (SIGINT to the foreground group) or a control-group kill (SIGTERM to every process)
reaches them too. Workers started with Python's default SIGINT handler die of it
(KeyboardInterrupt; torch's worker loop swallows it and the worker exits), and the trainer's
next batch then fails with "DataLoader worker ... exited unexpectedly" before it has saved.
:func:`keep_alive_until_saved` (the ``worker_init_fn``) makes each worker ignore SIGINT, SIGTERM
and SIGHUP; they stop when the trainer shuts them down after its save, and the kernel kills them
(``PR_SET_PDEATHSIG``, prctl(2)) if the trainer itself is killed.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from labkit._prctl import set_parent_death_signal
from labkit.trainer.model import make_batch, make_dataset

WORKER_SIGNALS_IGNORED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
Key = tuple[int, int, list[int]]


def keep_alive_until_saved(worker_id: int) -> None:
    """``worker_init_fn``: ignore stop signals (the trainer stops us after saving); die with it."""
    for sig in WORKER_SIGNALS_IGNORED:
        signal.signal(sig, signal.SIG_IGN)
    set_parent_death_signal()


class MicroBatches:
    """Map-style dataset: ``(epoch, index, rows)`` -> ``(x float32, y int64)``."""

    def __init__(self, seed: int, samples: int) -> None:
        self.seed, self.samples = seed, samples
        self.data = make_dataset(seed, samples)

    def __len__(self) -> int:
        return self.samples

    def __getitem__(self, key: Key) -> tuple[torch.Tensor, torch.Tensor]:
        epoch, index, rows = key
        x, y = make_batch(self.data, self.seed, epoch, index, np.asarray(rows, dtype=np.int64))
        return torch.from_numpy(x.astype(np.float32)), torch.from_numpy(y)


class EpochSampler:
    """Yields the micro-batch keys of one epoch from a given index, this rank's share only."""

    def __init__(self, samples: int, batch_size: int, micro_batches: int, seed: int,
                 rank: int = 0, world: int = 1) -> None:
        self.samples, self.batch_size, self.micro_batches = samples, batch_size, micro_batches
        self.rank, self.world = rank, world
        self.generator = torch.Generator().manual_seed(seed)
        self.perm: torch.Tensor | None = None
        self.epoch, self.first = 0, 0

    def shuffle_if_needed(self) -> None:
        """Draw this epoch's permutation (once per epoch)."""
        if self.perm is None:
            self.perm = torch.randperm(self.samples, generator=self.generator)

    def start(self, epoch: int, first: int) -> None:
        """Serve ``epoch`` from micro-batch ``first`` on."""
        self.epoch, self.first = epoch, first

    def __iter__(self) -> Iterator[Key]:
        if self.perm is None:
            raise RuntimeError("EpochSampler.shuffle_if_needed() must come before iterating")
        perm, size = self.perm, self.batch_size
        for index in range(self.first, self.samples // size):
            if (index % self.micro_batches) % self.world == self.rank:
                yield self.epoch, index, perm[index * size:(index + 1) * size].tolist()

    def __len__(self) -> int:
        return sum(1 for index in range(self.first, self.samples // self.batch_size)
                   if (index % self.micro_batches) % self.world == self.rank)

    def state_dict(self) -> dict[str, Any]:
        """The generator's state and this epoch's permutation (None between epochs)."""
        return {"generator": self.generator.get_state(), "perm": self.perm}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        self.generator.set_state(state["generator"])
        self.perm = state["perm"]


class Loader:
    """A DataLoader over :class:`MicroBatches`, with ``workers`` persistent worker processes."""

    def __init__(self, dataset: MicroBatches, sampler: EpochSampler, workers: int) -> None:
        self.sampler, self.workers = sampler, workers
        extra: dict[str, Any] = {}
        if workers:
            extra = {"worker_init_fn": keep_alive_until_saved, "persistent_workers": True, "prefetch_factor": 2}
        # batch_size=None: each key is a whole micro-batch. A generator of its own: the loader
        # draws its workers' base seed at every iter(), which would otherwise consume the global
        # torch RNG (the dropout's) at different moments in a resumed run.
        self.loader: DataLoader[Any] = DataLoader(dataset, batch_size=None, sampler=sampler,
                                                  num_workers=workers, generator=torch.Generator().manual_seed(0), **extra)
        self._iterator: Iterator[Any] | None = None

    def start_epoch(self, epoch: int, first: int) -> None:
        """Start serving ``epoch`` from micro-batch ``first`` (starts the workers the first time)."""
        self.sampler.start(epoch, first)
        self._iterator = iter(self.loader)

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The next micro-batch of this rank's share."""
        if self._iterator is None:
            raise RuntimeError("Loader.start_epoch() must come first")
        return next(self._iterator)

    @property
    def processes(self) -> list[Any]:
        """The worker processes (multiprocessing.Process), once started."""
        return list(getattr(self._iterator, "_workers", []))

    @property
    def pids(self) -> list[int]:
        """Process ids of the workers (none with ``--workers 0``)."""
        return [proc.pid for proc in self.processes]

    def close(self, log: Callable[[str], None]) -> None:
        """Shut the workers down, check that every one has exited, and log how each ended."""
        procs = self.processes
        shutdown = getattr(self._iterator, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()  # sets the done event, sends each worker its end marker, joins (then terminates)
        self._iterator = None
        if not procs:
            return
        ended = []
        for proc in procs:
            proc.join(timeout=2.0)
            if proc.exitcode is None:  # still alive: never leave one behind
                proc.kill()
                proc.join()
                ended.append(f"pid {proc.pid} killed (did not exit)")
            else:
                ended.append(f"pid {proc.pid} exit code {proc.exitcode}")
        log(f"data-loader workers exited: {', '.join(ended)}")
