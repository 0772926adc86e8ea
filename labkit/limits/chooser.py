"""The one place that decides which mechanism enforces which limit on this machine.

``auto`` takes, per limit, the strongest mechanism the machine allows:

=========  =====================================================================================
CPU quota  cgroup (cpu controller writable) > systemd scope (user manager answers) > throttle
memory     cgroup (memory controller writable) > systemd scope > rlimit (RLIMIT_AS)
=========  =====================================================================================

The cgroup verdicts are the kernel layer's (:func:`labkit._linux.cgroup.controller`, a real child
cgroup made and removed), the same ones ``labkit doctor`` reports, so the two never disagree.
A named ``--mechanism`` is used for every limit it can enforce and refused, in words, for one it
cannot. nice, CPU affinity and rlimits need no choice: the rlimit mechanism sets them always.
"""

from __future__ import annotations

import os
import shutil

from labkit._linux import cgroup as _cgroup
from labkit._linux.tree import path as _proc_path
from labkit.errors import BadArgument
from labkit.limits.cgroup import CgroupMechanism
from labkit.limits.cpulimit import CpulimitMechanism
from labkit.limits.mechanism import Mechanism
from labkit.limits.rlimit import RlimitMechanism
from labkit.limits.scope import ScopeMechanism
from labkit.limits.spec import LimitSpec
from labkit.limits.throttle import ThrottleMechanism

__all__ = ["available", "cgroup_version", "plan", "mechanisms", "choose"]

#: what each mechanism cannot do, said when it is asked to
_REFUSED = {
    "cpu": {"rlimit": "an rlimit cannot share CPU time (RLIMIT_CPU only kills after N seconds); "
                      "use cgroup, throttle or cpulimit"},
    "memory": {"throttle": "stopping and continuing a process does not limit its memory",
               "cpulimit": "cpulimit limits CPU only"},
}
_FALLBACK = {"cpu": "throttle", "memory": "rlimit"}  #: auto's choice where neither cgroup nor scope is possible


def cgroup_version() -> str:
    """'v2', 'v1', 'hybrid' (v1 controllers and a v2 mount) or 'none': the kernel layer's reading of
    /proc/self/mountinfo and /proc/self/cgroup, the same one ``labkit doctor`` reports."""
    return _cgroup.layout().version


def _verdicts() -> dict[str, _cgroup.Controller]:
    """The cpu and memory verdicts (a real child cgroup made and removed), as doctor gives them."""
    found = _cgroup.layout()
    return {ctrl: _cgroup.controller(ctrl, found) for ctrl in ("cpu", "memory")}


def available(verdicts: dict[str, _cgroup.Controller] | None = None) -> dict[str, str | None]:
    """For each mechanism, None if usable here, else why not (one line).

    Keys: ``cgroup-cpu``, ``cgroup-memory``, ``scope``, ``rlimit``, ``throttle``, ``cpulimit``.
    """
    from labkit.systemd.real import why_unavailable as no_user_manager

    verdicts = _verdicts() if verdicts is None else verdicts
    found: dict[str, str | None] = {}
    for ctrl, verdict in verdicts.items():
        found[f"cgroup-{ctrl}"] = None if verdict.ok else \
            f"no cgroup of ours gets a writable {ctrl} limit: {verdict.detail} (see `labkit doctor`)"
    found["scope"] = no_user_manager()
    found["rlimit"] = None
    found["throttle"] = None if os.path.exists(_proc_path("self", "stat")) else "needs /proc (Linux)"
    found["cpulimit"] = None if shutil.which("cpulimit") else "cpulimit is not installed (apt install cpulimit)"
    return found


def plan(spec: LimitSpec, running: bool = False, can: dict[str, str | None] | None = None) -> dict[str, str]:
    """{"cpu" and/or "memory": the mechanism that enforces it} for ``spec``.

    Args:
        running: the limits go on a running process (a systemd scope cannot take one).
        can: :func:`available`'s answer, if already known.

    Raises:
        BadArgument: the named mechanism cannot enforce a limit asked of it, or is not available here.
    """
    can = available() if can is None else can
    chosen: dict[str, str] = {}
    if spec.cpu_quota is not None:
        chosen["cpu"] = _pick("cpu", spec.mechanism, can, running)
    if spec.wants_memory:
        chosen["memory"] = _pick("memory", spec.mechanism, can, running)
        if spec.memory_high is not None and chosen["memory"] not in ("cgroup", "scope"):
            raise BadArgument("--memory-high needs a cgroup (it throttles and reclaims before the hard limit)")
    return chosen


def _pick(limit: str, wanted: str, can: dict[str, str | None], running: bool) -> str:
    what = "cpu quota" if limit == "cpu" else "memory limit"
    if wanted in _REFUSED[limit]:
        raise BadArgument(f"--mechanism {wanted} cannot enforce a {what}: {_REFUSED[limit][wanted]}")
    if wanted == "scope" and running:
        raise BadArgument("--mechanism scope holds only a command it starts (systemd-run); for a running pid "
                          "use cgroup, throttle or rlimit")
    if wanted == "auto":
        if can[f"cgroup-{limit}"] is None:
            return "cgroup"
        return "scope" if can["scope"] is None and not running else _FALLBACK[limit]
    key = f"cgroup-{limit}" if wanted == "cgroup" else wanted
    if can.get(key) is not None:
        raise BadArgument(f"--mechanism {wanted} is not available here: {can[key]}")
    return wanted


def mechanisms(spec: LimitSpec, chosen: dict[str, str],
               verdicts: dict[str, _cgroup.Controller] | None = None) -> list[Mechanism]:
    """The mechanisms that carry out ``chosen`` (from :func:`plan`), the per-process knobs last.

    Raises:
        BadArgument: ``--memory-high`` on a v1 memory cgroup (memory.high is cgroup v2 only).
    """
    found: list[Mechanism] = []
    in_cgroup = [limit for limit, name in chosen.items() if name == "cgroup"]
    if in_cgroup:
        verdicts = _verdicts() if verdicts is None else verdicts
        mine = {limit: verdicts[limit] for limit in in_cgroup}
        if spec.memory_high is not None and "memory" in mine and mine["memory"].hierarchy != "v2":
            raise BadArgument("--memory-high needs cgroup v2 (memory.high); this machine's memory cgroup is v1: "
                              "use --memory-max")
        found.append(CgroupMechanism(spec, mine))
    if "scope" in chosen.values():
        found.append(ScopeMechanism(spec, cpu=chosen.get("cpu") == "scope", memory=chosen.get("memory") == "scope"))
    if spec.cpu_quota is not None and chosen.get("cpu") == "throttle":
        found.append(ThrottleMechanism(spec.cpu_quota))
    if spec.cpu_quota is not None and chosen.get("cpu") == "cpulimit":
        found.append(CpulimitMechanism(spec.cpu_quota))
    memory_by_rlimit = chosen.get("memory") == "rlimit"
    if memory_by_rlimit or spec.rlimits or spec.nice is not None or spec.cpus is not None:
        found.append(RlimitMechanism(spec, memory=memory_by_rlimit))
    return found


def choose(spec: LimitSpec, running: bool = False) -> list[Mechanism]:
    """Check ``spec``, plan it for this machine and return its mechanisms (see :func:`plan`).

    Raises:
        BadArgument: a bad limit, or a mechanism that cannot enforce a limit asked of it.
    """
    spec.check()
    verdicts = _verdicts()
    return mechanisms(spec, plan(spec, running, available(verdicts)), verdicts)
