"""The files a run leaves in its folder: train.log, metrics.jsonl, heartbeat, final.json."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import IO

from labkit._atomic import write_atomic
from labkit.errors import BadArgument


class RunFiles:
    """Open a run folder's log, metrics and heartbeat, and write each line as it happens."""

    def __init__(self, run_dir: Path, echo: IO | None = sys.stderr) -> None:
        self.run_dir = run_dir
        try:
            self._open(run_dir, echo)
        except OSError as err:
            raise BadArgument(f"cannot use run folder {run_dir}: {err.strerror or err}") from err

    def _open(self, run_dir: Path, echo: IO | None) -> None:
        run_dir.mkdir(parents=True, exist_ok=True)
        self.checkpoints = run_dir / "checkpoints"
        self.heartbeat = run_dir / "heartbeat"
        self.final = run_dir / "final.json"
        self.metrics_path = run_dir / "metrics.jsonl"
        # Append mode (O_APPEND): lines from faulthandler's C-level dump and ours never overwrite.
        self.log_file = open(run_dir / "train.log", "a", buffering=1, encoding="utf-8")
        self.log_had_lines = self.log_file.tell() > 0  # an earlier run of this folder logged here
        self._metrics = open(self.metrics_path, "a", buffering=1, encoding="utf-8")
        self._echo = echo
        self.heartbeat.touch()

    def log(self, message: str) -> None:
        """Write one timestamped line to train.log (and echo it to the console)."""
        now = time.time()
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(now)) + f".{int(now % 1 * 1000):03d}"
        line = f"{stamp} [pid {os.getpid()}] {message}"
        try:
            self.log_file.write(line + "\n")
        except OSError:  # a full disk: the console still gets the line, and the run decides what to do
            pass
        if self._echo is not None:
            try:
                self._echo.write(line + "\n")
                self._echo.flush()
            except (OSError, ValueError):
                self._echo = None  # the console went away (closed terminal): keep logging to file

    def metric(self, step: int, epoch: int, loss: float) -> None:
        """Append one step's metrics and touch the heartbeat."""
        self._metrics.write(json.dumps({"step": step, "epoch": epoch, "loss": round(loss, 6),
                                        "time": round(time.time(), 3)}) + "\n")
        os.utime(self.heartbeat)

    def truncate_metrics(self, last_step: int) -> int:
        """Drop metric lines after ``last_step`` (steps redone after a resume); return how many."""
        self._metrics.close()
        kept, dropped = [], 0
        if self.metrics_path.exists():
            for line in self.metrics_path.read_text(encoding="utf-8").splitlines():
                try:
                    keep = json.loads(line)["step"] <= last_step
                except (ValueError, KeyError, TypeError):
                    keep = False  # a line cut short by a kill
                if keep:
                    kept.append(line)
                else:
                    dropped += 1
        write_atomic(self.metrics_path, "".join(line + "\n" for line in kept).encode())
        self._metrics = open(self.metrics_path, "a", buffering=1, encoding="utf-8")
        return dropped

    def start_fresh(self) -> list[str]:
        """Empty metrics.jsonl and remove final.json: a new run's plot and result are its own.

        train.log is kept (appended to: the trainer writes a "new run" line), and so is the
        heartbeat. Returns the names of the files that held a previous run's data.
        """
        had = [path.name for path in (self.metrics_path, self.final) if path.exists() and path.stat().st_size]
        self._metrics.close()
        self._metrics = open(self.metrics_path, "w", buffering=1, encoding="utf-8")
        self.final.unlink(missing_ok=True)
        return had

    def write_final(self, summary: dict) -> None:
        """Atomically write final.json."""
        write_atomic(self.final, (json.dumps(summary, indent=2) + "\n").encode())

    def close(self) -> None:
        """Close the log and metrics files (a full disk may refuse their last buffered bytes)."""
        for handle in (self._metrics, self.log_file):
            try:
                handle.close()
            except OSError:
                pass
