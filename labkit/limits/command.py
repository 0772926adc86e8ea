"""``labkit limit``: run a command under limits, or limit a running pid, saying each limit's mechanism.

Bad input (a negative or zero quota, ``--nofile`` below 0 or above the kernel's ceiling, a size
that is not one) is one line on stderr and exit 2, before anything starts; a limit the kernel
refuses is one line and exit 1 (``labkit.cli`` prints :class:`~labkit.errors.LabkitError`).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from labkit.errors import BadArgument, LabkitError
from labkit.limits.process import Held, forward_signals, limit_pid, run_limited
from labkit.limits.spec import MECHANISMS, LimitSpec, parse_size

__all__ = ["add_arguments", "main"]

_POLL_S = 0.2  #: how often a held pid is looked for, in seconds


def _size_argument(text: str) -> int:
    try:
        return parse_size(text)
    except BadArgument as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``labkit limit``."""
    parser.add_argument("--cpu-quota", type=float, default=None, metavar="PCT",
                        help="percent of one CPU, like systemd's CPUQuota= (150 = 1.5 CPUs)")
    parser.add_argument("--memory-max", type=_size_argument, default=None, metavar="SIZE",
                        help="bytes, like MemoryMax=: e.g. 300M, 2G")
    parser.add_argument("--memory-high", type=_size_argument, default=None, metavar="SIZE",
                        help="bytes, like MemoryHigh= (cgroup v2 only)")
    parser.add_argument("--nice", type=int, default=None, help="-20 (first) .. 19 (last)")
    parser.add_argument("--cpus", default=None, metavar="LIST", help="CPU list like 0 or 0,2 or 0-3 (taskset -c)")
    parser.add_argument("--nofile", type=int, default=None, metavar="N",
                        help="open files (ulimit -n), at most fs.nr_open")
    parser.add_argument("--address-space", dest="address_space_bytes", type=_size_argument, default=None,
                        metavar="SIZE", help="RLIMIT_AS (ulimit -v, but in bytes: 2G), per process")
    parser.add_argument("--mechanism", choices=MECHANISMS, default="auto",
                        help="auto: the strongest here; cpulimit holds one process (a tree goes to the throttle)")
    parser.add_argument("--pid", type=int, default=None, help="limit a running process instead of starting CMD")
    parser.add_argument("--for", dest="hold_for_s", type=float, default=None, metavar="SEC",
                        help="with --pid and a throttle: hold the limit SEC seconds (default: until it exits)")


def main(args: argparse.Namespace, command: list[str]) -> int:
    """``labkit limit ... -- CMD``: run CMD under the limits; exit with its code.

    Raises:
        BadArgument: bad limits, both or neither of --pid and a command, a command not found.
        PermissionDenied: the kernel refused a limit.
    """
    asked = (("nofile", args.nofile), ("as", args.address_space_bytes))
    rlimits = {name: value for name, value in asked if value is not None}
    spec = LimitSpec(args.cpu_quota, args.memory_max, args.memory_high, args.nice, _cpu_list(args.cpus), rlimits,
                     args.mechanism)
    spec.check()  # before anything starts, and before a missing command is reported
    if args.hold_for_s is not None and not (args.pid is not None and 0 <= args.hold_for_s < float("inf")):
        raise BadArgument(f"--for takes a number of seconds >= 0, with --pid (got {args.hold_for_s:g}"
                          f"{'' if args.pid is not None else ', without --pid'})")
    if args.pid is not None:
        if command:
            raise BadArgument("give either --pid PID or a command after --, not both")
        return _limit_running(args.pid, spec, args.hold_for_s)
    if not command:
        raise BadArgument("no command: `labkit limit --cpu-quota 30 -- python train.py`")
    try:
        run = run_limited(command, spec, **_group_choice())
    except FileNotFoundError:
        raise BadArgument(f"command not found: {command[0]}") from None
    except PermissionError as err:  # exec refused: not executable, or a folder
        if isinstance(err, LabkitError):
            raise  # PermissionDenied: the kernel refused a limit, said in its own words
        raise BadArgument(f"command not executable: {command[0]} ({err.strerror})") from None
    for item in run.applied:
        print(f"labkit limit: {item}", file=sys.stderr)
    forward_signals(run)
    code = run.wait()
    if run.oom_killed or code != 0:
        print(f"labkit limit: {command[0]} {run.how_it_ended()}", file=sys.stderr)
    return code


def _group_choice() -> dict[str, bool]:
    """At a terminal, where we are the foreground group, the command stays in our group, so that it can
    read the terminal (a background group that reads it gets SIGTTIN) and gets Ctrl-C from it directly.
    Elsewhere it gets a group of its own, so that stopping it ends everything it started."""
    try:
        interactive = os.isatty(0) and os.tcgetpgrp(0) == os.getpgrp()
    except OSError:
        interactive = False
    return {"start_new_session": False} if interactive else {}


def _limit_running(pid: int, spec: LimitSpec, hold_for_s: float | None) -> int:
    applied, held = limit_pid(pid, spec)
    for item in applied:
        print(f"labkit limit: pid {pid}: {item}", file=sys.stderr)
    helpers = [h for h in held if not h.mechanism.kernel_side]
    if not helpers:
        return 0  # kernel-side limits stay without us (an emptied cgroup of ours is removed by a later run)
    print(f"labkit limit: holding pid {pid} at {spec.cpu_quota:g}% until it exits (Ctrl-C to release)", file=sys.stderr)
    _hold(pid, helpers, hold_for_s)
    return 0


def _hold(pid: int, helpers: list[Held], hold_for_s: float | None) -> None:
    """Keep ``helpers`` until ``pid`` exits, ``hold_for_s`` seconds pass or Ctrl-C; then release them."""
    from labkit._linux import wait as _wait

    deadline = None if hold_for_s is None else time.monotonic() + hold_for_s
    try:  # a zombie has ended: its limits no longer matter, whenever its parent reaps it
        while not _wait.exited(pid) and (deadline is None or time.monotonic() < deadline):
            time.sleep(_POLL_S)
    except KeyboardInterrupt:
        pass
    finally:
        for helper in helpers:
            helper.stop()


def _cpu_list(text: str | None) -> list[int] | None:
    """``0``, ``0,2`` or ``0-3`` (as taskset -c writes them) -> CPU numbers. Raises BadArgument."""
    if text is None:
        return None
    cpus: list[int] = []
    try:
        for part in text.split(","):
            low, _, high = part.partition("-")
            cpus += list(range(int(low), int(high or low) + 1))
    except ValueError:
        raise BadArgument(f"bad CPU list {text!r}: use 0 or 0,2 or 0-3") from None
    return cpus
