"""Checkpoints: round trip, verification of every kind of damage, atomic saves, pruning."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from labkit import checkpoint
from labkit.errors import CheckpointCorrupt, NoCheckpoint


def sample(step: int = 7):
    rng = np.random.default_rng(step)
    return {"w": rng.standard_normal((20, 30)), "v": np.arange(5)}, {"epoch": 1, "rng": {"a": 2**70}}


def test_round_trip_keeps_arrays_and_metadata(tmp_path):
    arrays, meta = sample()
    path = checkpoint.save(tmp_path, 7, arrays, meta)
    loaded = checkpoint.load(path)
    assert path.name == "ckpt-00000007.lkc"
    assert loaded.step == 7 and loaded.meta == meta
    assert set(loaded.arrays) == {"w", "v"}
    assert np.array_equal(loaded.arrays["w"], arrays["w"])


@pytest.mark.parametrize("damage, reason", [
    (lambda data: data[: len(data) - 100], "truncated"),
    (lambda data: data[:-50] + bytes([data[-50] ^ 0x01]) + data[-49:], "checksum mismatch"),
    (lambda data: b"NOTACKPT!" + data[9:], "bad magic"),
    (lambda data: data[:10] + b"[" + data[11:], "header is damaged"),
    (lambda data: data.replace(b'"format": 2', b'"format": 7', 1), "unknown format"),
    (lambda data: b"", "bad magic"),
])
def test_every_kind_of_damage_is_detected(tmp_path, damage, reason):
    path = checkpoint.save(tmp_path, 3, *sample())
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(CheckpointCorrupt, match=reason):
        checkpoint.load(path)


def test_metadata_is_covered_by_the_checksum(tmp_path):
    arrays, meta = sample()
    path = checkpoint.save(tmp_path, 3, arrays, meta)
    data = path.read_bytes()
    altered = data.replace(b'"epoch": 1', b'"epoch": 9')
    assert altered != data
    path.write_bytes(altered)
    with pytest.raises(CheckpointCorrupt, match="checksum"):
        checkpoint.load(path)


def test_load_latest_skips_corrupt_newer_checkpoints_and_says_why(tmp_path):
    for step in (10, 20, 30):
        checkpoint.save(tmp_path, step, *sample(step))
    newest = checkpoint.checkpoint_path(tmp_path, 30)
    newest.write_bytes(newest.read_bytes()[:-10])
    result = checkpoint.load_latest(tmp_path)
    assert result.checkpoint.step == 20
    assert [(p.name, "truncated" in why) for p, why in result.skipped] == [("ckpt-00000030.lkc", True)]


def test_no_valid_checkpoint_raises(tmp_path):
    with pytest.raises(NoCheckpoint):
        checkpoint.load_latest(tmp_path)
    checkpoint.save(tmp_path, 1, *sample()).write_bytes(b"junk")
    with pytest.raises(NoCheckpoint, match="1 skipped"):
        checkpoint.load_latest(tmp_path)


def test_keep_prunes_all_but_the_newest(tmp_path):
    for step in range(1, 8):
        checkpoint.save(tmp_path, step, *sample(), keep=3)
    assert [step for step, _ in checkpoint.list_checkpoints(tmp_path)] == [7, 6, 5]


def test_failed_save_leaves_the_previous_file_and_no_temporary(tmp_path, monkeypatch):
    path = checkpoint.save(tmp_path, 5, *sample())
    before = path.read_bytes()

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    from labkit.errors import DiskFull

    with pytest.raises(DiskFull, match=r"ckpt-00000005.lkc was not saved .*No space left on device \(ENOSPC\)"):
        checkpoint.save(tmp_path, 5, {"w": np.zeros(3)}, {})
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt-00000005.lkc"]


def test_stale_temporaries_are_removed(tmp_path):
    (tmp_path / ".ckpt-tmp-abc").write_bytes(b"half a checkpoint")
    removed = checkpoint.remove_stale_temporaries(tmp_path)
    assert [p.name for p in removed] == [".ckpt-tmp-abc"]
    assert not list(tmp_path.iterdir())


WRITER = """
import sys, numpy as np
from labkit import checkpoint
state = np.random.default_rng(0).standard_normal(2**18)   # 2 MiB
step = 0
print("ready", flush=True)
while True:
    step += 1
    checkpoint.save(sys.argv[1], step, {"w": state + step}, {"step": step}, keep=2)
"""


def test_sigkill_during_saves_never_leaves_a_corrupt_checkpoint(tmp_path, spawn):
    rng = random.Random(1)
    for attempt in range(8):
        folder = tmp_path / f"run{attempt}"
        proc = spawn.popen([sys.executable, "-c", WRITER, str(folder)], stdout=subprocess.PIPE)
        assert proc.stdout.readline().strip() == b"ready"
        time.sleep(rng.uniform(0.05, 0.3))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        files = checkpoint.list_checkpoints(folder)
        assert files, "the writer was killed before its first save"
        for step, path in files:
            loaded = checkpoint.load(path)  # raises if any is corrupt
            assert loaded.meta == {"step": step}


def test_index_damage_is_caught_by_the_checksum(tmp_path):
    path = checkpoint.save(tmp_path, 3, *sample())
    data = path.read_bytes()
    altered = data.replace(b'"shape": [20, 30]', b'"shape": [30, 20]', 1)
    assert altered != data
    path.write_bytes(altered)
    with pytest.raises(CheckpointCorrupt, match="checksum"):
        checkpoint.load(path)


def test_object_arrays_are_refused():
    with pytest.raises(ValueError, match="Python objects"):
        checkpoint.encode(1, {"bad": np.array([object()])}, {})
