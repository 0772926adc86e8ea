"""Run a unit under the real systemd user manager, reporting the runner's events.

Where ``systemctl --user`` reaches a manager (a desktop login, a server with lingering
enabled), ``labkit unit run --real FILE`` starts the unit's command as a transient unit
(``systemd-run --user``) with the unit's [Service] settings as properties, then watches
``systemctl --user show`` and turns what changes into the same events the runner emits
(start, exit, restart, stopping, failed, stopped). Elsewhere :func:`why_unavailable`
says why in one line.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import time
from typing import Callable

from labkit.errors import LabkitError, ToolMissing
from labkit.systemd.manager import user_environment
from labkit.systemd.unitfile import UnitFile

# [Service] keys systemd-run passes on as properties (-p KEY=VALUE); ExecStart is the command
SERVICE_PROPERTIES = ("Type", "Restart", "RestartSec", "KillMode", "KillSignal", "FinalKillSignal", "SendSIGKILL",
                      "TimeoutStopSec", "TimeoutStartSec", "SuccessExitStatus", "RestartPreventExitStatus",
                      "RestartForceExitStatus", "Environment", "EnvironmentFile", "WorkingDirectory", "Nice",
                      "LimitNOFILE", "LimitNPROC", "LimitAS", "LimitCORE", "MemoryMax", "MemoryHigh", "CPUQuota",
                      "CPUWeight", "TasksMax", "RemainAfterExit")
UNIT_PROPERTIES = ("StartLimitIntervalSec", "StartLimitBurst", "Description")
_SHOWN = "ActiveState,SubState,Result,MainPID,ExecMainStatus,ExecMainCode,NRestarts"
_POLL_S = 0.2


def why_unavailable() -> str | None:
    """None if a systemd user manager answers here, else why not (one line)."""
    for tool in ("systemctl", "systemd-run"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    try:
        done = subprocess.run(["systemctl", "--user", "show-environment"], capture_output=True, text=True, timeout=10,
                              env=user_environment())
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"systemctl --user did not answer: {err}"
    if done.returncode != 0:
        said = done.stderr.strip().splitlines()
        return f"no systemd user manager: `systemctl --user` says: {said[-1] if said else done.returncode}"[:300]
    return None


def systemd_run_argv(unit: UnitFile, transient_name: str) -> list[str]:
    """The ``systemd-run --user`` command that starts ``unit``'s service as ``transient_name``."""
    starts = unit.get_list("Service", "ExecStart")
    if len(starts) != 1:
        raise LabkitError(f"{unit.name}: --real runs units with exactly one ExecStart= line")
    argv = ["systemd-run", "--user", "--unit", transient_name, "--collect", "--quiet"]
    for key in SERVICE_PROPERTIES:
        for value in unit.get_list("Service", key):
            argv += ["-p", f"{key}={value}"]
    for key in UNIT_PROPERTIES:
        value = unit.get("Unit", key)
        if value:
            argv += ["-p", f"{key}={value}"]
    return argv + ["--", *shlex.split(starts[0].lstrip("-@:+!"))]


def run_real(unit: UnitFile, emit: Callable[..., None], stop_after: float | None = None,
             stop_requested: Callable[[], bool] = lambda: False) -> str:
    """Start ``unit`` under the user manager, report its changes until it ends; return the state.

    Raises:
        ToolMissing: no user manager here (the reason says why).
        LabkitError: systemd-run refused the unit.
    """
    reason = why_unavailable()
    if reason:
        raise ToolMissing("systemd --user", reason)
    name = "labkit-" + unit.name.removesuffix(".service").replace("@", "-") + ".service"
    done = subprocess.run(systemd_run_argv(unit, name), capture_output=True, text=True, timeout=30,
                          env=user_environment())
    if done.returncode != 0:
        raise LabkitError(f"systemd-run refused {unit.name}: {done.stderr.strip()}")
    started, last = time.monotonic(), {}
    stopping = False
    while True:
        state = _show(name)
        _report_changes(last, state, emit)
        last = state
        if state.get("ActiveState") in ("inactive", "failed", "") and last.get("SubState") != "auto-restart":
            if state.get("ActiveState") == "failed":
                emit("failed", result=state.get("Result"))
                return "failed"
            emit("stopped", result=state.get("Result") or "success")
            return "inactive"
        wants_stop = stop_requested() or (stop_after is not None and time.monotonic() - started >= stop_after)
        if wants_stop and not stopping:
            stopping = True
            emit("stopping", reason="systemctl --user stop", main_pid=int(state.get("MainPID") or 0) or None)
            subprocess.Popen(["systemctl", "--user", "stop", name], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, env=user_environment())
        time.sleep(_POLL_S)


def _show(name: str) -> dict[str, str]:
    done = subprocess.run(["systemctl", "--user", "show", name, "-p", _SHOWN], capture_output=True, text=True,
                          timeout=10, env=user_environment())
    return dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)


def _report_changes(before: dict, now: dict, emit: Callable[..., None]) -> None:
    pid_before, pid_now = before.get("MainPID", "0"), now.get("MainPID", "0")
    if pid_before not in ("", "0") and pid_now != pid_before:
        emit("exit", phase="ExecStart", pid=int(pid_before), code=int(now.get("ExecMainStatus") or 0),
             status=now.get("ExecMainCode"))
    if pid_now not in ("", "0") and pid_now != pid_before:
        emit("start", phase="ExecStart", pid=int(pid_now), command=[])
    if int(now.get("NRestarts") or 0) > int(before.get("NRestarts") or 0):
        emit("restart", attempt=int(now["NRestarts"]), result=now.get("Result"))
