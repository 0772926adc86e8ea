"""Fault injection: which checkpoint writers survive SIGKILL, a full disk and damaged files.

Real writer processes, real SIGKILLs, a real RLIMIT_FSIZE and the real trainer; no mocks.
"""

from __future__ import annotations

import pytest

from conftest import FAST, final_hash, log_text, run_trainer
from labkit import crashtest
from labkit.errors import BadArgument, CheckpointCorrupt, NoCheckpoint

KILLS = 30


@pytest.mark.parametrize("writer", crashtest.WRITERS)
def test_the_checker_refuses_torn_and_altered_files(tmp_path, writer):
    # Without this, "0 corrupt" could mean a checker that accepts anything.
    path = crashtest.save_checkpoint(writer, tmp_path, 3, crashtest.Payload(0.1))
    data = path.read_bytes()
    assert crashtest.verify_file(path) == 3
    path.write_bytes(data[: len(data) - 1000])
    with pytest.raises(CheckpointCorrupt):
        crashtest.verify_file(path)
    path.write_bytes(data[:-10] + bytes([data[-10] ^ 0x01]) + data[-9:])
    with pytest.raises(CheckpointCorrupt, match="checksum mismatch"):
        crashtest.verify_file(path)
    path.write_bytes(b"")
    with pytest.raises(CheckpointCorrupt):
        crashtest.verify_file(path)


def test_careful_writer_survives_random_kills(tmp_path):
    report = crashtest.kill_at_random("careful", KILLS, tmp_path, size_mb=1, seed=1)
    assert report.kills == KILLS
    assert report.corrupt == 0 and report.missing == 0, report.as_dict()
    assert report.mid_write > 0, "no kill landed inside a save: the test proves nothing"
    assert report.complete >= KILLS


def test_naive_writer_leaves_torn_checkpoints_under_their_final_name(tmp_path):
    report = crashtest.kill_at_random("naive", KILLS, tmp_path, size_mb=1, seed=2)
    assert report.kills == KILLS
    assert report.corrupt >= 1, report.as_dict()
    assert report.temporaries == 0 and report.missing == 0
    assert sum(report.reasons.values()) == report.corrupt


def test_rename_without_fsync_survives_sigkill(tmp_path):
    # Safe against a process kill (the page cache keeps every written byte), not against a
    # power loss, which a kill test cannot show: that is the lesson.
    report = crashtest.kill_at_random("rename-no-fsync", KILLS, tmp_path, size_mb=1, seed=3)
    assert report.corrupt == 0 and report.missing == 0, report.as_dict()
    assert report.temporaries > 0, "no kill landed inside a write: the test proves nothing"


def test_a_full_disk_leaves_the_careful_writers_checkpoint_intact(tmp_path):
    words = crashtest.save_with_disk_limit("careful", 300_000, tmp_path, size_mb=1)
    state = crashtest.inspect_folder(tmp_path)
    assert "EFBIG" in words and "reported it" in words
    assert "ckpt-00000001.lkc) is intact" in words
    assert "nothing was written under the name of the new one" in words
    assert [p.name for p in state.complete] == ["ckpt-00000001.lkc"]
    assert not state.corrupt and not state.temporaries


def test_a_full_disk_leaves_a_truncated_file_from_the_naive_writer(tmp_path):
    words = crashtest.save_with_disk_limit("naive", 300_000, tmp_path, size_mb=1)
    state = crashtest.inspect_folder(tmp_path)
    assert "ckpt-00000002.npy) is left CORRUPT under its final name, 300000 of" in words
    assert [p.name for p in state.corrupt] == ["ckpt-00000002.npy"]
    assert (tmp_path / "ckpt-00000002.npy").stat().st_size == 300_000


@pytest.mark.parametrize("how, reason", [("truncate", "truncated"), ("bitflip", "checksum mismatch")])
def test_resume_skips_a_damaged_newest_checkpoint(tmp_path, how, reason):
    run_dir = tmp_path / "run"
    first = run_trainer(run_dir, *FAST)
    assert first.returncode == 0, first.stderr
    uninterrupted = final_hash(run_dir)
    damaged = crashtest.corrupt_newest(run_dir, how)
    assert damaged.name == "ckpt-00000030.lkc"
    again = run_trainer(run_dir, *FAST, "--resume")
    assert again.returncode == 0, again.stderr
    resumed = log_text(run_dir).split(f"resume: skipped {damaged.name}: {reason}", 1)
    assert len(resumed) == 2, log_text(run_dir)
    assert "resume: from ckpt-00000025.lkc" in resumed[1] and "completed:" in resumed[1]
    assert final_hash(run_dir) == uninterrupted  # the older checkpoint resumes exactly


def test_corrupt_newest_refuses_what_it_cannot_do(tmp_path):
    with pytest.raises(NoCheckpoint):
        crashtest.corrupt_newest(tmp_path)
    crashtest.save_checkpoint("careful", tmp_path, 1, crashtest.Payload(0.01))
    with pytest.raises(BadArgument):
        crashtest.corrupt_newest(tmp_path, "shred")
    with pytest.raises(BadArgument):
        crashtest.kill_at_random("lucky", 1, tmp_path)
