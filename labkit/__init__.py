"""labkit: a hands-on lab on managing ML training processes on Linux.

``import labkit`` stays light: matplotlib, ipywidgets, nbclient and Jupyter are imported
only by the functions that need them.
"""

from labkit.errors import (
    BadArgument,
    CheckpointCorrupt,
    JobExists,
    JobTimeout,
    LabkitError,
    NoCheckpoint,
    NoSuchJob,
    NotOurProcess,
    PermissionDenied,
    ProtectedProcess,
    ToolMissing,
)

__version__ = "0.1.0"

__all__ = [
    "BadArgument",
    "CheckpointCorrupt",
    "JobExists",
    "JobTimeout",
    "LabkitError",
    "NoCheckpoint",
    "NoSuchJob",
    "NotOurProcess",
    "PermissionDenied",
    "ProtectedProcess",
    "ToolMissing",
    "__version__",
]
