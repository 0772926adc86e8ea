"""One start of the command under test: its own session, every process it makes tracked, and stopped.

Each run starts with ``setsid`` (``start_new_session=True``): it leads a new session and a new process
group whose ids are its pid (setsid(2)), so a signal to the group reaches every process that stayed in
it, as Ctrl-C does to a terminal's foreground group. A process can still leave the group (``setpgid``)
or the session (``setsid``: a daemonized worker), so the run also carries a tag in its environment,
which children inherit through fork and exec (environ(7)), and descendants are noted while it runs. A
process is counted as the run's if any of the three says so and it started after the run
(a group or session id cannot be reused while a member is alive, and a member cannot be older than
its leader: the rule :func:`labkit.signals.group_members` uses).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import psutil

TAG = "LABKIT_PREEMPT_TAG"
RUN_FOLDER = "LABKIT_PREEMPT_RUN"
_TRACK_EVERY_S = 0.1
_TOLERANCE_S = 0.05


class Run:
    """A started command. ``members()`` lists its live processes; ``kill_all()`` ends them all."""

    def __init__(self, command: list[str], tag: str, run_folder: Path, log: Path) -> None:
        env = dict(os.environ, **{TAG: tag, RUN_FOLDER: str(run_folder)})
        self.tag = tag
        self.command = list(command)
        self.log = log
        with open(log, "wb") as out:
            self.popen = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                          env=env, start_new_session=True)
        self.started = time.monotonic()
        self.pid = self.popen.pid
        try:
            self.create_time = psutil.Process(self.pid).create_time()
        except psutil.Error:
            self.create_time = time.time() - 1.0
        self._seen: dict[int, float] = {}
        self._tracked_at = 0.0

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def exited(self) -> bool:
        return self.popen.poll() is not None

    @property
    def exit_code(self) -> int | None:
        """As a shell reports it: 128 + n for a death by signal n."""
        code = self.popen.returncode
        return None if code is None else (128 - code if code < 0 else code)

    def track(self) -> None:
        """Note the live descendants of the main process (at most every 0.1 s)."""
        now = time.monotonic()
        if now - self._tracked_at < _TRACK_EVERY_S:
            return
        self._tracked_at = now
        try:
            for child in psutil.Process(self.pid).children(recursive=True):
                self._seen.setdefault(child.pid, child.create_time())
        except psutil.Error:
            pass

    def wait(self, until_s: float | None) -> bool:
        """Wait until the main process exits or ``until_s`` after its start (None: no limit); True if it exited."""
        while self.popen.poll() is None:
            if until_s is not None and self.elapsed() >= until_s:
                return False
            self.track()
            time.sleep(0.01)
        return True

    def members(self) -> list[psutil.Process]:
        """The run's live processes (zombies excluded): its group, its session, tracked descendants, tagged."""
        found: dict[int, psutil.Process] = {}
        for proc in psutil.process_iter():
            if proc.pid == os.getpid():
                continue
            try:
                if proc.create_time() + _TOLERANCE_S < self.create_time:
                    continue
                ours = os.getpgid(proc.pid) == self.pid or os.getsid(proc.pid) == self.pid
                ours = ours or (self._seen.get(proc.pid) == proc.create_time())
                ours = ours or proc.environ().get(TAG) == self.tag
                if ours and proc.status() != psutil.STATUS_ZOMBIE:
                    found[proc.pid] = proc
            except (OSError, psutil.Error):
                continue
        return list(found.values())

    def send_main(self, sig: int) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)

    def send_group(self, sig: int) -> None:
        """``kill -SIG -PGID``: every process still in the run's process group."""
        try:
            if self.popen.poll() is None or any(os.getpgid(p.pid) == self.pid for p in self.members()):
                os.killpg(self.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def send_all(self, sig: int) -> None:
        """``sig`` to the group and to every other process of the run (those that left the group too)."""
        self.send_group(sig)
        for proc in self.members():
            try:
                proc.send_signal(sig)
            except psutil.Error:
                pass

    def settle(self, within_s: float) -> list[psutil.Process]:
        """The run's processes still alive ``within_s`` after the main one exited (fewer if they all end)."""
        deadline = time.monotonic() + within_s
        while True:
            left = self.members()
            if not left or time.monotonic() >= deadline:
                return left
            time.sleep(0.05)

    def kill_all(self) -> None:
        """SIGKILL everything of the run, until nothing is left (a process may fork between list and kill)."""
        for _ in range(20):
            if self.popen.poll() is None:
                self.popen.kill()
            left = self.members()
            if not left and self.popen.poll() is not None:
                break
            for proc in left:
                try:
                    proc.kill()
                except psutil.Error:
                    pass
            _wait_gone(left, 1.0)
        try:
            self.popen.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass


def _wait_gone(procs: list[psutil.Process], timeout_s: float) -> None:
    """Wait until each process has exited (a zombie counts: an orphan's is reaped by its new parent, not us)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        alive = []
        for proc in procs:
            try:
                if proc.status() != psutil.STATUS_ZOMBIE:
                    alive.append(proc)
            except psutil.Error:
                pass
        if not alive:
            return
        procs = alive
        time.sleep(0.01)


def describe(procs: list[psutil.Process]) -> str:
    """``pid 123 (python -c ...)``, for a verdict's detail."""
    parts = []
    for proc in procs[:5]:
        try:
            parts.append(f"pid {proc.pid} ({' '.join(' '.join(proc.cmdline()).split())[:60]})")
        except psutil.Error:
            parts.append(f"pid {proc.pid}")
    more = f" and {len(procs) - 5} more" if len(procs) > 5 else ""
    return ", ".join(parts) + more


def signal_name(sig: int) -> str:
    return signal.Signals(sig).name
