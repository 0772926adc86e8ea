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


# Exceptions that stay outside LabkitError on purpose, and why.
OUTSIDE_THE_TREE = {
    "labkit.course._judge.CellTimeout": "a BaseException, so the learner's `except Exception` cannot swallow a timeout",
    "labkit.course._sandbox._Stop": "the sandbox runs by path, standard library only, before labkit is importable",
    "labkit.course._wire.StudentError": "the learner's own error, carried into the judge: not labkit's",
}


def test_every_exception_labkit_defines_is_a_labkit_error_and_timeouts_are_timeout_errors():
    import importlib
    import inspect
    import pkgutil

    import labkit
    from labkit.errors import LabkitError

    outside, not_timeout = [], []
    for info in pkgutil.walk_packages(labkit.__path__, "labkit."):
        if info.name.endswith("__main__"):
            continue
        try:
            module = importlib.import_module(info.name)
        except ModuleNotFoundError as err:
            if err.name == "torch":  # labkit.trainer.torch without the [torch] extra
                continue
            raise
        for name, obj in vars(module).items():
            if not (inspect.isclass(obj) and issubclass(obj, BaseException) and obj.__module__ == module.__name__):
                continue
            qualified = f"{module.__name__}.{name}"
            if not issubclass(obj, LabkitError) and qualified not in OUTSIDE_THE_TREE:
                outside.append(qualified)
            if "Timeout" in name and issubclass(obj, LabkitError) and not issubclass(obj, TimeoutError):
                not_timeout.append(qualified)
    assert outside == [], f"exceptions outside the LabkitError tree: {outside}"
    assert not_timeout == [], f"timeouts that are not TimeoutError: {not_timeout}"
