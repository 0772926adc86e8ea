"""Solution and hidden-test regions in a cell's source, as nbgrader marks them.

Works on plain strings so it can be tested without notebooks. The rules follow nbgrader's
ClearSolutions and ClearHiddenTests preprocessors, made stricter where a slip would leak an
answer to students: an END without a BEGIN, nested regions, and lines that look like a marker
but are not spelled exactly like one are errors here, where nbgrader passes them silently.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from labkit.errors import BadArgument

BEGIN_SOLUTION = "### BEGIN SOLUTION"
END_SOLUTION = "### END SOLUTION"
BEGIN_HIDDEN_TESTS = "### BEGIN HIDDEN TESTS"
END_HIDDEN_TESTS = "### END HIDDEN TESTS"

#: What replaces a solution region (nbgrader's ClearSolutions.code_stub and text_stub).
CODE_STUB = ("# YOUR CODE HERE", "raise NotImplementedError()")
TEXT_STUB = ("YOUR ANSWER HERE",)

_MARKERS = {BEGIN_SOLUTION, END_SOLUTION, BEGIN_HIDDEN_TESTS, END_HIDDEN_TESTS}
# "## BEGIN SOLUTION", "### begin solution", "###BEGIN SOLUTION (part a)": a near miss would
# not be recognised as a marker, so the answer after it would ship to students.
_NEAR_MISS = re.compile(r"^\s*#*\s*(BEGIN|END)\s+(SOLUTION|HIDDEN\s+TESTS)\b", re.IGNORECASE)


class RegionError(BadArgument):
    """A marker problem inside one cell; the caller adds which notebook and cell."""

    def __init__(self, line: int, problem: str) -> None:
        super().__init__(f"line {line}: {problem}")
        self.line = line
        self.problem = problem


@dataclass(frozen=True)
class Regions:
    """What :func:`strip_regions` found and produced."""

    source: str
    solutions: int  #: number of solution regions replaced by a stub
    hidden_tests: int  #: number of hidden-test regions removed


def strip_regions(source: str, stub: tuple[str, ...] = CODE_STUB) -> Regions:
    """Replace solution regions by ``stub`` and remove hidden-test regions.

    The stub takes the indentation of its ``### BEGIN SOLUTION`` line, so a region inside a
    function body leaves a function that still parses.

    >>> strip_regions("def f():\\n    ### BEGIN SOLUTION\\n    return 1\\n    ### END SOLUTION").source
    'def f():\\n    # YOUR CODE HERE\\n    raise NotImplementedError()'

    Raises:
        RegionError: an unterminated, unopened or nested region, or a marker-like line that
            is not an exact marker.
    """
    kept: list[str] = []
    open_marker: str | None = None  # the BEGIN line of the region we are inside
    opened_at = 0
    solutions = hidden = 0
    for number, line in enumerate(source.split("\n"), start=1):
        marker = line.strip()
        if marker not in _MARKERS:
            if _NEAR_MISS.match(line):
                raise RegionError(number, f"{marker!r} looks like a marker but is not exactly "
                                          f"{BEGIN_SOLUTION!r}, {END_SOLUTION!r}, "
                                          f"{BEGIN_HIDDEN_TESTS!r} or {END_HIDDEN_TESTS!r}")
            if open_marker is None:
                kept.append(line)
            continue
        if marker.startswith("### BEGIN"):
            if open_marker is not None:
                raise RegionError(number, f"{marker!r} inside the {open_marker!r} region "
                                          f"opened on line {opened_at}; regions cannot nest")
            open_marker, opened_at = marker, number
            if marker == BEGIN_SOLUTION:
                solutions += 1
                indent = line[: len(line) - len(line.lstrip())]
                kept.extend(indent + stub_line for stub_line in stub)
            else:
                hidden += 1
            continue
        expected = END_SOLUTION if open_marker == BEGIN_SOLUTION else END_HIDDEN_TESTS
        if open_marker is None or marker != expected:
            where = f"the {open_marker!r} region opened on line {opened_at}" if open_marker else "no region"
            raise RegionError(number, f"{marker!r} closes {where}")
        open_marker = None
    if open_marker is not None:
        end = END_SOLUTION if open_marker == BEGIN_SOLUTION else END_HIDDEN_TESTS
        raise RegionError(opened_at, f"{open_marker!r} has no matching {end!r}")
    return Regions("\n".join(kept), solutions, hidden)
