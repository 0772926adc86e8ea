"""Does labkit/ type-check? mypy, with the configuration in pyproject.toml ([tool.mypy])."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_mypy_finds_no_errors_in_labkit() -> None:
    assert importlib.util.find_spec("mypy") is not None, \
        "mypy is not installed: pip install -e '.[test]' (the test extra brings it)"
    # About 10 s from a cold cache; the cache (.mypy_cache, ignored by git) makes reruns faster.
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"), "labkit"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    if result.returncode != 0:
        pytest.fail(f"mypy found type errors in labkit/:\n{(result.stdout + result.stderr).strip()}", pytrace=False)
