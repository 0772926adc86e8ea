"""Set-up shared by the lesson notebooks (the first code cell of each calls :func:`setup`)."""

from __future__ import annotations

import os
import sys
from pathlib import Path


def setup(runs: str | os.PathLike = "runs") -> Path:
    """Make ``!labkit`` and ``!python`` in this notebook use this kernel's environment; return the runs folder.

    A kernel started from a virtual environment that was never activated would otherwise
    find another ``python`` (or no ``labkit``) on PATH when a cell runs a shell command.
    """
    bin_dir = str(Path(sys.executable).parent)
    path = os.environ.get("PATH", "").split(os.pathsep)
    if path[:1] != [bin_dir]:
        os.environ["PATH"] = os.pathsep.join([bin_dir, *[p for p in path if p != bin_dir]])
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")  # the trainers this notebook starts use one core each
    folder = Path(runs)
    folder.mkdir(parents=True, exist_ok=True)
    from labkit import __version__

    print(f"labkit {__version__} ready; runs go to {folder}/")
    return folder
