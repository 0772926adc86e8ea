"""Run a ``.service`` unit with systemd's documented semantics, outside systemd.

The runner is what systemd's service manager does for one unit (systemd.service(5),
systemd.kill(5)): ExecStartPre/ExecStart/ExecStartPost, then on exit or on a stop request
ExecStop, the kill sequence (KillSignal= to the processes KillMode= selects, TimeoutStopSec=,
then FinalKillSignal=), ExecStopPost, and the Restart= decision, rate-limited by
StartLimitIntervalSec=/StartLimitBurst= into the ``failed`` state.

A unit's processes are the runner's descendants: the runner is a child subreaper, so a
process that daemonises stays "in the unit" as it would stay in the unit's cgroup. That is
why :func:`main` runs in a process of its own (``labkit unit run``); Python code uses
:class:`UnitRun` or :func:`run_unit`, which start that process and read its events.

Every event is one JSON object (``event``: start, exit, restart, stopping, kill, failed,
stopped, plus ``limits`` and ``note``) with ``t`` (seconds since the run began) and ``unit``;
events and the service's output also go to a journal (``labkit unit logs NAME``).
"""

from __future__ import annotations

import math
import os
import resource
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from typing import Callable

import psutil

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
        while True:
            if self._start_limit_hit():
                self.emit("failed", result="start-limit-hit",
                          message=f"started {self.spec.start_limit_burst} times within "
                                  f"{self.spec.start_limit_interval:g} s (StartLimitBurst=)")
                return "failed"
            result, outcome = self._one_cycle()
            if self.stop_requested:
                return self._finish(result)
            if not self._should_restart(result, outcome):
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

    def _one_cycle(self) -> tuple[str, Outcome | None]:
        """ExecStartPre..ExecStopPost once; returns the service result and the main process's outcome."""
        self.starts.append(time.monotonic())
        result, outcome = self._start()
        if result == "running":
            result, outcome = self._supervise_main()
        else:
            self._stop_sequence(main=None, exited=outcome)
        self._run_all("ExecStopPost", result=result, outcome=outcome)
        self._final_kill()
        return result, outcome

    def _final_kill(self) -> None:
        """After ExecStopPost: what is left of the unit gets KillMode='s final treatment."""
        left = self.unit_processes()
        if not left:
            return
        if self.spec.kill_mode in ("process", "none"):
            self.emit("note", message=f"KillMode={self.spec.kill_mode}: {len(left)} process(es) of the unit "
                                      f"left running: {left}")
            return
        if self.spec.kill_mode == "control-group":
            self._signal(left, self.spec.kill_signal, "processes left after the main one (final KillSignal=)")
            if self._wait_gone(left, time.monotonic() + self.spec.timeout_stop) or not self.spec.send_sigkill:
                return
        elif not self.spec.send_sigkill:
            return
        left = self._alive(left)
        self._signal(left, self.spec.final_kill_signal, "processes left after the main one (FinalKillSignal=)")
        self._wait_gone(left, time.monotonic() + self.spec.timeout_stop)  # systemd's final-sigkill waits as long

    def _start(self) -> tuple[str, Outcome | None]:
        for command in self.spec.commands["ExecStartPre"]:
            outcome = self._run_control("ExecStartPre", command, self.spec.timeout_start)
            if outcome is None:
                return "timeout", None
            if outcome.code != 0 and not command.ignore_failure:
                return self._result_of(outcome), outcome
        if self.spec.type == "oneshot":
            return self._run_oneshot()
        self.main = self._spawn("ExecStart", self.spec.commands["ExecStart"][0])
        if self.main is None:
            return self._exec_failed()
        for command in self.spec.commands["ExecStartPost"]:
            outcome = self._run_control("ExecStartPost", command, self.spec.timeout_start)
            if outcome is not None and outcome.code != 0 and not command.ignore_failure:
                self.request_stop("ExecStartPost failed")
        return "running", None

    def _exec_failed(self) -> tuple[str, Outcome]:
        outcome = Outcome.exec_failure(*self._exec_failure)
        if self.spec.type == "exec":
            return "exit-code", outcome  # Type=exec: the start itself fails
        return self._result_of(outcome), outcome  # Type=simple: started, then died with 203/EXEC

    def _run_oneshot(self) -> tuple[str, Outcome | None]:
        outcome = None
        for command in self.spec.commands["ExecStart"]:
            outcome = self._run_control("ExecStart", command, self.spec.timeout_start)
            if outcome is None:
                return "timeout", None
            if not self._is_clean(outcome) and not command.ignore_failure:
                return self._result_of(outcome), outcome
        for command in self.spec.commands["ExecStartPost"]:
            self._run_control("ExecStartPost", command, self.spec.timeout_start)
        if self.spec.remain_after_exit:
            self.emit("active", state="active (exited)", message="RemainAfterExit=yes: active until stopped")
            while not self.stop_requested:
                self._reap()
                time.sleep(_POLL_S)
        self._stop_sequence(main=None, exited=outcome)
        return "success", outcome

    def _supervise_main(self) -> tuple[str, Outcome | None]:
        main = self.main
        while main not in self.statuses and not self.stop_requested:
            self._reap()
            time.sleep(_POLL_S)
        if main in self.statuses:  # it ended on its own
            outcome = self.statuses[main]
            self._stop_sequence(main=None, exited=outcome)
            return self._result_of(outcome), outcome
        self.emit("stopping", reason=self.stop_requested, main_pid=main)
        timed_out = self._stop_sequence(main=main, exited=None)
        outcome = self.statuses.get(main)
        if timed_out:
            return "timeout", outcome
        return ("success" if outcome is None or self._is_clean(outcome) or outcome.signal == self.spec.kill_signal
                else self._result_of(outcome)), outcome

    # --- stopping -----------------------------------------------------------------------
    def _stop_sequence(self, main: int | None, exited: Outcome | None) -> bool:
        """ExecStop, then the kill sequence; True if it had to escalate after TimeoutStopSec."""
        extra = {"MAINPID": str(main)} if main else {}
        if exited is not None:
            extra.update(_result_environment(self._result_of(exited), exited))
        deadline = time.monotonic() + self.spec.timeout_stop
        for command in self.spec.commands["ExecStop"] if self.starts else []:
            self._run_control("ExecStop", command, max(deadline - time.monotonic(), 0), extra)
        targets = self._kill_targets(main)
        if not targets:
            return False
        self._signal(targets, self.spec.kill_signal, "KillSignal=")
        if self.spec.send_sighup:
            self._signal(targets, signal.SIGHUP, "SendSIGHUP=yes")
        if self._wait_gone(targets, deadline):
            return False
        if not self.spec.send_sigkill:
            self.emit("note", message=f"SendSIGKILL=no: {len(self._alive(targets))} process(es) left running")
            return True
        left = self.unit_processes() if self.spec.kill_mode == "mixed" else self._alive(targets)
        self._signal(left, self.spec.final_kill_signal, f"TimeoutStopSec={self.spec.timeout_stop:g}s elapsed")
        self._wait_gone(left, time.monotonic() + self.spec.timeout_stop)  # stop-sigkill: TimeoutStopSec= again
        return True

    def _kill_targets(self, main: int | None) -> list[int]:
        """The processes KillMode= sends KillSignal= to (all of the unit's, or the main one)."""
        everyone = self.unit_processes()
        if self.spec.kill_mode in ("process", "mixed", "none"):
            if self.spec.kill_mode == "none":
                return []
            return [main] if main and main in everyone else []
        return everyone

    def unit_processes(self) -> list[int]:
        """Live processes of the unit: the runner's descendants (it is their subreaper)."""
        self._reap()
        try:
            children = psutil.Process().children(recursive=True)
        except psutil.Error:
            return []
        return [c.pid for c in children if _alive(c)]

    def _signal(self, pids: list[int], sig: signal.Signals, why: str) -> None:
        sent = []
        for pid in pids:
            try:
                os.kill(pid, sig)
                sent.append(pid)
            except ProcessLookupError:
                pass
        if sent:
            self.emit("kill", signal=signal.Signals(sig).name, pids=sent, reason=why)

    def _alive(self, pids: list[int]) -> list[int]:
        self._reap()
        return [pid for pid in pids if pid not in self.statuses and _pid_alive(pid)]

    def _wait_gone(self, pids: list[int], deadline: float) -> bool:
        while self._alive(pids):
            if time.monotonic() >= deadline:
                return False
            time.sleep(_POLL_S)
        return True

    # --- processes ----------------------------------------------------------------------
    def _spawn(self, phase: str, command: ExecCommand, extra_env: dict | None = None) -> int | None:
        env = {**self.env, **(extra_env or {})}
        argv = _expand(command, env, self.spec.name)
        cwd = self._cwd()
        try:
            if cwd is not None and not os.path.isdir(cwd):  # systemd: status 200/CHDIR
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

    def _run_control(self, phase: str, command: ExecCommand, timeout_s: float,
                     extra_env: dict | None = None) -> Outcome | None:
        """Run a control command to its end; None if it timed out (it is then killed)."""
        pid = self._spawn(phase, command, extra_env)
        if pid is None:
            return Outcome.exec_failure(*self._exec_failure)
        deadline = time.monotonic() + timeout_s if math.isfinite(timeout_s) else math.inf
        while pid not in self.statuses:
            if self.stop_requested and phase.startswith("ExecStart"):
                deadline = min(deadline, time.monotonic())
            if time.monotonic() >= deadline:
                self._signal([pid], signal.SIGKILL, f"{phase} did not finish in time")
                self._wait_gone([pid], time.monotonic() + 5.0)
                return None
            self._reap()
            time.sleep(_POLL_S)
        return self.statuses[pid]

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            outcome = Outcome.from_status(status)
            self.statuses[pid] = outcome
            self.emit("exit", phase=self.phases.get(pid, "adopted"), pid=pid, **outcome.describe())

    def _copy_output(self, stream, pid: int) -> None:
        with stream:
            for raw in stream:
                self.journal.output(pid, raw.decode(errors="replace").rstrip("\n"))

    def _cwd(self) -> str | None:
        if self.spec.working_directory is None:
            return None
        path, required = self.spec.working_directory
        path = os.path.expanduser(path) if path != "~" else self.env.get("HOME", "/")
        if not os.path.isdir(path) and not required:
            return None
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
        if self.spec.start_limit_interval <= 0 or self.spec.start_limit_burst <= 0:
            return False  # either one 0 disables rate limiting
        now = time.monotonic()
        recent = [t for t in self.starts if now - t < self.spec.start_limit_interval]
        return len(recent) >= self.spec.start_limit_burst

    def _sleep(self, seconds: float) -> bool:
        """Sleep, reaping; True if a stop was requested meanwhile."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if self.stop_requested:
                return True
            self._reap()
            time.sleep(min(_POLL_S, max(end - time.monotonic(), 0)))
        return bool(self.stop_requested)

    def _run_all(self, phase: str, result: str, outcome: Outcome | None) -> None:
        extra = _result_environment(result, outcome)
        for command in self.spec.commands[phase]:
            self._run_control(phase, command, self.spec.timeout_stop, extra)

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


def _expand(command: ExecCommand, env: dict[str, str], unit_name: str) -> list[str]:
    """Specifiers (%n, %N, %p, %i, %h, %u, %t, %%) and $VAR / ${VAR} as systemd.service(5) does."""
    import re

    stem = unit_name.rsplit(".", 1)[0]
    prefix, _, instance = stem.partition("@")
    specifiers = {"n": unit_name, "N": stem, "p": prefix, "i": instance, "I": instance, "h": env.get("HOME", ""),
                  "u": env.get("USER", ""), "t": os.environ.get("XDG_RUNTIME_DIR", "/run"), "%": "%"}
    words = [re.sub(r"%(.)", lambda m: specifiers.get(m.group(1), m.group(0)), word) for word in command.argv]
    if command.no_env_expansion:
        return words
    expanded: list[str] = []
    for index, word in enumerate(words):
        whole = re.fullmatch(r"\$([A-Za-z_][A-Za-z0-9_]*)", word)
        if whole and index > 0:  # $VAR alone is split into words at whitespace
            expanded.extend(env.get(whole.group(1), "").split())
            continue
        expanded.append(re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", lambda m: env.get(m.group(1), ""), word))
    return expanded


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
              stop_after: float | None = None, run_for: float | None = None) -> str:
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
    for seconds, reason in ((stop_after, f"--stop-after {stop_after}"), (run_for, f"--for {run_for}")):
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
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 5
        while supervisor.unit_processes() and time.monotonic() < deadline:
            time.sleep(_POLL_S)


def check_options(stop_after: float | None, run_for: float | None) -> None:
    """Refuse negative or NaN durations."""
    for name, value in (("--stop-after", stop_after), ("--for", run_for)):
        if value is not None and not 0 <= value < math.inf:
            raise BadArgument(f"{name} must be a number of seconds >= 0, got {value}")


