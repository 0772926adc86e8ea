"""The exception tree of labkit.

Every error a learner or an instructor can cause derives from :class:`LabkitError`
and carries a message that says what to do next. ``exit_code`` tells the CLI how to
exit: 2 for bad input or usage, 1 when the thing asked for failed.
"""

from __future__ import annotations


class LabkitError(Exception):
    """Base class of every error labkit raises on purpose."""

    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class BadArgument(LabkitError, ValueError):
    """An argument or input value is invalid (exit code 2)."""

    exit_code = 2


class NoSuchJob(LabkitError, LookupError):
    """No job of that name is recorded under ``$LABKIT_HOME``."""

    exit_code = 2

    def __init__(self, name: str, home: str | None = None) -> None:
        where = f" under {home}" if home else ""
        super().__init__(
            f"no job named {name!r}{where}; `labkit jobs list` shows the known jobs"
        )
        self.name = name


class JobExists(LabkitError):
    """A job of that name is still running, so it cannot be started again."""

    exit_code = 2

    def __init__(self, name: str, pid: int) -> None:
        super().__init__(
            f"job {name!r} is still running as pid {pid}; stop it first "
            f"(`labkit jobs stop {name}`) or pick another name"
        )
        self.name = name
        self.pid = pid


class NotOurProcess(LabkitError):
    """The process is not one labkit may signal (recycled pid, protected process)."""

    def __init__(self, pid: int, reason: str) -> None:
        super().__init__(f"refusing to signal pid {pid}: {reason}")
        self.pid = pid
        self.reason = reason


class ProtectedProcess(NotOurProcess):
    """PID 1, the caller itself, or one of its ancestors (kernel, Jupyter server)."""

    exit_code = 2


class ToolMissing(LabkitError):
    """An external tool (tmux, strace, ...) is not installed."""

    def __init__(self, tool: str, hint: str = "") -> None:
        extra = f"; {hint}" if hint else ""
        super().__init__(f"{tool} is not installed{extra} (`labkit doctor` lists what exists)")
        self.tool = tool


class NotCheckable(LabkitError):
    """A check cannot run on this machine: what it needs (a tool, a cgroup controller) is missing.

    Raised by a test cell instead of passing silently: a check that did not run must not award
    its points. ``labkit grade`` scores the cell 0 and marks the submission
    ``grader error: not checkable here (...)``, so that it is left blank in exports and graded
    again by a rerun on a machine that has what the check needs; nbgrader scores it 0 as it
    scores any error.
    """

    def __init__(self, missing: str, hint: str = "") -> None:
        super().__init__(f"not checkable here: {missing}" + (f"; {hint}" if hint else ""))
        self.missing = missing
        self.hint = hint


class PermissionDenied(LabkitError, PermissionError):
    """The operating system refused an operation (ptrace, cgroup write, kill)."""

    def __init__(self, what: str, hint: str = "") -> None:
        extra = f"; {hint}" if hint else ""
        super().__init__(f"permission denied: {what}{extra}")


class CheckpointCorrupt(LabkitError):
    """A checkpoint file is truncated, altered or not a labkit checkpoint."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"checkpoint {path} is unusable: {reason}")
        self.path = path
        self.reason = reason


class DiskFull(LabkitError, OSError):
    """A write failed for lack of room: ENOSPC (the file system is full), EDQUOT (a quota) or EFBIG
    (the file-size limit, RLIMIT_FSIZE; Python ignores SIGXFSZ, so the write fails instead of the
    process being killed). What was written atomically before is untouched. Also an OSError with
    the original ``errno``, for code that handles OSError."""

    ERRNOS = ("ENOSPC", "EDQUOT", "EFBIG")

    def __init__(self, what: str, err: OSError) -> None:
        import errno as _errno

        name = _errno.errorcode.get(err.errno or 0, str(err.errno))
        self.message = f"{what}: {err.strerror or err} ({name})"
        OSError.__init__(self, err.errno, self.message)  # errno as the OSError it stands for
        self.filename = err.filename
        self.errno_name = name

    def __str__(self) -> str:
        return self.message

    @property
    def advice(self) -> str:
        """What to do, for this errno."""
        return {"EFBIG": "raise the file-size limit (ulimit -f, prlimit --fsize, LimitFSIZE=)",
                "EDQUOT": "free space within your quota (quota -s)"}.get(self.errno_name, "free some space (df -h)")

    @classmethod
    def matches(cls, err: BaseException) -> bool:
        import errno as _errno

        return isinstance(err, OSError) and _errno.errorcode.get(err.errno or 0) in cls.ERRNOS


class NoCheckpoint(LabkitError):
    """``--resume`` found no checkpoint that verifies."""

    def __init__(self, directory: str, skipped: int = 0) -> None:
        detail = f" ({skipped} skipped as corrupt)" if skipped else ""
        super().__init__(f"no valid checkpoint in {directory}{detail}")
        self.directory = directory


class JobTimeout(LabkitError, TimeoutError):
    """A job did not end within the time allowed, even after SIGKILL."""
