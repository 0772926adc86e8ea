"""Run a unit from Python (a notebook, a test): the runner in its own process, its events here.

``real=True`` runs the same unit on the real systemd user manager instead (``labkit unit run
--real``, see :mod:`labkit.systemd.real`); the events, states and methods are the same.

>>> run = UnitRun("train.service")                 # doctest: +SKIP
>>> run.wait_for("restart", timeout_s=10)          # doctest: +SKIP
>>> run.stop()                                     # doctest: +SKIP
'inactive'
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable

from labkit.errors import LabkitError

_EXIT_STATES = {0: "inactive", 1: "failed"}


class UnitRun:
    """``labkit unit run FILE --json`` (``--real`` if ``real``) started in the background, with its
    events collected in :attr:`events` (dicts, in the order they came)."""

    def __init__(self, path: str | os.PathLike, stop_after_s: float | None = None, run_for_s: float | None = None,
                 env: dict[str, str] | None = None, real: bool = False) -> None:
        self.path = Path(path)
        self.real = real
        argv = [sys.executable, "-m", "labkit", "unit", "run", str(self.path), "--json"] + (["--real"] if real else [])
        argv += ["--stop-after", str(stop_after_s)] if stop_after_s is not None else []
        argv += ["--for", str(run_for_s)] if run_for_s is not None else []
        self.events: list[dict] = []
        self.errors = ""
        self._changed = threading.Condition()
        self.process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True, env=env)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        stdout, stderr = self.process.stdout, self.process.stderr
        assert stdout is not None and stderr is not None  # both are pipes (Popen above)
        for line in stdout:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            with self._changed:
                self.events.append(event)
                self._changed.notify_all()
        self.errors = stderr.read()
        with self._changed:
            self._changed.notify_all()

    def wait_for(self, event: str, timeout_s: float = 30.0, where: Callable[[dict], bool] | None = None,
                 count: int = 1) -> dict:
        """Wait for the ``count``-th event named ``event`` (matching ``where``); return it.

        Raises:
            LabkitError: it did not come within ``timeout_s`` (the message lists what did).
        """
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while True:
                found = [e for e in self.events if e["event"] == event and (where is None or where(e))]
                if len(found) >= count:
                    return found[count - 1]
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (not self._reader.is_alive() and self.process.poll() is not None):
                    seen = ", ".join(e["event"] for e in self.events) or "none"
                    raise LabkitError(f"no {event!r} event #{count} from {self.path.name} within {timeout_s:g} s; "
                                      f"events: {seen}" + (f"; errors: {self.errors.strip()}" if self.errors else ""))
                self._changed.wait(min(remaining, 0.2))

    def count(self, event: str) -> int:
        """How many ``event`` events came so far."""
        with self._changed:
            return sum(1 for e in self.events if e["event"] == event)

    def stop(self, timeout_s: float = 120.0) -> str:
        """Ask the runner to stop the unit (``systemctl stop``) and wait; return the final state."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.wait(timeout_s)

    def wait(self, timeout_s: float | None = None) -> str:
        """Wait until the runner ends; return 'inactive' or 'failed'.

        Raises:
            LabkitError: the runner refused the unit (the message is its one-line error).
        """
        try:
            code = self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise LabkitError(f"{self.path.name} is still running after {timeout_s:g} s") from None
        self._reader.join(timeout=5)
        if code not in _EXIT_STATES:
            raise LabkitError(self.errors.strip() or f"labkit unit run exited with {code}")
        return _EXIT_STATES[code]

    def close(self) -> None:
        """Stop the unit if it still runs (safe to call twice)."""
        if self.process.poll() is None:
            try:
                self.stop(timeout_s=30)
            except LabkitError:
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> "UnitRun":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def run_unit(path: str | os.PathLike, stop_after_s: float | None = None, run_for_s: float | None = None,
             timeout_s: float = 300.0, real: bool = False) -> tuple[str, list[dict]]:
    """Run a unit to its end (or the time limits); return (final state, events).

    ``real=True``: on the real user manager (``labkit unit run --real``).

    Raises:
        LabkitError: the unit was refused (its one-line reason), or it still ran after ``timeout_s``.
    """
    with UnitRun(path, stop_after_s=stop_after_s, run_for_s=run_for_s, real=real) as run:
        state = run.wait(timeout_s)
        return state, list(run.events)
