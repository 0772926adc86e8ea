"""Set-up shared by the lesson notebooks (the first code cell of each calls :func:`setup`)."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from labkit.systemd.manager import Manager


def runs_folder(notebook_folder: str | os.PathLike | None = None) -> Path:
    """Where the notebooks of ``notebook_folder`` keep their runs: ``$LABKIT_HOME/runs/NAME-HASH``.

    NAME is the folder's own name (``notebooks``, ``exercises``, an nbgrader assignment) and HASH
    the first 8 hex digits of the SHA-256 of its absolute path, so two folders of the same name
    (two clones, nbgrader's ``source/ps1`` and ``release/ps1``, each student's
    ``autograded/NAME/ps1``) never share runs. Runs stay out of the course folders: nbgrader's
    ``generate_assignment`` would ship what is beside the notebooks (the instructor's answer
    scripts) to students, and ``generate_feedback`` would copy megabytes of runs.
    ``$LABKIT_HOME`` is :func:`labkit.jobs.labkit_home` (the grader gives each submission its own).

    Args:
        notebook_folder: the folder holding the notebooks; default the current folder, which is
            the notebook's own in JupyterLab, nbval, nbclient and nbgrader.

    Returns:
        The folder's path (not created).

    >>> runs_folder("../exercises") / "06_graceful_shutdown"  # doctest: +SKIP
    PosixPath('/home/me/.local/state/labkit/runs/exercises-1f0c3a9e/06_graceful_shutdown')
    """
    import hashlib

    from labkit.jobs import labkit_home

    folder = Path(notebook_folder if notebook_folder is not None else Path.cwd()).resolve()
    digest = hashlib.sha256(os.fsencode(folder)).hexdigest()[:8]
    return labkit_home() / "runs" / f"{folder.name or 'root'}-{digest}"


def setup(runs: str | os.PathLike | None = None) -> Path:
    """Make ``!labkit`` and ``!python`` in this notebook use this kernel's environment; return the runs folder.

    A kernel started from a virtual environment that was never activated would otherwise
    find another ``python`` (or no ``labkit``) on PATH when a cell runs a shell command.

    Args:
        runs: where this notebook's runs, scripts and unit files go; default
            :func:`runs_folder` of the current folder (under ``$LABKIT_HOME``, never beside
            the notebook). Created; printed in one line.

    Returns:
        The runs folder.
    """
    bin_dir = str(Path(sys.executable).parent)
    path = os.environ.get("PATH", "").split(os.pathsep)
    if path[:1] != [bin_dir]:
        os.environ["PATH"] = os.pathsep.join([bin_dir, *[p for p in path if p != bin_dir]])
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")  # the trainers this notebook starts use one core each
    folder = Path(runs) if runs is not None else runs_folder()
    folder.mkdir(parents=True, exist_ok=True)
    from labkit import __version__

    print(f"labkit {__version__} ready; runs go to {folder}/")
    return folder


@dataclass
class SystemdHere:
    """Which systemd a notebook drives: a real user manager, or labkit's runner and why.

    ``why_not`` is None where ``systemctl --user`` reaches a manager (labkit's own, or the one a
    login started where systemd is PID 1); then ``unit_dir`` is where that manager reads unit
    files (its ``~/.config/systemd/user``). Otherwise ``why_not`` says in one line why none can
    run, and ``unit_dir`` is a folder of the notebook's runs for ``labkit unit run``.
    """

    unit_dir: Path
    why_not: str | None = None
    manager: "Manager | None" = None  #: labkit's manager (None for a login's own, or none)
    started_here: bool = False  #: True if :func:`use_systemd` started labkit's manager itself

    @property
    def real(self) -> bool:
        """True where ``systemctl --user`` reaches a real manager."""
        return self.why_not is None

    def fallback(self, what: str) -> None:
        """Print one line: no manager here, why, and ``what`` the notebook does instead."""
        print(f"no systemd manager here ({self.why_not}): {what}")


def use_systemd(runs: str | os.PathLike | None = None, start: bool = True) -> SystemdHere:
    """Point this kernel's ``!systemctl --user``, ``!systemd-run --user`` and ``!journalctl`` at a
    real systemd user manager; start labkit's own (``labkit systemd start``) if ``start`` and
    none runs. Where none can run, return the reason (``$LABKIT_SYSTEMD_UNAVAILABLE``, which the
    test suite sets when it runs without one, is such a reason: no manager is started then).

    Sets ``XDG_RUNTIME_DIR`` (``systemctl --user`` talks to ``$XDG_RUNTIME_DIR/systemd/private``),
    unsets ``DBUS_SESSION_BUS_ADDRESS``, and sets ``XDG_CONFIG_HOME`` to the manager's: where
    systemd is not PID 1, ``systemctl enable``/``disable`` edit the unit files themselves
    (client side) in ``$XDG_CONFIG_HOME/systemd/user`` instead of asking the manager.

    Returns:
        A :class:`SystemdHere`; where this call started labkit's manager, ``started_here`` is
        True and the notebook's clean-up stops it (``labkit.systemd.manager.stop()``).
    """
    from labkit.errors import LabkitError
    from labkit.systemd import manager as systemd_manager

    why = os.environ.get("LABKIT_SYSTEMD_UNAVAILABLE") or None
    if why is None:
        found = systemd_manager.find()
        if found is not None and systemd_manager.answers(found.environment()):
            return _point_at(found)
        if systemd_manager.MARKER.is_dir() and systemd_manager.answers(dict(os.environ)):
            _for_cells()
            config = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
            return SystemdHere(unit_dir=config / "systemd" / "user")  # a login's own manager
        why = systemd_manager.why_cannot_start() if start else "no labkit manager runs (`labkit systemd start`)"
        if why is None:
            try:
                return _point_at(systemd_manager.start(), started_here=True)
            except LabkitError as err:
                why = str(err)
    folder = Path(runs if runs is not None else runs_folder()) / "units"
    folder.mkdir(parents=True, exist_ok=True)
    return SystemdHere(unit_dir=folder, why_not=why)


def _for_cells() -> None:
    # a cell's `!` runs on a pseudo-terminal: systemctl would start a pager there, and print
    # its file links as escape codes the notebook shows raw
    os.environ.setdefault("SYSTEMD_PAGER", "cat")
    os.environ.setdefault("SYSTEMD_URLIFY", "0")


def _point_at(manager: "Manager", started_here: bool = False) -> SystemdHere:
    _for_cells()
    os.environ["XDG_RUNTIME_DIR"] = manager.runtime_dir
    os.environ["XDG_CONFIG_HOME"] = manager.config_home
    os.environ.pop("DBUS_SESSION_BUS_ADDRESS", None)  # else systemctl tries the session bus first
    manager.unit_dir.mkdir(parents=True, exist_ok=True)
    return SystemdHere(unit_dir=manager.unit_dir, manager=manager, started_here=started_here)
