"""The checks, each a small function that returns a :class:`~labkit.preempt.report.Check`.

Per interrupted run: ``exit-code`` (0, or what ``--stop-exit-codes`` declares), ``grace`` (it exited
before SIGKILL was needed), ``checkpoint`` (a file matching ``--checkpoint`` is new or changed since
the stop began), ``intact`` (``--verify-command`` accepts the newest checkpoint), ``leftovers`` (no
process of the run outlives it). At the end: ``finished``, ``interruptions`` and ``result`` (equal
to the uninterrupted run's: ``--compare-command``, or the sha256 of ``--result``).
"""

from __future__ import annotations

import glob
import hashlib
import os
import shlex
import subprocess
from pathlib import Path

import psutil

from labkit.preempt.report import Check, failed, passed, skipped
from labkit.preempt.runner import describe
from labkit.preempt.stops import Outcome

Snapshot = dict[str, tuple[int, int, int]]  # path -> (inode, size, mtime_ns)
_HELPER_TIMEOUT_S = 120.0


def fill(text: str, run: Path, reference: Path | None = None) -> str:
    """Put the run's folder in place of ``{run}`` (and the reference run's in place of ``{reference}``).

    Plain replacement, not ``str.format``: a command's own braces (``python -c "{...}"``) stay as they are.
    """
    text = text.replace("{run}", str(run))
    return text.replace("{reference}", str(reference)) if reference is not None else text


def snapshot(pattern: str) -> Snapshot:
    """Identity of every file matching ``pattern`` (``**`` allowed): a changed triple means rewritten."""
    found: Snapshot = {}
    for path in glob.glob(pattern, recursive=True):
        try:
            info = os.stat(path)
        except OSError:
            continue
        if os.path.isfile(path):
            found[path] = (info.st_ino, info.st_size, info.st_mtime_ns)
    return found


def newest(found: Snapshot) -> str | None:
    return max(found, key=lambda p: found[p][2]) if found else None


def exit_code(code: int | None, kind: str, allowed: frozenset[int]) -> Check:
    if kind == "kill":
        return skipped("SIGKILL leaves no choice of exit code")
    if code in allowed:
        return passed(f"exit {code}")
    why = f" = 128 + {code - 128}: killed by a signal it did not handle" if code is not None and code > 128 else ""
    return failed(f"exit {code}{why}; a stop should end with {' or '.join(map(str, sorted(allowed)))}")


def grace(outcome: Outcome, kind: str, grace_s: float) -> Check:
    if kind == "kill":
        return skipped("no grace with SIGKILL")
    first = outcome.signals[0].split("@")[0] if outcome.signals else "the stop"
    if outcome.escalated:
        last = "SIGTERM" if kind == "slurm" else first
        return failed(f"still running {grace_s:g} s after {last}: ended by SIGKILL "
                      f"({outcome.stop_to_exit_s:.2f} s after {first})")
    if kind == "slurm" and not outcome.term_sent:
        return passed(f"exited {outcome.stop_to_exit_s:.2f} s after SIGUSR1, before SIGTERM")
    return passed(f"exited {outcome.stop_to_exit_s:.2f} s after {first} (grace {grace_s:g} s)")


def checkpoint(before: Snapshot, after: Snapshot, kind: str, pattern: str | None) -> Check:
    if pattern is None:
        return skipped("no --checkpoint given")
    if kind == "kill":
        return skipped("nothing can be saved after SIGKILL")
    changed = sorted(path for path, ident in after.items() if before.get(path) != ident)
    if changed:
        return passed(f"{len(changed)} new or updated: {os.path.basename(changed[0])}")
    if not after:
        return failed(f"no file matches {pattern} after the stop: the run saved nothing")
    return failed(f"no file matching {pattern} changed after the stop: the last checkpoint is older than the stop")


def intact(found: Snapshot, verify_command: str | None) -> Check:
    """Run the verify command on the newest checkpoint: a torn file makes it fail."""
    if verify_command is None:
        return skipped("no --verify-command given")
    path = newest(found)
    if path is None:
        return skipped("no checkpoint yet")
    argv = [part.replace("{}", path) for part in shlex.split(verify_command)]
    if not any("{}" in part for part in shlex.split(verify_command)):
        argv.append(path)
    try:
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=_HELPER_TIMEOUT_S, start_new_session=True)
    except FileNotFoundError:
        return failed(f"verify command not found: {argv[0]}")
    except subprocess.TimeoutExpired:
        return failed(f"the verify command ran past {_HELPER_TIMEOUT_S:g} s on {os.path.basename(path)}")
    if done.returncode == 0:
        return passed(f"{os.path.basename(path)} loads")
    said = (done.stderr or done.stdout).strip().splitlines()
    return failed(f"{os.path.basename(path)} does not load (verify exit {done.returncode})"
                  + (f": {said[-1][:120]}" if said else ""))


def leftovers(left: list[psutil.Process], settle_s: float) -> Check:
    if not left:
        return passed("nothing left in its group, session or tree")
    return failed(f"{len(left)} process(es) still running {settle_s:g} s after the main one exited: {describe(left)}")


def digest(path: str) -> str | None:
    matches = sorted(glob.glob(path, recursive=True))
    if not matches or not os.path.isfile(matches[0]):
        return None
    sha = hashlib.sha256()
    with open(matches[0], "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()


def result_by_digest(expected: str | None, result_path: str) -> Check:
    got = digest(result_path)
    if got is None:
        return failed(f"no result at {result_path} after the last run")
    if expected is None:
        return failed("the reference run left no result to compare with")
    if got == expected:
        return passed(f"sha256 {got[:12]}... equals the uninterrupted run's")
    return failed(f"sha256 {got[:12]}... differs from the uninterrupted run's {expected[:12]}...")


def result_by_command(compare_command: str, run: Path, reference: Path) -> Check:
    argv = [fill(part, run, reference) for part in shlex.split(compare_command)]
    try:
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=_HELPER_TIMEOUT_S, start_new_session=True)
    except FileNotFoundError:
        return failed(f"compare command not found: {argv[0]}")
    except subprocess.TimeoutExpired:
        return failed(f"the compare command ran past {_HELPER_TIMEOUT_S:g} s")
    said = (done.stdout or done.stderr).strip().splitlines()
    tail = f": {said[-1][:120]}" if said else ""
    if done.returncode == 0:
        return passed("the compare command says equal" + tail)
    return failed(f"the compare command says different (exit {done.returncode}){tail}")
