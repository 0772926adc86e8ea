"""Atomic, checksummed ``torch.save`` checkpoints: ``DIR/ckpt-00000120.pt``.

``torch.save`` writes a zip archive; a file cut short fails ``torch.load``, but a flipped
byte inside a tensor loads silently (measured with torch 2.14.1: the reader does not check
the zip's CRC-32). So the payload also carries a SHA-256 of everything it holds, checked on
load. Writing goes to a temporary file in the same folder, which is flushed and fsynced,
then ``os.replace``-d onto its name; the folder is fsynced last (rename(2) is atomic, and
the folder's fsync makes the rename durable). A kill at any moment leaves the previous
checkpoints or the new one, never a torn file under a checkpoint's name.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import torch

from labkit._atomic import fsync_directory, unlink_quietly
from labkit.errors import CheckpointCorrupt, DiskFull, NoCheckpoint

FORMAT = "labkit-torch/1"
NAME = re.compile(r"^ckpt-(\d{8})\.pt$")
TEMP_PREFIX = ".ckpt-tmp-"  # the prefix labkit.checkpoint.remove_stale_temporaries removes


def checkpoint_path(directory: Path, step: int) -> Path:
    """The file name of the checkpoint of ``step`` in ``directory``."""
    return directory / f"ckpt-{step:08d}.pt"


def digest(obj: Any) -> str:
    """SHA-256 of a state (nested dicts, lists, tuples, tensors, scalars), in its own order."""
    hasher = hashlib.sha256()
    _feed(hasher, obj)
    return hasher.hexdigest()


def _feed(hasher: Any, obj: Any) -> None:
    if isinstance(obj, torch.Tensor):
        flat = obj.detach().cpu().contiguous().reshape(-1)
        hasher.update(f"T{flat.dtype}{tuple(obj.shape)}".encode())
        hasher.update(flat.view(torch.uint8).numpy().data)
    elif isinstance(obj, dict):
        hasher.update(b"{")
        for key, value in obj.items():
            hasher.update(repr(key).encode())
            _feed(hasher, value)
        hasher.update(b"}")
    elif isinstance(obj, (list, tuple)):
        hasher.update(b"[" if isinstance(obj, list) else b"(")
        for value in obj:
            _feed(hasher, value)
        hasher.update(b"]")
    else:
        hasher.update(repr(obj).encode())


def save(directory: Path, step: int, state: dict[str, Any], keep: int = 0) -> Path:
    """Atomically save ``state`` as the checkpoint of ``step``; keep the newest ``keep`` (0: all).

    Raises:
        DiskFull: no room (ENOSPC, EDQUOT, EFBIG); nothing was replaced or pruned.
    """
    directory.mkdir(parents=True, exist_ok=True)
    path = checkpoint_path(directory, step)
    payload = {"format": FORMAT, "step": step, "sha256": digest(state), "state": state}
    fd, temp = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=directory)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(payload, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException as err:
        unlink_quietly(temp)
        if isinstance(err, OSError) and DiskFull.matches(err):
            raise DiskFull(f"checkpoint {path.name} was not saved in {directory}", err) from err
        raise
    fsync_directory(directory)
    if keep > 0:
        for _, old in list_checkpoints(directory)[keep:]:
            unlink_quietly(old)
    return path


def load(path: Path) -> dict[str, Any]:
    """Read and verify one checkpoint; return its state.

    Raises:
        CheckpointCorrupt: unreadable, cut short, altered, or not ours.
    """
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a torn zip, a damaged pickle: torch raises several kinds
        raise CheckpointCorrupt(str(path), f"torch.load failed ({type(err).__name__}: "
                                f"{str(err).splitlines()[0][:80] if str(err) else ''})") from err
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointCorrupt(str(path), "not a labkit torch checkpoint")
    if digest(payload["state"]) != payload.get("sha256"):
        raise CheckpointCorrupt(str(path), "checksum mismatch (the file was altered or partly written)")
    return payload["state"]


def list_checkpoints(directory: Path) -> list[tuple[int, Path]]:
    """``(step, path)`` of every checkpoint in ``directory``, newest first."""
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := NAME.match(p.name))]
    return sorted(found, reverse=True)


def load_latest(directory: Path) -> tuple[Path, dict[str, Any], list[tuple[Path, str]]]:
    """The newest checkpoint that verifies: ``(path, state, skipped)``, skipped = [(path, reason)].

    Raises:
        NoCheckpoint: none verifies.
    """
    skipped: list[tuple[Path, str]] = []
    for _, path in list_checkpoints(directory):
        try:
            return path, load(path), skipped
        except CheckpointCorrupt as err:
            skipped.append((path, err.reason))
    raise NoCheckpoint(str(directory), skipped=len(skipped))
