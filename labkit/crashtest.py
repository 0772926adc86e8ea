"""Fault injection for checkpoint writers: kill them mid-save, fill the disk, damage files.

Three writers save the same kind of checkpoint (a payload of known content, a sequence
number and a checksum, so a reader can tell a complete file from a torn one), each in a
child process (``python -m labkit.crashtest write --writer KIND ...``) that saves in a loop
and keeps its newest two files, as a training job does:

``naive``
    ``np.save`` straight onto the final name, what most training scripts do. A kill during
    the write leaves a torn file under the checkpoint's own name; a resume that loads "the
    newest checkpoint" then crashes, or worse, loads garbage when nothing checks it.

``rename-no-fsync``
    ``np.save`` into a temporary file in the same folder, then ``os.replace`` onto the final
    name. The rename is atomic, so the final name shows the old file or the whole new one:
    this survives a **process kill** (SIGKILL, the OOM killer, a crash), because every byte
    ``write()`` accepted is already in the kernel's page cache and reaches the disk even
    though the process is gone. It does **not** survive a **power loss or kernel crash**: the
    kernel may write the rename to disk before the data, so after a reboot the final name
    can point at an empty or partial file. Under SIGKILL alone it shows 0 corrupt, which is
    the lesson: a kill test cannot tell this writer from the careful one.

``careful``
    :func:`labkit.checkpoint.save`; each step guards against one failure:

    * temporary file: a kill, a full disk or an exception part-way never touches the final
      name (the half-written temporary is left behind, harmless, and removed on resume);
    * ``fsync`` of the file: its data is on disk *before* the rename can be, so a power
      loss cannot leave the new name pointing at missing data;
    * ``os.replace``: readers see the old file or the new one, never a mix;
    * ``fsync`` of the folder: the rename itself is durable; without it a power loss can
      bring back the previous checkpoint (older, but still valid);
    * sha256 over the body: catches what the steps above cannot (a bit flipped on disk, a
      copy truncated by another tool, a disk that acknowledges ``fsync`` but caches).

:func:`kill_at_random` SIGKILLs a writer at random moments during its saves and counts what
is left; :func:`save_with_disk_limit` makes a save fail part-way with ``EFBIG``;
:func:`corrupt_newest` damages a trainer's newest checkpoint so a lesson can watch
``--resume`` skip it. Everything works from a notebook as well as from the command line.
"""

from __future__ import annotations

import argparse
import errno
import hashlib
import json
import os
import random
import re
import resource
import selectors
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from labkit import checkpoint
from labkit._atomic import unlink_quietly
from labkit.errors import BadArgument, CheckpointCorrupt, NoCheckpoint

WRITERS = ("careful", "naive", "rename-no-fsync")
KEEP = 2  # checkpoints each writer keeps, like the trainer's --keep
# The temporaries use labkit.checkpoint's prefix, so the trainer's resume cleans them up too.
TEMP_PREFIX = checkpoint._TEMP_PREFIX
_FINAL = re.compile(r"^ckpt-(\d{8})\.(lkc|npy)$")
_MAGIC = b"LKCRASH1"
_HEADER = struct.Struct("<8sQQ32s")  # magic, sequence number, body bytes, sha256(body + seq)
_READY = "ready"


# --- the payload and the three writers ----------------------------------------------------

class Payload:
    """Known checkpoint content: a body of seeded random bytes behind a header per save."""

    def __init__(self, size_mb: float, seed: int = 0) -> None:
        size = max(1, int(size_mb * 2**20))
        self.buffer = np.empty(_HEADER.size + size, dtype=np.uint8)
        self.body = self.buffer[_HEADER.size:]
        self.body[:] = np.frombuffer(np.random.default_rng(seed).bytes(size), dtype=np.uint8)
        # Hashing the body once and copying the hasher per save keeps the saves all writing,
        # so random kills land in writes rather than in hashing.
        self._body_hash = hashlib.sha256(self.body.data)

    def stamp(self, seq: int) -> np.ndarray:
        """Write the header of save ``seq`` into the buffer and return the whole buffer."""
        self.buffer[:_HEADER.size] = np.frombuffer(
            _HEADER.pack(_MAGIC, seq, self.body.nbytes, self.digest(seq)), dtype=np.uint8)
        return self.buffer

    def digest(self, seq: int) -> bytes:
        """Return sha256(body + seq): the checksum a file of save ``seq`` must carry."""
        hasher = self._body_hash.copy()
        hasher.update(struct.pack("<Q", seq))
        return hasher.digest()


def final_path(writer: str, folder: str | os.PathLike, seq: int) -> Path:
    """Return the name save ``seq`` of ``writer`` has once complete."""
    if writer == "careful":
        return checkpoint.checkpoint_path(folder, seq)
    return Path(folder) / f"ckpt-{seq:08d}.npy"


def _save_careful(folder: Path, seq: int, payload: Payload) -> Path:
    return checkpoint.save(folder, seq, {"payload": payload.body}, {"seq": seq}, keep=KEEP)


def _save_naive(folder: Path, seq: int, payload: Payload) -> Path:
    path = final_path("naive", folder, seq)
    np.save(path, payload.stamp(seq))
    _prune("naive", folder, seq)
    return path


def _save_rename_no_fsync(folder: Path, seq: int, payload: Payload) -> Path:
    path = final_path("rename-no-fsync", folder, seq)
    fd, temp = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=".npy", dir=folder)
    try:
        with os.fdopen(fd, "wb") as handle:
            np.save(handle, payload.stamp(seq))
        os.replace(temp, path)
    except BaseException:
        unlink_quietly(temp)  # an error (a full disk) cleans up; a SIGKILL cannot
        raise
    _prune("rename-no-fsync", folder, seq)
    return path


def _prune(writer: str, folder: Path, seq: int) -> None:
    # only once the new save is complete: deleting first would leave a window with nothing
    if seq > KEEP:
        unlink_quietly(final_path(writer, folder, seq - KEEP))


_SAVERS = {"careful": _save_careful, "naive": _save_naive, "rename-no-fsync": _save_rename_no_fsync}


def save_checkpoint(writer: str, folder: str | os.PathLike, seq: int, payload: Payload) -> Path:
    """Save checkpoint ``seq`` of ``payload`` with ``writer``; return its final path."""
    return _SAVERS[_checked(writer)](Path(folder), seq, payload)


def _checked(writer: str) -> str:
    if writer not in WRITERS:
        raise BadArgument(f"unknown writer {writer!r}; choose one of {', '.join(WRITERS)}")
    return writer


# --- reading back -------------------------------------------------------------------------

def verify_file(path: str | os.PathLike) -> int:
    """Check one checkpoint file written by any writer; return its sequence number.

    Raises:
        CheckpointCorrupt: the file is torn, altered or not what its name says.
    """
    path = Path(path)
    match = _FINAL.match(path.name)
    if match is None:
        raise CheckpointCorrupt(str(path), "not a checkpoint name")
    seq = int(match.group(1))
    found = _verify_lkc(path) if match.group(2) == "lkc" else _verify_npy(path)
    if found != seq:
        raise CheckpointCorrupt(str(path), f"holds save {found}, not {seq}")
    return seq


def _verify_lkc(path: Path) -> int:
    ckpt = checkpoint.load(path)  # checks the magic, the length and the sha256
    return int(ckpt.meta.get("seq", ckpt.step))  # a trainer's checkpoint has no seq of ours


def _verify_npy(path: Path) -> int:
    if path.stat().st_size == 0:
        raise CheckpointCorrupt(str(path), "empty (killed right after it was created)")
    try:
        data = np.load(path, allow_pickle=False)
    except (ValueError, EOFError, OSError) as err:
        first = str(err).split(". ")[0]  # numpy's sentence, without its element counts
        raise CheckpointCorrupt(str(path), f"np.load fails: {first}") from err
    if data.dtype != np.uint8 or data.ndim != 1 or data.size < _HEADER.size:
        raise CheckpointCorrupt(str(path), "not a crashtest payload")
    magic, seq, size, digest = _HEADER.unpack(data[:_HEADER.size].tobytes())
    body = data[_HEADER.size:]
    if magic != _MAGIC or size != body.size:
        raise CheckpointCorrupt(str(path), "header does not match the data")
    hasher = hashlib.sha256(body)
    hasher.update(struct.pack("<Q", seq))
    if hasher.digest() != digest:
        raise CheckpointCorrupt(str(path), "checksum mismatch")
    return seq


@dataclass
class FolderState:
    """What a writer left in its folder: complete, corrupt and temporary files."""

    complete: list[Path] = field(default_factory=list)
    corrupt: dict[Path, str] = field(default_factory=dict)
    temporaries: list[Path] = field(default_factory=list)


def inspect_folder(folder: str | os.PathLike) -> FolderState:
    """Verify every checkpoint and temporary file in ``folder`` (other files are ignored)."""
    state = FolderState()
    for path in sorted(Path(folder).iterdir()):
        if path.name.startswith(TEMP_PREFIX):
            state.temporaries.append(path)
        elif _FINAL.match(path.name):
            try:
                verify_file(path)
                state.complete.append(path)
            except CheckpointCorrupt as err:
                state.corrupt[path] = err.reason
    return state


def clear_folder(folder: str | os.PathLike) -> None:
    """Delete the checkpoints and temporaries in ``folder`` (other files are left alone)."""
    for path in Path(folder).iterdir():
        if path.name.startswith(TEMP_PREFIX) or _FINAL.match(path.name):
            unlink_quietly(path)


# --- the writer's child process -----------------------------------------------------------

def writer_command(writer: str, folder: str | os.PathLike, size_mb: float, count: int,
                   start: int = 1, fsize_limit_bytes: int | None = None) -> list[str]:
    """Return the command line of a writer child process."""
    command = [sys.executable, "-m", "labkit.crashtest", "write", "--writer", _checked(writer),
               "--folder", str(folder), "--size-mb", str(size_mb), "--count", str(count),
               "--start", str(start)]
    return command + (["--fsize-limit", str(fsize_limit_bytes)] if fsize_limit_bytes is not None else [])


def run_writer(writer: str, folder: str | os.PathLike, size_mb: float, count: int,
               start: int = 1, fsize_limit_bytes: int | None = None) -> int:
    """Save ``count`` checkpoints in a loop (the child's body); return its exit code.

    Prints ``ready`` once the first save is complete (the harness times its kill from
    there) and a JSON line with the errno if a save fails.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    payload, parent = Payload(size_mb), os.getppid()
    if fsize_limit_bytes is not None:
        limit_file_size(fsize_limit_bytes)
    for seq in range(start, start + count):
        if os.getppid() != parent:
            return 1  # the harness is gone: nobody will kill us, so stop writing
        try:
            save_checkpoint(writer, folder, seq, payload)
        except OSError as err:
            print(json.dumps({"error": str(err), "errno": err.errno, "seq": seq}), flush=True)
            return 1
        if seq == start:
            print(_READY, flush=True)
    return 0


def limit_file_size(limit_bytes: int) -> None:
    """Cap the size of files this process writes (RLIMIT_FSIZE), as a full disk would."""
    # Ignoring SIGXFSZ turns "killed for exceeding the limit" into write() failing with
    # EFBIG, which is what a full disk (ENOSPC) looks like to the program.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    _, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, hard))


# --- random kills ---------------------------------------------------------------------------

@dataclass
class CrashReport:
    """What :func:`kill_at_random` found after its kills, file counts summed over them all."""

    writer: str
    kills: int = 0
    complete: int = 0
    corrupt: int = 0  # under a final name, yet does not verify
    temporaries: int = 0  # half-written temporaries: harmless, cleaned up on resume
    missing: int = 0  # kills after which no checkpoint verified at all
    mid_write: int = 0  # kills that left a temporary or a corrupt file: they landed in a write
    size_mb: float = 0.0
    save_ms: float = 0.0  # one save's time, measured first; kills land within it
    reasons: dict[str, int] = field(default_factory=dict)  # why files were corrupt, and how often

    def as_dict(self) -> dict:
        """Return the report as a plain dict (JSON-ready)."""
        return asdict(self)

    @property
    def corrupt_share(self) -> float:
        """Corrupt files per kill (at most one file is being written when a kill lands)."""
        return self.corrupt / self.kills if self.kills else 0.0

    def add(self, state: FolderState) -> None:
        """Count the folder left by one more kill."""
        self.kills += 1
        self.complete += len(state.complete)
        self.corrupt += len(state.corrupt)
        self.temporaries += len(state.temporaries)
        self.missing += not state.complete
        self.mid_write += bool(state.corrupt or state.temporaries)
        for reason in state.corrupt.values():
            kind = re.sub(r"\d+", "N", reason)  # "truncated: N of N body bytes"
            self.reasons[kind] = self.reasons.get(kind, 0) + 1


def measure_save_seconds(writer: str, folder: str | os.PathLike, size_mb: float, repeats: int = 5) -> float:
    """Return the median time one save of ``writer`` takes here (saved in this process)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    payload, times = Payload(size_mb), []
    for seq in range(1, repeats + 1):
        started = time.perf_counter()
        save_checkpoint(writer, folder, seq, payload)
        times.append(time.perf_counter() - started)
    clear_folder(folder)
    return statistics.median(times)


def kill_at_random(writer: str, kills: int, folder: str | os.PathLike, size_mb: float = 1.0,
                   seed: int = 0) -> CrashReport:
    """SIGKILL a writer ``kills`` times at random moments during its saves; count what is left.

    Each round empties ``folder`` of checkpoints, starts the writer, waits for its first
    save, then kills it after a delay drawn uniformly within one save's time (measured
    first), so the kill lands while the next file is being written. Files other than
    checkpoints and temporaries in ``folder`` are never touched.

    >>> kill_at_random("naive", 30, "/tmp/crash").corrupt  # doctest: +SKIP
    27
    """
    folder = Path(folder)
    rng = random.Random(seed)
    save_s = measure_save_seconds(_checked(writer), folder, size_mb)
    report = CrashReport(writer, size_mb=size_mb, save_ms=save_s * 1000)
    for _ in range(kills):
        clear_folder(folder)
        _start_and_kill(writer, folder, size_mb, rng.uniform(0, save_s))
        report.add(inspect_folder(folder))
    return report


def _start_and_kill(writer: str, folder: Path, size_mb: float, delay_s: float) -> None:
    # The count only bounds a writer whose kill never comes; the kill ends it long before.
    proc = subprocess.Popen(writer_command(writer, folder, size_mb, count=10**6),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _wait_for_ready(proc)
        time.sleep(delay_s)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:  # an error (or Ctrl-C in a notebook) must not leave a writer behind
        if proc.poll() is None:
            proc.kill()
        _, err = proc.communicate()
    if proc.returncode != -signal.SIGKILL:
        raise RuntimeError(f"the {writer} writer exited with {proc.returncode} before the kill: "
                           f"{err.decode(errors='replace').strip()}")


def _wait_for_ready(proc: subprocess.Popen, timeout_s: float = 60.0) -> None:
    """Block until the writer prints its ready line (reading the pipe's bytes ourselves)."""
    assert proc.stdout is not None, "the writer is started with stdout=PIPE"
    deadline = time.monotonic() + timeout_s
    fd, seen = proc.stdout.fileno(), b""
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while _READY.encode() not in seen:
            if not selector.select(max(0.0, deadline - time.monotonic())):
                raise RuntimeError(f"writer pid {proc.pid} made no save within {timeout_s:g} s")
            chunk = os.read(fd, 4096)
            if not chunk:
                return  # it exited: the caller reports how
            seen += chunk


# --- a full disk ------------------------------------------------------------------------------

def save_with_disk_limit(writer: str, limit_bytes: int, folder: str | os.PathLike,
                         size_mb: float = 1.0) -> str:
    """Save over a previous checkpoint with file sizes capped at ``limit_bytes``; say what happened.

    ``folder`` is emptied of checkpoints, checkpoint 1 is saved normally, then checkpoint 2
    in a child whose RLIMIT_FSIZE makes ``write()`` fail with EFBIG part-way (as a full disk
    fails with ENOSPC). Returns one sentence: the error the writer reported, the state of
    the previous checkpoint, what is under the new name and whether a temporary remains.

    >>> print(save_with_disk_limit("naive", 500_000, "/tmp/full"))  # doctest: +SKIP
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    clear_folder(folder)
    _run_child(writer_command(writer, folder, size_mb, count=1, start=1), check=True)
    code, events = _run_child(writer_command(writer, folder, size_mb, count=1, start=2,
                                             fsize_limit_bytes=limit_bytes))
    state = inspect_folder(folder)
    previous, new = final_path(writer, folder, 1), final_path(writer, folder, 2)
    return (f"{writer}: {_describe_error(code, events, limit_bytes)}; "
            f"{_describe_file('the previous checkpoint', previous, state)}; "
            f"{_describe_file('the new one', new, state, size=_size(previous))}; "
            f"{len(state.temporaries)} temporary file(s) left")


def _run_child(command: list[str], check: bool = False) -> tuple[int, list[dict]]:
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {done.stderr.strip()}")
    events = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    return done.returncode, events


def _describe_error(code: int, events: list[dict], limit_bytes: int) -> str:
    if code == 0:
        return f"the save fit under the {limit_bytes}-byte limit and succeeded"
    if not events:
        return f"the writer died with exit code {code} and reported nothing"
    number = events[0]["errno"]
    # np.save's own error carries no errno (numpy reports the short write itself)
    name = f"errno {errno.errorcode.get(number, number)}" if number else "no errno in the exception"
    return (f"the save failed at the {limit_bytes}-byte limit and the writer reported it "
            f"(exit code {code}): {events[0]['error']} ({name})")


def _describe_file(what: str, path: Path, state: FolderState, size: int = 0) -> str:
    if path in state.complete:
        return f"{what} ({path.name}) is intact (it verifies)"
    if path in state.corrupt:
        return (f"{what} ({path.name}) is left CORRUPT under its final name, {_size(path)} of "
                f"{size or '?'} bytes ({state.corrupt[path]}): a resume that trusts the newest file fails")
    return f"nothing was written under the name of {what} ({path.name})"


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


# --- damaged checkpoints on resume --------------------------------------------------------------

def corrupt_newest(folder: str | os.PathLike, how: str = "truncate") -> Path:
    """Damage the newest labkit checkpoint in ``folder`` (or in a run folder's ``checkpoints``).

    ``truncate`` cuts the file in half, as a kill during a naive write would; ``bitflip``
    flips one bit in the data, as a bad sector or a RAM error would. The file is changed in
    place, on purpose not atomically. Returns the damaged file's path.

    Raises:
        NoCheckpoint: there is no checkpoint to damage.
    """
    folder = Path(folder)
    if (folder / "checkpoints").is_dir():
        folder = folder / "checkpoints"
    found = checkpoint.list_checkpoints(folder)
    if not found:
        raise NoCheckpoint(str(folder))
    path = found[0][1]
    data = bytearray(path.read_bytes())
    if how == "truncate":
        del data[len(data) // 2:]
    elif how == "bitflip":
        data[len(data) * 3 // 4] ^= 0x01  # deep in the arrays, past the header
    else:
        raise BadArgument(f"unknown damage {how!r}; choose truncate or bitflip")
    path.write_bytes(bytes(data))
    return path


# --- command line -------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    """``python -m labkit.crashtest write|kill|disk-full ...``; return the exit code."""
    parser = argparse.ArgumentParser(prog="python -m labkit.crashtest", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("write", "kill", "disk-full"):
        sub = commands.add_parser(name)
        sub.add_argument("--writer", choices=WRITERS, required=True)
        sub.add_argument("--folder", type=Path, required=True)
        sub.add_argument("--size-mb", type=float, default=1.0)
    commands.choices["write"].add_argument("--count", type=int, default=10)
    commands.choices["write"].add_argument("--start", type=int, default=1)
    commands.choices["write"].add_argument("--fsize-limit", dest="fsize_limit_bytes", type=int, default=None)
    commands.choices["kill"].add_argument("--kills", type=int, default=30)
    commands.choices["kill"].add_argument("--seed", type=int, default=0)
    commands.choices["disk-full"].add_argument("--limit-bytes", type=int, default=500_000)
    args = parser.parse_args(argv)
    if args.command == "write":
        return run_writer(args.writer, args.folder, args.size_mb, args.count, args.start, args.fsize_limit_bytes)
    if args.command == "kill":
        report = kill_at_random(args.writer, args.kills, args.folder, args.size_mb, args.seed)
        print(json.dumps(report.as_dict(), indent=2))
        return 0
    print(save_with_disk_limit(args.writer, args.limit_bytes, args.folder, args.size_mb))
    return 0


if __name__ == "__main__":
    sys.exit(main())
