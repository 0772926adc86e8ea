"""One rank of a distributed run: the trainer's loop, with an all-reduce in every step.

Rank 0 writes the run's files (train.log, metrics, checkpoints, final.json) as a single
trainer does; rank N logs to ``RUN_DIR/ranks/N/``. See :mod:`labkit.trainer.distributed`.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from labkit.errors import BadArgument
from labkit.trainer import model
from labkit.trainer.config import TrainConfig
from labkit.trainer.distributed import Group, RankLost, micro_batch_rng
from labkit.trainer.faults import Faults
from labkit.trainer.loop import Trainer, _sleep_until
from labkit.trainer.runfiles import RunFiles
from labkit.trainer.shutdown import SignalFlags


class RankTrainer(Trainer):
    """A trainer that is rank ``config.rank`` of ``config.ranks``."""

    def __init__(self, config: TrainConfig) -> None:
        if config.rank is None:
            raise BadArgument("--rank is set by the launcher; start a distributed run with --ranks N")
        self.rank: int = config.rank
        self.world = config.ranks
        super().__init__(config)
        if self.rank > 0:
            self.files.close()
            self.files = RunFiles(config.run_dir / "ranks" / str(self.rank))
            self.files.checkpoints = config.run_dir / "checkpoints"  # every rank resumes from rank 0's
            self.faults = Faults(None, config.fault_step, self.files.log)  # faults are rank 0's
            self.flags = SignalFlags(stack_file=self.files.log_file)  # SIGUSR1 stacks go to this rank's log
        self._group: Group | None = None  # joined by run(), before the loop needs it
        self._agreed_stop = False

    @property
    def group(self) -> Group:
        """The connections to the other ranks; exist once :meth:`run` has joined the group."""
        if self._group is None:
            raise RuntimeError("this rank has not joined its group yet: RankTrainer.run() joins it")
        return self._group

    def run(self) -> int:
        """Join the group, train, and leave it; 1 if a peer was lost."""
        try:
            self._group = Group(self.rank, self.world, self.config.rank_timeout_s)
            self.files.log(f"rank {self.rank} of {self.world}: connected")
            return super().run()
        except RankLost as err:
            self.files.log(f"error: {err}; stopping this rank")
            if self._group is not None and self.rank == 0:
                self._group.abort(str(err))
            return 1
        finally:
            if self._group is not None:
                self._group.close()

    def _set_aside_checkpoints(self) -> list[int]:
        if self.rank == 0:  # the checkpoints folder is rank 0's
            return super()._set_aside_checkpoints()
        return []

    def _remove_stale_temporaries(self) -> None:
        if self.rank == 0:  # the other ranks must not touch rank 0's folder
            super()._remove_stale_temporaries()

    def _train(self) -> None:
        self.group.barrier("loaded")  # everyone has read the checkpoint before rank 0 may save again
        super()._train()

    def _step(self) -> bool:
        """Compute this rank's micro-batches, all-reduce, apply the common update."""
        config, state = self.config, self.state
        started = time.monotonic()
        mine: dict[int, tuple[float, dict[str, np.ndarray]]] = {}
        share = range(self.rank, config.micro_batches, self.world)
        for count, micro in enumerate(share, 1):
            x, y = self.loader.get(state.position * config.micro_batches + micro)
            rng = micro_batch_rng(config.seed, state.global_step, micro)
            mine[micro] = model.loss_and_grads(state.params, x, y, rng)
            _sleep_until(started + config.step_time_s * count / config.micro_batches)
        total, losses, stop = self.group.allreduce(state.global_step, mine, self.flags.stopping)
        mean = {k: g / config.micro_batches for k, g in total.items()}
        model.sgd_momentum(state.params, state.velocity, mean, config.lr, config.momentum)
        state.position += 1
        state.global_step += 1
        state.loss = float(np.mean(losses))
        self._agreed_stop = stop
        self.files.metric(state.global_step, state.epoch, state.loss)
        if state.global_step % 10 == 0 or state.global_step == 1:
            self.files.log(f"step {state.global_step} epoch {state.epoch} loss {state.loss:.4f}")
        return True

    def _act_on_signals(self) -> bool:
        """Stop only when every rank has agreed to (in the last all-reduce)."""
        super()._act_on_signals()
        if self._agreed_stop and not self.flags.stopping:
            self.files.log("stopping: another rank was asked to stop")
        return self._agreed_stop

    def _save(self, reason: str) -> None:
        if self.rank == 0:
            super()._save(reason)
        else:
            self.state.saved_step = self.state.global_step  # rank 0 wrote it

    def _finish(self) -> int:
        if self._agreed_stop and not self.flags.stopping:
            self.flags.stop_count = 1  # the agreement is this rank's one stop request
            code = self._finish_stopped(_AGREED)
        else:
            code = super()._finish()
        self.group.barrier("saved")  # no rank exits before rank 0's checkpoint is durable
        return code

    def _write_final(self, summary: dict[str, Any]) -> None:
        if self.rank == 0:  # rank 0 writes final.json
            super()._write_final(summary)


_AGREED = "the group's agreement"
"""What a rank says it stopped on when it stops because the others agreed to."""
