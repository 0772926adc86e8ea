"""Atomic, checksummed checkpoints shared by the trainer and the lessons.

A checkpoint is one file::

    LABKITCK2\n
    {"format": 2, "step": 120, "body_bytes": ..., "body_sha256": ..., "covers": [...]}\n
    {"meta": {...}, "arrays": [{"name", "dtype", "shape", "nbytes"}, ...]}\n
    <the arrays' raw bytes, one after the other>

The first two lines are the header; the rest is the body: an index, then the data.

The checksum covers the whole body, so the arrays, their shapes *and* the metadata (RNG
state, position in the epoch) are verified together; the header only repeats what is
needed to list checkpoints cheaply. The body is written straight from the arrays' memory,
with no intermediate archive: saving 10 MiB costs a hash, a write and an fsync.

Writing goes to a temporary file in the same folder, which is flushed, fsynced and
then ``os.replace``-d onto its final name; the folder is fsynced last so the rename
itself survives a power cut. A process killed at any moment therefore leaves either
the previous set of checkpoints or the new one, never a half-written file under a
checkpoint's name.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from labkit._atomic import unlink_quietly, write_atomic
from labkit.errors import CheckpointCorrupt, DiskFull, NoCheckpoint

MAGIC = b"LABKITCK2\n"
FORMAT = 2
_NAME = re.compile(r"^ckpt-(\d{8})\.lkc$")
_TEMP_PREFIX = ".ckpt-tmp-"


@dataclass
class Checkpoint:
    """A verified checkpoint: its arrays, its metadata and where it came from."""

    step: int
    arrays: dict[str, np.ndarray]
    meta: dict[str, Any]
    path: Path | None = None


@dataclass
class ResumeResult:
    """The newest checkpoint that verified, and the newer ones skipped with reasons."""

    checkpoint: Checkpoint
    skipped: list[tuple[Path, str]] = field(default_factory=list)


def checkpoint_path(directory: str | os.PathLike, step: int) -> Path:
    """Return the file name a checkpoint of ``step`` has in ``directory``."""
    return Path(directory) / f"ckpt-{step:08d}.lkc"


def encode(step: int, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> list:
    """Serialise a checkpoint to a list of byte chunks (header, index, each array's memory)."""
    index, views = [], []
    for name, array in arrays.items():
        array = np.ascontiguousarray(array)
        if array.dtype.hasobject:
            raise ValueError(f"array {name!r} holds Python objects; only numeric arrays are saved")
        index.append({"name": name, "dtype": array.dtype.str, "shape": list(array.shape),
                      "nbytes": array.nbytes})
        views.append(array.data.cast("B"))  # array.data is memoryview(array), typed as one
    body_index = json.dumps({"meta": meta, "arrays": index}, sort_keys=True).encode() + b"\n"
    digest = hashlib.sha256(body_index)
    for view in views:
        digest.update(view)
    header = {"format": FORMAT, "step": int(step), "body_sha256": digest.hexdigest(),
              "body_bytes": len(body_index) + sum(len(view) for view in views),
              "covers": ["meta", *(entry["name"] for entry in index)]}
    return [MAGIC + json.dumps(header).encode() + b"\n", body_index, *views]


def decode(data: bytes, path: str = "<bytes>") -> Checkpoint:
    """Verify and parse checkpoint bytes.

    Raises:
        CheckpointCorrupt: wrong magic, unreadable header, truncated body, checksum
            mismatch, or an index that does not describe the data.
    """
    if not data.startswith(MAGIC):
        raise CheckpointCorrupt(path, "not a labkit checkpoint (bad magic bytes)")
    end = data.find(b"\n", len(MAGIC))
    if end < 0:
        raise CheckpointCorrupt(path, "header is truncated")
    try:
        header = json.loads(data[len(MAGIC):end])
        size, digest = int(header["body_bytes"]), str(header["body_sha256"])
    except (ValueError, KeyError, TypeError) as err:
        raise CheckpointCorrupt(path, f"header is damaged ({err})") from err
    if header.get("format") != FORMAT:
        raise CheckpointCorrupt(path, f"unknown format {header.get('format')!r} (a newer labkit wrote it?)")
    body = memoryview(data)[end + 1:]
    if len(body) != size:
        raise CheckpointCorrupt(path, f"truncated: {len(body)} of {size} body bytes")
    if hashlib.sha256(body).hexdigest() != digest:
        raise CheckpointCorrupt(path, "checksum mismatch (the file was altered or partly written)")
    try:
        return Checkpoint(step=int(header["step"]), path=Path(path), **_read_body(data, end + 1))
    except (ValueError, KeyError, TypeError) as err:  # checksum matched: a writer bug, still refused
        raise CheckpointCorrupt(path, f"index does not match the data ({err})") from err


def _read_body(data: bytes, start: int) -> dict:
    cut = data.find(b"\n", start)
    index = json.loads(data[start:cut])
    offset, arrays = cut + 1, {}
    for entry in index["arrays"]:
        count = int(np.prod(entry["shape"], dtype=np.int64))
        array = np.frombuffer(data, dtype=np.dtype(entry["dtype"]), count=count, offset=offset)
        arrays[entry["name"]] = array.reshape(entry["shape"]).copy()  # writable, owns its memory
        offset += int(entry["nbytes"])
    if offset != len(data):
        raise ValueError(f"{len(data) - offset} bytes left over")
    return {"arrays": arrays, "meta": index["meta"]}


def save(
    directory: str | os.PathLike,
    step: int,
    arrays: dict[str, np.ndarray],
    meta: dict[str, Any],
    keep: int = 0,
) -> Path:
    """Atomically save a checkpoint for ``step``; keep only the newest ``keep`` (0 keeps all).

    Raises:
        DiskFull: no room for it (ENOSPC, EDQUOT, EFBIG); nothing was replaced or pruned.

    >>> save(run_dir / "checkpoints", 10, {"w": weights}, {"epoch": 0}, keep=3)  # doctest: +SKIP
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = checkpoint_path(directory, step)
    try:
        write_atomic(path, encode(step, arrays, meta), temp_prefix=_TEMP_PREFIX)
    except OSError as err:
        if DiskFull.matches(err):  # the temporary file is gone and older checkpoints are untouched
            raise DiskFull(f"checkpoint {path.name} was not saved in {directory}", err) from err
        raise
    if keep > 0:
        prune(directory, keep)
    return path


def load(path: str | os.PathLike) -> Checkpoint:
    """Read and verify one checkpoint file.

    Raises:
        CheckpointCorrupt: the file is unreadable or fails verification.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise CheckpointCorrupt(str(path), f"cannot read ({err.strerror})") from err
    return decode(data, str(path))


def list_checkpoints(directory: str | os.PathLike) -> list[tuple[int, Path]]:
    """Return ``(step, path)`` of every checkpoint file in ``directory``, newest first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = []
    for entry in directory.iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append((int(match.group(1)), entry))
    return sorted(found, reverse=True)


def load_latest(directory: str | os.PathLike) -> ResumeResult:
    """Load the newest checkpoint that verifies, skipping (and reporting) corrupt ones.

    Raises:
        NoCheckpoint: no checkpoint in ``directory`` verifies.
    """
    skipped: list[tuple[Path, str]] = []
    for _, path in list_checkpoints(directory):
        try:
            return ResumeResult(load(path), skipped)
        except CheckpointCorrupt as err:
            skipped.append((path, err.reason))
    raise NoCheckpoint(str(directory), skipped=len(skipped))


def prune(directory: str | os.PathLike, keep: int) -> list[Path]:
    """Delete all but the newest ``keep`` checkpoints; return what was deleted."""
    removed = []
    for _, path in list_checkpoints(directory)[keep:]:
        unlink_quietly(path)
        removed.append(path)
    return removed


def remove_stale_temporaries(directory: str | os.PathLike) -> list[Path]:
    """Delete temporary files left by a writer that was killed mid-save."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    stale = [p for p in directory.iterdir() if p.name.startswith(_TEMP_PREFIX)]
    for path in stale:
        unlink_quietly(path)
    return stale
