"""The trainer's entry points: :func:`run` (one process, a rank, or the launcher of ranks) and
``python -m labkit.trainer``'s :func:`main`. Apart from the loop, so that the loop and the rank
trainer built on it do not import each other."""

from __future__ import annotations

import argparse
import sys
import traceback
from typing import Any, Callable

from labkit.errors import LabkitError
from labkit.trainer.config import TrainConfig, add_arguments, config_from_args
from labkit.trainer.loop import Trainer


def run(config: TrainConfig, argv: list[str] | None = None) -> int:
    """Run the trainer in this process and return its exit code.

    With ``ranks > 1`` this process is the launcher of that many rank processes (``argv``
    are the arguments each rank gets, plus its ``--rank``).

    >>> run(TrainConfig(run_dir=Path("runs/demo"), epochs=1))  # doctest: +SKIP
    0
    """
    if config.framework == "torch":
        return _run_torch(config)
    if config.ranks > 1 and config.rank is None:
        from labkit.trainer.distributed import launch

        return launch(config, argv if argv is not None else sys.argv[1:])
    if config.rank is not None:
        from labkit.trainer.ranks import RankTrainer

        return drive(lambda: RankTrainer(config))
    return drive(lambda: Trainer(config))


def drive(make: Callable[[], Any]) -> int:
    """Build a trainer with ``make`` and run it; return its exit code.

    An error while building it (a run folder that cannot be created) is one line on stderr, with
    no traceback; while running, a LabkitError or a crash goes to its train.log. Used for the NumPy
    trainers and the torch one alike.
    """
    try:
        trainer = make()
    except LabkitError as err:
        print(f"labkit: error: {err}", file=sys.stderr)
        return err.exit_code
    try:
        return trainer.run()
    except LabkitError as err:
        trainer.files.log(f"error: {err}")
        return err.exit_code
    except Exception:
        trainer.files.log("crashed:\n" + traceback.format_exc().rstrip())
        return 1
    finally:
        trainer.files.close()


def _run_torch(config: TrainConfig) -> int:
    """The torch trainer (labkit.trainer.torch), imported only now: torch takes ~2 s to import."""
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        print("labkit: error: --framework torch needs PyTorch, which is not installed here: "
              "pip install 'labkit[torch]' (the CPU build is enough)", file=sys.stderr)
        return 1
    from labkit.trainer.torch.loop import TorchTrainer

    return drive(lambda: TorchTrainer(config))


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m labkit.trainer``."""
    parser = argparse.ArgumentParser(prog="python -m labkit.trainer",
                                     description="A simulated ML training job that behaves like a real one.")
    add_arguments(parser)
    argv = list(sys.argv[1:] if argv is None else argv)
    return run(config_from_args(parser.parse_args(argv)), argv)
