"""Feedback for one graded submission: a notebook, and its HTML page made by nbconvert.

The page is the exercise the student was given (hidden tests still hidden) with their own
answers, a summary at the top (score, status, one line per test) and, under each test cell,
whether it passed and the error it raised. Outputs of the student's code are not shown: a
hidden test's source could be printed through them, and the student can rerun the notebook.
Messages are cut to :data:`MESSAGE_CHARS` for the same reason.
"""

from __future__ import annotations

import html
import re
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nbformat import NotebookNode

    from labkit.course._merge import Answer, Lesson
    from labkit.course._gradebook import GradeResult

MESSAGE_CHARS = 400
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_STYLE = {True: "background:#e6f4ea;border-left:4px solid #1e8e3e",
          False: "background:#fce8e6;border-left:4px solid #d93025",
          None: "background:#f1f3f4;border-left:4px solid #80868b"}
_local = threading.local()


def feedback_notebook(result: GradeResult, lesson: Lesson | None = None,
                      answers: Mapping[str, Answer] | None = None, extra_cells: int = 0) -> NotebookNode:
    """The feedback notebook of ``result``: summary first, then the exercise with the answers.

    Without ``lesson`` (the submission could not be read) it holds the summary only.
    """
    import nbformat
    from nbformat.v4 import new_markdown_cell, new_notebook

    nb = new_notebook(cells=[new_markdown_cell(_summary(result, extra_cells))])
    if lesson is None:
        return nb
    by_test = {test.grade_id: test for test in result.tests}
    grade_ids = {cell.cell_id: grade_id for grade_id, cell in {**lesson.answers, **lesson.tests}.items()}
    for cell in lesson.exercise.cells:
        shown = nbformat.from_dict({key: value for key, value in cell.items() if key != "attachments"})
        grade_id = grade_ids.get(cell.get("id"))
        if shown.cell_type == "code":
            shown.outputs, shown.execution_count = [], None
        if grade_id in lesson.answers and answers is not None:
            answer = answers[grade_id]
            if answer.answered:
                shown.source = answer.source
            if shown.cell_type == "code" and not answer.answered:
                shown.outputs = [_banner(None, f"{answer.note}: the exercise's stub was run in its place")]
        elif grade_id in by_test and shown.cell_type == "code":
            test = by_test[grade_id]
            points = f"{test.points:g} / {test.max_points:g} points"
            if not test.checked:  # the grading machine's gap, not a failure: grey, and it says so
                when = " yet" if result.grader_error else ""
                shown.outputs = [_banner(None, f"not checked{when}: {points}: {test.message}")]
            else:
                shown.outputs = [_banner(test.passed, points if test.passed else f"{points}: {test.message}")]
        shown.pop("attachments", None)
        nb.cells.append(shown)
    nb.metadata = {"kernelspec": dict(lesson.exercise.metadata.get("kernelspec", {})),
                   "language_info": {"name": "python"}}
    return nb


def render_html(nb: NotebookNode) -> bytes:
    """The notebook as a standalone HTML page (nbconvert's lab template, no prompts)."""
    exporter = getattr(_local, "exporter", None)
    if exporter is None:  # building one costs ~0.3 s (templates, CSS); each thread keeps its own
        from nbconvert import HTMLExporter

        exporter = _local.exporter = HTMLExporter(template_name="lab", exclude_input_prompt=True,
                                                  exclude_output_prompt=True)
    body, _ = exporter.from_notebook_node(nb)
    return body.encode("utf-8")


def clean_message(text: str) -> str:
    """One readable message: ANSI colours removed, cut to :data:`MESSAGE_CHARS`."""
    text = _ANSI.sub("", text).strip()
    return text if len(text) <= MESSAGE_CHARS else text[:MESSAGE_CHARS - 3] + "..."


def _summary(result: GradeResult, extra_cells: int) -> str:
    score = f"{result.score:g} / {result.max_score:g}" if result.max_score is not None else f"{result.score:g}"
    lines = [f"# Feedback: {_md(result.notebook)}", "",
             "| | |", "|---|---|",
             f"| student | {_md(result.student)} |",
             f"| score | **{score}** |",
             f"| status | {_md(result.status)} |", ""]
    if result.tests:
        lines += ["| test | points | result |", "|---|---|---|"]
        lines += [f"| {_md(test.grade_id)} | {test.points:g} / {test.max_points:g} | "
                  f"{'passed' if test.passed else 'failed' if test.checked else 'not checked'} |"
                  for test in result.tests]
        lines.append("")
    unchecked = any(not test.checked for test in result.tests)
    if unchecked and result.grader_error:
        lines += ["**This score is provisional:** some checks could not run on the grading machine "
                  "(it lacks what they need), so they score nothing for now. Your instructor grades "
                  "this notebook again where they can run.", ""]
    elif unchecked:
        lines += ["Some checks could not run on the grading machine (it lacks what they need) and "
                  "score 0, by your instructor's choice: what they check was not judged either way.", ""]
    if extra_cells:
        lines.append(f"{extra_cells} code cell(s) you added were not run: the grader runs your answer "
                     "cells inside the course's own notebook, so everything an answer needs must be "
                     "in its answer cell.")
    lines.append("Test cells and points come from the course's solution notebook; hidden tests are "
                 "not shown. Each result is under its test cell below.")
    return "\n".join(lines)


def _banner(passed: bool | None, text: str) -> dict:
    """A coloured result line: passed (green), failed (red) or a note (grey)."""
    from nbformat.v4 import new_output

    text = {True: "passed: ", False: "failed: ", None: ""}[passed] + text
    body = f'<pre style="{_STYLE[passed]};padding:6px 10px;white-space:pre-wrap">{html.escape(text)}</pre>'
    return new_output("display_data", data={"text/html": body, "text/plain": text})


def _md(text: str) -> str:
    """``text`` safe inside a markdown table cell."""
    return html.escape(str(text)).replace("|", "&#124;").replace("\n", " ")
