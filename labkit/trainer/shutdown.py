"""The trainer's signal handling: handlers only record what arrived; the loop acts on it.

Doing real work (saving, logging) inside a Python signal handler is unsafe: the handler
runs between two bytecodes of whatever the main thread was doing, possibly in the middle
of writing the very checkpoint it would save. So each handler sets a flag and returns,
and the training loop checks the flags between micro-batches (submitit does the same).
"""

from __future__ import annotations

import faulthandler
import signal
from collections.abc import Callable
from types import FrameType
from typing import IO, Any, Union

# What signal.getsignal() returns and signal.signal() accepts.
_Handler = Union[Callable[[int, Union[FrameType, None]], Any], int, signal.Handlers, None]

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
_EARLY: list[int] = []  # signals that arrived before SignalFlags.install (numpy still loading)
_IGNORED_AT_START: set[int] = set()  # dispositions inherited as SIG_IGN, seen by install_early


def _hup_ignored_by_parent() -> bool:
    """True when SIGHUP was ignored when this process started (``nohup``, a launcher's choice).

    That is the whole contract of ``nohup``: the program keeps running when the terminal
    goes away. Replacing the inherited SIG_IGN with a handler would silently break it.
    """
    return signal.SIGHUP in _IGNORED_AT_START or signal.getsignal(signal.SIGHUP) is signal.SIG_IGN


def install_early() -> None:
    """Record stop/status signals from the first instant of the process, before the heavy imports.

    Without this, a SIGTERM in the ~150 ms it takes to import numpy would kill the trainer
    with the default action (exit 143) instead of stopping it cleanly.
    """
    for sig in (*STOP_SIGNALS, signal.SIGUSR1, signal.SIGUSR2):
        if signal.getsignal(sig) is signal.SIG_IGN:
            _IGNORED_AT_START.add(sig)
            if sig == signal.SIGHUP:
                continue
        signal.signal(sig, lambda signum, frame: _EARLY.append(signum))


def take_early_signals() -> list[int]:
    """The stop/status signals recorded by :func:`install_early` so far (and forget them)."""
    early, _EARLY[:] = list(_EARLY), []
    return early


class SignalFlags:
    """Install the trainer's handlers and expose what arrived as flags.

    Attributes:
        stop_signal: the first of SIGTERM/SIGINT/SIGHUP received, or None.
        stop_count: how many stop signals arrived (a second Ctrl-C is logged, not fatal).
        hup_inherited_ignored: SIGHUP was ignored at start (nohup) and stays ignored.
        status_requested: SIGUSR1 arrived since the loop last looked.
        checkpoint_requested: SIGUSR2 arrived since the loop last looked.
        ignored: signals received but deliberately ignored (``--fault ignore-sigterm``).
    """

    def __init__(self, ignore: tuple[signal.Signals, ...] = (), stack_file: IO | None = None):
        self._ignore = set(ignore)
        self._stack_file = stack_file
        self._previous: dict[int, _Handler] = {}
        self.stop_signal: signal.Signals | None = None
        self.stop_count = 0
        self.hup_inherited_ignored = False
        self.status_requested = False
        self.checkpoint_requested = False
        self.ignored: list[signal.Signals] = []

    def install(self) -> "SignalFlags":
        """Install the handlers; SIGUSR1 also dumps every thread's stack at once (faulthandler)."""
        self.hup_inherited_ignored = _hup_ignored_by_parent()
        for sig in STOP_SIGNALS:
            if sig == signal.SIGHUP and self.hup_inherited_ignored:
                continue  # keep nohup's promise
            self._set(sig, self._on_stop)
        self._set(signal.SIGUSR1, self._on_status)
        self._set(signal.SIGUSR2, self._on_checkpoint)
        early, _EARLY[:] = list(_EARLY), []
        for signum in early:  # replay what arrived before install, in order
            handler = signal.getsignal(signum)
            if callable(handler):  # install_early only records signals that install() handles
                handler(signum, None)
        if self._stack_file is not None:
            # Registered after the Python handler and chained to it: the C-level dump works
            # even when the main thread is stuck (deadlock, blocking read), and the Python
            # handler still runs afterwards to request the status line.
            faulthandler.register(signal.SIGUSR1, file=self._stack_file, all_threads=True, chain=True)
        return self

    def restore(self) -> None:
        """Put back the handlers that were there before :meth:`install`."""
        if self._stack_file is not None:
            faulthandler.unregister(signal.SIGUSR1)
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    @property
    def stopping(self) -> bool:
        """True once a stop signal has arrived."""
        return self.stop_signal is not None

    def take_status_request(self) -> bool:
        """Return and clear the SIGUSR1 flag."""
        requested, self.status_requested = self.status_requested, False
        return requested

    def take_checkpoint_request(self) -> bool:
        """Return and clear the SIGUSR2 flag."""
        requested, self.checkpoint_requested = self.checkpoint_requested, False
        return requested

    def take_ignored(self) -> list[signal.Signals]:
        """Return and clear the list of ignored signals."""
        ignored, self.ignored = self.ignored, []
        return ignored

    def _set(self, sig: signal.Signals, handler: _Handler) -> None:
        self._previous.setdefault(sig, signal.getsignal(sig))
        signal.signal(sig, handler)

    def _on_stop(self, signum: int, frame) -> None:
        sig = signal.Signals(signum)
        if sig in self._ignore:
            self.ignored.append(sig)
            return
        self.stop_count += 1
        if self.stop_signal is None:
            self.stop_signal = sig

    def _on_status(self, signum: int, frame) -> None:
        self.status_requested = True

    def _on_checkpoint(self, signum: int, frame) -> None:
        self.checkpoint_requested = True
