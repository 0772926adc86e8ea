#!/usr/bin/env python3
"""Generate ``labkit/systemd/directives.py`` from systemd's own sources.

Dev tooling only: nothing runs this in CI.  It reads
``src/core/load-fragment-gperf.gperf.in`` (the table PID 1 uses to parse unit
files), expands its Jinja-style macros (``EXEC_CONTEXT_CONFIG_ITEMS`` and
friends), maps every parser function to a coarse value kind, pulls the
accepted values of enum-like settings out of systemd's ``*_table[]`` string
tables and prints the finished Python module on stdout.

Usage::

    python .ci/gen_systemd_directives.py SOURCE [SOURCE ...] > labkit/systemd/directives.py

Each SOURCE is one of

* ``GITDIR@REV`` -- a (bare) git directory of systemd and a revision in it,
  e.g. ``~/src/systemd.git@v257`` (``@REV`` defaults to ``HEAD``);
* a checked-out systemd source tree;
* the gperf file itself (then enum values and [Install] keys are only taken
  from the other sources).

The first SOURCE is the primary one: its parser wins when two versions
disagree, except that a real parser always beats ``config_parse_warn_compat``
(so ``MemoryLimit=`` keeps the kind it had while it still worked).  Further
sources are merged in (union of sections, keys and enum values), which is how
the committed module covers both a recent release and Debian 12's systemd 252.
"""

from __future__ import annotations

import argparse
import os
import json
import re
import subprocess
import sys
from dataclasses import dataclass, field

GPERF = "src/core/load-fragment-gperf.gperf.in"
INSTALL_C = "src/shared/install.c"
ENUM_DEF_FILES = ("src/core/load-fragment.c", "src/shared/conf-parser.c", "src/shared/conf-parser.h")
TABLE_DIRS = ("src/basic", "src/shared", "src/core", "src/fundamental", "src/libsystemd")

# --------------------------------------------------------------------------
# parser function -> value kind
# --------------------------------------------------------------------------

KINDS = (
    "timespan", "bool", "size", "memory", "percent", "nice", "signal", "exit-status",
    "exec", "path", "unit-list", "env", "enum", "int", "string",
)

PARSER_KINDS: dict[str, str] = {
    # time spans (all accept systemd.time(7) spans; most also "infinity")
    "config_parse_sec": "timespan",
    "config_parse_sec_fix_0": "timespan",
    "config_parse_sec_def_infinity": "timespan",
    "config_parse_sec_def_unset": "timespan",
    "config_parse_nsec": "timespan",
    "config_parse_service_timeout": "timespan",
    "config_parse_service_timeout_abort": "timespan",
    "config_parse_job_timeout_sec": "timespan",
    "config_parse_job_running_timeout_sec": "timespan",
    "config_parse_managed_oom_mem_pressure_duration_sec": "timespan",
    "config_parse_timer": "timespan",  # OnCalendar= is special-cased below
    # booleans
    "config_parse_bool": "bool",
    "config_parse_tristate": "bool",
    "config_parse_job_mode_isolate": "bool",
    "config_parse_exec_mount_apivfs": "bool",
    # sizes
    "config_parse_iec_size": "size",
    "config_parse_iec_uint64": "size",
    "config_parse_iec_uint64_infinity": "size",
    "config_parse_si_uint64": "size",
    "config_parse_memory_limit": "memory",
    "config_parse_cpu_quota": "percent",
    "config_parse_managed_oom_mem_pressure_limit": "percent",
    "config_parse_exec_nice": "nice",
    "config_parse_signal": "signal",
    "config_parse_set_status": "exit-status",
    "config_parse_exit_status": "exit-status",
    "config_parse_exec": "exec",
    # a single absolute path
    "config_parse_unit_path_printf": "path",
    "config_parse_pid_file": "path",
    "config_parse_path_spec": "path",
    "config_parse_path": "path",
    # unit names
    "config_parse_unit_deps": "unit-list",
    "config_parse_obsolete_unit_deps": "unit-list",
    "config_parse_trigger_unit": "unit-list",
    "config_parse_socket_service": "unit-list",
    "config_parse_service_sockets": "unit-list",
    "config_parse_unit_slice": "unit-list",
    "config_parse_environ": "env",
    # plain integers
    "config_parse_int": "int",
    "config_parse_unsigned": "int",
    "config_parse_long": "int",
    "config_parse_tty_size": "int",
    "config_parse_swap_priority": "int",
    "config_parse_exec_oom_score_adjust": "int",
    "config_parse_exec_io_priority": "int",
    "config_parse_exec_cpu_sched_prio": "int",
    "config_parse_cg_weight": "int",
    "config_parse_cpu_shares": "int",
    "config_parse_blockio_weight": "int",
}

# Parsers written by hand in load-fragment.c / conf-parser.c that nonetheless
# look their value up in a string table: parser -> table name.
CUSTOM_ENUM_TABLES: dict[str, str] = {
    "config_parse_kill_mode": "kill_mode",
    "config_parse_exec_input": "exec_input",
    "config_parse_exec_output": "exec_output",
    "config_parse_exec_io_class": "ioprio_class",
    "config_parse_exec_cpu_sched_policy": "sched_policy",
    "config_parse_log_level": "log_level",
    "config_parse_log_facility": "log_facility_unshifted",
    "config_parse_emergency_action": "emergency_action",
    "config_parse_managed_oom_mode": "managed_oom_mode",
    "config_parse_protect_hostname": "protect_hostname",
}

# Enum parsers without a string table (the values are hard-coded in C).
HAND_ENUMS: dict[str, tuple[str, ...]] = {
    # mount_propagation_flag_from_string() in src/basic/mountpoint-util.c
    "config_parse_exec_mount_flags": ("shared", "slave", "private"),
    "config_parse_exec_mount_propagation_flag": ("shared", "slave", "private"),
}

# Prefix forms ("file:/path") accepted on top of the table, per parser.
ENUM_PREFIXES: dict[str, tuple[str, ...]] = {
    "config_parse_exec_input": ("fd:", "file:"),
    # "syslog" and "syslog+console" are accepted and silently mapped to journal
    "config_parse_exec_output": ("fd:", "file:", "append:", "truncate:", "syslog", "syslog+console"),
    "config_parse_protect_hostname": ("yes:", "private:"),
}

# Spellings of a boolean listed in ENUMS for enums that take one (parse_boolean()
# also knows y/n/t/f and any letter case; enum_accepts() covers those).
BOOL_WORDS = ("yes", "no", "true", "false", "on", "off", "1", "0")

# Table-less parsers that accept booleans on top of the table.
ENUM_BOOL_PARSERS = {"config_parse_protect_hostname"}

# [Install] keys: install.c parses them; the gperf only lists them (NULL parser).
INSTALL_KINDS = {
    "Alias": "unit-list",
    "WantedBy": "unit-list",
    "RequiredBy": "unit-list",
    "UpheldBy": "unit-list",
    "Also": "unit-list",
    "DefaultInstance": "string",
}

# --------------------------------------------------------------------------
# deprecations
# --------------------------------------------------------------------------

# (section or "*", key) -> replacement hint.  "*" means: any section that has it.
# Used for the message text; which keys are deprecated is decided from the
# gperf (config_parse_warn_compat with DISABLED_LEGACY, obsolete parsers,
# "legacy alias"/"only exist for compatibility" comments) plus HAND_DEPRECATED.
REPLACEMENTS: dict[tuple[str, str], str] = {
    ("*", "MemoryLimit"): "use MemoryMax=",
    ("*", "CPUShares"): "use CPUWeight=",
    ("*", "StartupCPUShares"): "use StartupCPUWeight=",
    ("*", "BlockIOAccounting"): "use IOAccounting=",
    ("*", "BlockIOWeight"): "use IOWeight=",
    ("*", "StartupBlockIOWeight"): "use StartupIOWeight=",
    ("*", "BlockIODeviceWeight"): "use IODeviceWeight=",
    ("*", "BlockIOReadBandwidth"): "use IOReadBandwidthMax=",
    ("*", "BlockIOWriteBandwidth"): "use IOWriteBandwidthMax=",
    ("*", "CPUAccounting"): "CPU accounting is always on; drop the line",
    ("*", "DefaultMemoryMin"): "set MemoryMin= on the child units instead",
    ("*", "DefaultMemoryLow"): "set MemoryLow= on the child units instead",
    ("*", "DefaultStartupMemoryLow"): "set StartupMemoryLow= on the child units instead",
    ("*", "Capabilities"): "use CapabilityBoundingSet= and AmbientCapabilities=",
    ("*", "ReadWriteDirectories"): "use ReadWritePaths=",
    ("*", "ReadOnlyDirectories"): "use ReadOnlyPaths=",
    ("*", "InaccessibleDirectories"): "use InaccessiblePaths=",
    ("Unit", "RequiresOverridable"): "use Requires=",
    ("Unit", "RequisiteOverridable"): "use Requisite=",
    ("Unit", "BindTo"): "use BindsTo=",
    ("Unit", "PropagateReloadTo"): "use PropagatesReloadTo=",
    ("Unit", "PropagateReloadFrom"): "use ReloadPropagatedFrom=",
    ("Unit", "OnFailureIsolate"): "use OnFailureJobMode=isolate",
    ("Unit", "StartLimitInterval"): "use StartLimitIntervalSec=",
    ("Unit", "IgnoreOnSnapshot"): "snapshot units no longer exist; drop the line",
    ("Service", "StartLimitInterval"): "use StartLimitIntervalSec= in [Unit]",
    ("Service", "StartLimitBurst"): "use StartLimitBurst= in [Unit]",
    ("Service", "StartLimitAction"): "use StartLimitAction= in [Unit]",
    ("Service", "FailureAction"): "use FailureAction= in [Unit]",
    ("Service", "RebootArgument"): "use RebootArgument= in [Unit]",
    ("Service", "PermissionsStartOnly"): "use the '+' prefix on ExecStartPre= and friends",
    ("Service", "SysVStartPriority"): "ordering comes from After=/Before=; drop the line",
    ("Service", "BusPolicy"): "kdbus is gone; drop the line",
}

# Deprecated per the man pages although the gperf (of some version) still parses
# them normally: the cgroup-v1 settings were documented deprecated long before
# systemd turned them into ignored stubs, and a few old spellings.
HAND_DEPRECATED = {
    ("*", "MemoryLimit"),
    ("*", "CPUShares"),
    ("*", "StartupCPUShares"),
    ("*", "BlockIOAccounting"),
    ("*", "BlockIOWeight"),
    ("*", "StartupBlockIOWeight"),
    ("*", "BlockIODeviceWeight"),
    ("*", "BlockIOReadBandwidth"),
    ("*", "BlockIOWriteBandwidth"),
    ("*", "ReadWriteDirectories"),
    ("*", "ReadOnlyDirectories"),
    ("*", "InaccessibleDirectories"),
    ("Unit", "BindTo"),
    ("Unit", "PropagateReloadTo"),
    ("Unit", "PropagateReloadFrom"),
    ("Service", "PermissionsStartOnly"),
}

NUMBER_WORDS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7}

# Sections per unit type, from systemd.unit(5) and the per-type man pages.
SECTIONS_BY_TYPE: dict[str, tuple[str, ...]] = {
    ".service": ("Unit", "Service", "Install"),
    ".socket": ("Unit", "Socket", "Install"),
    ".timer": ("Unit", "Timer", "Install"),
    ".path": ("Unit", "Path", "Install"),
    ".mount": ("Unit", "Mount", "Install"),
    ".automount": ("Unit", "Automount", "Install"),
    ".swap": ("Unit", "Swap", "Install"),
    ".target": ("Unit", "Install"),
    ".slice": ("Unit", "Slice", "Install"),
    ".scope": ("Unit", "Scope"),
    ".device": ("Unit", "Install"),
}
SECTION_ORDER = ("Unit", "Service", "Socket", "Timer", "Path", "Mount", "Automount",
                 "Swap", "Slice", "Scope", "Install")


# --------------------------------------------------------------------------
# reading sources
# --------------------------------------------------------------------------


class Source:
    """One systemd version to read files from: git dir + rev, a tree, or a lone gperf."""

    def __init__(self, spec: str) -> None:
        self.spec = spec
        path, _, rev = spec.partition("@")
        path = os.path.expanduser(path)
        self.gitdir: str | None = None
        self.tree: str | None = None
        self.gperf_file: str | None = None
        self.version = "?"
        if os.path.isdir(path) and os.path.exists(os.path.join(path, "HEAD")) and os.path.isdir(os.path.join(path, "objects")):
            self.gitdir, self.rev = path, (rev or "HEAD")
        elif os.path.isdir(os.path.join(path, ".git")) and rev:
            self.gitdir, self.rev = os.path.join(path, ".git"), rev
        elif os.path.isdir(path):
            self.tree, self.rev = path, ""
        elif os.path.isfile(path):
            self.gperf_file, self.rev = path, ""
        else:
            sys.exit(f"gen_systemd_directives: cannot read {spec!r}")

    def _git(self, *args: str) -> str:
        assert self.gitdir
        return subprocess.run(["git", "--git-dir", self.gitdir, *args],
                              check=True, capture_output=True, text=True).stdout

    def read(self, path: str) -> str | None:
        """Text of a repository file, or None if this source lacks it."""
        if self.gitdir:
            try:
                return self._git("show", f"{self.rev}:{path}")
            except subprocess.CalledProcessError:
                return None
        if self.tree:
            full = os.path.join(self.tree, path)
            if os.path.isfile(full):
                with open(full, encoding="utf-8", errors="replace") as fh:
                    return fh.read()
            return None
        if path == GPERF and self.gperf_file:
            with open(self.gperf_file, encoding="utf-8") as fh:
                return fh.read()
        return None

    def grep_files(self, regex: str, dirs: tuple[str, ...]) -> list[str]:
        """Paths of .c files under dirs whose text matches the (extended) regex."""
        if self.gitdir:
            try:
                out = self._git("grep", "-l", "-E", regex, self.rev, "--",
                                *[f"{d}/*.c" for d in dirs])
            except subprocess.CalledProcessError:
                return []
            return [line.split(":", 1)[1] for line in out.splitlines() if line]
        if self.tree:
            pat = re.compile(regex)
            hits = []
            for d in dirs:
                for root, _dirs, files in os.walk(os.path.join(self.tree, d)):
                    for name in files:
                        if name.endswith(".c"):
                            full = os.path.join(root, name)
                            with open(full, encoding="utf-8", errors="replace") as fh:
                                if pat.search(fh.read()):
                                    hits.append(os.path.relpath(full, self.tree))
            return sorted(hits)
        return []

    def describe(self) -> str:
        """Human label: systemd version plus commit where known."""
        if self.gitdir:
            commit = self._git("rev-parse", f"{self.rev}^{{commit}}").strip()
            version = (self.read("meson.version") or "").strip()
            if not version:
                m = re.search(r"version\s*:\s*'([^']+)'", self.read("meson.build") or "")
                version = m.group(1) if m else "?"
            self.version = f"v{version}"
            if commit.startswith(self.rev):
                where = f"commit {commit}"
            else:
                is_tag = subprocess.run(["git", "--git-dir", self.gitdir, "show-ref", "--verify", "--quiet",
                                         f"refs/tags/{self.rev}"]).returncode == 0
                where = f"{'tag ' if is_tag else ''}{self.rev}, commit {commit}"
            return f"systemd v{version} ({where})"
        if self.tree:
            version = (self.read("meson.version") or "").strip() or "?"
            self.version = f"v{version}"
            return f"systemd v{version} (source tree)"
        self.version = os.path.basename(self.spec)
        return f"gperf file {os.path.basename(self.spec)}"

    def short(self) -> str:
        """Placeholder-ized spec for the docstring's regeneration command."""
        if self.gitdir:
            return f"<systemd.git>@{self.rev}"
        return "<systemd-source>"


# --------------------------------------------------------------------------
# gperf template expansion
# --------------------------------------------------------------------------

ENTRY_RE = re.compile(r"^([A-Za-z]+)\.([A-Za-z0-9]+),\s*([A-Za-z0-9_]+),\s*([^,]+?),\s*(.*)$")


@dataclass
class Entry:
    section: str
    key: str
    parser: str
    ltype: str
    origin: str | None          # macro name the entry came from, or None
    note: str | None = None     # "legacy" / "moved" marker from a template comment


@dataclass
class Parsed:
    entries: list[Entry] = field(default_factory=list)
    macro_uses: dict[str, list[str]] = field(default_factory=dict)   # section -> macros


def _drop_else_branches(lines: list[str]) -> list[str]:
    """Keep the {% if %} branch of every conditional (assume every build option on)."""
    out: list[str] = []
    stack: list[bool] = []   # True while inside an else-branch we drop
    for line in lines:
        s = line.strip()
        if re.match(r"{%-?\s*if\b", s):
            stack.append(False)
            continue
        if re.match(r"{%-?\s*(else|elif)\b", s):
            stack[-1] = True
            continue
        if re.match(r"{%-?\s*endif\b", s):
            stack.pop()
            continue
        if any(stack):
            continue
        out.append(line)
    return out


def parse_gperf(text: str) -> Parsed:
    """Expand macros/loops in the gperf template and return its entries."""
    lines = _drop_else_branches(text.splitlines())
    macros: dict[str, list[str]] = {}
    body: list[str] = []
    i = 0
    in_header = True
    while i < len(lines):
        s = lines[i].strip()
        m = re.match(r"{%-?\s*macro\s+(\w+)\((\w+)\)\s*-?%}", s)
        if m:
            name, var = m.group(1), m.group(2)
            block = []
            i += 1
            while not re.match(r"{%-?\s*endmacro", lines[i].strip()):
                block.append(lines[i].replace("{{" + var + "}}", "{{type}}"))
                i += 1
            macros[name] = block
            i += 1
            continue
        if s == "%%":
            in_header = False
            i += 1
            continue
        if not in_header:
            body.append(lines[i])
        i += 1

    parsed = Parsed()
    pending: list[str] = []     # markers for the next N entries

    def emit(line: str, origin: str | None, type_name: str | None) -> None:
        if type_name is not None:
            line = line.replace("{{type}}", type_name)
        cm = re.match(r"\s*{#(.*)#}\s*$", line)
        if cm:
            comment = cm.group(1).lower()
            if "legacy alias" in comment:
                pending.append("legacy")
            nm = re.search(r"following (\w+) only exist for compatibility", comment)
            if nm:
                pending.extend(["moved"] * NUMBER_WORDS.get(nm.group(1), 1))
            return
        m = ENTRY_RE.match(line.strip())
        if not m:
            return
        note = pending.pop(0) if pending else None
        parsed.entries.append(Entry(m.group(1), m.group(2), m.group(3), m.group(4).strip(), origin, note))

    j = 0
    while j < len(body):
        s = body[j].strip()
        call = re.match(r"{{\s*(\w+)\('(\w+)'\)\s*}}", s)
        loop = re.match(r"{%-?\s*for\s+(\w+)\s+in\s+\[(.*)\]\s*-?%}", s)
        if call:
            name, type_name = call.group(1), call.group(2)
            parsed.macro_uses.setdefault(type_name, []).append(name)
            for line in macros[name]:
                emit(line, name, type_name)
        elif loop:
            var = loop.group(1)
            types = re.findall(r"'(\w+)'", loop.group(2))
            block = []
            j += 1
            while not re.match(r"{%-?\s*endfor", body[j].strip()):
                block.append(body[j].replace("{{" + var + "}}", "{{type}}"))
                j += 1
            origin = "FOR_" + "_".join(types).upper()
            for type_name in types:
                parsed.macro_uses.setdefault(type_name, []).append(origin)
                for line in block:
                    emit(line, origin, type_name)
        else:
            emit(body[j], None, None)
        j += 1
    return parsed


# --------------------------------------------------------------------------
# enum tables
# --------------------------------------------------------------------------

ENUM_DEF_RE = re.compile(
    r"DEFINE_CONFIG_PARSE_ENUM(_WITH_DEFAULT|_FULL|V)?\(\s*(config_parse_\w+)\s*,\s*(\w+)")


def _strip_c_comments(text: str) -> str:
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return re.sub(r"//[^\n]*", "", text)


@dataclass
class EnumInfo:
    values: list[str]
    accepts_bool: bool = False
    accepts_int: bool = False


def enum_parser_tables(src: Source) -> dict[str, tuple[str, bool]]:
    """parser -> (table name, accepts_bool hint) for DEFINE_CONFIG_PARSE_ENUM* parsers."""
    out: dict[str, tuple[str, bool]] = {}
    for path in ENUM_DEF_FILES:
        text = src.read(path)
        if not text:
            continue
        for m in ENUM_DEF_RE.finditer(text):
            variant, parser, name = m.groups()
            accepts_bool = False
            if variant == "_FULL":
                name = re.sub(r"_from_string.*$", "", name)
            if name.endswith("_or_bool"):
                name, accepts_bool = name[: -len("_or_bool")], True
            out.setdefault(parser, (name, accepts_bool))
    for parser, table in CUSTOM_ENUM_TABLES.items():
        out.setdefault(parser, (table, parser in ENUM_BOOL_PARSERS))
    return out


def read_tables(src: Source, names: set[str]) -> dict[str, EnumInfo]:
    """Values of the ``<name>_table[]`` string tables (plus bool/int fallbacks)."""
    if not names or not (src.gitdir or src.tree):
        return {}
    alt = "|".join(sorted(names))
    files = src.grep_files(rf"\b({alt})_table\[", TABLE_DIRS)
    found: dict[str, EnumInfo] = {}
    for path in files:
        text = _strip_c_comments(src.read(path) or "")
        for name in names:
            if name in found:
                continue
            m = re.search(rf"\bconst\s+char\s*\*\s*const\s+{name}_table\[[^\]]*\]\s*=\s*\{{(.*?)\}};",
                          text, flags=re.S)
            if not m:
                continue
            values = []
            for entry in m.group(1).split(","):
                sm = re.search(r'"((?:[^"\\]|\\.)*)"', entry)
                if sm:
                    values.append(sm.group(1))
            lookup = re.search(rf"DEFINE_(?:PRIVATE_)?STRING_TABLE_LOOKUP(\w*)\(\s*{name}\s*,", text)
            suffix = lookup.group(1) if lookup else ""
            found[name] = EnumInfo(values, "WITH_BOOLEAN" in suffix, "WITH_FALLBACK" in suffix)
    return found


# --------------------------------------------------------------------------
# merging versions
# --------------------------------------------------------------------------


def is_compat_stub(e: Entry) -> bool:
    return e.parser == "config_parse_warn_compat"


def kind_for(e: Entry, enum_parsers: set[str]) -> str:
    if e.section == "Install":
        return INSTALL_KINDS.get(e.key, "string")
    if e.parser == "config_parse_timer" and e.ltype == "TIMER_CALENDAR":
        return "string"   # a calendar spec, not a time span
    if e.parser in enum_parsers or e.parser in HAND_ENUMS:
        return "enum"
    return PARSER_KINDS.get(e.parser, "string")


def deprecation_reason(e: Entry) -> str | None:
    """Why an entry counts as deprecated, judged from the gperf alone."""
    if is_compat_stub(e) and e.ltype == "DISABLED_LEGACY":
        return "ignored"
    if e.parser.startswith("config_parse_obsolete"):
        return "obsolete"
    if e.note in ("legacy", "moved"):
        return e.note
    return None


def message(section: str, key: str, reason: str, still_parsed_by: str | None, ignored_by: str) -> str:
    """One-line deprecation message naming the replacement.

    ``still_parsed_by`` is set when an older source still honoured a key that
    ``ignored_by`` (the primary source's version) only accepts as a stub.
    """
    hint = REPLACEMENTS.get((section, key)) or REPLACEMENTS.get(("*", key))
    if reason == "ignored" and not still_parsed_by:
        head = f"{key}= is obsolete and ignored"
    elif reason == "moved":
        head = f"{key}= in [{section}] is deprecated"
    else:
        head = f"{key}= is deprecated"
    text = f"{head}; {hint}" if hint else head
    if reason == "ignored" and still_parsed_by:
        text += f" (systemd {ignored_by} ignores it)"
    return text


def build(sources: list[Source]) -> dict:
    """Merge all sources into the data the module template needs."""
    # per group (section name or macro name) -> key -> (kind, parser)
    groups: dict[str, dict[str, tuple[str, str]]] = {}
    macro_uses: dict[str, list[str]] = {}
    deprecated: dict[tuple[str, str], str] = {}   # (group, key) -> reason
    enum_keys: dict[tuple[str, str], str] = {}    # (group, key) -> parser
    enum_values: dict[str, EnumInfo] = {}         # parser -> merged info
    labels = []
    warned: set[str] = set()

    for index, src in enumerate(sources):
        text = src.read(GPERF)
        if text is None:
            sys.exit(f"gen_systemd_directives: {src.spec}: no {GPERF}")
        labels.append(src.describe())
        parsed = parse_gperf(text)
        for sec, names in parsed.macro_uses.items():
            have = macro_uses.setdefault(sec, [])
            have.extend(n for n in names if n not in have)

        # [Install] keys as install.c knows them
        install_c = src.read(INSTALL_C) or ""
        for key in re.findall(r'\{\s*"Install"\s*,\s*"(\w+)"', install_c):
            parsed.entries.append(Entry("Install", key, "install.c", "0", None))

        if src.gperf_file:
            print(f"note: {src.spec} is a lone gperf file: enum values and [Install] parsers come "
                  "from the other sources only", file=sys.stderr)
        parser_tables = enum_parser_tables(src)
        enum_parsers = set(parser_tables)
        wanted_tables = {parser_tables[e.parser][0] for e in parsed.entries if e.parser in parser_tables}
        tables = read_tables(src, wanted_tables)

        for e in parsed.entries:
            group = e.origin or e.section
            kind = kind_for(e, enum_parsers)
            slot = groups.setdefault(group, {})
            old = slot.get(e.key)
            stub = is_compat_stub(e)
            if old is None or (is_compat_stub_parser(old[1]) and not stub):
                slot[e.key] = (kind, e.parser)
            reason = deprecation_reason(e)
            if reason and (group, e.key) not in deprecated:
                deprecated[(group, e.key)] = reason
            if kind == "enum" and slot[e.key][1] == e.parser:
                enum_keys[(group, e.key)] = e.parser
                info = enum_values.setdefault(e.parser, EnumInfo([]))
                if e.parser in HAND_ENUMS:
                    fresh = EnumInfo(list(HAND_ENUMS[e.parser]))
                else:
                    table, bool_hint = parser_tables[e.parser]
                    fresh = tables.get(table)
                    if fresh is None:
                        if index == 0 and table not in warned:
                            warned.add(table)
                            print(f"warning: {src.spec}: no {table}_table[] for {e.parser}", file=sys.stderr)
                        continue
                    fresh = EnumInfo(fresh.values, fresh.accepts_bool or bool_hint, fresh.accepts_int)
                info.values.extend(v for v in fresh.values if v not in info.values)
                info.accepts_bool |= fresh.accepts_bool
                info.accepts_int |= fresh.accepts_int

    for group, key in sorted(HAND_DEPRECATED):
        targets = [g for g in groups if key in groups[g]] if group == "*" else [group]
        for g in targets:
            deprecated.setdefault((g, key), "legacy")

    # drop enum keys whose values we never found
    enum_keys = {k: p for k, p in enum_keys.items() if enum_values.get(p) and enum_values[p].values}

    return {
        "primary_version": sources[0].version,
        "labels": labels,
        "groups": groups,
        "macro_uses": macro_uses,
        "deprecated": deprecated,
        "enum_keys": enum_keys,
        "enum_values": enum_values,
    }


def is_compat_stub_parser(parser: str) -> bool:
    return parser == "config_parse_warn_compat"


# --------------------------------------------------------------------------
# rendering
# --------------------------------------------------------------------------

MACRO_CONST = {
    "EXEC_CONTEXT_CONFIG_ITEMS": "_EXEC_CONTEXT",
    "KILL_CONTEXT_CONFIG_ITEMS": "_KILL_CONTEXT",
    "CGROUP_CONTEXT_CONFIG_ITEMS": "_CGROUP_CONTEXT",
}


def _const_for_group(group: str) -> str:
    if group in MACRO_CONST:
        return MACRO_CONST[group]
    return "_" + re.sub(r"[^A-Z0-9]+", "_", group.upper()).strip("_") + ("_KEYS" if not group.startswith("FOR_") else "")


def q(value: object) -> str:
    """Python literal with double-quoted strings (the repo's style)."""
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, tuple):
        inner = ", ".join(q(v) for v in value)
        return f"({inner},)" if len(value) == 1 else f"({inner})"
    return repr(value)


def _render_dict(name: str, annotation: str, mapping: dict[str, str], comment: str) -> str:
    out = [f"# {comment}", f"{name}: {annotation} = {{"]
    out.extend(f"    {q(key)}: {q(mapping[key])}," for key in sorted(mapping))
    out.append("}")
    return "\n".join(out)


def _render_tuple(name: str, values: tuple[str, ...], width: int = 100) -> str:
    one_line = f"{name}: tuple[str, ...] = {q(values)}"
    if len(one_line) <= width:
        return one_line
    lines, line = [], "   "
    for v in values:
        item = f" {q(v)},"
        if len(line) + len(item) > width:
            lines.append(line)
            line = "   "
        line += item
    lines.append(line)
    return "\n".join([f"{name}: tuple[str, ...] = (", *lines, ")"])


def _enum_const(parser: str) -> str:
    base = re.sub(r"^config_parse_", "", parser).upper()
    return f"_E_{base}"


def _pair(pair: tuple[str, str]) -> str:
    return f"({q(pair[0])}, {q(pair[1])})"


def render(data: dict, argv: list[Source]) -> str:
    """The whole module text."""
    groups = data["groups"]
    macro_uses = data["macro_uses"]
    sections = [s for s in SECTION_ORDER if s in groups or s in macro_uses]
    extra = sorted(s for s in set(groups) | set(macro_uses)
                   if s not in sections and s not in MACRO_CONST and not s.startswith("FOR_"))
    sections += extra

    def section_members(sec: str) -> list[str]:
        return [*macro_uses.get(sec, []), *([sec] if sec in groups else [])]

    # flattened view, for counts and for DEPRECATED/ENUMS expansion
    flat: dict[str, dict[str, tuple[str, str]]] = {}
    for sec in sections:
        merged: dict[str, tuple[str, str]] = {}
        for g in section_members(sec):
            for k, v in groups[g].items():
                if k in merged and merged[k] != v:
                    print(f"warning: [{sec}] {k}: {g} overrides {merged[k]} with {v}", file=sys.stderr)
                merged[k] = v
        flat[sec] = merged

    def expand(group: str) -> list[str]:
        if group in sections and group not in MACRO_CONST:
            return [group]
        return [s for s in sections if group in macro_uses.get(s, [])]

    def order(pair: tuple[str, str]) -> tuple[int, str]:
        return sections.index(pair[0]), pair[1]

    deprecated: dict[tuple[str, str], str] = {}
    for (group, key), reason in data["deprecated"].items():
        for sec in expand(group):
            if key in flat[sec]:
                parser = flat[sec][key][1]
                older = None if is_compat_stub_parser(parser) else parser
                deprecated[(sec, key)] = message(sec, key, reason, older, data["primary_version"])

    enums: dict[tuple[str, str], str] = {}
    for (group, key), parser in data["enum_keys"].items():
        for sec in expand(group):
            if flat[sec].get(key, ("", ""))[1] == parser:
                enums[(sec, key)] = parser
    used_parsers = sorted(set(enums.values()))

    srcs = " ".join(s.short() for s in argv)
    labels = "\n".join(f"* {label}" for label in data["labels"])
    n_keys = sum(len(v) for v in flat.values())
    n_names = len({k for v in flat.values() for k in v})
    parts = [HEADER.format(
        labels=labels, srcs=srcs, n_sections=len(sections), n_keys=n_keys, n_names=n_names,
        n_deprecated=len(deprecated), n_enums=len(enums), n_tables=len(used_parsers),
    )]

    parts.append("# --- BEGIN GENERATED DATA (.ci/gen_systemd_directives.py; do not edit by hand) ---\n")
    parts.append("# unit file suffix -> the sections such a file may contain")
    parts.append("SECTIONS_BY_TYPE: dict[str, tuple[str, ...]] = {")
    parts.extend(f"    {q(suffix)}: {q(secs)}," for suffix, secs in SECTIONS_BY_TYPE.items())
    parts.append("}")
    parts.append("")
    for group in [*MACRO_CONST, *sorted(g for g in groups if g.startswith("FOR_"))]:
        if group in groups:
            users = ", ".join(s for s in sections if group in macro_uses.get(s, []))
            parts.append(_render_dict(_const_for_group(group), "dict[str, str]",
                                      {k: v[0] for k, v in groups[group].items()},
                                      f"systemd's {group} template, shared by [{users}]"))
            parts.append("")
    for sec in sections:
        if sec in groups:
            parts.append(_render_dict(_const_for_group(sec), "dict[str, str]",
                                      {k: v[0] for k, v in groups[sec].items()},
                                      f"keys only [{sec}] has"))
            parts.append("")
    parts.append("# section -> key -> value kind")
    parts.append("SECTION_KEYS: dict[str, dict[str, str]] = {")
    for sec in sections:
        inner = ", ".join(f"**{_const_for_group(g)}" for g in section_members(sec))
        parts.append(f"    {q(sec)}: {{{inner}}},")
    parts.append("}")
    parts.append("")

    parts.append("# accepted values, per systemd parser (entries ending in ':' are prefixes)")
    for parser in used_parsers:
        info = data["enum_values"][parser]
        extra = [*ENUM_PREFIXES.get(parser, ()), *(BOOL_WORDS if info.accepts_bool else ())]
        values = tuple(info.values) + tuple(dict.fromkeys(v for v in extra if v not in info.values))
        parts.append(_render_tuple(_enum_const(parser), values))
    parts.append("")
    parts.append("# (section, key) -> accepted values of an enum setting")
    parts.append("ENUMS: dict[tuple[str, str], tuple[str, ...]] = {")
    for pair, parser in sorted(enums.items(), key=lambda kv: order(kv[0])):
        parts.append(f"    {_pair(pair)}: {_enum_const(parser)},")
    parts.append("}")
    parts.append("")
    for name, flag, what in (("ENUMS_ACCEPT_BOOL", "accepts_bool", "a boolean (yes/no/true/false/on/off/1/0)"),
                             ("ENUMS_ACCEPT_INT", "accepts_int", "a plain number (e.g. LogLevelMax=7)")):
        keys = sorted((k for k, p in enums.items() if getattr(data["enum_values"][p], flag)), key=order)
        parts.append(f"# enum settings that also take {what}")
        parts.append(f"{name}: frozenset[tuple[str, str]] = frozenset({{")
        parts.extend(f"    {_pair(k)}," for k in keys)
        parts.append("})")
        parts.append("")
    parts.append("# (section, key) -> one-line message naming the replacement")
    parts.append("DEPRECATED: dict[tuple[str, str], str] = {")
    for pair, msg in sorted(deprecated.items(), key=lambda kv: order(kv[0])):
        parts.append(f"    {_pair(pair)}: {q(msg)},")
    parts.append("}")
    parts.append("")
    parts.append("# --- END GENERATED DATA ---\n")
    parts.append(HELPERS)
    return "\n".join(parts)


HEADER = '''\
"""Every unit-file directive systemd accepts, per section, with its value kind.

Data for a unit-file linter: unknown or misspelled keys, keys in the wrong
section, deprecated keys and (with :mod:`labkit.systemd.values`) bad values.

Generated from systemd's own parser table,
``src/core/load-fragment-gperf.gperf.in`` (plus ``src/shared/install.c``
for ``[Install]`` and the ``*_table[]`` string tables for enum values), as the
union of:

{labels}

The first is the primary source: its parser decides a key's kind (unless it
only keeps the key as an ignored stub).  Keys any of them knows are included,
so settings of an older systemd (Debian 12 ships 252) are known too.
Regenerate with::

    python .ci/gen_systemd_directives.py {srcs} > labkit/systemd/directives.py

Counts: {n_sections} sections; {n_keys} section/key pairs ({n_names} distinct key names);
{n_deprecated} deprecated pairs; {n_enums} enum-valued pairs using {n_tables} value tables.

Value kinds (``SECTION_KEYS[section][key]``):

``timespan`` ``bool`` ``size`` ``memory`` (size, ``N%`` or ``infinity``)
``percent`` ``nice`` ``signal`` ``exit-status`` ``exec`` ``path`` (one
absolute path) ``unit-list`` ``env`` ``enum`` (values in :data:`ENUMS`)
``int`` and ``string`` (anything else, including parsers not mapped yet).

Enum tuples list systemd's spellings from its string tables; an entry ending
in ``:`` (``"file:"``) is a prefix that takes an argument.  Settings in
:data:`ENUMS_ACCEPT_BOOL` also take a boolean, and their tuples include the
usual spellings (yes/no/true/false/on/off/1/0); settings in
:data:`ENUMS_ACCEPT_INT` also take a plain number, which no tuple can list.
:func:`enum_accepts` applies all of these rules.  Everything between the
GENERATED DATA markers is machine-written; edit the generator, not this file.
"""

from __future__ import annotations

import difflib
'''

HELPERS = '''\
# what systemd's parse_boolean() accepts (compared lowercased)
_BOOLS = frozenset({"1", "yes", "y", "true", "t", "on", "0", "no", "n", "false", "f", "off"})

_KEY_INDEX: dict[str, tuple[str, ...]] = {}
for _section, _keys in SECTION_KEYS.items():
    for _key in _keys:
        _KEY_INDEX[_key] = (*_KEY_INDEX.get(_key, ()), _section)
del _section, _keys, _key


def kind_of(section: str, key: str) -> str | None:
    """Return the value kind of ``key`` in ``[section]``, or None if systemd rejects it there."""
    return SECTION_KEYS.get(section, {}).get(key)


def sections_with(key: str) -> tuple[str, ...]:
    """Return the sections in which ``key`` is valid (empty if none), in SECTION_KEYS order."""
    return _KEY_INDEX.get(key, ())


def closest_keys(section: str, key: str, n: int = 3) -> list[str]:
    """Suggest up to ``n`` keys of ``[section]`` that ``key`` was probably meant to be.

    Case-only differences (``execstart``) come first, then difflib's close
    matches on the lowercased names.
    """
    keys = SECTION_KEYS.get(section, {})
    if n <= 0 or not keys:
        return []
    by_lower: dict[str, list[str]] = {}
    for name in keys:
        by_lower.setdefault(name.lower(), []).append(name)
    wanted = key.lower()
    out: list[str] = [name for name in by_lower.get(wanted, []) if name != key]
    for lowered in difflib.get_close_matches(wanted, list(by_lower), n=n + len(out), cutoff=0.6):
        for name in by_lower[lowered]:
            if name != key and name not in out:
                out.append(name)
    return out[:n]


def enum_accepts(section: str, key: str, value: str) -> bool | None:
    """Return whether ``value`` is an accepted value of enum setting ``key``; None if not an enum."""
    values = ENUMS.get((section, key))
    if values is None:
        return None
    if value in values and not value.endswith(":"):
        return True
    if any(v.endswith(":") and value.startswith(v) and len(value) > len(v) for v in values):
        return True
    if (section, key) in ENUMS_ACCEPT_BOOL and value.lower() in _BOOLS:
        return True
    if (section, key) in ENUMS_ACCEPT_INT and value.lstrip("-").isdigit():
        return True
    return False

'''


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("sources", nargs="+", metavar="SOURCE",
                    help="GITDIR[@REV], a systemd source tree, or the gperf file; first one is primary")
    args = ap.parse_args(argv)
    sources = [Source(s) for s in args.sources]
    data = build(sources)
    bad = {kind for keys in data["groups"].values() for kind, _parser in keys.values()} - set(KINDS)
    if bad:
        sys.exit(f"gen_systemd_directives: unknown kinds {sorted(bad)}")
    sys.stdout.write(render(data, sources))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
