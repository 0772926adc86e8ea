"""labkit.systemd.values: unit file values are accepted, rejected and computed as systemd 252 does.

Hand-worked cases run everywhere; where ``systemd-analyze`` is installed the same parsers are also
checked against it (``timespan``, ``calendar``, ``exit-status`` and ``verify``).
"""

from __future__ import annotations

import math
import os
import re
import shutil
import signal
import subprocess
import time
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from labkit.systemd.values import (CalendarSpec, InvalidValue, format_timespan, parse_bool, parse_exit_statuses,
                                   parse_memory_limit, parse_nice, parse_percent, parse_size, parse_timespan)

ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")
UTC = timezone.utc
GiB = 2**30


def analyze(*args: str, tz: str = "UTC") -> subprocess.CompletedProcess:
    env = {**os.environ, "TZ": tz, "SYSTEMD_COLORS": "0", "SYSTEMD_PAGER": ""}
    return subprocess.run([ANALYZE, *args], capture_output=True, text=True, env=env, timeout=30)


@pytest.fixture
def local_tz(monkeypatch):
    """Switch this process's local time zone (TZ) for one test."""
    def use(name: str) -> None:
        monkeypatch.setenv("TZ", name)
        time.tzset()
    yield use
    monkeypatch.undo()
    time.tzset()


def utc(*fields: int) -> datetime:
    return datetime(*fields, tzinfo=UTC)


# --- time spans ---------------------------------------------------------------------------------

TIMESPANS = [
    ("1min 30s", 90), ("2h30m", 9000), ("1.5s", 1.5), ("5 min", 300), ("90", 90), ("0", 0), ("0.0", 0),
    ("1y", 31557600), ("1M", 2629800), ("1month", 2629800), ("1w", 604800), ("3d 4h", 273600), (".5s", 0.5),
    ("0.5ms", 0.0005), ("1us", 1e-6), ("1usec", 1e-6), ("1\u00b5s", 1e-6), ("1\u03bcs", 1e-6),
    ("55s500ms", 55.5), ("300ms20s 5day", 432020.3), ("2 h", 7200), ("2hours", 7200), ("48hr", 172800),
    ("1y 12month", 2 * 31557600), ("1 2", 3), ("5min1", 301), ("1h 1h", 7200), ("+5s", 5),
    (" 5s ", 5), ("5 \t s", 5), ("1.0000005s", 1), ("1.999999999s", 1.999999), ("1.5us", 1e-6),
    ("1000 min", 60000), ("infinity", math.inf), (" infinity ", math.inf),
]


@pytest.mark.parametrize("text, seconds", TIMESPANS)
def test_parse_timespan(text, seconds):
    assert parse_timespan(text) == pytest.approx(seconds, abs=1e-9)


@pytest.mark.parametrize("text, unit, seconds", [("500", "ms", 0.5), ("5", "min", 300), ("2 3s", "min", 123),
                                                 ("1.5", "h", 5400), ("10", "us", 1e-5), ("infinity", "ms", math.inf)])
def test_parse_timespan_default_unit(text, unit, seconds):
    assert parse_timespan(text, default_unit=unit) == pytest.approx(seconds)


def test_parse_timespan_rejects_an_unknown_default_unit():
    with pytest.raises(ValueError, match="default_unit") as err:
        parse_timespan("5", default_unit="fortnight")
    assert not isinstance(err.value, InvalidValue)


@pytest.mark.parametrize("text, reason", [
    ("", "empty"), (" ", "empty"), ("-1s", "negative"), ("-0", "negative"), ("1x", "unknown time unit"),
    ("5mins", "expected a number"), ("5secs", "expected a number"), ("1.5.5s", "unknown time unit"),
    ("5.s", "digits after"), (".", "digits after"), (".s", "digits after"), ("1e3s", "unknown time unit"),
    ("1Y", "unknown time unit"), ("1H", "unknown time unit"), ("Infinity", "expected a number"),
    ("inf", "expected a number"), ("infinity s", "follow 'infinity'"), ("infinity5", "follow 'infinity'"),
    ("1d,2h", "expected a number"), ("00:10", "unknown time unit"), ("1nsec", "unknown time unit"),
    ("1h,", "expected a number"), ("18446744073709551s", "too large"), ("9223372036854775808", "too large"),
])
def test_parse_timespan_rejects(text, reason):
    with pytest.raises(InvalidValue, match=re.escape(reason)) as err:
        parse_timespan(text)
    assert err.value.value == text and "\n" not in str(err.value)


FORMATTED = [(90, "1min 30s"), (0.5, "500ms"), (1.5, "1.500000s"), (0, "0"), (math.inf, "infinity"), (3600, "1h"),
             (86401, "1d 1s"), (123.456789, "2min 3.456789s"), (100000000, "3y 2month 18h 46min 40s"),
             (2629800, "1month"), (31557600, "1y"), (1e-6, "1us"), (0.0015, "1.500ms"), (60.5, "1min 500ms"),
             (9000, "2h 30min"), (604800 + 1.25, "1w 1.250000s"), (59.999999, "59.999999s")]


@pytest.mark.parametrize("seconds, text", FORMATTED)
def test_format_timespan(seconds, text):
    assert format_timespan(seconds) == text
    assert parse_timespan(text) == pytest.approx(seconds, abs=1e-9)


@pytest.mark.parametrize("seconds", [-1, -1e-6, math.nan, -math.inf])
def test_format_timespan_rejects_negative(seconds):
    with pytest.raises(ValueError):
        format_timespan(seconds)


ANALYZE_TIMESPANS = [text for text, _ in TIMESPANS if text == text.strip()] + [
    "1x", "5mins", "1.5.5s", "5.s", ".", "1e3s", "1Y", "Infinity", "infinity s", "1d,2h", "00:10", "1h,",
    "18446744073709551s", "123456789us", "100000000s", "86401s", "1.1234567s", "2629800s 1us", "60.5",
]


@needs_analyze
@pytest.mark.parametrize("text", ANALYZE_TIMESPANS)
def test_timespan_matches_systemd_analyze(text):
    result = analyze("timespan", "--", text)
    if result.returncode:
        with pytest.raises(InvalidValue):
            parse_timespan(text)
        return
    usec = int(re.search(r"\u03bcs: (\d+)", result.stdout)[1])
    seconds = math.inf if usec == 2**64 - 1 else usec / 1e6
    assert parse_timespan(text) == pytest.approx(seconds, abs=1e-9)
    assert format_timespan(parse_timespan(text)) == re.search(r"Human: (.*)", result.stdout)[1]


# --- sizes, memory limits, percentages ----------------------------------------------------------

@pytest.mark.parametrize("text, size", [
    ("1024", 1024), ("1K", 1024), ("512M", 512 * 2**20), ("1.5G", 3 * GiB // 2), ("1G 512M", 3 * GiB // 2),
    ("10.M", 10 * 2**20), ("1.5", 1), ("0", 0), ("15E", 15 * 2**60), (" 1G ", GiB), ("1 G", GiB), ("2T", 2**41),
    ("1P", 2**50), ("100B", 100), ("1B2", 3), ("+5K", 5120), ("infinity", None),
])
def test_parse_size(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "1KB", "1k", "1Ki", "1e3", "-1", "1 2", "16E", "1.5.5G", "1G 1G", "1M 1G",
                                  "M", "Infinity", "1G,512M"])
def test_parse_size_rejects(text):
    with pytest.raises(InvalidValue):
        parse_size(text)


@pytest.mark.parametrize("text, limit", [("1G", GiB), ("infinity", None), ("", None), ("25%", GiB // 4),
                                         ("100%", GiB), ("50.00%", GiB // 2), ("2500\u2031", GiB // 4),
                                         ("250\u2030", GiB // 4), ("1.5G", 3 * GiB // 2)])
def test_parse_memory_limit(text, limit):
    assert parse_memory_limit(text, total_bytes=GiB) == limit


def test_memory_percent_rounds_down_to_whole_pages():
    page, total = os.sysconf("SC_PAGE_SIZE"), 10 * 2**20
    limit = parse_memory_limit("33%", total_bytes=total)
    assert limit % page == 0 and total * 0.33 - page < limit <= total * 0.33


def test_memory_percent_defaults_to_physical_ram():
    assert parse_memory_limit("100%") == os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.parametrize("text, reason", [("0", "out of range"), ("0%", "out of range"), ("0.5", "out of range"),
                                          ("101%", "at most 100%"), ("150%", "at most 100%"), ("abc", "number"),
                                          ("-1", "negative"), ("Infinity", "number"), ("0.001%", "digits"),
                                          ("16E", "too large"), ("50 %", "integer")])
def test_parse_memory_limit_rejects(text, reason):
    with pytest.raises(InvalidValue, match=re.escape(reason)):
        parse_memory_limit(text, total_bytes=GiB)


@pytest.mark.parametrize("text, percent", [("50%", 50.0), ("12.34%", 12.34), ("0.5%", 0.5), ("150%", 150.0),
                                           ("20000%", 20000.0), ("0%", 0.0), ("50\u2030", 5.0), ("7\u2031", 0.07),
                                           ("+5%", 5.0), (" 50%", 50.0), ("0x10%", 16.0)])
def test_parse_percent(text, percent):
    assert parse_percent(text) == pytest.approx(percent)


@pytest.mark.parametrize("text", ["50", "50 %", "1.555%", "1.%", ".5%", "-5%", "", "%", "abc%", "5.5\u2031",
                                  "1.55\u2030", "99999999999%"])
def test_parse_percent_rejects(text):
    with pytest.raises(InvalidValue):
        parse_percent(text)


def test_parse_percent_maximum():
    assert parse_percent("100%", maximum=100) == 100.0
    with pytest.raises(InvalidValue, match="at most 100%"):
        parse_percent("100.01%", maximum=100)


# --- booleans, nice, exit statuses ---------------------------------------------------------------

@pytest.mark.parametrize("text", ["1", "yes", "y", "true", "t", "on", "YES", "True", "oN", " yes "])
def test_parse_bool_true(text):
    assert parse_bool(text) is True


@pytest.mark.parametrize("text", ["0", "no", "n", "false", "f", "off", "NO", "False", "OFF"])
def test_parse_bool_false(text):
    assert parse_bool(text) is False


@pytest.mark.parametrize("text", ["", "2", "yess", "ja", "enable", "-1", "o"])
def test_parse_bool_rejects(text):
    with pytest.raises(InvalidValue, match="not a boolean"):
        parse_bool(text)


@pytest.mark.parametrize("text, level", [("0", 0), ("19", 19), ("-20", -20), ("+5", 5), ("0x5", 5), ("010", 8),
                                         ("0b11", 3), ("0o7", 7), (" 5 ", 5), ("-0", 0)])
def test_parse_nice(text, level):
    assert parse_nice(text) == level


@pytest.mark.parametrize("text, reason", [("20", "outside -20..19"), ("-21", "outside"), ("08", "not an integer"),
                                          ("abc", "not an integer"), ("5.0", "not an integer"), ("", "integer"),
                                          ("- 5", "not an integer"), ("1_0", "not an integer")])
def test_parse_nice_rejects(text, reason):
    with pytest.raises(InvalidValue, match=reason):
        parse_nice(text)


RTMIN, RTMAX = int(signal.SIGRTMIN), int(signal.SIGRTMAX)


@pytest.mark.parametrize("text, codes, signals", [
    ("5 SIGTERM TERM", {5}, {15}), ("TEMPFAIL 250 SIGKILL", {75, 250}, {9}), ("0x10 010", {16, 8}, set()),
    ("0 255 EXCEPTION SUCCESS", {0, 255}, set()), ("RTMIN+1 SIGRTMAX-2 RTMIN", set(), {RTMIN + 1, RTMAX - 2, RTMIN}),
    ("", set(), set()), ("  1 \t 2  ", {1, 2}, set()), ("CHDIR BPF CREDENTIALS", {200, 244, 243}, set()),
    ("SIGHUP INT SIGPWR STKFLT", set(), {1, 2, 30, 16}),
])
def test_parse_exit_statuses(text, codes, signals):
    assert parse_exit_statuses(text) == (frozenset(codes), frozenset(signals))


@pytest.mark.parametrize("text", ["256", "-1", "sigterm", "SIGIOT", "IOT", "SIGPOLL", "SIGCLD", "SIGUNUSED", "tempfail",
                                  "EXIT_SUCCESS", f"RTMIN+{RTMAX - RTMIN + 1}", "RTMIN-1", "SIG", "SIGTERM,5", "'5'",
                                  "08", "5 SIGZZZ"])
def test_parse_exit_statuses_rejects(text):
    with pytest.raises(InvalidValue, match="neither an exit status|outside 0..255"):
        parse_exit_statuses(text)


@needs_analyze
def test_exit_status_names_match_systemd_analyze():
    listed = analyze("exit-status").stdout
    for name, code in re.findall(r"^([A-Z_]+)\s+(\d+)\s", listed, re.M):
        assert parse_exit_statuses(name) == (frozenset({int(code)}), frozenset()), name


@needs_analyze
def test_acceptance_matches_systemd_analyze_verify(tmp_path):
    """What ``systemd-analyze verify`` warns about is exactly what these parsers reject."""
    cases = [("Nice", v, parse_nice) for v in ("19", "20", "-20", "-21", "0x5", "010", "08", "+5", "0b11", "abc")]
    cases += [("CPUQuota", v, lambda t: parse_percent(t) > 0 or parse_bool("no percent"))
              for v in ("0%", "150%", "1.5%", "1.55%", "1.555%", "50", "50 %", "50\u2030", "-5%", "0x10%", "1.%")]
    cases += [("MemoryMax", v, parse_memory_limit) for v in ("0", "100%", "101%", "0%", "1.5G", "1G 512M", "10.M",
                                                              "1e3", "1KB", "1k", "infinity", "Infinity", "0.5", "1B2",
                                                              "16E", "15E", "-1", "1 2", "99.99%", "0.001%")]
    cases += [("SuccessExitStatus", v, parse_exit_statuses) for v in ("5 SIGTERM", "300", "sigterm", "SIGIOT",
                                                                      "RTMIN+30", "RTMIN+31", "0x10", "-1", "TEMPFAIL",
                                                                      "EXIT_SUCCESS", "SIGRTMAX-30", "256")]
    cases += [("RestartSec", v, parse_timespan) for v in ("1 2", "1 x", "5min1", "1.5.5s", "infinity", "-1", "1e3")]
    cases += [("RemainAfterExit", v, parse_bool) for v in ("yes", "YES", "oN", "2", "yess", "t")]
    unit = tmp_path / "probe.service"
    unit.write_text("[Service]\nExecStart=/bin/true\n" + "".join(f"{key}={value}\n" for key, value, _ in cases))
    warned = {int(n) for n in re.findall(r"probe\.service:(\d+):", analyze("verify", "--man=no", str(unit)).stderr)}
    for line, (key, value, parse) in enumerate(cases, 3):
        try:
            parse(value)
            accepted = True
        except InvalidValue:
            accepted = False
        assert accepted == (line not in warned), f"{key}={value}"


# --- calendar events: pure Python ---------------------------------------------------------------

NORMALIZED = [  # as systemd-analyze 252 prints them
    ("Mon..Fri *-*-* 09:00", "Mon..Fri *-*-* 09:00:00"), ("daily", "*-*-* 00:00:00"),
    ("weekly", "Mon *-*-* 00:00:00"), ("monthly", "*-*-01 00:00:00"), ("yearly", "*-01-01 00:00:00"),
    ("annually", "*-01-01 00:00:00"), ("quarterly", "*-01,04,07,10-01 00:00:00"),
    ("semiannually", "*-01,07-01 00:00:00"), ("minutely", "*-*-* *:*:00"), ("hourly", "*-*-* *:00:00"),
    ("Daily", "*-*-* 00:00:00"), ("*:0/15", "*-*-* *:00/15:00"), ("12:00", "*-*-* 12:00:00"),
    ("2024-03-01", "2024-03-01 00:00:00"), ("Sat,Sun 10:00", "Sat,Sun *-*-* 10:00:00"),
    ("mon,tue *-*-01..04 12:00", "Mon,Tue *-*-01..04 12:00:00"), ("*-*~01", "*-*~01 00:00:00"),
    ("*:*:0/10.5", "*-*-* *:*:00/10.500000"), ("*:*:1.5", "*-*-* *:*:01.500000"), ("*-*-1/3", "*-*-01/3 00:00:00"),
    ("2023..2030/2-01-01", "2023..2029/2-01-01 00:00:00"), ("10:00 utc", "*-*-* 10:00:00 UTC"),
    ("*-*-* 8:5:3", "*-*-* 08:05:03"), ("Tuesday 1:2", "Tue *-*-* 01:02:00"), ("08:00,20:00", "*-*-* 08:00,20:00"),
    ("*-*-* 8,1,8:00", "*-*-* 01,08:00:00"), ("Mon,Tue,Wed,Thu,Fri,Sat,Sun *-*-*", "*-*-* 00:00:00"),
    ("Mon-Wed 12:00", "Mon..Wed *-*-* 12:00:00"), ("Sat..Sun,Mon", "Mon,Sat,Sun *-*-* 00:00:00"),
    ("Mon, 12:00", "Mon *-*-* 12:00:00"), ("*-*-* 0..23/5:00", "*-*-* 00..20/5:00:00"),
    ("*:*:00..05", "*-*-* *:*:00..05"), ("*:*:0/1", "*-*-* *:*:*"), ("*-*~*", "*-*-* 00:00:00"),
    ("24-01-01", "2024-01-01 00:00:00"), ("70-01-01", "1970-01-01 00:00:00"), ("1-2 3:4", "*-01-02 03:04:00"),
    ("*-1..12/5-1", "*-01..11/5-01 00:00:00"), ("1..1:00", "*-*-* 01:00:00"), ("*:34..48/19:18", "*-*-* *:34:18"),
    ("@1700000000", "2023-11-14 22:13:20 UTC"), ("1:2:3 Europe/Berlin", "*-*-* 01:02:03 Europe/Berlin"),
    ("00:00:00.0000005", "*-*-* 00:00:00.000001"), ("2024-02-01  UTC", "2024-02-01 00:00:00 UTC"),
]


@pytest.mark.parametrize("text, normalized", NORMALIZED)
def test_calendar_normalized(text, normalized, local_tz):
    local_tz("UTC")
    spec = CalendarSpec.parse(text)
    assert spec.normalized() == normalized
    assert CalendarSpec.parse(normalized).normalized() == normalized


@pytest.mark.parametrize("text, after, expected", [
    ("Mon..Fri *-*-* 09:00 UTC", utc(2024, 1, 19, 10), [utc(2024, 1, 22, 9), utc(2024, 1, 23, 9), utc(2024, 1, 24, 9)]),
    ("*-*-31 UTC", utc(2024, 1, 31), [utc(2024, 3, 31), utc(2024, 5, 31), utc(2024, 7, 31)]),
    ("*-02-29 12:00 UTC", utc(2024, 3, 1), [utc(2028, 2, 29, 12), utc(2032, 2, 29, 12), utc(2036, 2, 29, 12)]),
    ("*-*~01 UTC", utc(2024, 1, 15), [utc(2024, 1, 31), utc(2024, 2, 29), utc(2024, 3, 31)]),
    ("*-02~03 UTC", utc(2024, 1, 15), [utc(2024, 2, 27), utc(2025, 2, 26), utc(2026, 2, 26)]),
    ("*-*~07/2 UTC", utc(2024, 2, 1), [utc(2024, 2, 23), utc(2024, 2, 25), utc(2024, 2, 27)]),
    ("*:0/15 UTC", utc(2024, 1, 15, 10, 20, 30), [utc(2024, 1, 15, 10, 30), utc(2024, 1, 15, 10, 45),
                                                  utc(2024, 1, 15, 11)]),
    ("quarterly UTC", utc(2024, 1, 15), [utc(2024, 4, 1), utc(2024, 7, 1), utc(2024, 10, 1)]),
    ("Fri *-*-13 UTC", utc(2024, 1, 15), [utc(2024, 9, 13), utc(2024, 12, 13), utc(2025, 6, 13)]),
    ("12:00 UTC", utc(2024, 1, 15, 12), [utc(2024, 1, 16, 12), utc(2024, 1, 17, 12), utc(2024, 1, 18, 12)]),
    ("*:*:1.5 UTC", utc(2024, 1, 15, 10, 20, 30), [utc(2024, 1, 15, 10, 21, 1, 500000),
                                                   utc(2024, 1, 15, 10, 22, 1, 500000),
                                                   utc(2024, 1, 15, 10, 23, 1, 500000)]),
    ("2024-03-01 UTC", utc(2024, 2, 1), [utc(2024, 3, 1)]),
    ("2024-03-01 UTC", utc(2024, 3, 1), []),
    ("*-02-30 UTC", utc(2024, 1, 1), []),
    ("Sat,Sun 2024-*-* 23:59:59 UTC", utc(2024, 12, 28, 23, 59, 59), [utc(2024, 12, 29, 23, 59, 59)]),
])
def test_calendar_elapses_by_hand(text, after, expected):
    spec = CalendarSpec.parse(text)
    assert spec.elapses(after, 3) == expected  # fewer than 3: the event stops elapsing
    assert spec.next_elapse(after) == (expected[0] if expected else None)


def test_elapse_is_in_the_named_zone():
    spec = CalendarSpec.parse("*-*-* 10:00 Europe/Berlin")
    when = spec.next_elapse(utc(2024, 1, 15, 12))
    assert when == utc(2024, 1, 16, 9) and when.tzinfo == ZoneInfo("Europe/Berlin") and when.hour == 10


@pytest.mark.parametrize("text, after, expected", [
    # 2024-03-31 has no 02:30 in Berlin (clocks jump 02:00 -> 03:00): that day is skipped
    ("*-*-* 02:30 Europe/Berlin", utc(2024, 3, 30, 12), [utc(2024, 4, 1, 0, 30), utc(2024, 4, 2, 0, 30)]),
    # on 2024-10-27 02:30 comes twice (CEST, then CET): systemd elapses once, at the first...
    ("*-*-* 02:30 Europe/Berlin", utc(2024, 10, 27, 0), [utc(2024, 10, 27, 0, 30), utc(2024, 10, 28, 1, 30)]),
    ("*-*-* 02:30 Europe/Berlin", utc(2024, 10, 27, 0, 30), [utc(2024, 10, 28, 1, 30), utc(2024, 10, 29, 1, 30)]),
    # ... unless it starts counting in the repeated hour
    ("*-*-* 02:30 Europe/Berlin", utc(2024, 10, 27, 1), [utc(2024, 10, 27, 1, 30), utc(2024, 10, 28, 1, 30)]),
])
def test_calendar_across_daylight_saving_changes(text, after, expected):
    # compared in UTC: Python never finds a time in a repeated hour equal to one in another zone
    assert [when.astimezone(UTC) for when in CalendarSpec.parse(text).elapses(after, 2)] == expected


def test_local_time_follows_tz(local_tz):
    local_tz("Europe/Berlin")
    when = CalendarSpec.parse("*-*-* 02:30").next_elapse(utc(2024, 3, 30, 12))
    assert when == utc(2024, 4, 1, 0, 30) and when.utcoffset() == timedelta(hours=2)


def test_naive_after_is_read_in_the_events_zone(local_tz):
    local_tz("America/New_York")
    assert CalendarSpec.parse("12:00 UTC").next_elapse(datetime(2024, 1, 15, 11)) == utc(2024, 1, 15, 12)
    assert CalendarSpec.parse("12:00").next_elapse(datetime(2024, 1, 15, 11)) == utc(2024, 1, 15, 17)


def test_timestamp_event_elapses_once():
    spec = CalendarSpec.parse("@1700000000")
    assert spec.elapses(utc(2023, 1, 1), 3) == [utc(2023, 11, 14, 22, 13, 20)]


@pytest.mark.parametrize("text, reason", [
    ("", "empty"), ("*:*/15", "0/15"), ("2030-*-* *:*:*/5", "cron syntax"), ("Wed..Mon", "wrap around"),
    ("Mon..", "bad weekday"), ("Mond", "bad weekday"), ("Mon..Wed..Fri", "bad weekday"), ("Mon ,Tue", "bad date"),
    ("5..2:00", "hour 5..2"), ("*:50/15", "minute 50/15"), ("1969-01-01", "1970..2199"), ("2200-01-01", "year"),
    ("00:00:60", "second 60"), ("*-*-* 24:00", "hour 24"), ("*-13-01", "month 13"), ("*-00-01", "month 0 "),
    ("*-*-32", "day 32"), ("*-*~01/1", "day"), ("*-*~03..01", "day"), ("*-*~29", "1..28"), ("2024~02-03", "bad date"),
    ("12:00 UTC UTC", "unexpected"), ("12:00  UTC", "space"), ("Mon 12:00 +0100", "unexpected"),
    ("*-*-* 10:00 Foo/Bar", "unexpected"), ("1-2-3-4", "bad date"), ("*-*-* *:*:*:*", "bad time"),
    ("*:*:1.", "bad second"), ("*:*:1..1.5", "at least 1s"), ("@1700000000 12:00", "unexpected"),
    ("Mo 12:00", "bad date"), ("Mon 12", "bad date"), ("daily  UTC", "bad date"), ("5/0:00", "above 0"),
    ("*-*~16,12..26/7,24", "day 24"), ("@99999999999", "up to 2199"), ("Mon\t12:00", "bad weekday"),
])
def test_calendar_rejects(text, reason, local_tz):
    local_tz("UTC")
    with pytest.raises(InvalidValue, match=re.escape(reason)) as err:
        CalendarSpec.parse(text)
    assert err.value.value == text


# --- calendar events: against systemd-analyze -----------------------------------------------------

def analyze_calendar(text: str, base: datetime, tz: str) -> tuple[str, list[datetime]] | None:
    result = analyze("calendar", f"--base-time=@{int(base.timestamp())}", "--iterations=5", text, tz=tz)
    if result.returncode:
        return None
    moments = re.findall(r"\(in UTC\): \w+ (\S+ \S+) UTC", result.stdout) or re.findall(
        r"(?:Next elapse|Iter\. #\d+): \w+ (\S+ \S+) UTC", result.stdout)
    return (re.search(r"Normalized form: (.*)", result.stdout)[1],
            [datetime.fromisoformat(m).replace(tzinfo=UTC) for m in moments])


def ours(text: str, base: datetime) -> tuple[str, list[datetime]] | None:
    try:
        spec = CalendarSpec.parse(text)
    except InvalidValue:
        return None
    return spec.normalized(), [when.astimezone(UTC).replace(microsecond=0) for when in spec.elapses(base, 5)]


@pytest.fixture(scope="module")
def base_time_supported():
    if ANALYZE is None or "--base-time" not in analyze("--help").stdout:
        pytest.skip("this systemd-analyze has no --base-time (added in systemd 250)")


CALENDAR_CASES = [
    "Mon..Fri *-*-* 09:00", "daily", "weekly", "quarterly", "semiannually", "minutely", "*:0/15", "*-*~01",
    "*-02~03", "*-*~07/1", "*-*-31", "*-02-29", "Fri *-*-13", "Sat,Sun 10:00", "mon,tue *-*-01..04 12:00",
    "*-*-1/3", "*-*-01/7 06:00", "1..10/3:00", "*:*:0/10.5", "*-*-* *:*:10..50/7.5", "08:00,20:00",
    "2023..2030/2-01-01", "*-1..12/5-1", "*:34..48/19:18", "*-*-* 10:00 Europe/Berlin", "*-*-* 12:00 Asia/Kolkata",
    "2024-*-* *:*:30.25", "*-12-31 23:59:59.999999", "2199-12-31", "@1700000000", "*-*~02..05/2",
    "Thu,Fri 2024-*-1,5,11..14 11:11:11.111", "*-*-* 02:30 Europe/Berlin", "*:*/15", "Wed..Mon",
    "*:50/15",
    "*-*~16,12..26/7,24", "*:*:1..1.5", "2200-01-01", "Mon 12:00 +0100", "00:00:60",
]
BASES = [utc(2024, 1, 15, 10, 20, 30), utc(2024, 2, 29, 23, 59, 59), utc(2024, 10, 27, 1)]


@needs_analyze
@pytest.mark.parametrize("text", CALENDAR_CASES)
def test_calendar_matches_systemd_analyze(text, base_time_supported, local_tz):
    local_tz("UTC")
    for base in BASES:
        assert ours(text, base) == analyze_calendar(text, base, "UTC"), base


@needs_analyze
@pytest.mark.parametrize("zone", ["Europe/Berlin", "America/New_York"])
@pytest.mark.parametrize("text", ["*-*-* 02:30", "*-*-* 01,02,03:30", "*:0/20", "*-*-* 02:*:00", "Sun *-*-* 02:15",
                                  "*-*-* 01..03:00/30:00", "daily", "*-*-* 02:30 Europe/Berlin"])
def test_local_time_matches_systemd_analyze(text, zone, base_time_supported, local_tz):
    local_tz(zone)
    for base in [utc(2024, 3, 10, 5), utc(2024, 3, 30, 23), utc(2024, 10, 27, 0, 30), utc(2024, 11, 3, 5, 30)]:
        assert ours(text, base) == analyze_calendar(text, base, zone), base
