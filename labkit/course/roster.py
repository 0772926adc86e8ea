"""The class roster: who the students are, and what the learning-management system calls them.

labkit knows a student only by the name of their folder (``submitted/<student>/``). A roster is a
CSV file with a header and one row per student that maps that name to the identifiers an LMS
matches grades on. Column names are case-insensitive; only ``student`` is required::

    student,name,email,id,sis_user_id,sis_login_id,section,idnumber,first_name,last_name
    alice,"Liddell, Alice",alice@example.edu,1001,A17,alice,Section 1,A17,Alice,Liddell

``id`` is Canvas's own user id, ``sis_user_id``/``sis_login_id``/``section`` come from the
Canvas gradebook export, ``idnumber`` and ``email`` are what Moodle's grade import can match a
user on (its "ID number" and "Email address"). Unknown columns are ignored.
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass, field
from pathlib import Path

from labkit.errors import BadArgument

COLUMNS = ("student", "name", "email", "id", "sis_user_id", "sis_login_id", "section", "idnumber",
           "first_name", "last_name")


@dataclass(frozen=True)
class Person:
    """One roster row; every field but ``student`` may be empty."""

    student: str
    fields: dict[str, str] = field(default_factory=dict)

    def get(self, column: str) -> str:
        """The value of ``column`` ("" when the roster has none)."""
        return self.fields.get(column, "")

    @property
    def name(self) -> str:
        """The display name: ``name``, else first and last name, else the folder name."""
        joined = " ".join(part for part in (self.get("first_name"), self.get("last_name")) if part)
        return self.get("name") or joined or self.student


def read_roster(path: str | os.PathLike[str]) -> dict[str, Person]:
    """The roster at ``path`` by student folder name, in file order.

    Raises:
        BadArgument: unreadable, not UTF-8, no ``student`` column, or a student twice.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")  # a spreadsheet's byte-order mark is fine
    except OSError as err:
        raise BadArgument(f"--roster {path}: cannot read it ({err.strerror or err})") from err
    except UnicodeDecodeError as err:
        raise BadArgument(f"--roster {path}: not UTF-8 text") from err
    reader = csv.DictReader(io.StringIO(text))
    header = {name.strip().lower(): name for name in reader.fieldnames or []}
    if "student" not in header:
        raise BadArgument(f"--roster {path}: no 'student' column (the student's folder name); "
                          f"columns: {', '.join(COLUMNS)}")
    people: dict[str, Person] = {}
    for number, row in enumerate(reader, start=2):
        values = {key: (row.get(original) or "").strip() for key, original in header.items() if key in COLUMNS}
        student = values.pop("student", "")
        if not student:
            continue
        if student in people:
            raise BadArgument(f"--roster {path}: line {number}: {student!r} is listed twice")
        people[student] = Person(student, values)
    return people


def person(roster: dict[str, Person] | None, student: str) -> Person:
    """The roster's row of ``student``, or one with only the folder name."""
    return (roster or {}).get(student) or Person(student)
