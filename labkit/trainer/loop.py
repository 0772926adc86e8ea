"""The training loop: run, checkpoint, stop on request, resume exactly."""

from __future__ import annotations

import copy
import os
import shutil
import signal
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from labkit import checkpoint
from labkit.errors import BadArgument, DiskFull, NoCheckpoint
from labkit.trainer import model
from labkit.trainer.config import TrainConfig
from labkit.trainer.faults import Faults
from labkit.trainer.loader import InlineLoader, WorkerDied, WorkerPool
from labkit.trainer.runfiles import RunFiles
from labkit.trainer.shutdown import SignalFlags


@dataclass
class TrainState:
    """Everything exact resume needs: weights, optimizer, RNG, position."""

    params: dict[str, np.ndarray]
    velocity: dict[str, np.ndarray]
    rng: np.random.Generator
    epoch: int = 0
    position: int = 0  # completed steps in the current epoch
    global_step: int = 0
    perm: np.ndarray | None = None  # the current epoch's shuffle, once drawn
    loss: float = float("nan")
    saved_step: int = -1
    ballast: list = field(default_factory=list)

    @classmethod
    def fresh(cls, config: TrainConfig) -> "TrainState":
        """Initialise weights and RNG from the seed."""
        rng = np.random.default_rng(config.seed)
        params = model.init_params(rng, config.hidden)
        velocity = {name: np.zeros_like(value) for name, value in params.items()}
        return cls(params=params, velocity=velocity, rng=rng)

    @classmethod
    def from_checkpoint(cls, ckpt: checkpoint.Checkpoint, config: TrainConfig) -> "TrainState":
        """Rebuild the state saved in ``ckpt`` after checking it belongs to this run."""
        saved = ckpt.meta.get("identity", {})
        wanted = config.identity()
        differs = [f"--{k.replace('_', '-')} {saved.get(k)} (this run: {v})"
                   for k, v in wanted.items() if saved.get(k) != v]
        if differs:
            raise BadArgument(f"checkpoint {ckpt.path} was made with different settings: "
                              + ", ".join(differs) + "; use the same settings or a new --run-dir")
        rng = np.random.default_rng()
        rng.bit_generator.state = ckpt.meta["rng"]
        arrays = ckpt.arrays
        return cls(
            params={n: arrays[n] for n in model.LAYERS},
            velocity={n: arrays["v_" + n] for n in model.LAYERS},
            rng=rng, epoch=ckpt.meta["epoch"], position=ckpt.meta["position"],
            global_step=ckpt.meta["global_step"], perm=arrays.get("perm"),
            loss=ckpt.meta.get("loss", float("nan")), saved_step=ckpt.meta["global_step"],
        )

    def checkpoint_content(self, config: TrainConfig, rng_state: Mapping[str, Any]) -> tuple[dict, dict]:
        """Return the arrays and metadata a checkpoint of this state holds."""
        arrays = dict(self.params)
        arrays.update({"v_" + n: v for n, v in self.velocity.items()})
        if self.perm is not None:
            arrays["perm"] = self.perm
        meta = {"epoch": self.epoch, "position": self.position, "global_step": self.global_step,
                "rng": rng_state, "loss": self.loss, "identity": config.identity(),
                "saved_at": time.time()}
        return arrays, meta


class Trainer:
    """One run of the simulated training job."""

    def __init__(self, config: TrainConfig) -> None:
        self.config = config
        self.files = RunFiles(config.run_dir)
        self.faults = Faults(config.fault, config.fault_step, self.files.log, config.shutdown_s)
        ignore = (signal.SIGTERM,) if self.faults.ignores_sigterm else ()
        self.flags = SignalFlags(ignore=ignore, stack_file=self.files.log_file)
        self._state: TrainState | None = None  # set by run(), before the loop reads it
        self._loader: InlineLoader | None = None  # likewise
        self._step_started = 0.0

    @property
    def state(self) -> TrainState:
        """The run's state (weights, optimizer, RNG, position); exists once :meth:`run` has begun."""
        if self._state is None:
            raise RuntimeError("the trainer has no state yet: Trainer.run() creates it")
        return self._state

    @property
    def loader(self) -> InlineLoader:
        """The data loader of the run; exists once :meth:`run` has loaded the state."""
        if self._loader is None:
            raise RuntimeError("the trainer has no data loader yet: Trainer.run() creates it")
        return self._loader

    def run(self) -> int:
        """Train to the end or until a stop signal; return the process exit code."""
        self.flags.install()
        try:
            self._state = self._initial_state()
            self._hold_memory()
            self._loader = self._make_loader()
            self._train()
            return self._finish()
        except WorkerDied as err:  # only the loader raises it, and it exists after the state
            self.files.log(f"error: {err}; the last checkpoint is step {self.state.saved_step}")
            return 1
        except (DiskFull, OSError) as err:
            if not isinstance(err, DiskFull) and not DiskFull.matches(err):
                raise
            full = err if isinstance(err, DiskFull) else DiskFull(f"writing in {self.config.run_dir}", err)
            kept = self._state.saved_step if self._state else -1
            self.files.log(f"error: {full}; " + (f"the previous checkpoint (step {kept}) is kept" if kept >= 0 else
                                                 "no checkpoint was saved yet")
                           + f"; {full.advice}, then resume with --resume")
            return full.exit_code
        finally:
            if self._loader is not None:
                self._loader.close()
            self.faults.reap_zombies()
            self.flags.restore()

    def _initial_state(self) -> TrainState:
        config = self.config
        self.files.log(f"start: pid {os.getpid()} pgid {os.getpgrp()} run_dir {config.run_dir} "
                       f"epochs {config.epochs} steps/epoch {config.steps_per_epoch} "
                       f"workers {config.workers} seed {config.seed}"
                       + (f" fault {config.fault} at step {config.fault_step}" if config.fault else ""))
        if self.flags.hup_inherited_ignored:
            self.files.log("SIGHUP is ignored, as inherited (nohup): a closed terminal will not stop this run")
        if not config.resume:
            self._start_fresh()
            return TrainState.fresh(config)
        self._remove_stale_temporaries()
        try:
            result = checkpoint.load_latest(self.files.checkpoints)
        except NoCheckpoint as err:
            self.files.log(f"resume: {err}; starting from scratch")
            self.files.truncate_metrics(0)  # lines of a run that left no checkpoint: redone from step 1
            return TrainState.fresh(config)
        for path, reason in result.skipped:
            self.files.log(f"resume: skipped {path.name}: {reason}")
        state = TrainState.from_checkpoint(result.checkpoint, config)
        dropped = self.files.truncate_metrics(state.global_step)
        source = result.checkpoint.path  # set by load_latest; None only for a Checkpoint built by hand
        name = source.name if source is not None else "a checkpoint"
        self.files.log(f"resume: from {name} at step {state.global_step} "
                       f"(epoch {state.epoch}, step {state.position} of the epoch)"
                       + (f"; {dropped} metric lines after it will be redone" if dropped else ""))
        return state

    def _start_fresh(self) -> None:
        """Start a run without --resume from nothing, in a folder an earlier run may have used.

        Its metrics.jsonl starts empty and final.json goes (a plot or a check must not show the
        old run's loss or result); train.log keeps the earlier lines above a "new run" line. The
        earlier run's checkpoints are moved to ``checkpoints.previous/`` (replacing an older
        set there): left in ``checkpoints/``, the newest by step would be the old run's, so
        pruning (``--keep``) would delete this run's own saves and a later ``--resume`` would
        continue the old run instead of this one.
        """
        emptied = self.files.start_fresh()
        moved = self._set_aside_checkpoints()
        if self.files.log_had_lines or emptied or moved:
            self.files.log("new run (no --resume): metrics.jsonl and final.json start empty"
                           + (f"; the previous run's checkpoints (newest step {moved[0]}) are now in "
                              f"{self.files.checkpoints.name}.previous/" if moved else "")
                           + "; to continue a run instead, start it with --resume")

    def _set_aside_checkpoints(self) -> list[int]:
        """Move the checkpoints of an earlier run out of the way; their steps, newest first."""
        folder = self.files.checkpoints
        steps = [step for step, _ in checkpoint.list_checkpoints(folder)]
        if not folder.is_dir() or not any(folder.iterdir()):
            return steps
        aside = folder.with_name(folder.name + ".previous")
        if aside.exists():
            shutil.rmtree(aside)
        os.replace(folder, aside)
        return steps

    def _remove_stale_temporaries(self) -> None:
        for stale in checkpoint.remove_stale_temporaries(self.files.checkpoints):
            self.files.log(f"resume: removed {stale.name}, left by a save that was interrupted")

    def _hold_memory(self) -> None:
        if self.config.gpu_mb:
            from labkit.gpu import GpuMemory

            try:
                self.state.ballast.append(GpuMemory(self.config.gpu_mb))
                self.files.log(f"holding {self.config.gpu_mb} MiB of GPU memory on GPU 0 (CUDA driver)")
            except OSError as err:
                self.files.log(f"--gpu-mb {self.config.gpu_mb}: not holding GPU memory: {err}")
        if self.config.memory_mb:
            self.state.ballast.append(np.ones(self.config.memory_mb * 2**20 // 8))
            self.files.log(f"holding {self.config.memory_mb} MiB of touched memory")

    def _make_loader(self) -> InlineLoader:
        if self.config.workers == 0:
            return InlineLoader(self.config.seed, self.config.samples)
        pool = WorkerPool(self.config.seed, self.config.samples, self.config.workers)
        self.files.log(f"started {self.config.workers} data-loader workers: pids {pool.pids}")
        return pool

    def _train(self) -> None:
        config, state = self.config, self.state
        while state.epoch < config.epochs and not self._act_on_signals():
            if state.perm is None:
                state.perm = state.rng.permutation(config.samples)
            first = state.position * config.micro_batches
            self.loader.start_epoch(state.epoch, state.perm, config.batch_size, first)
            epoch = state.epoch
            while state.epoch == epoch:
                if self._act_on_signals() or not self._step():
                    return
                if state.position == config.steps_per_epoch:
                    state.epoch, state.position, state.perm = state.epoch + 1, 0, None
                if state.global_step % config.checkpoint_every == 0:
                    self._save("periodic")
                self.faults.after_step(state.global_step)

    def _step(self) -> bool:
        """Run one optimizer step; False if a stop request abandoned it part-way."""
        config, state = self.config, self.state
        rng_before = copy.deepcopy(state.rng.bit_generator.state)
        started = time.monotonic()
        grads_sum: dict[str, np.ndarray] | None = None
        losses: list[float] = []
        for micro in range(config.micro_batches):
            if micro and self.flags.stopping:
                state.rng.bit_generator.state = rng_before  # the step never happened
                self.files.log(f"abandoned step {state.global_step + 1} after {micro} of "
                               f"{config.micro_batches} micro-batches")
                return False
            index = state.position * config.micro_batches + micro
            x, y = self.loader.get(index)
            loss, grads = model.loss_and_grads(state.params, x, y, state.rng)
            losses.append(loss)
            grads_sum = grads if grads_sum is None else {k: grads_sum[k] + grads[k] for k in grads}
            _sleep_until(started + config.step_time_s * (micro + 1) / config.micro_batches)
        if grads_sum is None:
            raise BadArgument(f"micro_batches must be at least 1, got {config.micro_batches}")
        mean = {k: g / config.micro_batches for k, g in grads_sum.items()}
        model.sgd_momentum(state.params, state.velocity, mean, config.lr, config.momentum)
        state.position += 1
        state.global_step += 1
        state.loss = float(np.mean(losses))
        self.files.metric(state.global_step, state.epoch, state.loss)
        if state.global_step % 10 == 0 or state.global_step == 1:
            self.files.log(f"step {state.global_step} epoch {state.epoch} loss {state.loss:.4f}")
        return True

    def _act_on_signals(self) -> bool:
        """Handle requests recorded by the signal handlers; True when the run must stop."""
        for sig in self.flags.take_ignored():
            self.files.log(f"received {sig.name} and ignored it (--fault {self.config.fault})")
        if self.flags.take_status_request():
            self.files.log(self._status_line() + " (stacks of every thread dumped above)")
        if self.flags.take_checkpoint_request():
            self._save("SIGUSR2")
        return self.flags.stopping

    def _status_line(self) -> str:
        s = self.state
        return (f"status: step {s.global_step} epoch {s.epoch} loss {s.loss:.4f} "
                f"last checkpoint step {s.saved_step} workers {self._loader.pids if self._loader else []}")

    def _save(self, reason: str) -> None:
        state = self.state
        started = time.monotonic()
        arrays, meta = state.checkpoint_content(self.config, state.rng.bit_generator.state)
        path = checkpoint.save(self.files.checkpoints, state.global_step, arrays, meta, keep=self.config.keep)
        state.saved_step = state.global_step
        self.files.log(f"checkpoint {path.name} saved ({reason}, {(time.monotonic() - started) * 1000:.0f} ms)")

    def _finish(self) -> int:
        state = self.state
        sig = self.flags.stop_signal
        if sig is not None:
            return self._finish_stopped(sig.name)
        if state.saved_step != state.global_step:
            self._save("final")
        digest = model.weights_sha256(state.params)
        summary = {"status": "completed", "epoch": state.epoch, "global_step": state.global_step,
                   "loss": state.loss, "weights_sha256": digest}
        self._write_final(summary)
        self.files.log(f"completed: step {state.global_step} loss {state.loss:.4f} "
                       f"weights_sha256 {digest[:16]}...")
        return 0

    def _finish_stopped(self, reason: str) -> int:
        """Save and log a stop requested by ``reason`` (a signal's name)."""
        state = self.state
        self.files.log(f"stopping on {reason} at step {state.global_step}")
        self._slow_shutdown()
        if state.saved_step != state.global_step:
            self._save(reason)
        repeats = self.flags.stop_count - 1
        self.files.log(f"stopped cleanly on {reason}; resume with --resume"
                       + (f" ({repeats} more stop signal(s) arrived while stopping)" if repeats else ""))
        return 0

    def _write_final(self, summary: dict[str, Any]) -> None:
        self.files.write_final(summary)

    def _slow_shutdown(self) -> None:
        seconds = self.faults.slow_shutdown_s
        if seconds:
            self.files.log(f"fault slow-shutdown: flushing for {seconds:g} s before saving")
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                time.sleep(0.1)


def _sleep_until(deadline: float) -> None:
    remaining = deadline - time.monotonic()
    if remaining > 0:
        time.sleep(remaining)
