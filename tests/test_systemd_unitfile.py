"""Unit files parsed as systemd parses them, and rendered without changing their meaning."""

from __future__ import annotations

from pathlib import Path

import pytest

from labkit.errors import BadArgument
from labkit.systemd.unitfile import load, parse, parse_exec, split_words

SYSTEM_UNITS = [p for root in ("/lib/systemd/system", "/usr/lib/systemd/user") if Path(root).is_dir()
                for p in sorted(Path(root).rglob("*")) if p.is_file()]


def test_sections_keys_comments_and_whitespace():
    unit = parse("# comment\n; another\n[Unit]\nDescription = A run \n\n[Service]\nExecStart=/bin/true\n", "a.service")
    assert unit.sections == ["Unit", "Service"]
    assert unit.meaning() == [("Unit", "Description", "A run"), ("Service", "ExecStart", "/bin/true")]
    assert unit.type == ".service" and not unit.problems


def test_continuation_lines_join_with_a_space_and_skip_comments_inside():
    unit = parse("[Service]\nExecStart=/usr/bin/python3 \\\n# a comment inside\n  train.py \\\n  --epochs 3\n")
    assert unit.get("Service", "ExecStart") == "/usr/bin/python3  train.py  --epochs 3"
    assert unit.assignments[0].line == 2


def test_repeated_keys_accumulate_and_an_empty_assignment_resets():
    unit = parse("[Unit]\nAfter=a.target\nAfter=b.target\nAfter=\nAfter=c.target\n"
                 "[Service]\nRestart=no\nRestart=always\n")
    assert unit.get_list("Unit", "After") == ["c.target"]
    assert unit.get("Service", "Restart") == "always"  # single-valued: the last one wins


def test_specifiers_and_variables_are_kept_as_written():
    unit = parse("[Service]\nExecStart=/usr/bin/echo %n %i ${HOME} $USER 100%%\n", "x@y.service")
    assert unit.get("Service", "ExecStart") == "/usr/bin/echo %n %i ${HOME} $USER 100%%"


def test_lines_systemd_would_skip_are_problems_not_exceptions():
    unit = parse("Orphan=1\n[Service]\nthis line has no equals\n[Broken\nExecStart=/bin/true\n")
    assert [p.line for p in unit.problems] == [1, 3, 4, 5]
    assert "outside of any section" in unit.problems[0].message
    assert unit.assignments == []  # after a bad header systemd ignores assignments until a good one


def test_exec_lines_split_with_quotes_escapes_and_prefixes():
    command = parse_exec("-/usr/bin/python3 -c 'print(\"a b\")' \"two words\" tab\\tbed")
    assert command.argv == ("/usr/bin/python3", "-c", 'print("a b")', "two words", "tab\tbed")
    assert command.ignore_failure and not command.privileged
    assert parse_exec("@/usr/bin/sleep sleeper 5").argv == ("/usr/bin/sleep", "5")
    assert parse_exec("+/usr/bin/id").privileged
    with pytest.raises(BadArgument, match="unbalanced"):
        split_words("/bin/echo 'open")
    with pytest.raises(BadArgument, match="no command"):
        parse_exec("-")


def test_set_and_add_then_render_round_trips():
    unit = parse("[Service]\nExecStart=/bin/true\nRestart=no\n", "a.service")
    unit.set("Service", "Restart", "on-failure")
    unit.add("Unit", "Description", "added")
    again = parse(unit.render(), "a.service")
    assert again.get("Service", "Restart") == "on-failure" and again.get("Unit", "Description") == "added"


def test_an_unreadable_file_is_bad_argument(tmp_path):
    with pytest.raises(BadArgument, match="cannot read unit file"):
        load(tmp_path / "missing.service")


@pytest.mark.skipif(not SYSTEM_UNITS, reason="no unit files under /lib/systemd/system on this machine")
def test_every_installed_unit_keeps_its_meaning_through_render_and_parse():
    changed, problems = [], []
    for path in SYSTEM_UNITS:
        unit = load(path)
        problems += [f"{path}:{p.line}: {p.message}" for p in unit.problems]
        if parse(unit.render(), unit.name).meaning() != unit.meaning():
            changed.append(str(path))
        for assignment in unit.assignments:
            if assignment.key.startswith("Exec"):
                parse_exec(assignment.value)  # every real command line splits
    assert not changed and not problems, (changed, problems)
    assert len(SYSTEM_UNITS) > 50
