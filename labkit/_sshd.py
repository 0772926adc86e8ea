"""A private sshd on 127.0.0.1, so a lesson can drop a real SSH connection.

The server listens on a free local port, accepts only the current user, and only with a
key pair made for it in a temporary folder; the machine's own sshd and its settings are
never used or touched. Where OpenSSH's server is not installed (or cannot run here),
:func:`why_unavailable` says why in one line.
"""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Callable, Protocol

from labkit._linux import wait as _wait
from labkit.errors import LabkitError, ToolMissing

_CONFIG = """\
ListenAddress 127.0.0.1
Port {port}
HostKey {folder}/host_key
PidFile {folder}/sshd.pid
AuthorizedKeysFile {folder}/authorized_keys
AllowUsers {user}
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
StrictModes no
UsePAM no
PrintMotd no
PrintLastLog no
"""


def _sshd_path() -> str | None:
    return shutil.which("sshd") or next((p for p in ("/usr/sbin/sshd", "/usr/local/sbin/sshd")
                                         if os.access(p, os.X_OK)), None)


_NO_SSHD = "OpenSSH's server (sshd) is not installed: apt install openssh-server"


def why_unavailable() -> str | None:
    """None if a private sshd can run here, else the reason (one line)."""
    if _sshd_path() is None:
        return _NO_SSHD
    for tool in ("ssh", "ssh-keygen"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed: apt install openssh-client"
    if os.geteuid() == 0 and not os.path.isdir("/run/sshd"):
        try:  # sshd running as root wants its privilege-separation folder
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        except OSError as err:
            return f"sshd needs /run/sshd, which cannot be created: {err.strerror}"
    return None


class ServerProcess(Protocol):
    """What the server's process must offer: a ``subprocess.Popen``, or anything that stops like one."""

    def poll(self) -> int | None: ...

    def wait(self, timeout: float | None = None) -> int: ...

    def terminate(self) -> None: ...

    def kill(self) -> None: ...


class LocalSshServer:
    """A running private sshd; :meth:`client_argv` logs in to it as this user."""

    def __init__(self, folder: Path, port: int, process: ServerProcess, scratch: tempfile.TemporaryDirectory) -> None:
        self.folder, self.port, self.process, self._scratch = folder, port, process, scratch
        self.user = getpass.getuser()

    @classmethod
    def start(cls, timeout_s: float = 10.0,
              launch: Callable[[list[str]], ServerProcess] | None = None) -> "LocalSshServer":
        """Make keys and a config in a temporary folder, start sshd, wait until it listens.

        ``launch`` starts the server's command (default: a plain child process); labkit's
        reaper uses it to adopt the orphans of every login.

        Raises:
            ToolMissing: sshd, ssh or ssh-keygen is missing (the reason says which).
            LabkitError: sshd refused its configuration or did not listen in time.
        """
        reason, sshd = why_unavailable(), _sshd_path()
        if reason or sshd is None:
            raise ToolMissing("sshd", reason or _NO_SSHD)
        scratch = tempfile.TemporaryDirectory(prefix="labkit-sshd-")
        folder = Path(scratch.name)
        try:
            for key in ("host_key", "client_key"):
                subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(folder / key)],
                               check=True, capture_output=True, timeout=30)
            (folder / "authorized_keys").write_text((folder / "client_key.pub").read_text())
            port = _free_port()
            config = folder / "sshd_config"
            config.write_text(_CONFIG.format(port=port, folder=folder, user=getpass.getuser()))
            command = [sshd, "-D", "-E", str(folder / "sshd.log"), "-f", str(config)]
            process = (launch or _plain_child)(command)
        except (OSError, subprocess.SubprocessError) as err:
            scratch.cleanup()
            raise LabkitError(f"could not prepare a private sshd: {err}") from err
        server = cls(folder, port, process, scratch)
        server._wait_listening(timeout_s)
        return server

    def client_argv(self, remote_command: str) -> list[str]:
        """``ssh -tt`` to this server as this user, running ``remote_command`` on a terminal."""
        return ["ssh", "-tt", "-F", "/dev/null", "-p", str(self.port), "-i", str(self.folder / "client_key"),
                "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
                "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
                f"{self.user}@127.0.0.1", remote_command]

    def log(self) -> str:
        """What sshd printed (its errors, with -e)."""
        try:
            return (self.folder / "sshd.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self) -> None:
        """Stop the server and remove its keys; sessions still open end with it."""
        from labkit.signals import terminate_child

        terminate_child(self.process)
        self._scratch.cleanup()

    def _wait_listening(self, timeout_s: float) -> None:
        def listening() -> str | None:
            if self.process.poll() is not None:
                return "exited"
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return "listening"
            except OSError:
                return None

        state = _wait.wait_for(listening, timeout_s, max_interval_s=0.05)
        if state == "listening":
            return
        if state == "exited":
            log = self.log().strip().splitlines()
            self.stop()
            raise LabkitError(f"sshd exited at once: {log[-1] if log else 'no message'}")
        self.stop()
        raise LabkitError(f"sshd did not listen on 127.0.0.1:{self.port} within {timeout_s:g} s")


def _plain_child(command: list[str]) -> subprocess.Popen:
    return subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
