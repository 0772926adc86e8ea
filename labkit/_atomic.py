"""Atomic file writes (temp file + fsync + rename + folder fsync), free of heavy imports."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Iterable, Union

Chunks = Union[bytes, Iterable[Union[bytes, memoryview]]]

TEMP_PREFIX = ".tmp-"


def write_atomic(path: str | os.PathLike, data: Chunks, temp_prefix: str = TEMP_PREFIX) -> None:
    """Write ``data`` (bytes, or chunks written in order) to ``path`` so that readers see the
    old file or the new one, never a mix."""
    path = Path(path)
    chunks = [data] if isinstance(data, (bytes, bytearray, memoryview)) else data
    fd, temp = tempfile.mkstemp(prefix=temp_prefix, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            for chunk in chunks:
                handle.write(chunk)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        unlink_quietly(temp)
        raise
    fsync_directory(path.parent)


def write_json_atomic(path: str | os.PathLike, obj: object) -> None:
    """Atomically write ``obj`` as indented JSON."""
    write_atomic(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def fsync_directory(directory: str | os.PathLike) -> None:
    """Flush a folder's entries (a rename) to disk; a no-op where folders can't be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems (and macOS) refuse fsync on folders
    finally:
        os.close(fd)


def unlink_quietly(path: str | os.PathLike) -> None:
    """Remove ``path`` if it exists."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
