"""The simulated trainer: a real NumPy training loop run as its own process.

Run it with ``python -m labkit.trainer --run-dir DIR`` or ``labkit train --run-dir DIR``.
"""

from labkit.trainer.config import FAULTS, TrainConfig, add_arguments, config_from_args

__all__ = ["FAULTS", "TrainConfig", "add_arguments", "config_from_args", "run"]


def run(config: TrainConfig, argv: list[str] | None = None) -> int:
    """Run the trainer in this process and return its exit code (see :mod:`labkit.trainer.entry`).

    With ``config.ranks > 1`` this process launches the ranks, each given ``argv``.
    """
    from labkit.trainer.entry import run as _run

    return _run(config, argv)
