"""The torch trainer's loop: the NumPy trainer's contract, with PyTorch's own pieces.

Exact resume needs everything that shapes the rest of the run in the checkpoint: the model's,
the optimizer's (momentum) and the LR scheduler's state dicts, the RNG states of torch (dropout),
NumPy and Python (``random``), the sampler's generator and permutation, and the position
(epoch, step in the epoch). With deterministic algorithms and one intra-op thread, a run stopped
or killed any number of times ends with the same bytes as one that never stopped.

Under ``torchrun`` (``RANK``/``WORLD_SIZE`` set) each step all-reduces the gradients together
with two counters, "stop requested" and "checkpoint requested", so all ranks stop after the same
step; rank 0 writes the checkpoint (with every rank's RNG states, gathered) and the others wait
at a barrier until it is durable; then each rank leaves with ``destroy_process_group``.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import time
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional

from labkit import checkpoint as shared_checkpoint
from labkit.errors import BadArgument, DiskFull, NoCheckpoint
from labkit.trainer.config import TrainConfig
from labkit.trainer.distributed import RankLost
from labkit.trainer.loader import WorkerDied
from labkit.trainer.model import CLASSES, DROPOUT, FEATURES
from labkit.trainer.runfiles import RunFiles
from labkit.trainer.shutdown import SignalFlags
from labkit.trainer.torch import ckpt
from labkit.trainer.torch.data import EpochSampler, Loader, MicroBatches
from labkit.trainer.torch.dist import Group, launched_by_torchrun

SUPPORTED_FAULTS = ("slow-shutdown",)
LR_DECAY_PER_EPOCH = 0.8
_AGREED = "the group's agreement"


def build_model(hidden: int) -> nn.Module:
    """FEATURES -> hidden -> hidden -> CLASSES, ReLU and dropout (the NumPy trainer's shape)."""
    return nn.Sequential(nn.Linear(FEATURES, hidden), nn.ReLU(), nn.Dropout(DROPOUT),
                         nn.Linear(hidden, hidden), nn.ReLU(), nn.Dropout(DROPOUT),
                         nn.Linear(hidden, CLASSES))


def weights_sha256(model: nn.Module) -> str:
    """SHA-256 of the state dict: each entry's name, then its tensor's bytes, in the dict's order."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().data)
    return digest.hexdigest()


def rng_states() -> dict[str, Any]:
    """This process's torch, NumPy (global) and Python ``random`` states, in loadable types."""
    state = np.random.get_state(legacy=False)
    assert isinstance(state, dict)
    return {"torch": torch.get_rng_state(),
            "numpy": {"key": torch.from_numpy(state["state"]["key"].astype(np.int64)),
                      "pos": int(state["state"]["pos"]), "has_gauss": int(state["has_gauss"]),
                      "gauss": float(state["gauss"])},
            "python": random.getstate()}


def set_rng_states(saved: dict[str, Any]) -> None:
    """Restore what :func:`rng_states` returned."""
    torch.set_rng_state(saved["torch"])
    np_state = saved["numpy"]
    np.random.set_state({"bit_generator": "MT19937",
                         "state": {"key": np_state["key"].numpy().astype(np.uint32), "pos": np_state["pos"]},
                         "has_gauss": np_state["has_gauss"], "gauss": np_state["gauss"]})
    random.setstate(saved["python"])


def _seed_of(seed: int, rank: int) -> int:
    return int(np.random.SeedSequence([seed, 3, rank]).generate_state(1)[0])


class TorchTrainer:
    """One process of a torch run: the whole run, or one rank of a torchrun job."""

    def __init__(self, config: TrainConfig) -> None:
        if config.fault and config.fault not in SUPPORTED_FAULTS:
            raise BadArgument(f"--fault {config.fault} is not available with --framework torch "
                              f"(it has: {', '.join(SUPPORTED_FAULTS)})")
        if config.ranks > 1 or config.rank is not None:
            raise BadArgument("--ranks is labkit's own launcher; with --framework torch start the ranks "
                              "with torchrun: torchrun --nproc-per-node N -m labkit.trainer --framework torch ...")
        torch.use_deterministic_algorithms(True)
        torch.set_num_threads(1)
        self.config = config
        where = launched_by_torchrun()
        self.rank, self.world = where if where else (0, 1)
        self.distributed = where is not None
        if self.rank == 0:
            self.files = RunFiles(config.run_dir)
        else:
            self.files = RunFiles(config.run_dir / "ranks" / str(self.rank))
            self.files.checkpoints = config.run_dir / "checkpoints"  # every rank resumes from rank 0's
        self.flags = SignalFlags(stack_file=self.files.log_file)
        self.group: Group | None = None
        self.loader: Loader | None = None
        self.epoch = self.position = self.global_step = 0
        self.saved_step = -1
        self.loss = float("nan")
        self.agreed_stop = self.agreed_checkpoint = False
        self.ballast: list[Any] = []

    # --- the run -------------------------------------------------------------------------

    def run(self) -> int:
        """Train to the end or until a stop signal; return the process exit code."""
        self.flags.install()
        try:
            if self.distributed:
                self.group = Group(self.config.rank_timeout_s)
                self.files.log(f"rank {self.rank} of {self.world}: joined the gloo process group")
            self._build()
            self._initial_state()
            self._hold_memory()
            self._train()
            return self._finish()
        except RankLost as err:
            self.files.log(f"error: {err}; stopping this rank (the last checkpoint is step {self.saved_step})")
            return 1
        except WorkerDied as err:
            self.files.log(f"error: {err}; the last checkpoint is step {self.saved_step}")
            return 1
        except DiskFull as full:
            kept = self.saved_step
            self.files.log(f"error: {full}; " + (f"the previous checkpoint (step {kept}) is kept" if kept >= 0
                                                 else "no checkpoint was saved yet")
                           + f"; {full.advice}, then resume with --resume")
            return full.exit_code
        finally:
            if self.loader is not None:
                self.loader.close(self.files.log)
            if self.group is not None:
                self.group.close()
            self.flags.restore()

    def _build(self) -> None:
        config = self.config
        torch.manual_seed(config.seed)  # the same initial weights on every rank
        self.model = build_model(config.hidden)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=config.lr, momentum=config.momentum)
        self.scheduler = torch.optim.lr_scheduler.StepLR(self.optimizer, step_size=config.steps_per_epoch,
                                                         gamma=LR_DECAY_PER_EPOCH)
        seed = _seed_of(config.seed, self.rank)  # dropout differs between ranks, as it would
        torch.manual_seed(seed)
        np.random.seed(seed)
        random.seed(seed)
        self.sampler = EpochSampler(config.samples, config.batch_size, config.micro_batches, config.seed,
                                    self.rank, self.world)
        self.dataset = MicroBatches(config.seed, config.samples)

    def _identity(self) -> dict[str, Any]:
        return {**self.config.identity(), "framework": "torch", "world_size": self.world}

    def _initial_state(self) -> None:
        config = self.config
        self.files.log(f"start: pid {os.getpid()} pgid {os.getpgrp()} run_dir {config.run_dir} "
                       f"epochs {config.epochs} steps/epoch {config.steps_per_epoch} workers {config.workers} "
                       f"seed {config.seed} framework torch {torch.__version__}"
                       + (f" rank {self.rank} of {self.world}" if self.distributed else "")
                       + (f" fault {config.fault}" if config.fault else ""))
        if self.flags.hup_inherited_ignored:
            self.files.log("SIGHUP is ignored, as inherited (nohup): a closed terminal will not stop this run")
        if not config.resume:
            if self.rank == 0:
                self._start_fresh()
            self._barrier()  # no rank reads the folder while rank 0 sets the old run aside
            return
        if self.rank == 0:
            for stale in shared_checkpoint.remove_stale_temporaries(self.files.checkpoints):
                self.files.log(f"resume: removed {stale.name}, left by a save that was interrupted")
        try:
            path, state, skipped = ckpt.load_latest(self.files.checkpoints)
        except NoCheckpoint as err:
            self.files.log(f"resume: {err}; starting from scratch")
            self.files.truncate_metrics(0)
            self._barrier()
            return
        for bad, reason in skipped:
            self.files.log(f"resume: skipped {bad.name}: {reason}")
        self._load(path.name, state)
        dropped = self.files.truncate_metrics(self.global_step)
        self.files.log(f"resume: from {path.name} at step {self.global_step} "
                       f"(epoch {self.epoch}, step {self.position} of the epoch)"
                       + (f"; {dropped} metric lines after it will be redone" if dropped else ""))
        self._barrier()  # everyone has read it before rank 0 may save (and prune) again

    def _load(self, name: str, state: dict[str, Any]) -> None:
        saved, wanted = state.get("identity", {}), self._identity()
        differs = [f"{k} {saved.get(k)} (this run: {v})" for k, v in wanted.items() if saved.get(k) != v]
        if differs:
            raise BadArgument(f"checkpoint {name} was made with different settings: " + ", ".join(differs)
                              + "; use the same settings or a new --run-dir")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.sampler.load_state_dict(state["sampler"])
        set_rng_states(state["rng"][self.rank])
        self.epoch, self.position = state["epoch"], state["position"]
        self.global_step = self.saved_step = state["global_step"]
        self.loss = state["loss"]

    def _start_fresh(self) -> None:
        emptied = self.files.start_fresh()
        folder = self.files.checkpoints
        moved = folder.is_dir() and any(folder.iterdir())
        if moved:
            aside = folder.with_name(folder.name + ".previous")
            if aside.exists():
                shutil.rmtree(aside)
            os.replace(folder, aside)
        if self.files.log_had_lines or emptied or moved:
            self.files.log("new run (no --resume): metrics.jsonl and final.json start empty"
                           + (f"; the previous run's checkpoints are now in {folder.name}.previous/" if moved else "")
                           + "; to continue a run instead, start it with --resume")

    def _hold_memory(self) -> None:
        if self.config.memory_mb:
            self.ballast.append(torch.ones(self.config.memory_mb * 2**20 // 8, dtype=torch.float64))
            self.files.log(f"holding {self.config.memory_mb} MiB of touched memory")
        if self.config.gpu_mb:
            if torch.cuda.is_available():
                self.ballast.append(torch.empty(self.config.gpu_mb * 2**20, dtype=torch.uint8, device="cuda"))
                self.files.log(f"holding {self.config.gpu_mb} MiB of GPU memory on GPU 0 (torch.cuda)")
            else:
                self.files.log(f"--gpu-mb {self.config.gpu_mb}: not holding GPU memory: torch sees no CUDA device")

    def _train(self) -> None:
        config = self.config
        self.loader = Loader(self.dataset, self.sampler, config.workers)
        started_workers = False
        while self.epoch < config.epochs and not self._act_on_signals():
            self.sampler.shuffle_if_needed()
            self.loader.start_epoch(self.epoch, self.position * config.micro_batches)
            if config.workers and not started_workers:
                started_workers = True
                self.files.log(f"started {config.workers} data-loader workers: pids {self.loader.pids}")
            epoch = self.epoch
            while self.epoch == epoch:
                if self._act_on_signals() or not self._step():
                    return
                if self.position == config.steps_per_epoch:
                    self.epoch, self.position, self.sampler.perm = self.epoch + 1, 0, None
                if self.global_step % config.checkpoint_every == 0:
                    self._save("periodic")
                elif self.agreed_checkpoint:
                    self._save("SIGUSR2")

    def _my_micro_batches(self) -> list[int]:
        return [m for m in range(self.config.micro_batches) if m % self.world == self.rank]

    def _next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        assert self.loader is not None
        try:
            return self.loader.next()
        except RuntimeError as err:
            if "exited unexpectedly" in str(err):
                raise WorkerDied(str(err).strip().splitlines()[0]) from err
            raise

    def _step(self) -> bool:
        """One optimizer step; False if a stop request abandoned it part-way (one process only)."""
        config = self.config
        rng_before = torch.get_rng_state()
        self.optimizer.zero_grad(set_to_none=True)
        started = time.monotonic()
        losses: list[float] = []
        self.model.train()
        for count, micro in enumerate(self._my_micro_batches()):
            if count and not self.distributed and self.flags.stopping:
                torch.set_rng_state(rng_before)  # the step never happened
                self.optimizer.zero_grad(set_to_none=True)
                self.files.log(f"abandoned step {self.global_step + 1} after {count} of "
                               f"{config.micro_batches} micro-batches")
                return False
            x, y = self._next_batch()
            loss = functional.cross_entropy(self.model(x), y)
            (loss / config.micro_batches).backward()
            losses.append(loss.item())
            _sleep_until(started + config.step_time_s * (micro + 1) / config.micro_batches)
        loss_sum = float(sum(losses))
        if self.distributed:
            loss_sum = self._all_reduce_gradients(loss_sum)
        self.optimizer.step()
        self.scheduler.step()
        self.position += 1
        self.global_step += 1
        self.loss = loss_sum / config.micro_batches
        self.files.metric(self.global_step, self.epoch, self.loss)
        if self.global_step % 10 == 0 or self.global_step == 1:
            self.files.log(f"step {self.global_step} epoch {self.epoch} loss {self.loss:.4f}")
        return True

    def _all_reduce_gradients(self, loss_sum: float) -> float:
        """Sum gradients, losses and the two request counters over the ranks; return the loss sum."""
        assert self.group is not None
        params = list(self.model.parameters())
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        wants_checkpoint = self.flags.take_checkpoint_request()
        tail = torch.tensor([loss_sum, float(self.flags.stopping), float(wants_checkpoint)])
        flat = self.group.all_reduce(torch.cat([g.reshape(-1) for g in grads] + [tail]))
        offset = 0
        for p in params:
            p.grad = flat[offset:offset + p.numel()].reshape(p.shape).clone()
            offset += p.numel()
        self.agreed_stop = bool(flat[offset + 1] > 0)
        self.agreed_checkpoint = bool(flat[offset + 2] > 0)
        return float(flat[offset])

    def _act_on_signals(self) -> bool:
        if self.flags.take_status_request():
            self.files.log(self._status_line() + " (stacks of every thread dumped above)")
        if self.distributed:  # a stop or a SIGUSR2 counts once the ranks agreed on it (next all-reduce)
            if self.agreed_stop and not self.flags.stopping:
                self.files.log("stopping: another rank was asked to stop")
            return self.agreed_stop
        if self.flags.take_checkpoint_request():
            self._save("SIGUSR2")
        return self.flags.stopping

    def _status_line(self) -> str:
        return (f"status: step {self.global_step} epoch {self.epoch} loss {self.loss:.4f} "
                f"last checkpoint step {self.saved_step} workers {self.loader.pids if self.loader else []}")

    def _state(self) -> dict[str, Any]:
        rngs = rng_states()
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "sampler": self.sampler.state_dict(),
                "rng": self.group.gather(rngs) if self.group is not None else [rngs],
                "epoch": self.epoch, "position": self.position, "global_step": self.global_step,
                "loss": self.loss, "identity": self._identity(), "saved_at": time.time()}

    def _save(self, reason: str) -> None:
        started = time.monotonic()
        state = self._state()  # collective under torchrun: every rank's RNG states
        if self.rank == 0:
            path = ckpt.save(self.files.checkpoints, self.global_step, state, keep=self.config.keep)
            self.files.log(f"checkpoint {path.name} saved ({reason}, {(time.monotonic() - started) * 1000:.0f} ms)")
        self._barrier()  # no rank goes on (or exits) before rank 0's checkpoint is durable
        self.saved_step = self.global_step

    def _barrier(self) -> None:
        if self.group is not None:
            self.group.barrier()

    def _finish(self) -> int:
        sig = self.flags.stop_signal
        if sig is not None or self.agreed_stop:
            return self._finish_stopped(sig.name if sig is not None else _AGREED)
        if self.saved_step != self.global_step:
            self._save("final")
        digest = weights_sha256(self.model)
        if self.rank == 0:
            self.files.write_final({"status": "completed", "epoch": self.epoch, "global_step": self.global_step,
                                    "loss": self.loss, "weights_sha256": digest})
        self.files.log(f"completed: step {self.global_step} loss {self.loss:.4f} weights_sha256 {digest[:16]}...")
        return 0

    def _finish_stopped(self, reason: str) -> int:
        self.files.log(f"stopping on {reason} at step {self.global_step}")
        seconds = self.config.shutdown_s if self.config.fault == "slow-shutdown" and self.rank == 0 else 0.0
        if seconds:
            self.files.log(f"fault slow-shutdown: flushing for {seconds:g} s before saving")
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                time.sleep(0.1)
        if self.saved_step != self.global_step:
            self._save(reason)
        repeats = max(self.flags.stop_count - 1, 0)
        self.files.log(f"stopped cleanly on {reason}; resume with --resume"
                       + (f" ({repeats} more stop signal(s) arrived while stopping)" if repeats else ""))
        return 0


def _sleep_until(deadline: float) -> None:
    remaining = deadline - time.monotonic()
    if remaining > 0:
        time.sleep(remaining)


__all__ = ["TorchTrainer", "build_model", "weights_sha256"]
