"""The trainer's settings and their command-line options (shared by ``labkit train``)."""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, fields
from pathlib import Path

FAULTS = (
    "ignore-sigterm",
    "slow-shutdown",
    "hang-io",
    "deadlock",
    "busy-loop",
    "memory-leak",
    "crash",
    "zombie-worker",
    "orphan-workers",
)

FRAMEWORKS = ("numpy", "torch")

# Settings that shape the computation: a checkpoint only resumes a run that agrees on all of them.
IDENTITY = ("seed", "steps_per_epoch", "micro_batches", "batch_size", "hidden", "lr", "momentum", "ranks")


@dataclass(frozen=True)
class TrainConfig:
    """Everything one training run needs; ``python -m labkit.trainer --help`` documents each."""

    run_dir: Path
    epochs: int = 5
    steps_per_epoch: int = 50
    step_time_s: float = 0.02
    seed: int = 0
    workers: int = 0
    memory_mb: int = 0
    gpu_mb: int = 0
    checkpoint_every: int = 10
    keep: int = 3
    resume: bool = False
    fault: str | None = None
    fault_step: int = 10
    shutdown_s: float = 30.0
    micro_batches: int = 4
    batch_size: int = 16
    hidden: int = 64
    lr: float = 0.05
    momentum: float = 0.9
    ranks: int = 1
    rank: int | None = None  # set by the launcher for each rank process
    grace_s: float = 10.0
    rank_timeout_s: float = 30.0
    framework: str = "numpy"  # "torch": labkit.trainer.torch (needs the [torch] extra)

    def identity(self) -> dict:
        """Return the settings a checkpoint must agree with to be resumed."""
        values = asdict(self)
        return {key: values[key] for key in IDENTITY}

    @property
    def samples(self) -> int:
        """Number of samples in the data set: one epoch visits each exactly once."""
        return self.steps_per_epoch * self.micro_batches * self.batch_size


def _at_least(minimum: int | float, kind=int):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {text}")
        return value

    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the trainer's options to ``parser`` (used by ``python -m labkit.trainer`` and the CLI)."""
    add = parser.add_argument
    add("--run-dir", required=True, type=Path, help="folder for train.log, metrics, checkpoints")
    add("--epochs", type=_at_least(1), default=5, help="epochs to train (default 5)")
    add("--steps-per-epoch", type=_at_least(1), default=50, help="optimizer steps per epoch")
    add("--step-time", dest="step_time_s", type=_at_least(0.0, float), default=0.02,
        help="seconds one step takes, like a GPU step would (default 0.02)")
    add("--seed", type=_at_least(0), default=0, help="seed of data, init, shuffling, dropout")
    add("--workers", type=_at_least(0), default=0, help="data-loader worker processes")
    add("--memory-mb", type=_at_least(0), default=0, help="MiB of real, touched memory to hold")
    add("--gpu-mb", type=_at_least(0), default=0,
        help="MiB of GPU memory to hold on GPU 0 (CUDA driver); logged and skipped where there is no GPU")
    add("--checkpoint-every", type=_at_least(1), default=10, help="steps between checkpoints")
    add("--keep", type=_at_least(1), default=3, help="newest checkpoints to keep")
    add("--resume", action="store_true", help="continue from the newest valid checkpoint")
    add("--fault", choices=FAULTS, default=None, help="misbehave on purpose (for the lessons)")
    add("--fault-step", type=_at_least(1), default=10, help="global step at which the fault starts")
    add("--shutdown-seconds", dest="shutdown_s", type=_at_least(0.0, float), default=30.0,
        help="seconds the slow-shutdown fault spends before saving (default 30)")
    add("--micro-batches", type=_at_least(1), default=4,
        help="micro-batches per step (gradient accumulation); stop requests are checked between them")
    add("--batch-size", type=_at_least(1), default=16, help="samples per micro-batch")
    add("--hidden", type=_at_least(1), default=64, help="width of the two hidden layers")
    add("--lr", type=_at_least(0.0, float), default=0.05, help="learning rate")
    add("--momentum", type=_at_least(0.0, float), default=0.9, help="SGD momentum")
    add("--ranks", type=_at_least(1), default=1,
        help="data-parallel rank processes (a launcher starts them, like torchrun)")
    add("--rank", type=_at_least(0), default=None, help=argparse.SUPPRESS)  # set by the launcher
    add("--grace-period", dest="grace_s", type=_at_least(0.0, float), default=10.0,
        help="with --ranks: seconds the other ranks get after SIGTERM when one fails, before SIGKILL")
    add("--rank-timeout", dest="rank_timeout_s", type=_at_least(0.1, float), default=30.0,
        help="with --ranks: seconds a rank waits for the others before giving up (like NCCL's timeout)")
    add("--framework", choices=FRAMEWORKS, default="numpy",
        help="numpy (default) or torch: the same trainer written with PyTorch (pip install 'labkit[torch]'); "
             "run its ranks with torchrun")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """Build a :class:`TrainConfig` from parsed arguments (extra attributes are ignored)."""
    names = {f.name for f in fields(TrainConfig)}
    return TrainConfig(**{k: v for k, v in vars(args).items() if k in names})
