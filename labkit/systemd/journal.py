"""A journal for units run by labkit: what ``journalctl -u NAME`` shows, in a plain file.

``$LABKIT_HOME/units/NAME/journal.log`` holds one line per event and per line of the
service's output, in journalctl's short format with ISO timestamps::

    2026-11-28T17:40:01.123 train.service[4242]: step 10 epoch 0 loss 1.4159
    2026-11-28T17:40:02.001 labkit-unit[train.service]: Main process exited, code=exited, status=1

``events.jsonl`` beside it holds the same events as JSON objects.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

from labkit.errors import BadArgument


def units_root(home: str | os.PathLike | None = None) -> Path:
    """The folder holding one sub-folder per unit run by labkit."""
    from labkit.jobs import labkit_home

    return Path(home).expanduser() / "units" if home else labkit_home() / "units"


class Journal:
    """Appends a unit's events and output; safe to use from several threads."""

    def __init__(self, unit_name: str, home: str | os.PathLike | None = None, fresh: bool = True) -> None:
        self.unit = unit_name
        self.folder = units_root(home) / unit_name
        self.folder.mkdir(parents=True, exist_ok=True)
        self.path = self.folder / "journal.log"
        self.events_path = self.folder / "events.jsonl"
        self._lock = threading.Lock()
        if fresh:
            self.events_path.write_text("")  # events describe the latest run; the journal keeps them all

    def output(self, pid: int, line: str) -> None:
        """Record one line the service printed."""
        self._write(f"{self.unit}[{pid}]: {line}")

    def event(self, record: dict) -> None:
        """Record an event: a sentence in the journal, the JSON in events.jsonl."""
        self._write(f"labkit-unit[{self.unit}]: {describe(record)}")
        with self._lock, open(self.events_path, "a") as handle:
            handle.write(json.dumps(record) + "\n")

    def _write(self, text: str) -> None:
        now = time.time()  # one reading: the seconds and the milliseconds must agree
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(now)) + f".{int(now % 1 * 1000):03d}"
        with self._lock, open(self.path, "a") as handle:
            handle.write(f"{stamp} {text}\n")


def describe(record: dict) -> str:
    """An event in words, as systemd would log it."""
    kind = record["event"]
    if kind == "start":
        return f"{record.get('phase', 'ExecStart')}: started {' '.join(record.get('command', []))} (pid {record.get('pid')})"
    if kind == "exit":
        status = record.get("status")
        if isinstance(status, str) and status.startswith("SIG"):
            how = f"code={'dumped' if record.get('core_dumped') else 'killed'}, status={status}"
        elif isinstance(status, str):
            how = f"code=exited, status={record.get('code')}/{status}"  # 203/EXEC, as systemd writes it
        else:
            how = f"code=exited, status={status}"
        phase = f"{record['phase']} " if record.get("phase") else ""
        return f"{phase}process {record.get('pid')} exited, {how}" + (f" ({record['message']})" if record.get("message") else "")
    if kind == "restart":
        return f"Scheduled restart job, restart counter is at {record.get('attempt')} (Restart={record.get('restart')}, after {record.get('after_s')} s)"
    if kind == "stopping":
        return f"Stopping ({record.get('reason')})..."
    if kind == "kill":
        return f"Sending {record.get('signal')} to {record.get('pids')} ({record.get('reason')})"
    if kind == "failed":
        return f"Failed with result '{record.get('result')}'." + (f" {record['message']}" if record.get("message") else "")
    if kind == "stopped":
        return "Deactivated successfully."
    if kind == "limits":
        return "Limits: " + "; ".join(f"{k}: {v}" for k, v in record.get("applied", {}).items())
    return f"{kind}: {record.get('message', record.get('state', ''))}"


def read(unit_name: str, lines: int | None = None, home: str | os.PathLike | None = None) -> str:
    """The journal of a unit (its last ``lines`` lines).

    Raises:
        BadArgument: labkit never ran a unit of that name.
    """
    path = units_root(home) / unit_name / "journal.log"
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        known = sorted(p.name for p in units_root(home).glob("*") if (p / "journal.log").exists())
        hint = f"; known: {', '.join(known)}" if known else ""
        raise BadArgument(f"no journal for unit {unit_name!r} (run it with `labkit unit run FILE`){hint}") from None
    if lines is None:
        return text
    return "".join(text.splitlines(keepends=True)[-lines:]) if lines > 0 else ""


def read_events(unit_name: str, home: str | os.PathLike | None = None) -> list[dict]:
    """The events of the unit's latest run."""
    path = units_root(home) / unit_name / "events.jsonl"
    try:
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except FileNotFoundError:
        return []
