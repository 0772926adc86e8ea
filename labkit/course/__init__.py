"""The course's exercises: build them from solutions, find their answer and test cells.

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
from labkit.course.regions import RegionError, strip_regions

__all__ = [
    "BadCell",
    "BuildReport",
    "GradedCell",
    "RegionError",
    "add_arguments",
    "answer_cells",
    "build",
    "build_notebook",
    "canonical_metadata",
    "cell_kind",
    "find_repo_root",
    "graded_cells",
    "main",
    "read_notebook",
    "render",
    "strip_regions",
    "test_cells",
]
