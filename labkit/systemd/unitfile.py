"""Unit files read and written the way systemd reads them (systemd.syntax(7), systemd.unit(5)).

A unit file is a list of ``Key=Value`` assignments in ``[Sections]``. systemd is lenient:
a line it cannot use is skipped with a warning, so :func:`parse` never raises for content;
it records each such line in :attr:`UnitFile.problems`. Meaning that rendering must keep:

- comments are lines starting with ``#`` or ``;``; whitespace around ``=`` and at the ends
  of a value is dropped;
- a line ending in ``\\`` continues on the next one (the backslash becomes a space;
  comment lines inside a continuation are skipped);
- a key may repeat: list-valued keys accumulate, an empty assignment (``Key=``) resets the
  list, and for single-valued keys the last assignment wins;
- specifiers (``%n``, ``%i``, ``%h``...) and ``$VARIABLES`` are kept as written: they are
  resolved when the unit runs, not when it is read.

>>> unit = parse("[Service]\\nExecStart=/usr/bin/python3 train.py\\nRestart=on-failure\\n", "train.service")
>>> unit.get("Service", "Restart")
'on-failure'
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import overload

from labkit.errors import BadArgument

_SECTION = re.compile(r"^\[([^\[\]]+)\]\s*$")
_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
_EXEC_PREFIXES = "@-:+!"
_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v",
            "\\": "\\", '"': '"', "'": "'", "s": " "}


@dataclass(frozen=True)
class Assignment:
    """One ``Key=Value`` line (continuations joined), with where it came from."""

    section: str
    key: str
    value: str
    line: int  # 1-based number of the line the assignment starts on


@dataclass(frozen=True)
class Problem:
    """A line systemd would skip with a warning."""

    line: int
    message: str


@dataclass
class UnitFile:
    """A parsed unit file: its assignments in order, and the lines systemd would skip."""

    name: str
    assignments: list[Assignment] = field(default_factory=list)
    sections: list[str] = field(default_factory=list)  # in order of first appearance
    problems: list[Problem] = field(default_factory=list)
    path: Path | None = None

    @property
    def type(self) -> str:
        """The unit type from the name's suffix: ``.service``, ``.timer``... ('' if none)."""
        suffix = Path(self.name).suffix
        return suffix if suffix and not suffix[1:].isdigit() else ""

    def assignments_of(self, section: str, key: str) -> list[Assignment]:
        """Every assignment of ``key`` in ``section``, in file order (empty resets included)."""
        return [a for a in self.assignments if a.section == section and a.key == key]

    @overload
    def get(self, section: str, key: str) -> str | None: ...
    @overload
    def get(self, section: str, key: str, default: str) -> str: ...
    @overload
    def get(self, section: str, key: str, default: str | None) -> str | None: ...

    def get(self, section: str, key: str, default: str | None = None) -> str | None:
        """The value of a single-valued key: the last assignment wins; ``default`` if unset or reset."""
        found = self.assignments_of(section, key)
        if not found or found[-1].value == "":
            return default
        return found[-1].value

    def get_list(self, section: str, key: str) -> list[str]:
        """The values of a list-valued key: assignments accumulate, an empty one resets the list."""
        values: list[str] = []
        for assignment in self.assignments_of(section, key):
            if assignment.value == "":
                values.clear()
            else:
                values.append(assignment.value)
        return values

    def has_section(self, section: str) -> bool:
        """True if the file has a ``[section]`` header."""
        return section in self.sections

    def set(self, section: str, key: str, value: str) -> None:
        """Replace every assignment of ``key`` in ``section`` with one (added at the section's end)."""
        self.assignments = [a for a in self.assignments if not (a.section == section and a.key == key)]
        self.add(section, key, value)

    def add(self, section: str, key: str, value: str) -> None:
        """Append an assignment at the end of ``section`` (which is created if missing)."""
        if section not in self.sections:
            self.sections.append(section)
        last = max((i for i, a in enumerate(self.assignments) if a.section == section), default=None)
        index = len(self.assignments) if last is None else last + 1
        self.assignments.insert(index, Assignment(section, key, value, 0))

    def render(self) -> str:
        """The unit as text: each section once, its assignments in order (comments are not kept)."""
        blocks = []
        for section in self.sections:
            lines = [f"[{section}]"] + [f"{a.key}={a.value}" for a in self.assignments if a.section == section]
            blocks.append("\n".join(lines))
        return "\n\n".join(blocks) + "\n"

    def meaning(self) -> list[tuple[str, str, str]]:
        """What systemd takes from the file: (section, key, value) in order."""
        return [(a.section, a.key, a.value) for a in self.assignments]


def parse(text: str, name: str = "unit.service", path: str | os.PathLike | None = None) -> UnitFile:
    """Parse unit-file text; lines systemd would skip are recorded in ``problems``, never raised."""
    unit = UnitFile(name=name, path=Path(path) if path else None)
    section: str | None = None
    for number, line in _logical_lines(text):
        stripped = line.strip()
        if not stripped or stripped[0] in "#;":
            continue
        header = _SECTION.match(stripped)
        if header:
            section = header.group(1)
            if section not in unit.sections:
                unit.sections.append(section)
            continue
        if stripped.startswith("["):
            unit.problems.append(Problem(number, f"bad section header {stripped!r}"))
            section = None  # systemd ignores the following assignments until a good header
            continue
        if "=" not in stripped:
            unit.problems.append(Problem(number, f"missing '=' in {stripped!r}; the line is ignored"))
            continue
        key, value = (part.strip() for part in stripped.split("=", 1))
        if section is None:
            unit.problems.append(Problem(number, f"{key}= is outside of any section; it is ignored"))
        elif not _KEY.match(key):
            unit.problems.append(Problem(number, f"bad key name {key!r}; the line is ignored"))
        else:
            unit.assignments.append(Assignment(section, key, value, number))
    return unit


def load(path: str | os.PathLike) -> UnitFile:
    """Read and parse a unit file.

    Raises:
        BadArgument: the file cannot be read.
    """
    path = Path(path)
    try:
        text = path.read_text(errors="replace")
    except OSError as err:
        raise BadArgument(f"cannot read unit file {path}: {err.strerror or err}") from None
    return parse(text, path.name, path)


def _logical_lines(text: str):
    """Yield (first line number, line) with backslash continuations joined as systemd does."""
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        if pending and raw.lstrip()[:1] in ("#", ";"):
            continue  # a comment inside a continuation is skipped
        if not pending:
            start = number
        else:
            raw = raw.lstrip()  # systemd skips the leading whitespace of every line it reads
        if (len(raw) - len(raw.rstrip("\\"))) % 2 == 1:  # an odd number of backslashes: continued
            pending.append(raw[:-1] + " ")
            continue
        pending.append(raw)
        yield start, "".join(pending)
        pending = []
    if pending:
        yield start, "".join(pending)


@dataclass(frozen=True)
class ExecCommand:
    """One ``ExecStart=``-style command line, split as systemd splits it."""

    argv: tuple[str, ...]
    ignore_failure: bool = False   # "-": a failing exit code is not a failure
    privileged: bool = False       # "+" or "!"/"!!": run with full privileges
    no_env_expansion: bool = False  # ":": no $VAR expansion
    argv0_given: bool = False      # "@": the second word is argv[0]

    @property
    def path(self) -> str:
        """The executable as written (absolute, or a plain name looked up in systemd's fixed path)."""
        return self.argv[0] if self.argv else ""


def parse_exec(value: str) -> ExecCommand:
    """Split an ``ExecStart=`` value: prefixes, then words with systemd's quoting and C escapes.

    Raises:
        BadArgument: unbalanced quotes, a dangling escape, or no command at all.
    """
    text = value.strip()
    flags = ""
    while text and text[0] in _EXEC_PREFIXES:
        flags += text[0]
        text = text[1:]
    words = split_words(text)
    if not words:
        raise BadArgument(f"no command in {value!r}")
    if "@" in flags:
        if len(words) < 2:
            raise BadArgument(f"'@' needs the executable and argv[0] in {value!r}")
        words = [words[0]] + words[2:]
    return ExecCommand(tuple(words), "-" in flags, "+" in flags or "!" in flags, ":" in flags, "@" in flags)


def split_commands(value: str) -> list[str]:
    """Split an Exec line at each ``;`` that stands alone as a word, outside quotes: systemd runs
    the parts as commands one after another (systemd.service(5), "Command lines": ``\\;`` is a
    literal semicolon). ``a ; b`` -> ["a", "b"]; a trailing lone ``;`` is dropped."""
    parts, start, quote, index = [], 0, None, 0
    while index < len(value):
        char = value[index]
        if char == "\\":
            index += 2
            continue
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"" and (index == 0 or value[index - 1].isspace()):
            quote = char
        elif char == ";" and (index == 0 or value[index - 1].isspace()) and \
                (index + 1 == len(value) or value[index + 1].isspace()):
            parts.append(value[start:index])
            start = index + 1
        index += 1
    parts.append(value[start:])
    return [part.strip() for part in parts if part.strip()]


def split_words(text: str) -> list[str]:
    """Split like systemd's extract_first_word (unquote, C escapes): ``a "b c" 'd'`` -> [a, b c, d].

    Raises:
        BadArgument: unbalanced quotes or a dangling backslash.
    """
    words: list[str] = []
    current: list[str] | None = None
    quote = None
    index = 0
    while index < len(text):
        char = text[index]
        if char == "\\":
            index += 1
            if index >= len(text):
                raise BadArgument(f"dangling backslash at the end of {text!r}")
            current = (current or []) + [_ESCAPES.get(text[index], "\\" + text[index])]
        elif quote:
            assert current is not None  # the opening quote started a word (and a word never ends inside quotes)
            if char == quote:
                quote = None
            else:
                current.append(char)
        elif char in "\"'":
            quote = char
            current = current if current is not None else []
        elif char.isspace():
            if current is not None:
                words.append("".join(current))
                current = None
        else:
            current = (current or []) + [char]
        index += 1
    if quote:
        raise BadArgument(f"unbalanced {quote} quote in {text!r}")
    if current is not None:
        words.append("".join(current))
    return words
