"""tmux and screen sessions that hold a labkit job, on sockets of labkit's own.

A job started with ``--mode tmux`` runs in a tmux session on the private socket
``tmux -L labkit`` (``$LABKIT_TMUX_SOCKET`` overrides the name), so a learner's own
sessions are never listed, touched or killed. ``--mode screen`` uses screen's sessions
folder ``$LABKIT_HOME/screen`` (``SCREENDIR``) for the same reason. In both, the job's
output is on the session's terminal for whoever attaches, and is also copied to the
job's log by the multiplexer itself (``pipe-pane`` / ``-L -Logfile``).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

from labkit.errors import BadArgument, LabkitError, ToolMissing

TOOLS = ("tmux", "screen")
_INSTALL = {"tmux": "apt install tmux (or brew install tmux)", "screen": "apt install screen"}
_SCREENRC = "logfile flush 0\ndefscrollback 5000\nstartup_message off\n"  # flush 0: the log is live
_COMMAND_TIMEOUT_S = 10.0


def tmux_socket() -> str:
    """The name of labkit's private tmux socket (``tmux -L NAME``)."""
    return os.environ.get("LABKIT_TMUX_SOCKET") or "labkit"


@dataclass(frozen=True)
class Multiplexer:
    """One tmux or screen session, addressed on labkit's private socket."""

    tool: str
    socket: str  # tmux: the -L socket name; screen: the SCREENDIR folder
    session: str

    @classmethod
    def for_job(cls, tool: str, name: str, home: Path) -> "Multiplexer":
        """The session that will hold job ``name``.

        Raises:
            BadArgument: ``tool`` is neither tmux nor screen.
            ToolMissing: the tool is not installed.
        """
        if tool not in TOOLS:
            raise BadArgument(f"unknown terminal multiplexer {tool!r}; choose tmux or screen")
        if shutil.which(tool) is None:
            raise ToolMissing(tool, f"{_INSTALL[tool]}; or start the job with --mode setsid or nohup")
        if tool == "tmux":  # tmux turns '.' and ':' in session names into '_'; do it ourselves
            return cls("tmux", tmux_socket(), re.sub(r"[.:]", "_", name))
        return cls("screen", str(home / "screen"), name)

    @classmethod
    def from_record(cls, record: dict) -> "Multiplexer":
        """The session described by a job record's ``terminal`` entry."""
        return cls(record["tool"], record["socket"], record["session"])

    def as_record(self) -> dict:
        """What a job record stores to find this session again."""
        return asdict(self)

    def new_session_argv(self, program: list[str], log: Path, cwd: str) -> list[str]:
        """The command that starts a detached session running ``program``."""
        if self.tool == "tmux":
            # the window is large so a training log line is not wrapped in the log
            return [*self._base(), "new-session", "-d", "-s", self.session, "-x", "200", "-y", "50",
                    "-c", cwd, "--", *program]
        rc = Path(self.socket) / "screenrc"
        return ["screen", "-c", str(rc), "-S", self.session, "-d", "-m", "-L", "-Logfile", str(log), *program]

    def environment(self) -> dict[str, str]:
        """The environment the tool's commands need (screen finds its sessions via SCREENDIR)."""
        if self.tool == "tmux":
            return dict(os.environ)
        folder = Path(self.socket)
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(0o700)  # screen refuses a sessions folder others can read
        rc = folder / "screenrc"
        if not rc.exists() or rc.read_text() != _SCREENRC:
            rc.write_text(_SCREENRC)
        return {**os.environ, "SCREENDIR": str(folder)}

    def start(self, program: list[str], log: Path, cwd: str, timeout_s: float) -> None:
        """Start a detached session running ``program``.

        Raises:
            LabkitError: the tool refused (its message is included).
        """
        if self.exists():
            raise LabkitError(f"a {self.tool} session named {self.session!r} already exists; "
                              f"end it with: {self.kill_command()}")
        try:
            done = subprocess.run(self.new_session_argv(program, log, cwd), env=self.environment(),
                                  stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise LabkitError(f"{self.tool} did not start session {self.session!r} within {timeout_s:g} s") from None
        if done.returncode != 0:
            reason = (done.stderr or done.stdout).strip() or f"exit {done.returncode}"
            raise LabkitError(f"{self.tool} could not start session {self.session!r}: {reason}")

    def exists(self) -> bool:
        """True while the session exists."""
        if shutil.which(self.tool) is None:
            return False
        if self.tool == "tmux":
            return self._run("has-session", "-t", f"={self.session}").returncode == 0
        listing = self._run("-ls", self.session).stdout
        return re.search(rf"^\s*\d+\.{re.escape(self.session)}\s", listing, re.MULTILINE) is not None

    def kill(self) -> bool:
        """End the session (its programs get SIGHUP from the closed terminal); True if one was ended."""
        if not self.exists():
            return False
        if self.tool == "tmux":
            self._run("kill-session", "-t", f"={self.session}")
        else:
            self._run("-S", self.session, "-X", "quit")
        return True

    def capture(self, lines: int = 50) -> str:
        """The text the session's terminal shows now (tmux ``capture-pane``, screen ``hardcopy``)."""
        if self.tool == "tmux":
            done = self._run("capture-pane", "-p", "-J", "-S", f"-{lines}", "-t", f"={self.session}:")
            return done.stdout.rstrip("\n") + "\n" if done.returncode == 0 else ""
        copy = Path(self.socket) / f"hardcopy.{self.session}"
        if self._run("-S", self.session, "-X", "hardcopy", "-h", str(copy)).returncode != 0:
            return ""
        try:
            text = copy.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        finally:
            copy.unlink(missing_ok=True)
        return "\n".join(text.rstrip().splitlines()[-lines:]) + "\n"

    def attach_command(self) -> str:
        """The shell command that reattaches a terminal to this session."""
        if self.tool == "tmux":
            return f"tmux -L {shlex.quote(self.socket)} attach -t {shlex.quote(self.session)}"
        return f"SCREENDIR={shlex.quote(self.socket)} screen -r {shlex.quote(self.session)}"

    def kill_command(self) -> str:
        """The shell command that ends this session."""
        if self.tool == "tmux":
            return f"tmux -L {shlex.quote(self.socket)} kill-session -t {shlex.quote(self.session)}"
        return f"SCREENDIR={shlex.quote(self.socket)} screen -S {shlex.quote(self.session)} -X quit"

    def _base(self) -> list[str]:
        return ["tmux", "-L", self.socket]

    def _run(self, *args: str) -> subprocess.CompletedProcess:
        argv = [*self._base(), *args] if self.tool == "tmux" else ["screen", *args]
        try:
            return subprocess.run(argv, env=self.environment(), stdin=subprocess.DEVNULL,
                                  capture_output=True, text=True, timeout=_COMMAND_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            return subprocess.CompletedProcess(argv, 124, "", f"{self.tool} timed out")


def pipe_pane_to(log: Path) -> None:
    """From inside a tmux pane: copy everything the pane prints to ``log`` from now on."""
    pane = os.environ.get("TMUX_PANE")
    if not pane:
        return
    subprocess.run(["tmux", "pipe-pane", "-o", "-t", pane, f"exec cat >> {shlex.quote(str(log))}"],
                   stdin=subprocess.DEVNULL, capture_output=True, timeout=_COMMAND_TIMEOUT_S)
