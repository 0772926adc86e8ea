"""The ranks of a ``torchrun`` job: joining, agreeing, gathering, and leaving (gloo backend).

torchrun (torch.distributed.elastic) starts each rank with ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` in its environment, each in a session of
its own (``start_new_session=True`` in its SubprocessHandler). On SIGTERM, SIGINT, SIGHUP or
SIGQUIT it sends the signal to every rank's process group, waits ``--shutdown-timeout``
seconds (default 30, or ``TORCH_ELASTIC_SHUTDOWN_TIMEOUT``; torch 2.14.1,
torch/distributed/elastic/multiprocessing/api.py ``_close``), then sends SIGKILL.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from labkit.trainer.distributed import RankLost


def launched_by_torchrun() -> tuple[int, int] | None:
    """``(rank, world_size)`` from the environment torchrun sets, or None outside torchrun."""
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    return None


class Group:
    """This rank's membership of the default process group; every call is collective."""

    def __init__(self, timeout_s: float) -> None:
        dist.init_process_group("gloo", timeout=timedelta(seconds=timeout_s))
        self.rank, self.world = dist.get_rank(), dist.get_world_size()

    def all_reduce(self, values: torch.Tensor) -> torch.Tensor:
        """Sum ``values`` over the ranks (in place, and returned)."""
        try:
            dist.all_reduce(values, op=dist.ReduceOp.SUM)
        except RuntimeError as err:  # gloo: a peer's connection closed, or the timeout passed
            raise RankLost(f"all-reduce failed: {_first_line(err)}") from err
        return values

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order."""
        found: list[Any] = [None] * self.world
        try:
            dist.all_gather_object(found, obj)
        except RuntimeError as err:
            raise RankLost(f"all-gather failed: {_first_line(err)}") from err
        return found

    def barrier(self) -> None:
        """Wait until every rank gets here."""
        try:
            dist.barrier()
        except RuntimeError as err:
            raise RankLost(f"barrier failed: {_first_line(err)}") from err

    def close(self) -> None:
        """Leave the group (destroy_process_group)."""
        if dist.is_initialized():
            dist.destroy_process_group()


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:200] if text else type(err).__name__
