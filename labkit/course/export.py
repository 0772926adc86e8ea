"""``labkit grade export``: the gradebook as Canvas and Moodle import it, and the feedback as a zip.

**Canvas** (Grades > Import). The columns of Canvas's own gradebook export, which its import
reads back: ``Student`` ("Last, First"), ``ID`` (Canvas's user id), ``SIS User ID``, ``SIS Login
ID``, ``Section``, then one column per assignment named ``Name (assignment id)``; a second row
``Points Possible`` gives each assignment's maximum, as Canvas's export does. Canvas matches a
row on ID or SIS User ID (the name alone is ambiguous); a column without ``(id)`` makes a new
assignment. Sources: the Canvas guides "How do I import grades in the Gradebook?" and "How do I
export grades in the Gradebook?", Ohio State's "Import CSV File for Carmen Grades", and the
nemogb vignette "Detailed Canvas Export Info" (``Quiz 1 (87568490)``).

**Moodle** (Grades > Import > CSV file). Moodle's import maps columns by hand: one column is
chosen to identify the user ("Map from") and matched against one user field ("Map to": ``id``,
``username``, ``idnumber`` or ``email``, see ``grade/import/csv/classes/load_data.php``,
``map_user_data_with_value``); every other column is mapped to a grade item, a new one, or
ignored. We write the columns of Moodle's plain-text grade export: ``First name``, ``Last
name``, ``ID number``, ``Email address``, then one column per notebook; map "ID number" to
idnumber or "Email address" to email.

labkit knows only a student's folder name: the names and identifiers come from ``--roster``
(``roster.py``). A blank cell is a grade not to import (no submission, or the grader failed on
its side: never a 0 the student did not earn). The zip holds ``<student>/<notebook>.html`` for
every feedback page, with fixed timestamps so the same feedback gives the same bytes.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from labkit.course._gradebook import CSV_NAME, GRADER_ERROR, read_gradebook
from labkit.course.roster import Person, person, read_roster
from labkit.errors import BadArgument

CANVAS_IDS = ("Student", "ID", "SIS User ID", "SIS Login ID", "Section")
MOODLE_IDS = ("First name", "Last name", "ID number", "Email address")
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  #: zip's earliest date: the archive does not depend on when it was made


@dataclass
class Table:
    """The gradebook pivoted: one row per student, one column per notebook."""

    notebooks: list[str]
    max_scores: dict[str, str]
    scores: dict[str, dict[str, str]]  #: student -> notebook -> score ("" = do not import)
    people: list[Person]
    warnings: list[str] = field(default_factory=list)


def table(folder: str | os.PathLike[str], roster: dict[str, Person] | None = None) -> Table:
    """The gradebook of ``folder`` by student, ordered as the roster, then by name.

    Raises:
        BadArgument: no gradebook in ``folder``.
    """
    folder = Path(folder)
    if not (folder / CSV_NAME).is_file():
        raise BadArgument(f"{folder}: no {CSV_NAME} (the --out folder of `labkit grade` or `labkit grade merge`)")
    rows = read_gradebook(folder / CSV_NAME)
    notebooks = sorted({row["notebook"] for row in rows})
    scores: dict[str, dict[str, str]] = {}
    max_scores: dict[str, str] = {}
    warnings = []
    for row in rows:
        if row["max_score"]:
            max_scores[row["notebook"]] = row["max_score"]
        failed = row["status"].startswith(GRADER_ERROR)
        if failed:
            warnings.append(f"{row['student']} {row['notebook']}: left blank, the grader failed ({row['status']})")
        scores.setdefault(row["student"], {})[row["notebook"]] = "" if failed else row["score"]
    order = list(roster or {}) + sorted(student for student in scores if student not in (roster or {}))
    if roster is not None:
        warnings += [f"{student}: graded but not on the roster (exported with the folder name only)"
                     for student in sorted(scores) if student not in roster]
        warnings += [f"{student}: on the roster, no grade (exported blank)" for student in roster if student not in scores]
    return Table(notebooks, max_scores, scores, [person(roster, student) for student in order], warnings)


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _text(value: object) -> object:
    """A text cell made safe to open in a spreadsheet: one that starts like a formula (``=``, ``+``,
    ``-``, ``@``, tab, CR: OWASP's CSV injection list) gets a leading ``'``; numbers pass as they are."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def canvas_csv(data: Table, names: dict[str, str] | None = None) -> bytes:
    """Canvas's gradebook CSV; ``names``: notebook -> column header (e.g. ``Signals (4242)``)."""
    headers = [(names or {}).get(notebook, notebook) for notebook in data.notebooks]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow([*CANVAS_IDS, *map(_text, headers)])
    writer.writerow(["    Points Possible", "", "", "", "", *[data.max_scores.get(nb, "") for nb in data.notebooks]])
    for who in data.people:
        last_first = ", ".join(part for part in (who.get("last_name"), who.get("first_name")) if part)
        writer.writerow([*map(_text, (last_first or who.name, who.get("id"), who.get("sis_user_id"),
                                      who.get("sis_login_id"), who.get("section"))),
                         *[data.scores.get(who.student, {}).get(nb, "") for nb in data.notebooks]])
    return out.getvalue().encode("utf-8")


def moodle_csv(data: Table, names: dict[str, str] | None = None) -> bytes:
    """Moodle's grade-import CSV (UTF-8, comma): identity columns, then one column per notebook."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([*MOODLE_IDS, *[_text((names or {}).get(notebook, notebook)) for notebook in data.notebooks]])
    for who in data.people:
        first, last = who.get("first_name"), who.get("last_name")
        if not (first or last):
            first, _, last = who.name.partition(" ")
        writer.writerow([*map(_text, (first, last, who.get("idnumber") or who.get("sis_user_id"), who.get("email"))),
                         *[data.scores.get(who.student, {}).get(nb, "") for nb in data.notebooks]])
    return out.getvalue().encode("utf-8")


def feedback_zip(folder: str | os.PathLike[str]) -> bytes:
    """Every ``feedback/<student>/<notebook>.html`` of ``folder`` in one zip, byte-for-byte repeatable."""
    root = Path(folder) / "feedback"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(root.glob("*/*.html")) if root.is_dir() else []:
            info = zipfile.ZipInfo(path.relative_to(root).as_posix(), date_time=_ZIP_TIME)
            info.compress_type, info.external_attr = zipfile.ZIP_DEFLATED, 0o644 << 16
            archive.writestr(info, path.read_bytes())
    return buffer.getvalue()


def parse_names(values: list[str]) -> dict[str, str]:
    """``--assignment NOTEBOOK=HEADER`` values -> {notebook: header}.

    Raises:
        BadArgument: a value without ``=``.
    """
    names = {}
    for value in values:
        notebook, sep, header = value.partition("=")
        if not sep or not notebook.strip() or not header.strip():
            raise BadArgument(f"--assignment expects NOTEBOOK=COLUMN (e.g. '01_signals=Signals (4242)'), got {value!r}")
        names[notebook.strip().removesuffix(".ipynb")] = header.strip()
    return names


# -- the command line ----------------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``labkit grade export``."""
    parser.add_argument("folder", type=Path, metavar="DIR", help="a grading folder (with gradebook.csv)")
    parser.add_argument("--roster", type=Path, default=None, metavar="CSV",
                        help="student folder name -> name, id, sis_user_id, sis_login_id, section, email, idnumber")
    parser.add_argument("--assignment", action="append", default=[], metavar="NOTEBOOK=COLUMN",
                        help="the column of a notebook, e.g. '01_signals=Signals (4242)' for Canvas's assignment 4242 "
                             "(repeatable; default: the notebook's name, a new assignment)")
    parser.add_argument("--canvas", type=Path, default=None, metavar="FILE", help="write Canvas's CSV here")
    parser.add_argument("--moodle", type=Path, default=None, metavar="FILE", help="write Moodle's CSV here")
    parser.add_argument("--feedback-zip", type=Path, default=None, metavar="FILE", help="write the feedback zip here")


def main(args: argparse.Namespace) -> int:
    """Write what was asked (all three into DIR/export/ when nothing was); 0."""
    from labkit._atomic import write_atomic

    names = parse_names(args.assignment)
    roster = read_roster(args.roster) if args.roster is not None else None
    data = table(args.folder, roster)
    unknown = sorted(set(names) - set(data.notebooks))
    if unknown:
        raise BadArgument(f"--assignment names {unknown[0]!r}, a notebook the gradebook does not hold")
    wanted = {"canvas": args.canvas, "moodle": args.moodle, "feedback": args.feedback_zip}
    if not any(wanted.values()):
        base = args.folder / "export"
        wanted = {"canvas": base / "canvas.csv", "moodle": base / "moodle.csv", "feedback": base / "feedback.zip"}
    makers = {"canvas": lambda: canvas_csv(data, names), "moodle": lambda: moodle_csv(data, names),
              "feedback": lambda: feedback_zip(args.folder)}
    for warning in data.warnings:
        print(f"labkit grade export: {warning}", file=sys.stderr)
    for kind, path in wanted.items():
        if path is None:
            continue
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(path, makers[kind]())
        except OSError as err:
            raise BadArgument(f"{path}: cannot write it ({err.strerror or err})") from err
        print(f"{kind}: {path}")
    return 0
