"""Run a unit on the real systemd user manager and report it in the runner's events.

``labkit unit run --real FILE`` copies the unit file into the user manager's unit folder
(``Manager.unit_dir`` for labkit's own manager, else ``$XDG_CONFIG_HOME/systemd/user``) under
its own name, so every ``Exec*=`` line runs and every ``[Unit]``/``[Service]`` setting applies
exactly as systemd reads them (specifiers such as ``%n`` included), and starts it with
``systemctl --user start``. A small target (``labkit-keep-NAME.target``, with ``After=NAME``)
holds a reference to the unit while it runs: a unit that ends cleanly is otherwise
garbage-collected at once and ``systemctl show`` then returns defaults (measured, systemd 252).

The run is watched with ``systemctl --user show`` (every ~40 ms while things change) and the
unit's journal (``journalctl --user-unit NAME -o json --follow``), and turned into the
runner's events: ``start``/``exit`` for each process of each phase (pid, code, status, with
``t`` taken from systemd's own timestamps), ``restart`` (attempt = ``NRestarts``, result),
``stopping``, ``kill`` (where the journal says systemd sent a signal, e.g. "State
'stop-sigterm' timed out. Killing.", or where the unit was seen in ``stop-sigterm``), and a
final ``failed``/``stopped`` carrying systemd's ``Result``, ``NRestarts`` and the main
process's ``ExecMainCode``/``ExecMainStatus``. Every event has ``"real": true``.

Known limits: systemd keeps only the last run of each command in ``show``; a run that begins
and ends between two polls and is followed by another run of the same command (a fast crash
loop) appears only in the ``restart`` count and the journal. ``kill`` events for SIGKILL come
from the journal, which is only there when the manager logs to journald.

Afterwards the copy and the target are removed and the unit is ``reset-failed``; processes that
``KillMode=process``/``none`` left in the unit's cgroup are killed (said in a ``kill`` event).
"""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import signal
import subprocess
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from labkit import _linux
from labkit._linux import wait as _wait
from labkit.errors import BadArgument, LabkitError, ToolMissing
from labkit.systemd.manager import cgroup2_mount, user_environment
from labkit.systemd.manager import find as find_manager
from labkit.systemd.unitfile import UnitFile, split_words

PHASES = ("ExecStartPre", "ExecStart", "ExecStartPost", "ExecStop", "ExecStopPost")
_STATE = ("ActiveState", "SubState", "Result", "MainPID", "ControlPID", "NRestarts", "Job", "ExecMainCode",
          "ExecMainStatus", "ExecMainPID", "ExecMainStartTimestampMonotonic", "ExecMainExitTimestampMonotonic", "InactiveEnterTimestampMonotonic", "InactiveExitTimestampMonotonic",
          "ControlGroup", "KillSignal", "LoadState")
_FAST_S, _SLOW_S, _CALM_S = 0.04, 0.15, 2.0  # poll fast for 2 s after any change, then slower
# a record ends with its pid, code and status fields: anchor there, not at the first " }" (argv may hold one)
_RECORD = re.compile(r"\{ (path=.*? ; pid=\S+ ; code=\S+ ; status=\S+) \}")
# systemd's own exit codes (systemd.exec(5), "Process exit codes"), named as the runner names them
_EXEC_NAMES = {200: "CHDIR", 201: "NICE", 202: "FDS", 203: "EXEC", 204: "MEMORY", 205: "LIMITS", 209: "STDOUT",
               210: "CHROOT", 214: "SETSCHEDULER", 216: "GROUP", 217: "USER", 218: "CAPABILITIES", 219: "CGROUP",
               220: "SETSID", 226: "NAMESPACE", 227: "NO_NEW_PRIVILEGES", 243: "CREDENTIALS"}
_STOP_STATES = {"stop-sigterm": "KillSignal=", "final-sigterm": "KillSignal= to what is left after ExecStopPost",
                "stop-sigkill": "FinalKillSignal=", "final-sigkill": "FinalKillSignal= to what is left"}


def why_unavailable() -> str | None:
    """None if a systemd user manager answers here, else why not (one line)."""
    for tool in ("systemctl", "journalctl"):
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


def unit_dir() -> Path:
    """The folder the user manager loads unit files from (labkit's manager's, else the user's own)."""
    from labkit.systemd import manager

    found = manager.find()
    if found is not None:
        return found.unit_dir
    config = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config) / "systemd" / "user"


def keeper_name(unit_name: str) -> str:
    """The target that keeps ``unit_name`` loaded while labkit reads its result."""
    return "labkit-keep-" + re.sub(r"[^A-Za-z0-9_.:-]", "_", unit_name) + ".target"


def run_real(unit: UnitFile, emit: Callable[[dict], None], stop_after_s: float | None = None,
             stop_requested: Callable[[], bool] = lambda: False) -> str:
    """Run ``unit`` on the user manager until it is inactive or failed; return that state.

    ``emit`` gets each event as a dict (``event``, ``t`` in seconds since the start, ``unit``,
    ``real``: True, and the event's fields). ``stop_after_s`` (seconds) or ``stop_requested()``
    becoming true stop the unit with ``systemctl --user stop``.

    Raises:
        ToolMissing: no user manager answers here (the reason says why).
        BadArgument: systemd refuses the unit (its own words), or the unit folder already holds
            another file of that name, or a unit of that name is active on the manager.
    """
    reason = why_unavailable()
    if reason:
        raise ToolMissing("systemd --user", reason)
    return RealRun(unit, emit).run(stop_after_s, stop_requested)


class RealRun:
    """One run of a unit on the user manager (see the module doc)."""

    def __init__(self, unit: UnitFile, emit: Callable[[dict], None]) -> None:
        self.unit, self._emit = unit, emit
        self.name = unit.name
        self.env = user_environment()
        found = find_manager()
        # journald's view of the manager's cgroup: the path below the hierarchy's mount point
        self.manager_cgroup = "/" + Path(found.cgroups[0]).relative_to(cgroup2_mount() or "/").as_posix() \
            if found is not None and found.cgroups and cgroup2_mount() else ""
        self.folder = unit_dir()
        self.installed: list[Path] = []
        self.started = time.monotonic()
        self.wall_offset = time.time() - time.monotonic()  # systemd's realtime stamps -> monotonic
        self.seen_start: set[tuple] = set()
        self.seen_exit: set[tuple] = set()
        self.restarts = 0
        self.kill_states: set[tuple[str | None, str]] = set()  # (InactiveExitTimestampMonotonic, SubState)
        self.journal: queue.Queue = queue.Queue()
        self.manager_logs = False  # True once the manager's own lines reach the journal
        self.last_line_at = 0.0  # when the latest line of the manager's about this unit was logged
        self.results: list[str] = []  # UNIT_RESULT of each run the journal reported
        self._follower: subprocess.Popen | None = None
        self._pending_kill: dict | None = None
        self._pending_reason: str | None = None  # "State 'stop-sigterm' timed out. Killing." before its kills
        self._latest = 0.0  # the latest moment an event was placed at
        self._silent_since = 0.0  # since when `systemctl show` has failed (0: it answers)
        self._finished_cleanly = False  # the unit ended and its result was read: nothing to stop

    # --- events ------------------------------------------------------------------------------
    def emit(self, event: str, at: float | None = None, **fields) -> None:
        moment = time.monotonic() if at is None else at
        if event in ("failed", "stopped"):
            moment = max(moment, self._latest)  # the final event comes last, as in the runner
        self._latest = max(self._latest, moment)
        self._emit({"event": event, "t": round(max(moment - self.started, 0.0), 3), "unit": self.name, "real": True,
                    **fields})

    # --- the run -----------------------------------------------------------------------------
    def run(self, stop_after_s: float | None, stop_requested: Callable[[], bool]) -> str:
        try:
            self._install()
            self._follow_journal()
            self._systemctl("start", "--no-block", keeper_name(self.name))
            self.started = time.monotonic()
            self.wall_offset = time.time() - time.monotonic()
            self._systemctl("start", "--no-block", self.name, check=True)
            return self._watch(stop_after_s, stop_requested)
        finally:
            self._clean_up()

    def _install(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        target = self.folder / self.name
        source = self.unit.path
        before = self._show(("LoadState", "ActiveState", "FragmentPath"))  # before changing anything
        if before.get("ActiveState") not in ("inactive", "failed", None, ""):
            raise BadArgument(f"{self.name} is {before['ActiveState']} on the user manager already: "
                              f"`systemctl --user stop {self.name}` first")
        fragment = before.get("FragmentPath", "")
        if fragment and fragment != str(target) and not (source and os.path.exists(fragment)
                                                         and os.path.samefile(fragment, source)):
            raise BadArgument(f"a unit named {self.name} is installed at {fragment}: a copy in {self.folder} "
                              "would shadow it; rename your file")
        if target.exists() or target.is_symlink():
            if source is None or not target.exists() or not os.path.samefile(target, source):
                raise BadArgument(f"{target} exists already and is not {source or 'this unit'}: remove it, "
                                  f"or run that file (`labkit unit run --real {target}`)")
        else:
            text = source.read_text(errors="replace") if source else self.unit.render()
            target.write_text(text)
            self.installed.append(target)
        keeper = self.folder / keeper_name(self.name)
        keeper.write_text(f"[Unit]\nDescription=Keeps {self.name} loaded until labkit has read its result\n"
                          f"After={self.name}\n")
        self.installed.append(keeper)
        state = self._show(("LoadState", "ActiveState", "NeedDaemonReload", "FragmentPath", "LoadError"))
        if state.get("NeedDaemonReload") == "yes" or state.get("FragmentPath") not in (str(target), ""):
            self._systemctl("daemon-reload")
            state = self._show(("LoadState", "ActiveState", "LoadError"))
        if state.get("ActiveState") not in ("inactive", "failed", None):
            raise BadArgument(f"{self.name} is {state['ActiveState']} on the user manager already: "
                              f"`systemctl --user stop {self.name}` first")
        if state.get("ActiveState") == "failed":
            self._systemctl("reset-failed", self.name)
        if state.get("LoadState") != "loaded":
            raise BadArgument(f"systemd refuses {self.name}: {self._refusal(state)}")

    def _refusal(self, state: dict[str, str]) -> str:
        """systemd's own words for why the unit did not load: ``systemd-analyze verify``'s lines
        about the file (the manager logs the same ones), else the journal's, else LoadError."""
        installed, shown = str(self.folder / self.name), str(self.unit.path or self.name)
        words: list[str] = []
        if shutil.which("systemd-analyze"):
            try:
                done = subprocess.run(["systemd-analyze", "--user", "verify", installed], capture_output=True,
                                      text=True, env=self.env, timeout=30)
                said = (done.stderr + done.stdout).splitlines()
            except (OSError, subprocess.TimeoutExpired):
                said = []
            words = [line.replace(installed, shown) for line in said
                     if line.startswith((installed + ":", self.name + ": "))]
        def journal_said() -> bool:
            done = subprocess.run(["journalctl", "--user-unit", self.name, "-o", "json", "-p", "notice",
                                   "--since", f"@{time.time() - 5:.6f}"], capture_output=True, text=True,
                                  env=self.env, timeout=10)
            for line in done.stdout.splitlines():
                try:
                    message = json.loads(line).get("MESSAGE")
                except ValueError:
                    continue
                if isinstance(message, str) and message.replace(installed, shown) not in words:
                    words.append(message.replace(installed, shown))
            return bool(words)

        if not words:  # journald may lag the manager: ask again every 0.1 s for 1.5 s
            _wait.wait_for(journal_said, 1.5, first_interval_s=0.1, max_interval_s=0.1)
        if words:
            return "; ".join(dict.fromkeys(words))
        load_error = state.get("LoadError", "")
        quoted = re.search(r'"(.*)"', load_error)
        return quoted.group(1) if quoted else (load_error or f"LoadState={state.get('LoadState')}")

    def _watch(self, stop_after_s: float | None, stop_requested: Callable[[], bool]) -> str:
        stopping = False
        last_change = time.monotonic()
        previous: dict[str, str] = {}
        while True:
            state = self._show(_STATE + PHASES)
            self._read_journal()  # first: the results of runs that ended, for the restart events
            changed = self._report(state, previous)
            if changed:
                last_change = time.monotonic()
            previous = state
            if self._finished(state):
                return self._finish(state)
            wants_stop = stop_requested() or (stop_after_s is not None and time.monotonic() - self.started >= stop_after_s)
            if wants_stop and not stopping:
                stopping = True
                main = int(state.get("MainPID") or 0) or None
                self.emit("stopping", reason="stop requested, as by systemctl stop", main_pid=main)
                self._systemctl("stop", "--no-block", self.name)
                last_change = time.monotonic()
            calm = time.monotonic() - last_change > _CALM_S
            time.sleep(_SLOW_S if calm else _FAST_S)

    @staticmethod
    def _finished(state: dict[str, str]) -> bool:
        return (bool(state) and state.get("ActiveState") in ("inactive", "failed") and not state.get("Job")
                and state.get("SubState") != "auto-restart")

    def _finish(self, state: dict[str, str]) -> str:
        state = self._show(_STATE + PHASES + ("InactiveEnterTimestamp",))  # the last word on every run
        self._report(state, state)
        self._drain_journal(state)
        result = state.get("Result") or "success"
        at = _monotonic_us(state.get("InactiveEnterTimestampMonotonic"))
        summary = {"result": result, "n_restarts": int(state.get("NRestarts") or 0),
                   "exec_main_code": _CODE_NAMES.get(state.get("ExecMainCode", ""), state.get("ExecMainCode")),
                   "exec_main_status": int(state.get("ExecMainStatus") or 0)}
        final = "failed" if state.get("ActiveState") == "failed" else "stopped"
        self._finished_cleanly = True
        self.emit(final, at=at, **summary)
        left = self._leftovers(state)
        if left:  # as the runner does when it ends: said after the unit's own end
            self.emit("kill", signal="SIGKILL", pids=left,
                      reason=f"labkit is ending the run; these remained in {self.name}'s cgroup after it "
                             "stopped (KillMode=process or none leaves them there)")
            self._systemctl("kill", "--signal=SIGKILL", self.name)
            for pid in left:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
        return "failed" if final == "failed" else "inactive"

    # --- what systemctl show says ------------------------------------------------------------
    def _report(self, state: dict[str, str], previous: dict[str, str]) -> bool:
        """Emit what changed between two readings of ``show``; True if anything did."""
        events: list[tuple[float, str, dict]] = []
        for phase in PHASES:
            commands = [_words(v.lstrip("@-:+!")) if v else [] for v in self.unit.get_list("Service", phase)]
            for index, record in enumerate(_records(state.get(phase, ""))):
                pid = int(record.get("pid") or 0)
                if not pid:
                    continue
                key = (phase, index, pid)
                command = commands[index] if index < len(commands) else record.get("argv[]", "").split()
                if key not in self.seen_start:
                    self.seen_start.add(key)
                    events.append((self._stamp(record.get("start_time")), "start",
                                   {"phase": phase, "pid": pid, "command": command}))
                code = record.get("code", "")
                if code not in ("", "(null)") and key not in self.seen_exit:
                    self.seen_exit.add(key)
                    events.append((self._stamp(record.get("stop_time")), "exit",
                                   {"phase": phase, "pid": pid, **_describe_exit(code, record.get("status", "0"))}))
        main = int(state.get("ExecMainPID") or 0)
        if main and not any(key[0] == "ExecStart" and key[2] == main for key in self.seen_start):
            # a main process systemd found itself (Type=forking guesses the daemon's pid)
            self.seen_start.add(("ExecStart", -1, main))
            events.append((_monotonic_us(state.get("ExecMainStartTimestampMonotonic")) or time.monotonic(), "start",
                           {"phase": "ExecStart", "pid": main, "command": []}))
        if main and ("ExecStart", -1, main) in self.seen_start and ("ExecStart", -1, main) not in self.seen_exit \
                and state.get("ExecMainCode") not in ("", "0", None):
            self.seen_exit.add(("ExecStart", -1, main))
            code = _CODE_NAMES.get(state["ExecMainCode"], "exited")
            status = state.get("ExecMainStatus", "0")
            if code != "exited":
                status = f"{status}/{_signal_name(status)[3:]}" if status.isdigit() else status
            events.append((_monotonic_us(state.get("ExecMainExitTimestampMonotonic")) or time.monotonic(), "exit",
                           {"phase": "ExecStart", "pid": main, **_describe_exit(code, status)}))
        sub = state.get("SubState", "")
        if sub in _STOP_STATES and (state.get("InactiveExitTimestampMonotonic"), sub) not in self.kill_states:
            self.kill_states.add((state.get("InactiveExitTimestampMonotonic"), sub))
            sig = "SIGKILL" if sub.endswith("sigkill") else _signal_name(state.get("KillSignal"))
            events.append((time.monotonic(), "kill", {"signal": sig, "pids": self._cgroup_pids(state),
                                                      "reason": f"{sub} ({_STOP_STATES[sub]})", "source": "state"}))
        attempts = int(state.get("NRestarts") or 0)
        if self.restarts < attempts:
            # the restart comes before the runs of the new cycle this reading shows
            starts = [at for at, event, _ in events if event == "start"]
            at = min(starts) - 1e-4 if starts else time.monotonic()
            if sub == "auto-restart" or previous.get("SubState") == "auto-restart":
                result = state.get("Result") if sub == "auto-restart" else previous.get("Result")
            else:  # the new run has begun and reset Result=: the journal, else the last reading, says
                result = self.results[-1] if self.results else previous.get("Result", "success")
            while self.restarts < attempts:
                self.restarts += 1
                events.append((at, "restart", {"attempt": self.restarts, "result": result}))
        for at, event, fields in sorted(events, key=lambda e: e[0]):
            self.emit(event, at=at, **fields)
        return bool(events) or any(state.get(k) != previous.get(k) for k in ("ActiveState", "SubState", "MainPID"))

    def _stamp(self, text: str | None) -> float:
        """A realtime stamp from show (``[Sun 2026-11-29 17:26:09.771567 UTC]``) as time.monotonic()."""
        match = re.search(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?) UTC", text or "")
        if not match:
            return time.monotonic()
        moment = datetime.fromisoformat(match.group(1)).replace(tzinfo=timezone.utc).timestamp()
        return moment - self.wall_offset

    def _cgroup_pids(self, state: dict[str, str]) -> list[int]:
        from labkit.systemd.manager import cgroup2_mount

        mount, group = cgroup2_mount(), state.get("ControlGroup", "")
        if mount is None or not group:
            return []
        try:
            text = (mount / group.lstrip("/") / "cgroup.procs").read_text()
        except OSError:
            return []
        return [int(pid) for pid in text.split()]

    def _leftovers(self, state: dict[str, str]) -> list[int]:
        pids = self._cgroup_pids(state)
        alive = []
        for pid in pids:
            try:
                if _linux.read_stat(pid).state != "Z":
                    alive.append(pid)
            except (OSError, IndexError, ValueError):
                pass
        return alive

    def _show(self, properties: tuple[str, ...]) -> dict[str, str]:
        """``systemctl --user show``; raises LabkitError once the manager has not answered for 10 s
        (stopped meanwhile, e.g. `labkit systemd stop` in another terminal)."""
        try:
            done = subprocess.run(["systemctl", "--user", "show", "--timestamp=us+utc", self.name,
                                   "-p", ",".join(properties)], capture_output=True, text=True, timeout=30,
                                  env=self.env)
        except subprocess.TimeoutExpired:
            done = None
        if done is None or done.returncode != 0:
            self._silent_since = self._silent_since or time.monotonic()
            if time.monotonic() - self._silent_since > 10:
                said = done.stderr.strip().splitlines()[-1:] if done is not None else ["no answer in 30 s"]
                raise LabkitError(f"the user manager stopped answering while {self.name} ran: "
                                  f"{said[0] if said else 'systemctl show failed'}")
            return {}
        self._silent_since = 0.0
        found: dict[str, str] = {}
        for line in done.stdout.splitlines():
            key, sep, value = line.partition("=")
            if not sep:
                continue
            found[key] = found[key] + "\n" + value if key in PHASES and key in found else value
        return found

    def _systemctl(self, *args: str, check: bool = False) -> subprocess.CompletedProcess:
        try:
            done = subprocess.run(["systemctl", "--user", *args], capture_output=True, text=True, timeout=60,
                                  env=self.env)
        except subprocess.TimeoutExpired as err:
            raise LabkitError(f"systemctl --user {' '.join(args)} did not answer in 60 s") from err
        if check and done.returncode != 0:
            said = done.stderr.strip().splitlines()
            raise LabkitError(f"systemctl --user {' '.join(args)}: {said[0] if said else done.returncode}")
        return done

    # --- what the journal says ---------------------------------------------------------------
    def _follow_journal(self) -> None:
        if shutil.which("journalctl") is None:
            return
        self._follower = subprocess.Popen(["journalctl", "--user-unit", self.name, "-o", "json", "--follow",
                                           "--since", f"@{time.time():.6f}"], stdin=subprocess.DEVNULL,
                                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=self.env)

        def read(stream) -> None:
            for line in stream:
                try:
                    self.journal.put(json.loads(line))
                except ValueError:
                    continue

        threading.Thread(target=read, args=(self._follower.stdout,), daemon=True).start()

    def _read_journal(self) -> None:
        while True:
            try:
                entry = self.journal.get_nowait()
            except queue.Empty:
                self._flush_kill()
                return
            self._journal_entry(entry)

    def _journal_entry(self, entry: dict) -> None:
        message = entry.get("MESSAGE")
        if not isinstance(message, str) or entry.get("USER_UNIT") != self.name:
            return  # the service's own output, or another unit's line
        if self.manager_cgroup and not str(entry.get("_SYSTEMD_CGROUP", "")).startswith(self.manager_cgroup):
            return  # a unit of the same name on another manager sharing this journald
        self.manager_logs = True
        at = int(entry.get("__REALTIME_TIMESTAMP", 0)) / 1e6 - self.wall_offset
        self.last_line_at = max(self.last_line_at, at)
        if entry.get("UNIT_RESULT"):
            self.results.append(entry["UNIT_RESULT"])
        timed_out = re.search(r"State '([a-z-]+)' timed out\. (\w[^.]*)\.", message)
        if timed_out:
            self._flush_kill()
            self._pending_reason = message.split(": ", 1)[-1]
            return
        killing = re.search(r"Killing process (\d+) \((.*)\) with signal SIG(\w+)\.", message)
        if killing:
            pid, sig = int(killing.group(1)), "SIG" + killing.group(3)
            reason = self._pending_reason or message.split(": ", 1)[-1]
            if self._pending_kill and self._pending_kill["signal"] == sig and self._pending_kill["reason"] == reason:
                self._pending_kill["pids"].append(pid)
            else:
                self._flush_kill()
                self._pending_kill = {"at": at, "signal": sig, "pids": [pid], "reason": reason}
            return
        self._flush_kill()
        self._pending_reason = None

    def _flush_kill(self) -> None:
        if self._pending_kill:
            kill, self._pending_kill = self._pending_kill, None
            self.emit("kill", at=kill.pop("at"), **kill, source="journal")

    def _drain_journal(self, state: dict[str, str]) -> None:
        """Read the journal up to the unit's last line (journald can lag ~1 s): a line stamped at
        or after the moment it became inactive. Only where the manager logs there at all."""
        end = self._stamp(state.get("InactiveEnterTimestamp"))
        def caught_up() -> bool:
            self._read_journal()
            return self.last_line_at >= end - 0.001

        if _wait.wait_for(caught_up, 1.5 if self.manager_logs else 0.5, first_interval_s=0.05, max_interval_s=0.05):
            time.sleep(0.05)  # the lines logged right after it
            self._read_journal()
        self._flush_kill()

    # --- the end -----------------------------------------------------------------------------
    def _clean_up(self) -> None:
        if self.installed and not self._finished_cleanly:  # an error or Ctrl-C mid-run: never leave it running
            try:
                self._systemctl("stop", self.name)
                self._systemctl("kill", "--signal=SIGKILL", self.name)
            except LabkitError:
                pass
        if self._follower is not None:
            self._follower.terminate()
            try:
                self._follower.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._follower.kill()
                self._follower.wait()
        if self.installed:
            for args in (("stop", keeper_name(self.name)), ("reset-failed", self.name)):
                try:
                    self._systemctl(*args)
                except LabkitError:
                    pass
        for path in self.installed:
            try:
                path.unlink()
            except OSError:
                pass


_CODE_NAMES = {"1": "exited", "2": "killed", "3": "dumped"}  # ExecMainCode is the CLD_* number


def _records(value: str) -> list[dict[str, str]]:
    """The ``{ path=... ; argv[]=... ; pid=... ; code=... ; status=... }`` records of an Exec* property."""
    records = []
    for text in _RECORD.findall(value or ""):
        fields: dict[str, str] = {}
        for part in text.split(" ; "):
            key, sep, val = part.partition("=")
            if sep:
                fields[key.strip()] = val.strip()
        records.append(fields)
    return records


def _words(value: str) -> list[str]:
    """The words of an Exec line; [] for one systemd skips for bad quoting (it logs and ignores it)."""
    try:
        return split_words(value)
    except BadArgument:
        return []


def _describe_exit(code: str, status: str) -> dict:
    """The runner's fields for a record's ``code=``/``status=``: exited 1 -> code 1; killed 15/TERM -> 143, SIGTERM."""
    number_text, _, name = status.partition("/")
    try:
        number = int(number_text)
    except ValueError:
        number = 0
    if code in ("killed", "dumped"):
        sig = "SIG" + name if name else _signal_name(str(number))
        return {"code": 128 + number, "status": sig, "core_dumped": code == "dumped"}
    return {"code": number, "status": _EXEC_NAMES.get(number, number)}


def _signal_name(value: str | None) -> str:
    """SIGTERM for "15"; real-time signals by number (SIGRTMIN+1 is 35 here, no Signals member)."""
    try:
        number = int(value or 15)
    except ValueError:
        return "SIGTERM"
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"SIGRTMIN+{number - signal.SIGRTMIN}" if signal.SIGRTMIN <= number <= signal.SIGRTMAX else f"SIG{number}"


def _monotonic_us(value: str | None) -> float | None:
    try:
        number = int(value or 0)
    except ValueError:
        return None
    return number / 1e6 if number else None
