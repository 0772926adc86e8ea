"""The one protocol every limit mechanism follows, and :class:`Applied`, a limit said in words.

A mechanism lives through these steps, in this order (each has a do-nothing default, so a
mechanism writes only the steps it needs):

1. ``prepare(command, env)`` in this process, before a command starts: make what the kernel
   needs (a cgroup folder and its limit files) or wrap the command (``systemd-run --scope``);
2. ``in_child()`` in the forked child, before exec: what must be in force from the first
   instruction and be inherited by every child (joining the cgroup, setrlimit(2), nice);
3. ``apply(pid, launched)`` once the process exists: a helper that watches it (the throttle,
   cpulimit), or, for a running process limited from outside (``launched=False``), the same
   limits set from outside (prlimit(2), a move into the cgroup);
4. ``verify(pid)``: read back from the kernel what is in force, as ``{knob: value}``;
5. ``clean_up()``: stop the helpers, remove what ``prepare`` made; safe to call again.

``describe()`` names the mechanism and its kernel knob in one line; ``applied()`` lists each
limit it enforces (what ``labkit limit`` prints on stderr).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

__all__ = ["Applied", "Mechanism", "LIMIT_ORDER", "in_order"]

#: the order limits are reported in, whatever mechanisms enforce them
LIMIT_ORDER = ("cpu quota", "memory max", "memory high", "nice", "cpus")


@dataclass(frozen=True)
class Applied:
    """One limit in force, and the mechanism that enforces it."""

    limit: str
    value: str
    mechanism: str
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.limit} {self.value}: {self.mechanism}" + (f" ({self.detail})" if self.detail else "")


def in_order(applied: list[Applied]) -> list[Applied]:
    """``applied`` in :data:`LIMIT_ORDER`, rlimits last in the order they were asked for."""
    def key(item: Applied) -> int:
        return LIMIT_ORDER.index(item.limit) if item.limit in LIMIT_ORDER else len(LIMIT_ORDER)

    return sorted(applied, key=key)


class Mechanism(Protocol):
    """A way the kernel (or a helper of ours) enforces some limits on a process tree.

    Concrete mechanisms subclass this protocol to inherit the do-nothing defaults.
    """

    name: str  #: as ``--mechanism`` spells it ("cgroup", "scope", "rlimit", "throttle", "cpulimit")
    #: the kernel keeps the limit with no help from us (False: a helper of ours must keep running)
    kernel_side: bool = True
    #: something must be kept, and released by ``clean_up()``, while a running process is limited
    needs_holding: bool = True

    def describe(self) -> str:
        """One line a learner reads: the mechanism and the kernel knob it writes."""
        ...

    def applied(self) -> list[Applied]:
        """Each limit this mechanism enforces, in words."""
        ...

    def prepare(self, command: list[str], env: dict[str, str] | None) -> tuple[list[str], dict[str, str] | None]:
        """Before the start, in this process: return the command and environment to start.

        Raises:
            PermissionDenied: the kernel refused a limit file.
        """
        return command, env

    def in_child(self) -> None:
        """In the forked child before exec (async-signal context: no locks, no threads)."""
        return None

    def apply(self, pid: int, launched: bool) -> None:
        """Hold ``pid``: started by us (``launched``, after ``in_child``) or running already.

        Raises:
            BadArgument: this mechanism cannot hold that process.
            PermissionDenied: the kernel refused.
        """
        return None

    def verify(self, pid: int) -> dict[str, str]:
        """What the kernel says is in force for ``pid`` now: {knob: value read back}."""
        ...

    def clean_up(self) -> None:
        """Stop helpers and remove what was made; safe to call again. A running process limited from
        outside keeps running; what a launched command left in our cgroup is killed with it."""
        return None

    def oom_kills(self) -> int:
        """OOM kills counted inside this mechanism's memory limit so far (0 where none is counted)."""
        return 0
