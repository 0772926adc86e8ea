"""Timer units: which service they start and when they elapse next."""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timezone

import pytest

from labkit.errors import BadArgument
from labkit.systemd.timers import calendar_lines, describe_timer

NOON = datetime(2026, 11, 28, 12, 0, 0, tzinfo=timezone.utc)  # a Saturday


def test_calendar_lines_show_the_normalized_form_and_the_next_elapses():
    lines = calendar_lines("*-*-* 02:00:00", 3, NOON)
    assert lines[1] == "Normalized form: *-*-* 02:00:00"
    assert "Sun 2026-11-29 02:00:00" in lines[2] and "From now: 14h left" in lines[3]
    assert "Mon 2026-11-30 02:00:00" in lines[4] and "Tue 2026-12-01 02:00:00" in lines[5]


def test_a_timer_file_lists_each_trigger(tmp_path):
    timer = tmp_path / "nightly-eval.timer"
    timer.write_text("[Timer]\nOnCalendar=Sat,Sun 12:00\nOnUnitActiveSec=6h\nPersistent=true\n")
    lines = describe_timer(timer, 2, NOON)
    assert lines[0] == "nightly-eval.timer starts nightly-eval.service"
    text = "\n".join(lines)
    assert "Normalized form: Sat,Sun *-*-* 12:00:00" in text
    assert "Next elapse: Sun 2026-11-29 12:00:00" in text  # Saturday noon itself has passed (strictly after)
    assert "OnUnitActiveSec=6h: 6h after the unit it starts was last activated (so: every 6h)" in text
    assert "Persistent=true" in text


def test_bad_timers_are_clear_errors(tmp_path):
    with pytest.raises(BadArgument, match="OnCalendar=someday"):
        calendar_lines("someday", 1, NOON)
    empty = tmp_path / "empty.timer"
    empty.write_text("[Timer]\nPersistent=true\n")
    with pytest.raises(BadArgument, match="never elapses"):
        describe_timer(empty, 1, NOON)


def test_the_command_prints_next_elapses_and_refuses_nonsense(tmp_path):
    done = subprocess.run([sys.executable, "-m", "labkit", "unit", "timer", "daily", "--iterations", "2"],
                          capture_output=True, text=True)
    assert done.returncode == 0 and "Normalized form: *-*-* 00:00:00" in done.stdout
    bad = subprocess.run([sys.executable, "-m", "labkit", "unit", "timer", "every blue moon"], capture_output=True,
                         text=True)
    assert bad.returncode == 2 and len(bad.stderr.splitlines()) == 1
