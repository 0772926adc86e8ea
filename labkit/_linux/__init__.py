"""labkit's kernel layer: the one place that reads /proc and /sys/fs/cgroup (psutil's _pslinux is the model).

Standard library only, so the grader's sandbox can load it by path (``tree.py`` imports nothing but
``os`` for that reason). Each reader returns plain data or raises the OSError the kernel gave; a
field the kernel hides from us (no ptrace permission) comes back as :data:`HIDDEN`, never as an
empty value that would read as "nothing there". Waits live here too (``wait.py``): deadline polls,
process exits through pidfds, and kill-until-empty rounds. ``tests/test_architecture.py`` fails on a /proc or
/sys/fs/cgroup path written anywhere else in labkit.
"""

from labkit._linux.proc import HIDDEN, Stat, nspid, read_stat, read_status, syscall, wchan
from labkit._linux.cgroup import FreezerState, freezer_state
from labkit._linux.tree import path
from labkit._linux.wait import kill_until_empty, wait_all_exited, wait_exited, wait_for, wait_until_empty

__all__ = ["HIDDEN", "Stat", "nspid", "read_stat", "read_status", "syscall", "wchan", "FreezerState",
           "freezer_state", "path", "kill_until_empty", "wait_all_exited", "wait_exited", "wait_for", "wait_until_empty"]
