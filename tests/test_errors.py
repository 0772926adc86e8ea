"""One exception tree, each error with an exit code and a message a student can act on."""

from __future__ import annotations

import pytest

from labkit import errors


@pytest.mark.parametrize("error, code, words", [
    (errors.BadArgument("epochs must be positive"), 2, "epochs"),
    (errors.NoSuchJob("train1"), 2, "labkit jobs list"),
    (errors.JobExists("train1", 42), 2, "labkit jobs stop train1"),
    (errors.ProtectedProcess(1, "PID 1"), 2, "refusing to signal pid 1"),
    (errors.NotOurProcess(7, "the pid was recycled"), 1, "recycled"),
    (errors.ToolMissing("tmux", "apt install tmux"), 1, "labkit doctor"),
    (errors.PermissionDenied("ptrace", "run as root"), 1, "permission denied: ptrace"),
    (errors.CheckpointCorrupt("ckpt-1.lkc", "truncated"), 1, "ckpt-1.lkc is unusable: truncated"),
    (errors.NoCheckpoint("/run/ckpt", skipped=2), 1, "2 skipped"),
    (errors.JobTimeout("still there"), 1, "still there"),
])
def test_every_error_is_a_labkit_error_with_exit_code_and_actionable_text(error, code, words):
    assert isinstance(error, errors.LabkitError)
    assert error.exit_code == code
    assert words in str(error)
    assert "\n" not in str(error)


def test_errors_also_fit_the_builtin_hierarchy():
    assert isinstance(errors.BadArgument("x"), ValueError)
    assert isinstance(errors.NoSuchJob("x"), LookupError)
    assert isinstance(errors.JobTimeout("x"), TimeoutError)
    assert isinstance(errors.PermissionDenied("x"), PermissionError)
    assert issubclass(errors.ProtectedProcess, errors.NotOurProcess)
