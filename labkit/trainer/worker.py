"""A data-loader worker process: ``python -m labkit.trainer.worker`` (started by the trainer).

It answers requests ``(epoch, index, rows)`` with ``(epoch, index, x, y)`` until its
request pipe reaches EOF, which happens when the trainer closes it or dies.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from multiprocessing.connection import Connection


def main(argv: list[str] | None = None) -> int:
    """Serve micro-batches until the trainer goes away."""
    parser = argparse.ArgumentParser(prog="python -m labkit.trainer.worker")
    parser.add_argument("--rank", type=int, required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--samples", type=int, required=True)
    parser.add_argument("--read-fd", type=int, required=True)
    parser.add_argument("--write-fd", type=int, required=True)
    parser.add_argument("--parent", type=int, required=True)
    args = parser.parse_args(argv)

    from labkit._prctl import set_parent_death_signal
    from labkit.trainer.loader import WORKER_SIGNALS_IGNORED

    for sig in WORKER_SIGNALS_IGNORED:  # already ignored since exec; kept for direct runs
        signal.signal(sig, signal.SIG_IGN)
    set_parent_death_signal()
    if os.getppid() != args.parent:  # the trainer died before PDEATHSIG was armed
        return 0

    from labkit.trainer.model import make_batch, make_dataset

    data = make_dataset(args.seed, args.samples)
    requests = Connection(args.read_fd, writable=False)
    replies = Connection(args.write_fd, readable=False)
    while True:
        try:
            epoch, index, rows = requests.recv()
        except (EOFError, OSError):
            return 0
        x, y = make_batch(data, args.seed, epoch, index, rows)
        try:
            replies.send((epoch, index, x, y))
        except OSError:  # the trainer is gone (EPIPE)
            return 0


if __name__ == "__main__":
    sys.exit(main())
