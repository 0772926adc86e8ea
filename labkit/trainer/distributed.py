"""Data-parallel training over N rank processes on one machine, launched and stopped like torchrun.

``labkit train --ranks N`` makes this process a **launcher**: it starts N ranks
(``--rank 0..N-1``, the same arguments otherwise), forwards SIGTERM/SIGINT/SIGHUP to every
rank, and watches them. Each optimizer step, every rank computes the gradients of its share
of the micro-batches and the ranks **all-reduce** them through rank 0 (reduce, then broadcast
the sum, over an authenticated local socket), so every rank applies the same update. The
all-reduce also carries each rank's "please stop" flag: the ranks agree to stop after the same
step; rank 0 alone writes the checkpoint, a barrier waits until it is durable, and all exit 0.

If a rank dies (SIGKILL, a crash), its peers see the connection close, or get no answer
within ``--rank-timeout`` seconds (what NCCL's timeout does), and exit with an error; the
launcher names the rank, gives the others ``--grace-period`` seconds after SIGTERM, then
SIGKILLs them, and exits 1. Nothing waits forever.

Dropout noise is drawn per micro-batch from (seed, step, micro-batch), not from one stream, so
the result does not depend on which rank computed what: resuming from rank 0's checkpoint
gives the same weights as a run that was never stopped.
"""

from __future__ import annotations

import os
import secrets
import select
import signal
import subprocess
import sys
import time
from multiprocessing.connection import Client, Connection, Listener

import numpy as np

from labkit._linux import wait as _wait
from labkit.errors import LabkitError
from labkit.signals import explain_exit_code, shell_exit_code

ENV_ADDRESS = "LABKIT_DIST_ADDRESS"
ENV_KEY = "LABKIT_DIST_KEY"
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class RankLost(LabkitError):
    """A peer rank died or stopped answering; the job cannot continue."""


# --- the launcher ------------------------------------------------------------------------

def launch(config, argv: list[str]) -> int:
    """Start ``config.ranks`` ranks with ``argv``, forward stop signals, return the job's exit code."""
    from labkit.trainer.shutdown import take_early_signals

    log = _LauncherLog(config.run_dir)
    pending = list(take_early_signals())  # a stop that came while we were starting still counts
    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_write, False)
    signal.set_wakeup_fd(wake_write)  # any signal (a stop, SIGCHLD when a rank ends) wakes the loop at once
    for sig in FORWARDED:
        signal.signal(sig, lambda signum, frame: pending.append(signum))
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)
    address = "labkit-dist-" + secrets.token_hex(8)  # an abstract socket's name: no file to clean up
    env = {**os.environ, ENV_ADDRESS: address, ENV_KEY: secrets.token_hex(16)}
    ranks = [subprocess.Popen([sys.executable, "-m", "labkit.trainer", *argv, "--rank", str(rank)], env=env,
                              preexec_fn=_rank_preexec) for rank in range(config.ranks)]
    log.write(f"launcher: pid {os.getpid()} started {config.ranks} ranks: pids {[p.pid for p in ranks]}")
    while True:
        _forward(pending, ranks, log)
        codes = [p.poll() for p in ranks]
        failed = [r for r, code in enumerate(codes) if code not in (None, 0)]
        if failed:
            return _stop_after_failure(ranks, failed, codes, config.grace_s, log)
        if all(code == 0 for code in codes):
            log.write("launcher: every rank exited 0")
            return 0
        if select.select([wake_read], [], [], 0.5)[0]:
            os.read(wake_read, 512)


def _rank_preexec() -> None:  # in each rank before exec: it must die with the launcher
    from labkit._prctl import set_parent_death_signal

    for sig in FORWARDED:
        signal.signal(sig, signal.SIG_DFL)
    set_parent_death_signal(signal.SIGKILL)


def _forward(pending: list, ranks: list[subprocess.Popen], log: "_LauncherLog") -> None:
    while pending:
        sig = signal.Signals(pending.pop(0))
        alive = [p for p in ranks if p.poll() is None]
        for proc in alive:
            proc.send_signal(sig)
        log.write(f"launcher: forwarded {sig.name} to ranks {[ranks.index(p) for p in alive]}")


def _stop_after_failure(ranks, failed: list[int], codes: list, grace_s: float, log: "_LauncherLog") -> int:
    # the culprit: a rank killed by a signal if any, else the lowest failed rank
    culprit = next((r for r in failed if codes[r] < 0), failed[0])
    log.write(f"launcher: rank {culprit} (pid {ranks[culprit].pid}) failed: "
              f"{explain_exit_code(shell_exit_code(codes[culprit]))}; stopping the job")
    alive = [p for p in ranks if p.poll() is None]
    for proc in alive:
        proc.send_signal(signal.SIGTERM)
    _wait.wait_all_exited([p.pid for p in alive], grace_s)  # on pidfds: back as the last one exits
    stragglers = [ranks.index(p) for p in alive if p.poll() is None]
    for rank in stragglers:
        ranks[rank].kill()
    for proc in ranks:
        proc.wait()
    if stragglers:
        log.write(f"launcher: ranks {stragglers} ignored SIGTERM for {grace_s:g} s (--grace-period): SIGKILL")
    log.write(f"launcher: job failed because of rank {culprit}")
    return 1


class _LauncherLog:
    def __init__(self, run_dir) -> None:
        run_dir.mkdir(parents=True, exist_ok=True)
        self.path = run_dir / "launcher.log"

    def write(self, message: str) -> None:
        line = f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {message}"
        print(line, file=sys.stderr, flush=True)
        with open(self.path, "a") as handle:
            handle.write(line + "\n")


# --- the ranks' communication ----------------------------------------------------------

class Group:
    """The ranks' connections: rank 0 holds one per peer, a peer one to rank 0."""

    def __init__(self, rank: int, world: int, timeout_s: float) -> None:
        self.rank, self.world, self.timeout_s = rank, world, timeout_s
        address, key = os.environ.get(ENV_ADDRESS), os.environ.get(ENV_KEY)
        if not address or not key:
            raise LabkitError("--rank is set by the launcher; start a distributed run with --ranks N")
        self.peers: dict[int, Connection] = {}
        self._listener: Listener | None = None
        address = "\0" + address  # Linux's abstract namespace (an environment value cannot hold the NUL)
        if rank == 0:
            self._accept(address, bytes.fromhex(key))
        else:
            self.hub = self._connect(address, bytes.fromhex(key))

    def _accept(self, address: str, key: bytes) -> None:
        self._listener = listener = Listener(address, family="AF_UNIX", authkey=key)
        # accept() must not wait forever; the socket is private to Listener, so typeshed does not list it
        listener._listener._socket.settimeout(self.timeout_s)  # type: ignore[attr-defined]
        while len(self.peers) < self.world - 1:
            try:
                conn = listener.accept()
            except OSError:
                missing = sorted(set(range(1, self.world)) - set(self.peers))
                raise RankLost(f"ranks {missing} did not connect within {self.timeout_s:g} s") from None
            self.peers[conn.recv()] = conn

    def _connect(self, address: str, key: bytes) -> Connection:
        def connected() -> Connection | None:
            try:
                conn = Client(address, family="AF_UNIX", authkey=key)
            except (FileNotFoundError, ConnectionRefusedError):
                return None  # rank 0 is not listening yet
            conn.send(self.rank)
            return conn

        conn = _wait.wait_for(connected, self.timeout_s)
        if conn is None:
            raise RankLost(f"rank 0 was not reachable within {self.timeout_s:g} s")
        return conn

    def allreduce(self, step: int, mine: dict[int, tuple[float, dict]], stop: bool) -> tuple[dict, list[float], bool]:
        """Sum every rank's micro-batch gradients in micro-batch order; also agree on stopping.

        Returns (summed gradients, losses in micro-batch order, stop after this step).
        """
        if self.rank != 0:
            self._send(self.hub, 0, ("step", step, mine, stop))
            return self._receive(self.hub, 0)
        results, stop_any = dict(mine), stop
        for rank, conn in sorted(self.peers.items()):
            kind, their_step, theirs, their_stop = self._receive(conn, rank)
            if their_step != step:
                raise RankLost(f"rank {rank} is at step {their_step}, rank 0 at step {step}")
            results.update(theirs)
            stop_any = stop_any or their_stop
        order = sorted(results)
        total = {name: sum(results[m][1][name] for m in order) for name in results[order[0]][1]}
        reply = (total, [results[m][0] for m in order], stop_any)
        for rank, conn in sorted(self.peers.items()):
            self._send(conn, rank, reply)
        return reply

    def barrier(self, name: str) -> None:
        """Wait until every rank got here (rank 0 answers once all have)."""
        if self.rank != 0:
            self._send(self.hub, 0, ("barrier", name))
            self._receive(self.hub, 0)
            return
        for rank, conn in sorted(self.peers.items()):
            self._receive(conn, rank)
        for rank, conn in sorted(self.peers.items()):
            self._send(conn, rank, ("go", name))

    def abort(self, reason: str) -> None:
        """Tell the peers the job is over (rank 0), best effort."""
        for conn in self.peers.values():
            try:
                conn.send(("abort", reason))
            except OSError:
                pass

    def _send(self, conn: Connection, rank: int, message) -> None:
        try:
            conn.send(message)
        except OSError:  # EPIPE, ECONNRESET: the other end is gone
            raise RankLost(f"rank {rank} disconnected: it died or exited") from None

    def _receive(self, conn: Connection, rank: int):
        try:
            if not conn.poll(self.timeout_s):
                raise RankLost(f"rank {rank} did not answer within {self.timeout_s:g} s (--rank-timeout)")
            message = conn.recv()
        except (EOFError, OSError):
            raise RankLost(f"rank {rank} disconnected: it died or exited") from None
        if isinstance(message, tuple) and message[:1] == ("abort",):
            raise RankLost(f"rank 0 ended the job: {message[1]}")
        return message

    def close(self) -> None:
        """Close every connection."""
        for conn in [*self.peers.values(), *([self.hub] if self.rank else [])]:
            conn.close()
        if self._listener is not None:
            self._listener.close()


def micro_batch_rng(seed: int, step: int, micro: int) -> np.random.Generator:
    """The dropout noise of one micro-batch: the same whichever rank computes it."""
    return np.random.default_rng([seed, step, micro])
