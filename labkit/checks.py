"""Checks on live state, for exercises and "Check my work" buttons.

Like the checks of a troubleshooting scenario site, these look at the real machine (the
process table, /proc, the run's files), never at the learner's code. A failing check
raises :class:`CheckFailed` (an ``AssertionError``, so nbgrader-style test cells fail with
it) whose message says what was seen and what to try; a passing one returns a sentence
saying what was confirmed. A check that cannot run on this machine (no tmux, no cpu cgroup)
raises :class:`~labkit.errors.NotCheckable`: it never passes in silence.

>>> expect_exited(proc, code=0)          # doctest: +SKIP
'pid 4242 exited with 0: success'
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

import psutil

from labkit import _linux
from labkit import checkpoint as ckpt
from labkit.errors import LabkitError, NotCheckable  # NotCheckable: re-exported for test cells
from labkit.signals import explain_exit_code, parse_signal, shell_exit_code


class CheckFailed(LabkitError, AssertionError):
    """A check on live state failed; the message says what was seen and what to try."""

    def __init__(self, seen: str, hint: str = "") -> None:
        super().__init__(f"{seen}" + (f"\nTry: {hint}" if hint else ""))
        self.seen = seen
        self.hint = hint


def _pid_of(target) -> int:
    """A pid from an int, a Popen, a psutil.Process, a panel or a job."""
    pid = getattr(target, "pid", target)
    if pid is None:
        raise CheckFailed("nothing was started yet", "start the process first")
    return int(pid)


def exit_code_of(target) -> int | None:
    """The exit code (shell style, 128+n for signal n) of a Popen, a panel or a job; None if running."""
    if isinstance(target, subprocess.Popen):
        code = target.poll()
        return None if code is None else shell_exit_code(code)
    if hasattr(target, "exit_code"):
        return target.exit_code
    raise TypeError(f"cannot read an exit code from {type(target).__name__}; pass a Popen, panel or job")


def expect_gone(target, timeout_s: float = 5.0) -> str:
    """The process has ended (a zombie counts: it has exited, only its parent has not reaped it)."""
    pid = _pid_of(target)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return f"pid {pid} has exited (zombie until its parent reaps it)"
        except psutil.NoSuchProcess:
            return f"pid {pid} is gone"
        time.sleep(0.05)
    state = _state(pid)
    raise CheckFailed(f"pid {pid} is still there after {timeout_s:g} s (state {state})",
                      "did the signal reach it? A process that ignores SIGTERM needs SIGKILL")


def expect_exited(target, code: int | None = None, sig: str | int | None = None,
                  timeout_s: float = 5.0) -> str:
    """The process exited, with exit ``code`` or killed by signal ``sig`` when given."""
    expect_gone(target, timeout_s)
    got = exit_code_of(target)
    if sig is not None:
        code = 128 + int(parse_signal(sig))
    if code is not None and got != code:
        raise CheckFailed(f"it exited with {explain_exit_code(got)}; expected {explain_exit_code(code)}",
                          "exit codes above 128 mean 'killed by signal code-128'")
    return f"pid {_pid_of(target)} exited with {explain_exit_code(got)}"


def expect_alive(target) -> str:
    """The process is running (not a zombie)."""
    pid = _pid_of(target)
    state = _state(pid)
    if state in ("gone", psutil.STATUS_ZOMBIE):
        raise CheckFailed(f"pid {pid} is {state}", "it should still be running: what stopped it?")
    return f"pid {pid} is alive (state {state})"


def expect_state(target, state: str) -> str:
    """The process is in ``state`` (psutil names: running, sleeping, stopped, zombie, disk-sleep)."""
    pid = _pid_of(target)
    seen = _state(pid)
    if seen != state:
        raise CheckFailed(f"pid {pid} is {seen}, not {state}")
    return f"pid {pid} is {state}"


def signal_disposition(pid: int, sig: str | int) -> str:
    """How ``pid`` treats ``sig``: 'ignored', 'caught' (a handler), 'blocked' or 'default'."""
    number = int(parse_signal(sig))
    fields = _linux.read_status(pid)
    if not fields:
        raise CheckFailed(f"pid {pid} does not exist")
    bit = 1 << (number - 1)
    for key, name in (("SigIgn", "ignored"), ("SigCgt", "caught"), ("SigBlk", "blocked")):
        if int(fields[key].strip(), 16) & bit:
            return name
    return "default"


def expect_disposition(target, sig: str | int, wanted: str) -> str:
    """The process ignores / catches / blocks ``sig`` (read from /proc/PID/status masks)."""
    pid = _pid_of(target)
    seen = signal_disposition(pid, sig)
    if seen != wanted:
        name = parse_signal(sig).name
        raise CheckFailed(f"pid {pid} treats {name} as '{seen}', not '{wanted}'",
                          "see SigIgn/SigCgt in /proc/PID/status; signal.signal() sets them")
    return f"pid {pid}: {parse_signal(sig).name} is {seen}"


def newest_checkpoint_step(run_dir: str | Path, verify: bool = True) -> int | None:
    """Step of the newest checkpoint that verifies (or, with ``verify=False``, by name only), or None."""
    folder = Path(run_dir) / "checkpoints"
    if not verify:
        found = ckpt.list_checkpoints(folder)
        return found[0][0] if found else None
    try:
        return ckpt.load_latest(folder).checkpoint.step
    except LabkitError:
        return None


def last_logged_step(run_dir: str | Path) -> int:
    """The last step the run wrote to metrics.jsonl (0 if none); reads only the file's end."""
    path = Path(run_dir) / "metrics.jsonl"
    try:
        with open(path, "rb") as handle:
            handle.seek(max(0, handle.seek(0, 2) - 4096))
            tail = handle.read()
    except FileNotFoundError:
        return 0
    for line in reversed(tail.splitlines()):
        try:
            return int(json.loads(line)["step"])
        except (ValueError, KeyError, TypeError):
            continue  # a partial line (being written, or cut by the 4 KiB window)
    return 0


def steps_lost(run_dir: str | Path) -> int:
    """Steps done after the newest valid checkpoint: the work a kill right now would lose."""
    return max(0, last_logged_step(run_dir) - (newest_checkpoint_step(run_dir) or 0))


def expect_checkpoint_after(run_dir: str | Path, since: float) -> str:
    """A valid checkpoint was saved after time ``since`` (``time.time()`` before the signal).

    The time is the one recorded inside the checkpoint, not the file's modification time,
    which some filesystems keep at a coarse resolution.
    """
    folder = Path(run_dir) / "checkpoints"
    for step, path in ckpt.list_checkpoints(folder):
        saved = ckpt.load(path)  # raises CheckpointCorrupt if it does not verify
        if saved.meta.get("saved_at", 0) >= since:
            return f"checkpoint {path.name} (step {step}) was written after the signal"
    raise CheckFailed(f"no checkpoint in {folder} is newer than the signal",
                      "SIGTERM/SIGINT/SIGHUP make the trainer save; SIGKILL gives it no chance")


def wait_for_log(run_dir: str | Path, text: str, timeout_s: float = 10.0) -> bool:
    """Wait until the run's train.log contains ``text``; True if it appeared in time."""
    path = Path(run_dir) / "train.log"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text(errors="replace"):
            return True
        time.sleep(0.05)
    return False


def expect_clean_stop(run_dir: str | Path, sig: str | int | None = "SIGTERM") -> str:
    """The trainer logged a clean stop on ``sig`` and its last step is checkpointed.

    ``sig=None`` accepts a clean stop on any signal the trainer stops on (SIGTERM, SIGINT,
    SIGHUP: ``labkit.trainer.shutdown.STOP_SIGNALS``). A SIGKILL never passes: the kernel
    ends the process without running any of its code, so nothing logs a clean stop.
    """
    from labkit.trainer.shutdown import STOP_SIGNALS

    wanted = [s.name for s in STOP_SIGNALS] if sig is None else [parse_signal(sig).name]
    path = Path(run_dir) / "train.log"
    log = path.read_text(errors="replace") if path.exists() else ""
    last_run = log[max(0, log.rfind("] start: pid ")):]  # train.log keeps earlier runs' lines above
    names = re.findall(r"stopped cleanly on (SIG[A-Z0-9]+)", last_run)
    if not names or names[-1] not in wanted:
        raise CheckFailed(f"train.log has no 'stopped cleanly on {' or '.join(wanted)}' for its last run"
                          + (f" (it stopped cleanly on {names[-1]})" if names else ""),
                          f"send {' or '.join(wanted)} (not SIGKILL), then wait for the exit")
    lost = steps_lost(run_dir)
    if lost:
        raise CheckFailed(f"{lost} steps were done after the newest checkpoint")
    return f"the run stopped cleanly on {names[-1]} with every step checkpointed"


def expect_completed(run_dir: str | Path) -> str:
    """The run finished: final.json says completed."""
    path = Path(run_dir) / "final.json"
    if not path.exists():
        raise CheckFailed(f"{path} does not exist", "let the run finish, or resume it with --resume")
    final = json.loads(path.read_text())
    return f"the run completed at step {final['global_step']} with loss {final['loss']:.3f}"


def _state(pid: int) -> str:
    try:
        return psutil.Process(pid).status()
    except psutil.NoSuchProcess:
        return "gone"


__all__ = [
    "CheckFailed", "NotCheckable", "exit_code_of", "expect_alive", "expect_checkpoint_after", "expect_clean_stop",
    "expect_completed", "expect_disposition", "expect_exited", "expect_gone", "expect_state",
    "last_logged_step", "newest_checkpoint_step", "signal_disposition", "steps_lost", "wait_for_log",
]
