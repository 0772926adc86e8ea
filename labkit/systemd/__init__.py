"""systemd units for ML services, without needing systemd: parse, lint, run, read the journal.

- :mod:`~labkit.systemd.unitfile`: unit files read as systemd reads them (:func:`load`, :func:`parse`).
- :mod:`~labkit.systemd.lint`: the mistakes people make, with fixes (:func:`lint_file`), merged with
  ``systemd-analyze verify`` where it exists.
- :mod:`~labkit.systemd.runner` / :mod:`~labkit.systemd.control`: a supervisor with systemd's
  documented semantics (Restart=, StartLimit*, KillMode=, TimeoutStopSec=...); :class:`UnitRun`
  runs one in the background and collects its events.
- :mod:`~labkit.systemd.journal`: what ``journalctl -u`` would show (:func:`read_journal`).
- :mod:`~labkit.systemd.timers`: when a ``.timer`` elapses next.
- :mod:`~labkit.systemd.values` and :mod:`~labkit.systemd.directives`: values and keys systemd accepts.
"""

from labkit.systemd.control import UnitRun, run_unit
from labkit.systemd.journal import read as read_journal
from labkit.systemd.journal import read_events
from labkit.systemd.lint import Finding, has_errors, lint_file, lint_unit
from labkit.systemd.unitfile import UnitFile, load, parse

__all__ = ["UnitRun", "run_unit", "read_journal", "read_events", "Finding", "has_errors", "lint_file", "lint_unit",
           "UnitFile", "load", "parse"]
