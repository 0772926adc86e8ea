"""Run a ``.service`` unit with systemd's semantics, outside systemd.

The runner is what systemd's service manager does for one unit (systemd.service(5),
systemd.kill(5)), walked through the states of systemd's service.c: ExecStartPre=, ExecStart=
(Type=simple, exec, oneshot, forking), ExecStartPost=; then, after a clean end of the main
process or a stop request only, ExecStop=; the kill steps (KillSignal= to what KillMode=
selects, TimeoutStopSec=, FinalKillSignal= to the whole unit); ExecStopPost=; the final kill
steps for what is left; and the Restart= decision, rate-limited by StartLimitIntervalSec=/
StartLimitBurst= into the ``failed`` state. A run's result is its first failure, as in systemd.

A unit's processes are the runner's descendants: the runner is a child subreaper, so a
process that daemonises stays "in the unit" as it would stay in the unit's cgroup. That is
why :func:`main` runs in a process of its own (``labkit unit run``); Python code uses
:class:`UnitRun` or :func:`run_unit`, which start that process and read its events.

Every event is one JSON object (``event``: start, exit, restart, stopping, kill, failed,
stopped, plus ``limits`` and ``note``) with ``t`` (seconds since the run began) and ``unit``;
events and the service's output also go to a journal (``labkit unit logs NAME``).

How far it matches systemd: ``tests/test_systemd_differential.py`` runs some 70 small units
under the real systemd 252 user manager and under the runner, and compares the result, the
restarts, the main process's exit, which of ExecStartPre/ExecStartPost/ExecStop/ExecStopPost
ran and what each saw ($SERVICE_RESULT, $EXIT_CODE, $EXIT_STATUS, $MAINPID, cwd, argv, the
unit's variables), the processes left over and how long a stop took; they all match. Known
limits, where the runner does not (or cannot) do what systemd does:

- the environment beyond what the unit sets: systemd gives a service its manager's environment
  (``systemctl --user show-environment``) plus $INVOCATION_ID, $JOURNAL_STREAM, $MANAGERPID;
  the runner gives a fixed base (PATH, LANG, HOME, USER, LOGNAME, SHELL and labkit's variables);
- processes that KillMode=process or none leaves behind stay in the unit's cgroup under
  systemd; the runner has no cgroup to leave them in, so it kills them when it ends and says so
  (``labkit unit run --real`` does the same, to leave nothing behind);
- MemoryMax=, CPUQuota=, TasksMax= and the other cgroup settings are not applied (the
  ``limits`` event says so); User= applies only when the runner is root;
- Type=notify, notify-reload, dbus and idle run as Type=simple (no sd_notify(), no D-Bus);
  Type=forking guesses the main process (the one child left), without PIDFile=;
- timing: systemd's timers (RestartSec=, TimeoutStopSec=) fire up to ~0.25 s late (measured),
  the runner's within its 20 ms poll.
"""

from __future__ import annotations

import math
import os
import re
import resource
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from typing import Callable

import psutil

from labkit._linux import wait as _wait
from labkit._prctl import become_subreaper, set_parent_death_signal
from labkit.errors import BadArgument
from labkit.systemd.journal import Journal
from labkit.systemd.service import ServiceSpec
from labkit.systemd.unitfile import ExecCommand

CLEAN_SIGNALS = frozenset({signal.SIGHUP, signal.SIGINT, signal.SIGTERM, signal.SIGPIPE})
_POLL_S = 0.02
# which results restart under which Restart= (the table in systemd.service(5))
_RESTARTS_ON = {
    "success": {"always", "on-success"},
    "exit-code": {"always", "on-failure"},
    "signal": {"always", "on-failure", "on-abnormal", "on-abort"},
    "core-dump": {"always", "on-failure", "on-abnormal", "on-abort"},
    "timeout": {"always", "on-failure", "on-abnormal"},
    "watchdog": {"always", "on-failure", "on-abnormal", "on-watchdog"},
}
_EXEC_FAILURES = {FileNotFoundError: (203, "EXEC"), PermissionError: (203, "EXEC"),
                  NotADirectoryError: (200, "CHDIR")}  # systemd.exec(5), "Process exit codes"


@dataclass
class Outcome:
    """How one process ended: shell-style ``code``, the signal if one killed it, core dump."""

    code: int
    signal: int | None
    core_dumped: bool = False
    status_name: str | None = None  # systemd's name for its own exit codes: 203 is EXEC

    @classmethod
    def exec_failure(cls, code: int, name: str) -> "Outcome":
        return cls(code, None, False, name)

    @classmethod
    def from_status(cls, status: int) -> "Outcome":
        if os.WIFSIGNALED(status):
            sig = os.WTERMSIG(status)
            return cls(128 + sig, sig, os.WCOREDUMP(status))
        return cls(os.WEXITSTATUS(status), None)

    def describe(self) -> dict:
        if self.signal is not None:
            return {"code": self.code, "status": signal.Signals(self.signal).name, "core_dumped": self.core_dumped}
        return {"code": self.code, "status": self.status_name or self.code}


class Supervisor:
    """Runs one service in this process (which must be dedicated to it; see the module doc)."""

    def __init__(self, spec: ServiceSpec, journal: Journal, emit: Callable[[dict], None]) -> None:
        self.spec, self.journal, self._emit = spec, journal, emit
        self.started_at = time.monotonic()
        self.statuses: dict[int, Outcome] = {}
        self.stop_requested: str | None = None
        self.starts: list[float] = []
        self.readers: list[threading.Thread] = []
        self.phases: dict[int, str] = {}
        self.main: int | None = None
        self.main_outcome: Outcome | None = None
        self.control: int | None = None  # the control process (ExecStartPre=...) running, if any
        self.result = "success"  # the run's result: its first failure (service.c keeps the first)
        self._timed_out: str | None = None  # why the next kill step happens, when a timer ran out
        self._exec_failure = (203, "EXEC")
        self.env = spec.resolved_environment()

    # --- events -------------------------------------------------------------------------
    def emit(self, event: str, **fields) -> None:
        record = {"event": event, "t": round(time.monotonic() - self.started_at, 3), "unit": self.spec.name, **fields}
        self._emit(record)
        self.journal.event(record)

    def request_stop(self, reason: str) -> None:
        """Ask for a stop, like ``systemctl stop`` (safe to call from a signal handler)."""
        if self.stop_requested is None:
            self.stop_requested = reason

    # --- the run ------------------------------------------------------------------------
    def run(self) -> str:
        """Start the service and supervise it until it is inactive or failed; return that state."""
        for note in self.spec.notes:
            self.emit("note", message=note)
        self._report_limits()
        last: str | None = None
        while True:
            if self._start_limit_hit():
                # service_start() refuses the start; the result of the run before it stays, unless
                # that run succeeded (measured with systemd 252: a crash loop ends in 'exit-code')
                result = last if last not in (None, "success") else "start-limit-hit"
                self.emit("failed", result=result, message="Start request repeated too quickly: started "
                          f"{self.spec.start_limit_burst} times within {self.spec.start_limit_interval_s:g} s "
                          "(StartLimitBurst=, StartLimitIntervalSec=)")
                return "failed"
            result, outcome = self._one_cycle()
            last = result
            if self.stop_requested or not self._should_restart(result, outcome):
                return self._finish(result)
            self.emit("restart", after_s=self.spec.restart_sec, result=result, restart=self.spec.restart,
                      attempt=len(self.starts))
            if self._sleep(self.spec.restart_sec):
                return self._finish("success")

    def _finish(self, result: str) -> str:
        if result == "success":
            self.emit("stopped", result=result)
            return "inactive"
        self.emit("failed", result=result)
        return "failed"

    def _fail(self, result: str) -> None:
        """Record a failure; as in systemd, the first one of a run is its result."""
        if self.result == "success":
            self.result = result

    def _one_cycle(self) -> tuple[str, Outcome | None]:
        """ExecStartPre..ExecStopPost once, in the states of service.c; returns the run's result
        and the main process's outcome (None if it never ran)."""
        self.starts.append(time.monotonic())
        self.result, self.main, self.main_outcome = "success", None, None
        clean = self._start()
        if clean:
            self._run_commands("ExecStop", self.spec.timeout_stop_s)  # a clean end or a stop request only
        self._enter_signal(final=False)
        self._stop_post()
        self._enter_signal(final=True)
        return self.result, self.main_outcome

    def _start(self) -> bool:
        """ExecStartPre, ExecStart, ExecStartPost, then the run; True if it ended cleanly (or was
        asked to stop), so that ExecStop= runs; False after a failure."""
        if not self._run_commands("ExecStartPre", self.spec.timeout_start_s):
            return False
        if self.spec.type == "oneshot":
            return self._run_oneshot()
        command = self.spec.commands["ExecStart"][0]
        if self.spec.type == "forking":
            if not self._run_commands("ExecStart", self.spec.timeout_start_s):
                return False
            self.main = self._guess_main_pid()
        else:
            self.main = self._spawn("ExecStart", command)
            if self.main is None:
                self.main_outcome = Outcome.exec_failure(*self._exec_failure)
                self._fail("exit-code")  # Type=exec: the start fails; simple: it ran and died with 203
                return False
        if not self._run_commands("ExecStartPost", self.spec.timeout_start_s):
            return False
        return self._supervise_main(command)

    def _run_oneshot(self) -> bool:
        for command in self.spec.commands["ExecStart"]:
            self.main = self._spawn("ExecStart", command)
            if self.main is None:
                self.main_outcome = Outcome.exec_failure(*self._exec_failure)
                self._fail("exit-code")
                return False
            outcome = self._wait_control("ExecStart", self.main, self.spec.timeout_start_s)
            if outcome is None:
                if self.stop_requested:  # stopped while it ran: the kill steps end it, no failure
                    self.emit("stopping", reason=self.stop_requested, main_pid=None)
                else:
                    self._fail("timeout")
                return False
            self.main_outcome = outcome
            if not (self._is_clean(outcome) or command.ignore_failure):
                self._fail(self._result_of(outcome))
                return False
        if not self._run_commands("ExecStartPost", self.spec.timeout_start_s):
            return False
        if self.spec.remain_after_exit:
            self.emit("active", state="active (exited)", message="RemainAfterExit=yes: active until stopped")
            while not self.stop_requested:
                self._reap()
                time.sleep(_POLL_S)
        return True

    def _supervise_main(self, command: ExecCommand) -> bool:
        main = self.main
        while not self.stop_requested:
            self._reap()
            if main is not None and main in self.statuses:
                self.main_outcome = outcome = self.statuses[main]
                if not (self._is_clean(outcome) or command.ignore_failure):
                    self._fail(self._result_of(outcome))
                    return False
                return True
            if main is None and not self.unit_processes():
                return True  # no main process known (Type=forking): active while the unit has processes
            time.sleep(_POLL_S)
        self.emit("stopping", reason=self.stop_requested, main_pid=main if self._main_alive() else None)
        return True

    def _guess_main_pid(self) -> int | None:
        """Type=forking without PIDFile=: the one process of the unit whose parent is us (the
        daemon, reparented to its subreaper), as service_search_main_pid() guesses it."""
        me = os.getpid()
        candidates = []
        for pid in self.unit_processes():
            try:
                if psutil.Process(pid).ppid() == me:
                    candidates.append(pid)
            except psutil.Error:
                continue
        if len(candidates) == 1:
            self.phases[candidates[0]] = "ExecStart"
            self.emit("note", message=f"Type=forking: main PID guessed as {candidates[0]}")
            return candidates[0]
        return None

    # --- stopping -----------------------------------------------------------------------
    def _enter_signal(self, final: bool) -> None:
        """stop-sigterm and stop-sigkill (or final-sigterm and final-sigkill after ExecStopPost),
        as service_enter_signal() walks them: signal what KillMode= selects and wait until the
        main process is gone (or the unit is empty) for TimeoutStopSec=; where nothing was
        signalled, or on timeout, go on to FinalKillSignal= (SendSIGKILL=yes)."""
        for kill in (False, True):
            if kill and not self.spec.send_sigkill:
                return
            main_alive = self._main_alive()
            if not self._kill_context(kill, final):
                continue  # nothing to wait for: systemd moves on at once
            deadline = time.monotonic() + self.spec.timeout_stop_s
            if self._wait_stopped(main_alive, deadline):
                return
            self._fail("timeout")
            state = ("final" if final else "stop") + ("-sigkill" if kill else "-sigterm")
            if kill:
                self.emit("note", message=f"State '{state}' timed out: processes still around after "
                                          f"{self.spec.final_kill_signal.name}; ignoring")
                return
            if not self.spec.send_sigkill:
                self.emit("note", message=f"State '{state}' timed out. Skipping SIGKILL (SendSIGKILL=no).")
                return
            self._timed_out = f"State '{state}' timed out. Killing."

    def _kill_context(self, kill: bool, final: bool) -> bool:
        """Send the signal of this step to what KillMode= selects, as unit_kill_context();
        True if anything was signalled (there is something to wait for)."""
        mode = self.spec.kill_mode
        if mode == "none":
            return False
        sig = self.spec.final_kill_signal if kill else self.spec.kill_signal
        why = getattr(self, "_timed_out", None) or ("FinalKillSignal=" if kill else "KillSignal=")
        self._timed_out = None
        sent = []
        if self.control is not None and self._alive([self.control]):
            sent += self._signal([self.control], sig, why, quiet=True)
        if self.main is not None and self._main_alive():
            sent += self._signal([self.main], sig, why, quiet=True)
            if self.spec.send_sighup and not kill:
                self._signal([self.main], signal.SIGHUP, "SendSIGHUP=yes", quiet=True)
        if mode == "control-group" or (mode == "mixed" and kill):
            # cg_kill_recursive(): sweep again while the sweep finds processes it has not signalled
            # yet, so that a child forked while the signal went out gets it too
            done = set(sent)
            while True:
                fresh = [pid for pid in self.unit_processes() if pid not in done]
                if not fresh:
                    break
                sent += self._signal(fresh, sig, why, quiet=True)
                done.update(fresh)
        if sent:
            self.emit("kill", signal=signal.Signals(sig).name, pids=sent, reason=why)
        return bool(sent)

    def _wait_stopped(self, main_alive: bool, deadline: float) -> bool:
        """Until the main and control processes are gone (if the main one ran), or the unit has
        no process left."""
        def stopped() -> bool:
            control = self.control is not None and self._alive([self.control])
            if main_alive and not self._main_alive() and not control:
                return True
            return not self.unit_processes()

        return _wait.wait_for(stopped, deadline - time.monotonic(), max_interval_s=_POLL_S)

    def _stop_post(self) -> None:
        """ExecStopPost=, then (KillMode=none) wait TimeoutStopSec= for the main process."""
        deadline = time.monotonic() + self.spec.timeout_stop_s
        # systemd reaps on SIGCHLD at once; a process the kill steps ended but this poll loop has
        # not reaped yet would still answer `kill -0` in ExecStopPost (seen in CI under load)
        self._reap()
        self._run_commands("ExecStopPost", self.spec.timeout_stop_s)
        if self._main_alive():
            _wait.wait_for(lambda: not self._main_alive(), deadline - time.monotonic(), max_interval_s=_POLL_S)
            if self._main_alive():
                self._fail("timeout")
                self.emit("note", message="State 'stop-post' timed out. Terminating.")
        left = self.unit_processes()
        if left and self.spec.kill_mode in ("process", "none"):
            self.emit("note", message=f"KillMode={self.spec.kill_mode}: {len(left)} process(es) of the unit "
                                      f"remain running after it stopped: {left}")

    def _main_alive(self) -> bool:
        alive = self.main is not None and self.main not in self.statuses and bool(self._alive([self.main]))
        if self.main is not None and self.main in self.statuses:
            self.main_outcome = self.statuses[self.main]  # however it ended: on its own or by a kill step
        return alive

    def unit_processes(self) -> list[int]:
        """Live processes of the unit: the runner's descendants (it is their subreaper)."""
        self._reap()
        try:
            children = psutil.Process().children(recursive=True)
        except psutil.Error:
            return []
        return [c.pid for c in children if _alive(c)]

    def _signal(self, pids: list[int], sig: signal.Signals, why: str, quiet: bool = False) -> list[int]:
        sent = []
        for pid in pids:
            try:
                os.kill(pid, sig)
                sent.append(pid)
            except ProcessLookupError:
                pass
        if sent and not quiet:
            self.emit("kill", signal=signal.Signals(sig).name, pids=sent, reason=why)
        return sent

    def _alive(self, pids: list[int]) -> list[int]:
        self._reap()
        return [pid for pid in pids if pid not in self.statuses and _pid_alive(pid)]

    # --- processes ----------------------------------------------------------------------
    def _spawn(self, phase: str, command: ExecCommand, extra_env: dict | None = None) -> int | None:
        env = {**self.env, **(extra_env or {})}
        argv = _expand(command, env)
        cwd = self._cwd()
        try:
            if not os.path.isdir(cwd):  # systemd: status 200/CHDIR
                raise NotADirectoryError(2, "WorkingDirectory= does not exist", cwd)
            proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, cwd=cwd, preexec_fn=self._preexec)
        except OSError as err:
            self._exec_failure = _EXEC_FAILURES.get(type(err), (203, "EXEC"))
            what = err.filename if isinstance(err, NotADirectoryError) else argv[0]
            self.emit("start", phase=phase, pid=None, command=argv)
            self.emit("exit", phase=phase, pid=None, code=self._exec_failure[0], status=self._exec_failure[1],
                      message=f"{what}: {err.strerror}")
            return None
        proc.returncode = 0  # we reap it ourselves (waitpid(-1)); Popen must never wait for it
        self.phases[proc.pid] = phase
        self.emit("start", phase=phase, pid=proc.pid, command=argv)
        reader = threading.Thread(target=self._copy_output, args=(proc.stdout, proc.pid), daemon=True)
        reader.start()
        self.readers.append(reader)
        return proc.pid

    def _run_commands(self, phase: str, timeout_s: float) -> bool:
        """Run a phase's control commands in order, as service_run_next_control() does; True if
        all succeeded. A failure (not ignored with '-') ends the list and becomes the result; a
        timeout (the phase's timer covers all its commands) is the result 'timeout' and leaves the
        command to the kill steps that follow, which signal it with the rest."""
        deadline = time.monotonic() + timeout_s
        for command in self.spec.commands[phase]:
            pid = self._spawn(phase, command, self._control_environment(phase))
            if pid is None:
                outcome: Outcome | None = Outcome.exec_failure(*self._exec_failure)
            else:
                outcome = self._wait_control(phase, pid, deadline - time.monotonic())
            if outcome is None:
                if self.stop_requested and phase.startswith("ExecStart"):
                    self.emit("stopping", reason=self.stop_requested, main_pid=self.main if self._main_alive() else None)
                else:
                    self._fail("timeout")
                    self.emit("note", message=f"{phase}= did not finish within its timeout "
                                              f"({'TimeoutStartSec=' if 'Start' in phase else 'TimeoutStopSec='})")
                return False
            if (outcome.code != 0 or outcome.signal is not None) and not command.ignore_failure:
                self._fail("exit-code" if outcome.signal is None else
                           "core-dump" if outcome.core_dumped else "signal")
                return False
        return True

    def _control_environment(self, phase: str) -> dict[str, str]:
        """What systemd adds for a control command: $MAINPID while the main process runs, and for
        ExecStop=/ExecStopPost= $SERVICE_RESULT, plus $EXIT_CODE/$EXIT_STATUS once the main
        process has ended (systemd.exec(5), "Environment Variables Set or Propagated by the
        Service Manager"; unset after a failed ExecStartPre=, measured with systemd 252)."""
        env = {"MAINPID": str(self.main)} if self._main_alive() else {}
        if phase in ("ExecStop", "ExecStopPost"):
            env.update(_result_environment(self.result, self.main_outcome))
        return env

    def _wait_control(self, phase: str, pid: int, timeout_s: float) -> Outcome | None:
        """Wait for a control process; None if it timed out, or a stop came during the start
        (it is then left to the stop's kill steps, as systemd leaves its control process)."""
        def settled() -> str | None:
            if pid in self.statuses:
                return "exited"
            if self.stop_requested and phase.startswith("ExecStart"):
                return "stop"
            self._reap()
            return "exited" if pid in self.statuses else None

        self.control = pid
        try:
            if _wait.wait_for(settled, timeout_s, max_interval_s=_POLL_S) != "exited":
                return None
            return self.statuses[pid]
        finally:
            if pid in self.statuses:
                self.control = None

    def _reap(self) -> None:
        for pid, status in _wait.reaped():
            outcome = Outcome.from_status(status)
            self.statuses[pid] = outcome
            self.emit("exit", phase=self.phases.get(pid, "adopted"), pid=pid, **outcome.describe())

    def _copy_output(self, stream, pid: int) -> None:
        with stream:
            for raw in stream:
                self.journal.output(pid, raw.decode(errors="replace").rstrip("\n"))

    def _cwd(self) -> str:
        """The user's home unless WorkingDirectory= says otherwise (systemd.exec(5): "the
        respective user's home directory if run as user"); a missing home, or a missing '-'
        directory, leaves the manager's own, '/' (measured with systemd 252)."""
        home = self.env.get("HOME") or "/"
        if self.spec.working_directory is None:  # the default home is optional ('!' and '-' in
            return home if os.path.isdir(home) else "/"  # `show -p WorkingDirectory`): measured
        path, required = self.spec.working_directory
        path = home if path == "~" else path
        if not os.path.isdir(path) and not required:
            return "/"
        return path

    def _preexec(self) -> None:  # in the child, before exec
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        os.setsid()  # no terminal: a service never has one
        if self.spec.nice is not None:
            os.setpriority(os.PRIO_PROCESS, 0, self.spec.nice)
        for name, (soft, hard) in self.spec.rlimits.items():
            resource.setrlimit(getattr(resource, name), (soft, hard))
        if self.spec.user and os.geteuid() == 0:
            import pwd

            account = pwd.getpwnam(self.spec.user)
            os.initgroups(account.pw_name, account.pw_gid)
            os.setgid(account.pw_gid)
            os.setuid(account.pw_uid)

    # --- decisions ----------------------------------------------------------------------
    def _is_clean(self, outcome: Outcome) -> bool:
        if outcome.signal is None:
            return outcome.code == 0 or outcome.code in self.spec.success_codes
        if outcome.signal in self.spec.success_signals:
            return True
        return self.spec.type != "oneshot" and outcome.signal in CLEAN_SIGNALS

    def _result_of(self, outcome: Outcome) -> str:
        if self._is_clean(outcome):
            return "success"
        if outcome.signal is None:
            return "exit-code"
        return "core-dump" if outcome.core_dumped else "signal"

    def _should_restart(self, result: str, outcome: Outcome | None) -> bool:
        if outcome is not None:
            code, sig = (outcome.code, None) if outcome.signal is None else (None, outcome.signal)
            if code in self.spec.prevent_codes or sig in self.spec.prevent_signals:
                return False
            if code in self.spec.force_codes or sig in self.spec.force_signals:
                return True
        return self.spec.restart in _RESTARTS_ON.get(result, set())

    def _start_limit_hit(self) -> bool:
        if self.spec.start_limit_interval_s <= 0 or self.spec.start_limit_burst <= 0:
            return False  # either one 0 disables rate limiting
        now = time.monotonic()
        recent = [t for t in self.starts if now - t < self.spec.start_limit_interval_s]
        return len(recent) >= self.spec.start_limit_burst

    def _sleep(self, seconds: float) -> bool:
        """Sleep, reaping; True if a stop was requested meanwhile."""
        def stop_requested() -> bool:
            self._reap()
            return bool(self.stop_requested)

        return _wait.wait_for(stop_requested, seconds, max_interval_s=_POLL_S)

    def _report_limits(self) -> None:
        applied = {}
        if self.spec.nice is not None:
            applied["Nice"] = "setpriority() in the service's processes"
        for name in self.spec.rlimits:
            applied[name] = "setrlimit() in the service's processes"
        for key in self.spec.cgroup_limits:
            applied[key] = _cgroup_mechanism(key, self.spec.cgroup_limits[key])
        if self.spec.user:
            applied["User"] = "setuid()" if os.geteuid() == 0 else "ignored: the runner is not root"
        if applied:
            self.emit("limits", applied=applied)

    def finish_output(self) -> None:
        for reader in self.readers:
            reader.join(timeout=1.0)


def _cgroup_mechanism(key: str, value: str) -> str:
    # The runner does not give the unit a cgroup of its own, so nothing enforces these here.
    return (f"not applied: {key}={value} needs the unit's own cgroup, which only systemd gives it; "
            "run the command under `labkit limit` (lesson 04) or the unit with --real")


def _result_environment(result: str, outcome: Outcome | None) -> dict[str, str]:
    env = {"SERVICE_RESULT": result}
    if outcome is not None:
        if outcome.signal is None:
            env.update(EXIT_CODE="exited", EXIT_STATUS=str(outcome.code))
        else:
            env.update(EXIT_CODE="dumped" if outcome.core_dumped else "killed",
                       EXIT_STATUS=signal.Signals(outcome.signal).name.removeprefix("SIG"))
    return env


def _expand(command: ExecCommand, env: dict[str, str]) -> list[str]:
    """Variables in an Exec line as replace_env_argv() expands them (systemd.service(5),
    "Command lines"): a word that is exactly ``$NAME`` becomes the value split at whitespace
    (no word if unset; a word like ``$B$C`` names the variable ``B$C`` and so vanishes);
    inside any other word ``${NAME}`` is replaced (by '' if unset) and ``$$`` is ``$``.
    Specifiers were resolved when the unit was read (:meth:`ServiceSpec.specifiers`).
    The ``:`` prefix turns all of this off."""
    if command.no_env_expansion:
        return list(command.argv)
    expanded: list[str] = [command.argv[0]]
    for word in command.argv[1:]:
        if word.startswith("$") and word[1:2] not in ("{", "$"):
            expanded.extend(env[word[1:]].split() if word[1:] in env else [])
            continue
        expanded.append(_replace_env(word, env))
    return expanded


def _replace_env(word: str, env: dict[str, str]) -> str:
    out, index = [], 0
    while index < len(word):
        if word.startswith("$$", index):
            out.append("$")
            index += 2
            continue
        match = re.match(r"\$\{([^}]*)\}", word[index:])
        if match:
            out.append(env.get(match.group(1), ""))
            index += match.end()
            continue
        out.append(word[index])
        index += 1
    return "".join(out)


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _pid_alive(pid: int) -> bool:
    try:
        return _alive(psutil.Process(pid))
    except psutil.Error:
        return False


def supervise(spec: ServiceSpec, journal: Journal, emit: Callable[[dict], None],
              stop_after_s: float | None = None, run_for_s: float | None = None) -> str:
    """Run ``spec`` in this process until inactive/failed (or the time limits); return the final state.

    SIGTERM, SIGINT and SIGHUP to this process request a stop, as ``systemctl stop`` would.
    """
    become_subreaper()
    set_parent_death_signal(signal.SIGTERM)
    supervisor = Supervisor(spec, journal, emit)
    for sig, reason in ((signal.SIGTERM, "stop requested, as by systemctl stop"), (signal.SIGINT, "Ctrl-C"),
                        (signal.SIGHUP, "SIGHUP to the runner")):
        signal.signal(sig, lambda *_, why=reason: supervisor.request_stop(why))
    timers = []
    for seconds, reason in ((stop_after_s, f"--stop-after {stop_after_s}"), (run_for_s, f"--for {run_for_s}")):
        if seconds is not None:
            timer = threading.Timer(seconds, supervisor.request_stop, args=(reason,))
            timer.daemon = True
            timer.start()
            timers.append(timer)
    try:
        return supervisor.run()
    finally:
        for timer in timers:
            timer.cancel()
        _end_leftovers(supervisor)
        supervisor.finish_output()


def _end_leftovers(supervisor: Supervisor) -> None:
    """Processes a KillMode=process/none stop left running die with the runner, said out loud."""
    left = supervisor.unit_processes()
    if left:
        supervisor.emit("kill", signal="SIGKILL", pids=left,
                        reason="the runner is ending; systemd would leave these in the unit's cgroup")
        # rounds: a child one of them forks meanwhile is found by the next listing and killed too
        _wait.kill_until_empty(supervisor.unit_processes, 5.0)


def check_options(stop_after_s: float | None, run_for_s: float | None) -> None:
    """Refuse negative or NaN durations."""
    for name, value in (("--stop-after", stop_after_s), ("--for", run_for_s)):
        if value is not None and not 0 <= value < math.inf:
            raise BadArgument(f"{name} must be a number of seconds >= 0, got {value}")


