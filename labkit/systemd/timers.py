"""When a ``.timer`` unit elapses next: ``OnCalendar=`` and the monotonic ``On*Sec=`` settings."""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from pathlib import Path

from labkit.errors import BadArgument
from labkit.systemd.unitfile import load
from labkit.systemd.values import CalendarSpec, InvalidValue, format_timespan, parse_timespan

MONOTONIC = {
    "OnActiveSec": "after the timer itself is activated",
    "OnBootSec": "after the machine booted",
    "OnStartupSec": "after the service manager started",
    "OnUnitActiveSec": "after the unit it starts was last activated (so: every",
    "OnUnitInactiveSec": "after the unit it starts last finished",
}


def calendar_lines(expression: str, iterations: int, now: datetime) -> list[str]:
    """What ``systemd-analyze calendar --iterations=N EXPRESSION`` prints, in its layout.

    Raises:
        BadArgument: the expression is not a calendar event systemd accepts.
    """
    try:
        spec = CalendarSpec.parse(expression)
    except (InvalidValue, ValueError) as err:
        raise BadArgument(f"OnCalendar={expression}: {err}") from None
    lines = [f"  Original form: {expression}", f"Normalized form: {spec.normalized()}"]
    for index, when in enumerate(spec.elapses(now, iterations)):
        label = "    Next elapse" if index == 0 else f"       Iter. #{index + 1}"
        lines.append(f"{label}: {when.strftime('%a %Y-%m-%d %H:%M:%S %Z')}")
        if index == 0:
            lines.append(f"       From now: {format_timespan(round((when - now).total_seconds()))} left")
    if len(lines) == 2:
        lines.append("    Next elapse: never")
    return lines


def describe_timer(what: str | os.PathLike, iterations: int, now: datetime) -> list[str]:
    """Lines describing a .timer file's triggers, or one calendar expression."""
    if not str(what).endswith(".timer") or not Path(what).exists():
        return calendar_lines(str(what), iterations, now)
    unit = load(what)
    if not unit.has_section("Timer"):
        raise BadArgument(f"{unit.name} has no [Timer] section")
    target = unit.get("Timer", "Unit") or unit.name.removesuffix(".timer") + ".service"
    lines = [f"{unit.name} starts {target}"]
    for expression in unit.get_list("Timer", "OnCalendar"):
        lines += [""] + calendar_lines(expression, iterations, now)
    for key, meaning in MONOTONIC.items():
        for value in unit.get_list("Timer", key):
            try:
                seconds = parse_timespan(value)
            except (InvalidValue, ValueError) as err:
                raise BadArgument(f"{key}={value}: {err}") from None
            closing = f" {format_timespan(seconds)})" if key == "OnUnitActiveSec" else ""
            lines += ["", f"{key}={value}: {format_timespan(seconds)} {meaning}{closing}",
                      f"    if activated now: {(now + timedelta(seconds=seconds)).strftime('%a %Y-%m-%d %H:%M:%S %Z')}"]
    if len(lines) == 1:
        raise BadArgument(f"{unit.name} has no OnCalendar= or On*Sec= trigger: it never elapses")
    for key in ("Persistent", "RandomizedDelaySec", "AccuracySec"):
        if unit.get("Timer", key):
            lines.append(f"{key}={unit.get('Timer', key)}")
    return lines
