"""Linux prctl(2) calls labkit needs, through ctypes (no-ops returning False elsewhere).

Imported at module load by its users, never inside a forked child: importing in a child
of a multi-threaded process (a Jupyter kernel) can deadlock on the import lock.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import signal
import sys

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
_LIBC = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True) if sys.platform.startswith("linux") else None


def set_parent_death_signal(sig: int = signal.SIGKILL) -> bool:
    """Ask the kernel to send ``sig`` to this process when its parent (thread) dies."""
    return _LIBC is not None and _LIBC.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0


def become_subreaper() -> bool:
    """Adopt orphaned descendants (instead of PID 1), so this process can reap them."""
    return _LIBC is not None and _LIBC.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
