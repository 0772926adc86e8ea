"""Units on the real systemd user manager for the systemd scenarios: install, read back, remove.

The manager is the one ``systemctl --user`` reaches: labkit's own (``labkit systemd start``,
found through ``$LABKIT_SYSTEMD_MANAGER`` or ``$LABKIT_HOME``) or a login's. Unit files go in its
unit folder (:func:`labkit.systemd.real.unit_dir`); every unit a scenario installs is listed in
``ctx.data["units"]`` so that :func:`remove` stops, disables, reverts (``systemctl set-property``
drop-ins) and deletes exactly those, then
reloads the manager and clears their failed state (systemctl(1): ``reset-failed``).
Values come from ``systemctl --user show -p NAME``: what the manager loaded, not what the file
says (they differ until ``daemon-reload``, which ``NeedDaemonReload=yes`` reports).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from labkit.scenarios.base import Context, ScenarioError

_TIMEOUT_S = 30.0
_SPAN = re.compile(r"(\d+(?:\.\d+)?)(us|ms|min|s|h)")
_SPAN_S = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "min": 60.0, "h": 3600.0}


def unit_dir() -> Path:
    """The folder the user manager loads unit files from."""
    from labkit.systemd.real import unit_dir as real_unit_dir

    return real_unit_dir()


def systemctl(*args: str, timeout_s: float = _TIMEOUT_S) -> subprocess.CompletedProcess:
    """Run ``systemctl --user ARGS`` against the user manager; never raises for a failed command."""
    from labkit.systemd.manager import user_environment

    try:
        return subprocess.run(["systemctl", "--user", *args], capture_output=True, text=True, timeout=timeout_s,
                              env=user_environment(), stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as err:
        raise ScenarioError(f"systemctl --user {' '.join(args)} did not answer in {timeout_s:g} s") from err


def show(unit: str, *props: str) -> dict[str, str]:
    """``systemctl --user show -p P1,P2 UNIT`` as a dict (what the manager loaded)."""
    done = systemctl("show", "-p", ",".join(props), unit)
    if done.returncode != 0:
        raise ScenarioError(f"systemctl --user show {unit}: {done.stderr.strip() or done.returncode}")
    return dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)


def seconds(value: str) -> float | None:
    """A span as ``systemctl show`` prints it ("1min 30s", "500ms", "1.500000s") in seconds; None: infinity."""
    if value in ("infinity", "") or not _SPAN.search(value):
        return None
    return sum(float(n) * _SPAN_S[unit] for n, unit in _SPAN.findall(value))


def install(ctx: Context, name: str, text: str) -> Path:
    """Write unit ``name`` into the manager's unit folder and list it for :func:`remove`."""
    folder = unit_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    if path.exists() and name not in ctx.data.setdefault("units", []):
        raise ScenarioError(f"{path} exists already: it is not this scenario's to replace")
    units = ctx.data.setdefault("units", [])
    if name not in units:
        units.append(name)
    path.write_text(text)
    return path


def reload() -> None:
    """``systemctl --user daemon-reload``: the manager reads the unit files again."""
    done = systemctl("daemon-reload")
    if done.returncode != 0:
        raise ScenarioError(f"systemctl --user daemon-reload: {done.stderr.strip() or done.returncode}")


def remove(ctx: Context) -> None:
    """Stop, disable and delete every unit the scenario installed; reload; clear failed states."""
    units = list(ctx.data.get("units", []))
    if not units:
        return
    systemctl("stop", *units)
    systemctl("disable", *units)
    systemctl("revert", *units)  # drop-ins of `systemctl set-property` (user.control/), persistent and runtime
    folder = unit_dir()
    for name in units:
        for path in (folder / name, *folder.glob(f"*.wants/{name}"), *folder.glob(f"*.requires/{name}")):
            path.unlink(missing_ok=True)
        drop_ins = folder / f"{name}.d"
        if drop_ins.is_dir():  # `systemctl edit` writes override.conf here
            for path in drop_ins.iterdir():
                path.unlink()
            drop_ins.rmdir()
    systemctl("daemon-reload")
    systemctl("reset-failed", *units)


def loaded(unit: str) -> bool:
    """True while the manager knows ``unit`` (its file exists or it still runs)."""
    return show(unit, "LoadState").get("LoadState") not in ("not-found", None)
