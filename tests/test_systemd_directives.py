"""The unit-file directive tables: real unit files pass, spot checks hold, the generator expands templates."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

from labkit.systemd import directives as d

UNIT_DIRS = ("/lib/systemd/system", "/usr/lib/systemd/system")
REPO = Path(__file__).resolve().parent.parent


def read_unit(path: Path) -> list[tuple[int, str, str]]:
    """(line, section, key) of every assignment in a unit file; a deliberately tiny reader."""
    out: list[tuple[int, str, str]] = []
    section = ""
    pending: tuple[int, str] | None = None   # a line continued with a trailing backslash
    for number, raw in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        line = raw.strip()
        if pending is not None:
            if line.startswith(("#", ";")):
                continue                      # comments inside a continuation are skipped
            start, text = pending
            line, number = text + " " + line, start
            pending = None
        elif not line or line.startswith(("#", ";")):
            continue
        if line.endswith("\\"):
            pending = (number, line[:-1])
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        key, sep, _value = line.partition("=")
        if sep:
            out.append((number, section, key.strip()))
    return out


def unit_files() -> list[tuple[Path, str]]:
    """(file, unit suffix) for the installed unit files and their drop-ins, each real file once."""
    seen: set[str] = set()
    found: list[tuple[Path, str]] = []
    for folder in UNIT_DIRS:
        root = Path(folder)
        if not root.is_dir():
            continue
        for path in sorted(root.rglob("*")):
            if not path.is_file() or path.parent.name.endswith((".wants", ".requires", ".upholds")):
                continue
            real = os.path.realpath(path)
            if real == "/dev/null" or real in seen:
                continue
            if path.suffix == ".conf" and path.parent.name.endswith(".d"):
                suffix = Path(path.parent.name[:-2]).suffix or "." + path.parent.name[:-2].split("-")[0]
            else:
                suffix = path.suffix
            if suffix not in d.SECTIONS_BY_TYPE:
                continue
            seen.add(real)
            found.append((path, suffix))
    return found


def test_every_installed_unit_file_uses_known_keys() -> None:
    files = unit_files()
    if not files:
        pytest.skip("no unit files under " + " or ".join(UNIT_DIRS))
    misses = []
    for path, suffix in files:
        allowed = d.SECTIONS_BY_TYPE[suffix]
        for line, section, key in read_unit(path):
            if section.startswith("X-") or key.startswith("X-"):
                continue
            if section not in allowed:
                misses.append(f"{path}:{line}: section [{section}] not expected in a {suffix} file")
            elif d.kind_of(section, key) is None:
                misses.append(f"{path}:{line}: {key}= unknown in [{section}]")
    assert not misses, f"{len(misses)} unknown keys/sections:\n" + "\n".join(misses)


def test_reader_handles_continuations_and_comments(tmp_path: Path) -> None:
    unit = tmp_path / "x.service"
    unit.write_text("# c\n[Unit]\nDescription=a \\\n# skipped\n  b\n\n[Service]\n; c\nExecStart=/bin/true\n")
    assert read_unit(unit) == [(3, "Unit", "Description"), (9, "Service", "ExecStart")]


def test_spot_checks() -> None:
    assert d.kind_of("Service", "Restart") == "enum"
    assert d.ENUMS[("Service", "Restart")] == (
        "no", "on-success", "on-failure", "on-abnormal", "on-watchdog", "on-abort", "always")
    assert d.kind_of("Service", "TimeoutStopSec") == "timespan"
    assert "MemoryMax=" in d.DEPRECATED[("Service", "MemoryLimit")]
    assert d.DEPRECATED[("Service", "MemoryLimit")].startswith("MemoryLimit= is deprecated")
    assert d.kind_of("Service", "MemoryLimit") == "memory"
    assert d.kind_of("Service", "ExecStart") == "exec"
    assert d.kind_of("Unit", "ExecStart") is None
    assert d.sections_with("After") == ("Unit",)
    assert d.closest_keys("Service", "ExecStrat")[0] == "ExecStart"
    assert "Timer" in d.SECTIONS_BY_TYPE[".timer"]
    assert "OnCalendar" in d.SECTION_KEYS["Timer"]


def test_more_tables() -> None:
    kinds = {"timespan", "bool", "size", "memory", "percent", "nice", "signal", "exit-status",
             "exec", "path", "unit-list", "env", "enum", "int", "string"}
    for section, keys in d.SECTION_KEYS.items():
        assert set(keys.values()) <= kinds, section
    for suffix, sections in d.SECTIONS_BY_TYPE.items():
        assert suffix.startswith(".") and set(sections) <= set(d.SECTION_KEYS), suffix
    for (section, key), values in d.ENUMS.items():
        assert d.kind_of(section, key) == "enum" and values, (section, key)
    for (section, key), message in d.DEPRECATED.items():
        assert d.kind_of(section, key) is not None and message.startswith(key + "="), (section, key)
    assert set(d.ENUMS_ACCEPT_BOOL) | set(d.ENUMS_ACCEPT_INT) <= set(d.ENUMS)

    assert d.kind_of("Service", "CPUQuota") == "percent"
    assert d.kind_of("Service", "MemoryMax") == "memory"
    assert d.kind_of("Service", "Nice") == "nice"
    assert d.kind_of("Service", "KillSignal") == "signal"
    assert d.kind_of("Service", "SuccessExitStatus") == "exit-status"
    assert d.kind_of("Service", "Environment") == "env"
    assert d.kind_of("Unit", "Wants") == "unit-list"
    assert d.kind_of("Install", "WantedBy") == "unit-list"
    assert d.kind_of("Timer", "OnBootSec") == "timespan"
    assert d.kind_of("Nope", "After") is None
    assert {"simple", "exec", "forking", "oneshot", "dbus", "notify", "idle"} <= set(d.ENUMS[("Service", "Type")])
    assert "mixed" in d.ENUMS[("Service", "KillMode")]
    assert "file:" in d.ENUMS[("Service", "StandardOutput")]
    assert "isolate" in d.ENUMS[("Unit", "OnFailureJobMode")]
    assert "inactive-or-failed" in d.ENUMS[("Unit", "CollectMode")]
    assert "[Unit]" in d.DEPRECATED[("Service", "StartLimitInterval")]
    assert "CPUWeight=" in d.DEPRECATED[("Service", "CPUShares")]
    assert ("Unit", "StartLimitIntervalSec") not in d.DEPRECATED
    assert set(d.sections_with("KillMode")) == {"Service", "Socket", "Mount", "Swap", "Scope"}
    assert d.sections_with("NoSuchKey") == ()


def test_closest_keys_and_enum_accepts() -> None:
    assert d.closest_keys("Service", "execstart")[0] == "ExecStart"
    assert "ExecStart" not in d.closest_keys("Service", "ExecStart")
    assert d.closest_keys("Unit", "Afterr")[0] == "After"
    assert len(d.closest_keys("Service", "Restart", n=2)) <= 2
    assert d.closest_keys("Nope", "After") == []
    assert d.enum_accepts("Service", "Restart", "always") is True
    assert d.enum_accepts("Service", "Restart", "sometimes") is False
    assert d.enum_accepts("Service", "StandardOutput", "append:/var/log/x.log") is True
    assert d.enum_accepts("Service", "StandardOutput", "file:") is False
    assert d.enum_accepts("Service", "ProtectSystem", "Yes") is True
    assert d.enum_accepts("Service", "LogLevelMax", "7") is True
    assert d.enum_accepts("Service", "TimeoutStopSec", "5s") is None


def _load_generator():
    path = REPO / ".ci" / "gen_systemd_directives.py"
    if not path.is_file():
        pytest.skip("generator not in this checkout")
    spec = importlib.util.spec_from_file_location("gen_systemd_directives", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
    finally:
        sys.modules.pop(spec.name, None)
    return module


def test_generator_expands_gperf_templates() -> None:
    gen = _load_generator()
    sample = """\
{%- macro KILL_CONTEXT_CONFIG_ITEMS(type) -%}
{{type}}.KillMode,   config_parse_kill_mode,   0,  offsetof({{type}}, kill_context.kill_mode)
{% if HAVE_SECCOMP %}
{{type}}.SystemCallFilter, config_parse_syscall_filter, 0, offsetof({{type}}, exec_context)
{% else %}
{{type}}.SystemCallFilter, config_parse_warn_compat, DISABLED_CONFIGURATION, 0
{% endif %}
{%- endmacro -%}
%{
#include "x.h"
%}
%%
Unit.After,          config_parse_unit_deps,   UNIT_AFTER, 0
{# The following is a legacy alias name for compatibility #}
Unit.BindTo,         config_parse_unit_deps,   UNIT_BINDS_TO, 0
Service.MemoryLimit, config_parse_warn_compat, DISABLED_LEGACY, 0
{{ KILL_CONTEXT_CONFIG_ITEMS('Service') }}
{% for type in ['Mount', 'Swap'] %}
{{type}}.TimeoutSec, config_parse_sec_fix_0, 0, 0
{% endfor %}
"""
    parsed = gen.parse_gperf(sample)
    got = [(e.section, e.key, e.parser, e.origin, e.note) for e in parsed.entries]
    assert got == [
        ("Unit", "After", "config_parse_unit_deps", None, None),
        ("Unit", "BindTo", "config_parse_unit_deps", None, "legacy"),
        ("Service", "MemoryLimit", "config_parse_warn_compat", None, None),
        ("Service", "KillMode", "config_parse_kill_mode", "KILL_CONTEXT_CONFIG_ITEMS", None),
        ("Service", "SystemCallFilter", "config_parse_syscall_filter", "KILL_CONTEXT_CONFIG_ITEMS", None),
        ("Mount", "TimeoutSec", "config_parse_sec_fix_0", "FOR_MOUNT_SWAP", None),
        ("Swap", "TimeoutSec", "config_parse_sec_fix_0", "FOR_MOUNT_SWAP", None),
    ]
    assert parsed.macro_uses == {"Service": ["KILL_CONTEXT_CONFIG_ITEMS"],
                                 "Mount": ["FOR_MOUNT_SWAP"], "Swap": ["FOR_MOUNT_SWAP"]}
    memory_limit = parsed.entries[2]
    assert gen.deprecation_reason(memory_limit) == "ignored"
    assert gen.kind_for(parsed.entries[0], set()) == "unit-list"
