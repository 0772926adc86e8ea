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

from labkit.errors import BadArgument

__all__ = ["InvalidValue", "parse_timespan", "format_timespan", "parse_size", "parse_memory_limit",
           "parse_percent", "parse_bool", "parse_nice", "parse_exit_statuses", "CalendarSpec"]

_WS = " \t\n\r"  # systemd's WHITESPACE, which is all a unit file strips
_USEC = 10**6
_U64_MAX = 2**64 - 1  # USEC_INFINITY and UINT64_MAX: values systemd reads as "infinity"
_INT_MAX = 2**31 - 1
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


class InvalidValue(BadArgument):
    """A unit file value systemd would reject; str(err) says why in one line."""

    def __init__(self, value: str, reason: str) -> None:
        super().__init__(reason)
        self.value, self.reason = value, reason

    def __str__(self) -> str:
        return self.reason


def _c_int(text: str, value: str) -> int:
    """An integer as safe_atoi() reads it: C strtol() base 0 (so 0x1f and octal 017) plus 0b/0o."""
    s, base = text.lstrip(_WS), 0
    if s[:2] in ("0b", "0B", "0o", "0O"):
        base, s = (2 if s[1] in "bB" else 8), s[2:]
    parts = re.fullmatch(r"[ \t\n\v\f\r]*([+-]?)(.*)", s, re.S)
    assert parts is not None  # the pattern matches any text
    sign, body = parts.groups()
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
        assert whole is not None  # the pattern matches any text (the empty string at least)
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
        number, decimals = int(whole[1] or 0), frac[1] if frac else ""
        # each decimal is worth a tenth of the one before, cut to whole µs as systemd's integer maths does
        usec += number * multiplier + sum(int(d) * (multiplier // 10**i) for i, d in enumerate(decimals, 1))
        if number > 2**63 - 1 or number >= _U64_MAX // multiplier or usec >= _U64_MAX:
            raise InvalidValue(text, "time span too large")
        p = p.lstrip(_WS)
    return usec


def parse_timespan(text: str, default_unit: str = "s") -> float:
    """Seconds in a systemd.time(7) time span such as ``1min 30s``; ``math.inf`` for ``infinity``.

    A number without a unit counts in ``default_unit`` (seconds for nearly every key). As in
    systemd, parts simply add up: ``"1 2"`` is 3 seconds and ``"5min1"`` 301; digits finer than
    1 µs are dropped. Negative, empty or garbled spans raise :class:`InvalidValue`. (A float
    holds whole microseconds exactly only up to about a century.)
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
            raise InvalidValue(text, "a size cannot be negative" if p.startswith("-") else
                               f"expected a number at {p!r}")
        if int(m[2] or 0) > _U64_MAX:
            raise InvalidValue(text, "size too large")
        frac = float(int(m[2] or 0))
        for _ in m[2] or "":  # divided digit by digit, like the C code, to round the same way
            frac /= 10
        rest = p[m.end():].lstrip(_WS)
        index = next((i for i in range(first, len(_SIZE_SUFFIXES)) if rest.startswith(_SIZE_SUFFIXES[i][0])), None)
        if index is None:
            raise InvalidValue(text, f"bad size suffix at {rest!r} (use K, M, G, T, P or E, largest first)")
        number, factor = int(m[1]), _SIZE_SUFFIXES[index][1]
        total += number * factor + int(frac * factor)
        if number + (frac > 0) > _U64_MAX // factor or total > _U64_MAX:
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
# the first month, day, hour, minute and second (and year, never read: no field above it carries over)
_FIRST = (_LIMITS[0][0], 1, 1, 0, 0, 0)
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
    matches = [m for m in items if m is not None]
    if len(matches) < len(items) or len(items) > 241:
        raise InvalidValue(text, f"bad {field} {part!r} (write e.g. 5, 1,15, 1..5, 0/15 or 8..18/2)")
    chain = []
    for m in matches:
        start, stop = _component(m[1], usec, text), _component(m[2], usec, text) if m[2] else -1
        repeat = _component(m[3], usec, text) if m[3] else (_USEC if usec else 1) if m[2] else 0
        if (m[3] and not repeat) or (usec and m[2] and not m[3] and start + repeat > stop):
            raise InvalidValue(text, f"bad {field} {part!r}: " + ("a repetition must be above 0" if m[3] else
                                                                  "a range of seconds must span at least 1s"))
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


class CalendarSpec:
    """A systemd calendar event (OnCalendar=).

    All of systemd.time(7): ``[weekdays] [[Y-]M-D] [h:m[:s]] [zone]`` with ``*``, lists ``a,b``,
    ranges ``a..b``, repetitions ``a/n`` and ``a..b/n``, fractional seconds, ``~`` (days before
    the end of the month), the shorthands (``daily``, ``quarterly``, ...), ``@SECONDS``, and a zone:
    ``UTC``, a tz name (``Europe/Berlin``) or a local abbreviation (``CEST``, which forces DST
    on or off as systemd does). Cron's ``*/15`` is rejected, as systemd rejects it.
    """

    def __init__(self) -> None:
        self.weekdays, self.end_of_month, self.dst = 0, False, -1  # dst: forced by a local zone abbreviation
        # None is "*": every value; a date left out means every day, a time left out 00:00:00
        self.year: _Chain | None = None
        self.month: _Chain | None = None
        self.day: _Chain | None = None
        self.hour: _Chain | None = _ZERO
        self.minute: _Chain | None = _ZERO
        self.second: _Chain | None = _ZERO
        self.zone: tzinfo | None = None  # None is the local zone, as TZ says at the time of asking
        self.zone_name = ""

    @classmethod
    def parse(cls, text: str) -> CalendarSpec:
        """The event in ``text``, e.g. ``Mon..Fri *-*-* 09:00``, ``daily`` or ``*-*-01 00:00 UTC``."""
        spec = cls()
        body = _SHORTHANDS.get((stripped := spec._take_zone(text.strip(_WS))).lower(), stripped)
        parts = [part for part in body.split(" ") if part]  # only spaces separate, and repeats are fine
        if not parts or body.endswith(" ") and ":" in parts[-1]:  # ... but not after the time
            raise InvalidValue(text, "empty calendar event" if not parts else "stray space after the time")
        if re.match(_DAY, parts[0], re.I):
            spec.weekdays = _weekdays(parts.pop(0), text)
        if parts and parts[0].startswith("@"):
            spec._take_timestamp(parts.pop(0), text)
        else:
            if parts and ":" not in parts[0]:
                spec._take_date(parts.pop(0), text)
            if parts:
                time_parts = parts.pop(0).split(":")
                if len(time_parts) not in (2, 3):
                    raise InvalidValue(text, f"bad time {':'.join(time_parts)!r} (write e.g. 09:00 or *:0/15:30)")
                spec.hour, spec.minute = (_chain(p, False, text, f) for p, f in zip(time_parts[:2], _FIELDS[3:]))
                spec.second = _chain(time_parts[2], True, text, "second") if len(time_parts) == 3 else _ZERO
        if parts:
            raise InvalidValue(text, f"unexpected {' '.join(parts)!r} at the end")
        spec._normalize(text)
        return spec

    def _take_zone(self, body: str) -> str:
        """Strip and note a trailing "UTC", local zone abbreviation (CEST) or tz name (Europe/Berlin)."""
        if body.lower().endswith(" utc"):
            self.zone, self.zone_name = timezone.utc, "UTC"
            return body[:-4]
        for dst, name in enumerate(time.tzname):
            if name and body.lower().endswith(" " + name.lower()):
                self.dst, self.zone_name = dst, name
                return body[:-len(name) - 1]
        head, space, last = body.rpartition(" ")
        try:
            self.zone, self.zone_name = (ZoneInfo(last), last) if space else (None, "")
            return head if space else body
        except (KeyError, ValueError, OSError):  # not a zone: the parser will judge the word
            return body

    def _take_timestamp(self, part: str, text: str) -> None:
        """"@SECONDS" since 1970: one moment, in UTC."""
        m = re.fullmatch(r"@\+?([0-9]+)", part)
        if not m or int(m[1]) > 7258118399:  # 2199-12-31 23:59:59 UTC
            raise InvalidValue(text, "'@' must be followed by seconds since 1970 (up to 2199) and nothing else")
        moment = _EPOCH + timedelta(seconds=int(m[1]))
        for field, value in zip(_FIELDS, moment.timetuple()[:6]):
            setattr(self, field, ((value * (_USEC if field == "second" else 1), -1, 0),))
        self.zone, self.zone_name = timezone.utc, "UTC"

    def _take_date(self, part: str, text: str) -> None:
        """"[Y-]M-D", or "[Y-]M~D" counting days back from the end of the month."""
        pieces = re.split(r"([-~])", part)
        chains, separators = pieces[::2], pieces[1::2]
        if len(chains) not in (2, 3) or "~" in separators[:-1]:
            raise InvalidValue(text, f"bad date {part!r} (write e.g. 2024-01-31, *-*-01 or *-02~03)")
        self.end_of_month = separators[-1] == "~"
        for field, chain in zip(_FIELDS[3 - len(chains):3], chains):
            setattr(self, field, _chain(chain, False, text, field))

    def _normalize(self, text: str) -> None:
        """As calendar_spec_normalize() and _valid(): 2-digit years, sorted lists, whole range steps."""
        self.weekdays = -1 if self.weekdays in (0, 127) else self.weekdays
        self.end_of_month = self.end_of_month and self.day is not None
        for field, (low, high) in zip(_FIELDS, _LIMITS):
            if (chain := getattr(self, field)) is None:
                continue
            if field == "year":  # 24 -> 2024, 89 -> 1989
                chain = [tuple(v + (2000 if 0 <= v < 70 else 1900 if 70 <= v < 100 else 0) for v in item[:2])
                         + item[2:] for item in chain]
            chain = [(a, b - (b - a) % r if b > a and r else b, r) for a, b, r in chain]
            chain = tuple(sorted({(a, -1, 0) if a == b else (a, b, r) for a, b, r in chain}))
            eom = field == "day" and self.end_of_month
            for start, stop, repeat in chain:
                high -= 3 if eom else 0  # "~" reaches back 28 days; systemd cuts 3 more per list item
                fits = (start + repeat <= stop <= high) if stop >= 0 else (
                    start - repeat >= low if eom else start + repeat <= high)
                if not (low <= start <= high and repeat <= high - low and fits):
                    usec = field == "second"
                    shown = _format_chain(((start, stop, repeat),), 1, usec)
                    raise InvalidValue(text, f"{field} {shown} does not fit in {low}..{59 if usec else high}")
            setattr(self, field, chain)

    def normalized(self) -> str:
        """The event as ``systemd-analyze calendar`` prints it after "Normalized form:"."""
        text = (f"{_format_weekdays(self.weekdays)} " if self.weekdays > 0 else "") + (
            f"{_format_chain(self.year, 4)}-{_format_chain(self.month, 2)}{'~' if self.end_of_month else '-'}"
            f"{_format_chain(self.day, 2)} {_format_chain(self.hour, 2)}:{_format_chain(self.minute, 2)}:"
            f"{_format_chain(self.second, 2, usec=True)}")
        return f"{text} {self.zone_name}" if self.zone_name else text

    def __repr__(self) -> str:
        return f"CalendarSpec.parse({self.normalized()!r})"

    def next_elapse(self, after: datetime) -> datetime | None:
        """The first matching time strictly after ``after``, or None if none comes (before 2200).

        A naive ``after`` is read in the event's zone. The result is aware: in UTC or the named
        zone if the event has one, else in the local zone (with that moment's UTC offset).
        """
        if after.tzinfo is None:
            after = after.astimezone() if self.zone is None else after.replace(tzinfo=self.zone)
        usec = (after - _EPOCH) // timedelta(microseconds=1)
        found = self._next_usec(usec)
        if found is None or found <= usec:  # only a forced DST abbreviation can get here
            return None
        moment = _EPOCH + timedelta(microseconds=found)
        return moment.astimezone(self.zone) if self.zone is not None else moment.astimezone()

    def elapses(self, after: datetime, count: int) -> list[datetime]:
        """The next ``count`` elapses after ``after``, fewer if the event stops elapsing."""
        found: list[datetime] = []
        while len(found) < count:
            moment = self.next_elapse(found[-1] if found else after)
            if moment is None:
                break
            found.append(moment)
        return found

    def _next_usec(self, usec: int) -> int | None:
        """As find_next(): fit each field, largest first; one that cannot fit bumps the one above."""
        clock = _Clock(self.zone)
        t, us = divmod(usec + 1, _USEC)
        c = clock.split(t)
        for _ in range(1000):  # systemd's own safety valve
            c = clock.split(clock.join(c))
            c[6] = self.dst
            found, c[0] = _match(self.year, c[0])
            if found > 0:
                c[1:6], us = _FIRST[1:6], 0
            if found < 0 or clock.settle(c) <= 0:
                return None
            for i, chain in enumerate((self.month, self.day, self.hour, self.minute, self.second), 1):
                value = c[i] * _USEC + us if i == 5 else c[i]
                found, value = _match(chain, value, _month_end(c) if i == 2 and self.end_of_month else None)
                c[i], us = divmod(value, _USEC) if i == 5 else (value, us)
                if found > 0 and i < 5:
                    c[i + 1:6], us = _FIRST[i + 1:6], 0
                settled = clock.settle(c) if found >= 0 else -1
                if settled < 0:
                    c[i - 1], c[i:6], us = c[i - 1] + 1, _FIRST[i:6], 0
                if settled <= 0:
                    break
                if i == 2 and self.weekdays > 0 and not self.weekdays >> date(*c[:3]).weekday() & 1:
                    c[2], c[3:6], us = c[2] + 1, _FIRST[3:6], 0
                    break
            else:
                return clock.join(c) * _USEC + us
        return None


class _Clock:
    """Epoch seconds to and from [Y, M, D, h, m, s, isdst] in one zone, as localtime() and mktime()."""

    def __init__(self, zone: tzinfo | None) -> None:
        self.zone = zone
        self.offset: timedelta | None = None  # the one mktime() used last

    def split(self, t: int) -> list[int]:
        if self.zone is None:
            tm = time.localtime(t)
            return [*tm[:6], tm.tm_isdst]
        moment = datetime.fromtimestamp(t, self.zone)
        self.offset = moment.utcoffset() if self.offset is None else self.offset
        return [*moment.timetuple()[:6], -1]

    def join(self, c: list[int]) -> int:
        if self.zone is None:  # the C library's own mktime(), as systemd uses it
            return int(time.mktime((c[0], c[1], c[2], c[3], c[4], c[5], 0, 0, c[6])))
        wall = datetime(c[0] + (c[1] - 1) // 12, (c[1] - 1) % 12 + 1, 1) + timedelta(
            days=c[2] - 1, hours=c[3], minutes=c[4], seconds=c[5])  # out-of-range fields carry over
        # like mktime(), resolve a wall time that occurs twice (or never) with the last offset used
        first, second = wall.replace(tzinfo=self.zone), wall.replace(tzinfo=self.zone, fold=1)
        moment = second if second.utcoffset() == self.offset != first.utcoffset() else first
        self.offset = moment.utcoffset()
        return int(moment.timestamp())

    def settle(self, c: list[int]) -> int:
        """As tm_within_bounds(): 1 if c exists; 0 after moving c forward to where it overflows to
        (restarting the unit below the first that changed); -1 past 2199 or if that goes backward."""
        if c[0] > _LIMITS[0][1]:
            return -1
        real = self.split(self.join(c))
        changed = next((i for i in range(6) if real[i] != c[i]), None)
        if changed is None or real[changed] < c[changed]:
            return 1 if changed is None else -1
        if changed < 5:
            real[changed + 1] = _FIRST[changed + 1]
        c[:] = real
        return 0


def _month_end(c: list[int]) -> Callable[[int], int]:
    """Maps "~d" to the day of c's month it means (d-th last), or -1, as find_end_of_month()."""
    last = calendar.monthrange(c[0], c[1])[1]
    return lambda day: last - day + 1 if 1 <= day <= last else -1


def _match(chain: _Chain | None, value: int, month_end: Callable[[int], int] | None = None) -> tuple[int, int]:
    """(0, value) if value matches, (1, the next match above it), or (-1, value) if none is above."""
    if chain is None:
        return 0, value
    best = None
    for start, stop, repeat in chain:
        if month_end:
            start, stop = month_end(start), month_end(stop)
            start, stop = (stop, start) if stop > 0 else (start, stop)
        if start < value and repeat > 0:
            start += repeat * -((start - value) // repeat)  # the first repetition at or after value
        if start >= value and (stop < 0 or start <= stop) and (best is None or start < best):
            best = start
    return (-1, value) if best is None else (int(best != value), best)


def _format_weekdays(bits: int) -> str:
    """"Mon..Wed,Fri,Sat": runs of three or more days become ranges."""
    runs = re.finditer("1+", "".join("01"[bits >> day & 1] for day in range(7)))
    return ",".join(_DAYS[run.start()] + ("" if len(run[0]) == 1 else ("," if len(run[0]) == 2 else "..")
                                          + _DAYS[run.end() - 1]) for run in runs)


def _format_chain(chain: _Chain | None, width: int, usec: bool = False) -> str:
    """A component as format_chain() writes it: zero-padded; seconds get 6 decimals when fractional."""
    unit = _USEC if usec else 1
    if chain is None or (usec and chain == ((0, -1, _USEC),)):
        return "*"

    def number(v: int, pad: int) -> str:
        return f"{v // unit:0{pad}d}" + (f".{v % unit:06d}" if v % unit else "")

    return ",".join(number(start, width) + (f"..{number(stop, width)}" if stop > 0 else "")
                    + (f"/{number(repeat, 1)}" if repeat > 0 and not (stop > 0 and repeat == unit) else "")
                    for start, stop, repeat in chain)
