"""The course's exercises: build them from solutions, find their answer and test cells, grade them.

``import labkit.course`` does not import nbformat; the functions that need it do.
"""

from labkit.course.build import (
    BuildReport,
    add_arguments,
    build,
    build_notebook,
    find_repo_root,
    main,
    read_notebook,
    render,
)
from labkit.course.cells import (
    BadCell,
    GradedCell,
    answer_cells,
    canonical_metadata,
    cell_kind,
    graded_cells,
    test_cells,
)
from labkit.course.grade import (
    GradeLimits,
    GradeResult,
    Submission,
    TestResult,
    grade,
    grade_notebook,
    read_gradebook,
    submissions_from,
)
from labkit.course.regions import RegionError, strip_regions

__all__ = [
    "BadCell",
    "BuildReport",
    "GradeLimits",
    "GradeResult",
    "GradedCell",
    "RegionError",
    "Submission",
    "TestResult",
    "add_arguments",
    "answer_cells",
    "build",
    "build_notebook",
    "canonical_metadata",
    "cell_kind",
    "find_repo_root",
    "grade",
    "grade_notebook",
    "graded_cells",
    "main",
    "read_gradebook",
    "read_notebook",
    "render",
    "strip_regions",
    "submissions_from",
    "test_cells",
]
