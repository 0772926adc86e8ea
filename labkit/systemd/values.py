"""Parsers for systemd unit file values that accept and reject what systemd 252 does.

Each parser follows the C function systemd uses (named in its docstring); the tests check them
against ``systemd-analyze``. Text is the value after ``Key=``; as in a unit file, whitespace around
it is ignored. A value systemd would reject raises :class:`InvalidValue`.
"""

from __future__ import annotations

import calendar
import math
import os
import re
import signal
import time
from datetime import date, datetime, timedelta, timezone, tzinfo
from typing import Callable
from zoneinfo import ZoneInfo

__all__ = ["InvalidValue", "parse_timespan", "format_timespan", "parse_size", "parse_memory_limit",
           "parse_percent", "parse_bool", "parse_nice", "parse_exit_statuses", "CalendarSpec"]

_WS = " \t\n\r"  # systemd's WHITESPACE, which is all a unit file strips
_USEC = 10**6
_U64_MAX = 2**64 - 1  # USEC_INFINITY and UINT64_MAX: values systemd reads as "infinity"
_INT_MAX = 2**31 - 1
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


class InvalidValue(ValueError):
    """A unit file value systemd would reject; str(err) says why in one line."""

    def __init__(self, value: str, reason: str) -> None:
        super().__init__(value, reason)
        self.value, self.reason = value, reason

    def __str__(self) -> str:
        return self.reason


def _c_int(text: str, value: str) -> int:
    """An integer as safe_atoi() reads it: C strtol() base 0 (so 0x1f and octal 017) plus 0b/0o."""
    s, base = text.lstrip(_WS), 0
    if s[:2] in ("0b", "0B", "0o", "0O"):
        base, s = (2 if s[1] in "bB" else 8), s[2:]
    sign, body = re.fullmatch(r"[ \t\n\v\f\r]*([+-]?)(.*)", s, re.S).groups()
    if base == 0:
        hexa = body[:2] in ("0x", "0X") and body[2:3] != "" and body[2:3] in "0123456789abcdefABCDEF"
        base, body = (16, body[2:]) if hexa else (8 if body.startswith("0") else 10, body)
    if not body or body.lower().strip("0123456789abcdef"[:base]):
        raise InvalidValue(value, f"{text!r} is not an integer")
    return -int(body, base) if sign == "-" else int(body, base)


# time spans: parse_time() and format_timespan() in src/basic/time-util.c

_S, _MIN, _H, _D, _W = _USEC, 60 * _USEC, 3600 * _USEC, 86400 * _USEC, 604800 * _USEC
_MONTH, _YEAR = 2629800 * _USEC, 31557600 * _USEC  # 30.44 and 365.25 days
# the first unit the text starts with wins, hence "ms" before "m" and "months" before "M"
_TIME_UNITS = (("seconds", _S), ("second", _S), ("sec", _S), ("s", _S), ("minutes", _MIN), ("minute", _MIN),
               ("min", _MIN), ("months", _MONTH), ("month", _MONTH), ("M", _MONTH), ("msec", 1000), ("ms", 1000),
               ("m", _MIN), ("hours", _H), ("hour", _H), ("hr", _H), ("h", _H), ("days", _D), ("day", _D), ("d", _D),
               ("weeks", _W), ("week", _W), ("w", _W), ("years", _YEAR), ("year", _YEAR), ("y", _YEAR),
               ("usec", 1), ("us", 1), ("\u03bcs", 1), ("\u00b5s", 1))
_SHOWN_UNITS = (("y", _YEAR), ("month", _MONTH), ("w", _W), ("d", _D), ("h", _H), ("min", _MIN), ("s", _S),
                ("ms", 1000), ("us", 1))


def _parse_usec(text: str, default: int) -> int | None:
    """Microseconds in "<number>[.<digits>][ ]<unit>" parts that add up; None for infinity."""
    p, usec = text.lstrip(_WS), 0
    if p.startswith("infinity"):
        if p[8:].strip(_WS):
            raise InvalidValue(text, "nothing may follow 'infinity'")
        return None
    if not p:
        raise InvalidValue(text, "empty time span")
    while p:
        if p.startswith("-"):
            raise InvalidValue(text, "a time span cannot be negative")
        whole = re.match(r"(?:\+?([0-9]+))?", p)
        rest = p[whole.end():]
        frac = re.match(r"\.([0-9]*)", rest)
        if not whole[0] and not frac:
            raise InvalidValue(text, f"expected a number at {p!r}")
        rest = rest[frac.end():] if frac else rest
        unit, multiplier = next(((u, m) for u, m in _TIME_UNITS if rest.lstrip(_WS).startswith(u)), ("", default))
        p = rest.lstrip(_WS)[len(unit):]
        if p and len(p) == len(rest):  # neither a unit nor a space: "1x", "1.5.5s"
            raise InvalidValue(text, f"unknown time unit at {rest!r} (use us, ms, s, min, h, d, w, M or y)")
        if frac and not frac[1]:
            raise InvalidValue(text, "expected digits after '.'")
        number = int(whole[1] or 0)
        usec += number * multiplier + sum(int(d) * (multiplier // 10**i) for i, d in enumerate(frac[1], 1)
                                          ) if frac else number * multiplier
        if number > 2**63 - 1 or number >= _U64_MAX // multiplier or usec >= _U64_MAX:
            raise InvalidValue(text, "time span too large")
        p = p.lstrip(_WS)
    return usec


def parse_timespan(text: str, default_unit: str = "s") -> float:
    """Seconds in a systemd.time(7) time span such as ``1min 30s``; ``math.inf`` for ``infinity``.

    A number without a unit counts in ``default_unit`` (seconds for nearly every key). As in
    systemd, parts simply add up: ``"1 2"`` is 3 seconds and ``"5min1"`` 301; digits finer than
    1 µs are dropped. Negative, empty or garbled spans raise :class:`InvalidValue`.
    """
    units = dict(_TIME_UNITS)
    if default_unit not in units:
        raise ValueError(f"unknown default_unit {default_unit!r}; use one of {', '.join(units)}")
    usec = _parse_usec(text, units[default_unit])
    return math.inf if usec is None else usec / _USEC


def format_timespan(seconds: float) -> str:
    """A time span as systemd prints it: ``1min 30s``, ``500ms``, ``1.500000s``, ``infinity``, ``0``.

    This is format_timespan() at 1 µs accuracy, i.e. what ``systemd-analyze timespan`` shows.
    """
    if seconds == math.inf:
        return "infinity"
    if not seconds >= 0:
        raise ValueError(f"a time span cannot be {seconds!r}")
    t, parts = round(seconds * _USEC), []
    for suffix, unit in _SHOWN_UNITS:
        if t >= unit:
            whole, t = divmod(t, unit)
            if t and whole * unit + t < _MIN:  # under a minute systemd writes the rest as decimals
                parts.append(f"{whole}.{t:0{len(str(unit)) - 1}d}{suffix}")
                break
            parts.append(f"{whole}{suffix}")
    return " ".join(parts) or "0"


# sizes and percentages: parse_size() in parse-util.c, parse_permyriad() in percent-util.c

_SIZE_SUFFIXES = (("E", 1024**6), ("P", 1024**5), ("T", 1024**4), ("G", 1024**3), ("M", 1024**2), ("K", 1024),
                  ("B", 1), ("", 1))


def _parse_bytes(text: str) -> int:
    """Bytes as parse_size(text, 1024): parts with ever smaller suffixes add up ("1G 512M", "1.5G")."""
    p, total, first = text, 0, 0
    while True:
        p = p.lstrip(_WS)
        m = re.match(r"[ \t\n\v\f\r]*\+?([0-9]+)(?:\.([0-9]*))?", p)
        if p.startswith("-") or not m:
            raise InvalidValue(text, "a size cannot be negative" if p.startswith("-") else f"expected a number at {p!r}")
        frac = float(int(m[2] or 0))
        for _ in m[2] or "":  # divided digit by digit, like the C code, to round the same way
            frac /= 10
        rest = p[m.end():].lstrip(_WS)
        index = next((i for i in range(first, len(_SIZE_SUFFIXES)) if rest.startswith(_SIZE_SUFFIXES[i][0])), None)
        if index is None:
            raise InvalidValue(text, f"bad size suffix at {rest!r} (use K, M, G, T, P or E, largest first)")
        number, factor = int(m[1]), _SIZE_SUFFIXES[index][1]
        total += number * factor + int(frac * factor)
        if number + (frac > 0) > _U64_MAX // factor or int(m[2] or 0) > _U64_MAX or total > _U64_MAX:
            raise InvalidValue(text, "size too large")
        p, first = rest[len(_SIZE_SUFFIXES[index][0]):], index + 1
        if not p:
            return total


def parse_size(text: str) -> int | None:
    """Bytes in a size with 1024-based suffixes (``512M``, ``1.5G``, ``1G 512M``); None for ``infinity``."""
    text = text.strip(_WS)
    return None if text == "infinity" else _parse_bytes(text)


def _permyriad(text: str) -> int:
    """Hundredths of a percent in "12.34%", "5.5‰" or "7‱", as parse_permyriad_unbounded()."""
    places = {"\u2031": 0, "\u2030": 1, "%": 2}.get(text[-1:])  # decimals allowed before each symbol
    if places is None:
        raise InvalidValue(text, "a percentage must end in '%'")
    number, dot, decimals = text[:-1].partition(".")
    if dot and not (0 < len(decimals) <= places and decimals.isascii() and decimals.isdigit()):
        raise InvalidValue(text, f"at most {places} digits may follow the '.' before {text[-1]}")
    permyriad = _c_int(number, text) * 10**places + int(decimals.ljust(places, "0") or 0)
    if not 0 <= permyriad <= _INT_MAX:
        raise InvalidValue(text, "percentage out of range")
    return permyriad


def parse_percent(text: str, maximum: float | None = None) -> float:
    """Percent in ``50%`` (two decimals at most; ``‰`` and ``‱`` work too), e.g. 50.0.

    Pass ``maximum=100`` where systemd caps the value. CPUQuota= takes more than 100% (but not 0%).
    """
    text = text.strip(_WS)
    percent = _permyriad(text) / 100
    if maximum is not None and percent > maximum:
        raise InvalidValue(text, f"must be at most {maximum:g}%")
    return percent


def parse_memory_limit(text: str, total_bytes: int | None = None) -> int | None:
    """Bytes for MemoryMax=/MemoryHigh=: a size, ``N%`` of RAM, or ``infinity`` (None).

    ``N%`` is of ``total_bytes`` (default: physical RAM; systemd also caps it by its own cgroup's
    limit), rounded down to whole pages as physical_memory_scale() does. Empty means None too.
    """
    text = text.strip(_WS)
    if text in ("", "infinity"):
        return None
    if not text.endswith(("%", "\u2030", "\u2031")):
        size = _parse_bytes(text)
    elif (permyriad := _permyriad(text)) > 10000:
        raise InvalidValue(text, "a memory limit can be at most 100% of RAM")
    else:
        page = os.sysconf("SC_PAGE_SIZE")
        total = total_bytes if total_bytes is not None else os.sysconf("SC_PHYS_PAGES") * page
        size = total if permyriad == 10000 else total // page * permyriad // 10000 * page
    if not 0 < size < _U64_MAX:
        raise InvalidValue(text, "memory limit out of range (use a size above 0, or infinity)")
    return size


# booleans, nice levels, exit statuses: parse_boolean(), parse_nice(), exit_status_from_string()


def parse_bool(text: str) -> bool:
    """True for 1/yes/y/true/t/on, False for 0/no/n/false/f/off, in any case, as parse_boolean()."""
    word = text.strip(_WS).lower()
    if word in ("1", "yes", "y", "true", "t", "on"):
        return True
    if word in ("0", "no", "n", "false", "f", "off"):
        return False
    raise InvalidValue(text, "not a boolean (use yes/no, true/false, on/off or 1/0)")


def parse_nice(text: str) -> int:
    """A Nice= level: an integer from -20 (first served) to 19."""
    level = _c_int(text.strip(_WS), text)
    if not -20 <= level <= 19:
        raise InvalidValue(text, f"nice level {level} is outside -20..19")
    return level


def _numbered(first: int, names: str) -> dict[str, int]:
    return {name: code for code, name in enumerate(names.split(), first) if name != "-"}


# as `systemd-analyze exit-status` lists them; "-" skips a number without a name
_EXIT_NAMES = {**_numbered(0, "SUCCESS FAILURE INVALIDARGUMENT NOTIMPLEMENTED NOPERMISSION NOTINSTALLED "
                              "NOTCONFIGURED NOTRUNNING"),
               **_numbered(64, "USAGE DATAERR NOINPUT NOUSER NOHOST UNAVAILABLE SOFTWARE OSERR OSFILE CANTCREAT "
                               "IOERR TEMPFAIL PROTOCOL NOPERM CONFIG"),
               **_numbered(200, "CHDIR NICE FDS EXEC MEMORY LIMITS OOM_ADJUST SIGNAL_MASK STDIN STDOUT CHROOT "
                                "IOPRIO TIMERSLACK SECUREBITS SETSCHEDULER CPUAFFINITY GROUP USER CAPABILITIES "
                                "CGROUP SETSID CONFIRM STDERR - PAM NETWORK NAMESPACE NO_NEW_PRIVILEGES SECCOMP "
                                "SELINUX_CONTEXT PERSONALITY APPARMOR ADDRESS_FAMILIES RUNTIME_DIRECTORY - CHOWN "
                                "SMACK_PROCESS_LABEL KEYRING STATE_DIRECTORY CACHE_DIRECTORY LOGS_DIRECTORY "
                                "CONFIGURATION_DIRECTORY NUMA_POLICY CREDENTIALS BPF"),
               "EXCEPTION": 255}
# one name per number: systemd rejects the aliases IOT, POLL, CLD and UNUSED
_SIGNALS = {name: int(getattr(signal, "SIG" + name)) for name in (
    "HUP INT QUIT ILL TRAP ABRT BUS FPE KILL USR1 SEGV USR2 PIPE ALRM TERM STKFLT CHLD CONT STOP TSTP TTIN "
    "TTOU URG XCPU XFSZ VTALRM PROF WINCH IO PWR SYS").split() if hasattr(signal, "SIG" + name)}


def _signal_number(word: str) -> int:
    """The signal TERM, SIGTERM, RTMIN+n or SIGRTMAX-n stands for, as signal_from_string()."""
    name, span = word.removeprefix("SIG"), signal.SIGRTMAX - signal.SIGRTMIN
    if name in _SIGNALS:
        return _SIGNALS[name]
    for base, sign, number in (("RTMIN", "+", signal.SIGRTMIN), ("RTMAX", "-", signal.SIGRTMAX)):
        if name == base:
            return int(number)
        if name.startswith(base + sign) and 0 <= abs(offset := _c_int(name[5:], word)) <= span:
            return int(number) + offset
    raise InvalidValue(word, f"{word!r} is neither an exit status (0..255, or a name like TEMPFAIL) nor a signal")


def parse_exit_statuses(text: str) -> tuple[frozenset[int], frozenset[int]]:
    """(exit codes, signal numbers) in a SuccessExitStatus=/RestartPreventExitStatus= list.

    Words are exit codes 0..255, exit status names (``TEMPFAIL``) or signal names (``SIGTERM``,
    ``TERM``), case-sensitive. systemd skips a bad word with a warning; this raises instead.
    An empty list (which resets the setting) gives two empty sets.
    """
    codes, signals = set(), set()
    for word in re.split(r"[ \t\n\r]+", text.strip(_WS)) if text.strip(_WS) else ():
        try:
            code = _EXIT_NAMES[word] if word in _EXIT_NAMES else _c_int(word, word)
        except InvalidValue:
            signals.add(_signal_number(word))
            continue
        if not 0 <= code <= 255 or (word.startswith("-") and code):
            raise InvalidValue(word, f"exit status {word} is outside 0..255")
        codes.add(code)
    return frozenset(codes), frozenset(signals)


# calendar events: src/shared/calendarspec.c

_Chain = tuple[tuple[int, int, int], ...]  # sorted (start, stop or -1, repeat or 0); None stands for "*"
_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_DAY_INDEX = {name: i for i, full in enumerate(("monday", "tuesday", "wednesday", "thursday", "friday",
                                                "saturday", "sunday")) for name in (full, full[:3])}
_DAY = "|".join(sorted(_DAY_INDEX, key=len, reverse=True))
_SHORTHANDS = {"minutely": "*-*-* *:*:00", "hourly": "*-*-* *:00:00", "daily": "*-*-* 00:00:00",
               "monthly": "*-*-01 00:00:00", "weekly": "Mon *-*-* 00:00:00", "quarterly": "*-01,04,07,10-01 00:00:00",
               **dict.fromkeys(("yearly", "annually", "anually"), "*-01-01 00:00:00"),
               **dict.fromkeys(("semiannually", "semi-annually", "biannually", "bi-annually"), "*-01,07-01 00:00:00")}
_FIELDS = ("year", "month", "day", "hour", "minute", "second")
_LIMITS = ((1970, 2199), (1, 12), (1, 31), (0, 23), (0, 59), (0, 60 * _USEC - 1))  # seconds in µs
_FIRST = (None, 1, 1, 0, 0, 0)  # the first month, day, hour, minute and second
_ZERO: _Chain = ((0, -1, 0),)


def _component(value: str, usec: bool, text: str) -> int:
    """One number; seconds are in µs, with up to 6 decimals (the 7th digit rounds)."""
    whole, _, decimals = value.partition(".")
    result = int(whole) * _USEC + int(decimals[:6].ljust(6, "0")) + (decimals[6:7] >= "5") if usec else int(whole)
    if result > _INT_MAX:
        raise InvalidValue(text, f"{value} is too large")
    return result


def _chain(part: str, usec: bool, text: str, field: str) -> _Chain | None:
    """A component: "*", or a comma list of values "a", ranges "a..b" and repetitions "a/n", "a..b/n"."""
    if part == "*":
        return ((0, -1, _USEC),) if usec else None
    if part.startswith("*/"):
        raise InvalidValue(text, f"{part!r} is cron syntax; systemd wants a start, e.g. 0/15 (or 1/2 for days)")
    number = r"[0-9]+(?:\.[0-9]+)?" if usec else "[0-9]+"
    items = [re.fullmatch(rf"({number})(?:\.\.({number}))?(?:/({number}))?", item) for item in part.split(",")]
    if not all(items) or len(items) > 241:
        raise InvalidValue(text, f"bad {field} {part!r} (write e.g. 5, 1,15, 1..5, 0/15 or 8..18/2)")
    chain = []
    for m in items:
        start, stop = _component(m[1], usec, text), _component(m[2], usec, text) if m[2] else -1
        repeat = _component(m[3], usec, text) if m[3] else (_USEC if usec else 1) if m[2] else 0
        if m[3] and not repeat:
            raise InvalidValue(text, f"a repetition must be above 0 in {part!r}")
        chain.append((start, stop, repeat))
    return tuple(chain)


def _weekdays(part: str, text: str) -> int:
    """Bit mask (Monday = bit 0) of "Mon..Fri,Sun"; a trailing comma is allowed."""
    bits, items = 0, part.split(",")
    for item in items[:-1] if len(items) > 1 and not items[-1] else items:
        m = re.fullmatch(rf"({_DAY})(?:(\.\.|-)({_DAY}))?", item, re.I)
        if not m:
            raise InvalidValue(text, f"bad weekday {item!r} (write e.g. Mon..Fri or Sat,Sun)")
        low, high = _DAY_INDEX[m[1].lower()], _DAY_INDEX[(m[3] or m[1]).lower()]
        if low > high:
            raise InvalidValue(text, f"weekday range {item!r} must not wrap around the week: write e.g. Sat,Sun,Mon")
        bits |= (2 << high) - (1 << low)
    return bits
