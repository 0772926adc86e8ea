"""The small programs scenarios run: each behaves as its role says, for real.

``python -m labkit.scenarios._actors ROLE ...``:

- ``serve --port P``: listen on 127.0.0.1:P and answer each connection with one line (an exporter,
  a dashboard); ``--spawn-and-die`` starts that server as a child and exits 1 at once (a run that
  crashed and left its child behind).
- ``loader --run-dir D --workers N --memory-mb M``: a trainer with N forked data-loader workers,
  each holding M MiB of touched memory; ``$LABKIT_SCENARIO_CRASH_AFTER_S`` makes the trainer crash
  after that many seconds and leave its workers orphaned (they never watch their parent). An
  environment variable, not an option, so ``ps`` shows the two runs' command lines alike.
- ``prep --out D --every S --max N``: a data-prep parent that forks one worker per shard and never
  waits for them (each finished worker stays a zombie); on SIGTERM/SIGINT it writes
  ``progress.json`` (the shards done) and exits 0; on SIGKILL that progress is lost.
- ``spin --out F``: a CPU-bound job (a tokenizer) whose progress lives in memory; it writes the
  count of batches done to F every half second.
- ``model --port P --warmup S``: a model server that loads for S seconds (``$LABKIT_SCENARIO_WARMUP``
  overrides), then listens on 127.0.0.1:P and tells systemd it is ready (``READY=1`` on
  ``$NOTIFY_SOCKET``, sd_notify(3): what ``Type=notify`` waits for).
- ``api --model-port P``: an API that connects to its model server once at start; refused, it exits 1
  ("connection refused"), else it reports ready and serves.
- ``login --line TEXT``: a login shell (``bash -i``) on a new pseudo-terminal that this process holds
  the master side of, as sshd does; it types TEXT into the shell and keeps reading its output. On
  SIGUSR1 it closes the master: the kernel hangs up the terminal and bash passes SIGHUP on to its
  jobs (what a dropped SSH connection does; labkit.sessions shows the same in a notebook).
- ``train ARGS``: labkit's trainer (``python -m labkit.trainer ARGS``) with the fault named by
  ``$LABKIT_SCENARIO_FAULT`` (``KIND:STEP``) added, so that ``ps`` does not print the answer.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

LIFETIME_S = 6 * 3600  # safety net, as the keeper's


def serve(port: int) -> int:
    """Listen on 127.0.0.1:``port`` and answer each connection with one line."""
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", port))
    server.listen(16)
    server.settimeout(1.0)
    print(f"listening on 127.0.0.1:{port} (pid {os.getpid()})", flush=True)
    deadline = time.monotonic() + LIFETIME_S
    while time.monotonic() < deadline:
        try:
            conn, _ = server.accept()
        except socket.timeout:
            continue
        with conn:
            conn.sendall(b"labkit exporter: ok\n")
    return 0


def spawn_and_die(port: int) -> int:
    """Start ``serve`` as a child, wait until it listens, then crash (exit 1)."""
    child = subprocess.Popen([sys.executable, "-m", "labkit.scenarios._actors", "serve", "--port", str(port)],
                             stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.02)
    print(f"RuntimeError: CUDA error: an illegal memory access was encountered (exporter pid {child.pid})",
          flush=True)
    child.returncode = 1  # never waited for: it outlives us on purpose
    os._exit(1)


def _hold(memory_mb: int) -> bytearray:
    block = bytearray(memory_mb << 20)
    for offset in range(0, len(block), 4096):  # touch every page: resident, not just reserved
        block[offset] = 1
    return block


def loader(run_dir: Path, workers: int, memory_mb: int, die_after_s: float) -> int:
    """A trainer with forked workers; with ``die_after_s`` > 0 it crashes and orphans them."""
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    run_dir.mkdir(parents=True, exist_ok=True)
    pids = []
    for _ in range(workers):
        pid = os.fork()
        if pid == 0:  # a worker: holds its memory, never checks on its parent
            held = _hold(memory_mb)
            time.sleep(LIFETIME_S)
            os._exit(len(held) & 0)
        pids.append(pid)
    (run_dir / ".workers.json").write_text(json.dumps({"trainer": os.getpid(), "workers": pids}))
    os.replace(run_dir / ".workers.json", run_dir / "workers.json")  # readers never see half of it
    with open(run_dir / "train.log", "a", buffering=1) as log:
        log.write(f"trainer pid {os.getpid()} started {workers} workers: {pids}\n")
        started, step = time.monotonic(), 0
        while time.monotonic() - started < LIFETIME_S:
            if die_after_s and time.monotonic() - started > die_after_s:
                log.write(f"step {step}: RuntimeError: NCCL watchdog timeout; exiting (workers left behind)\n")
                os._exit(1)
            step += 1
            if step % 20 == 0:
                log.write(f"step {step}\n")
            time.sleep(0.05)
    return 0


def prep(out: Path, every_s: float, max_shards: int) -> int:
    """Fork one worker per shard, never wait; save progress on SIGTERM/SIGINT and exit 0."""
    stop: list[int] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: stop.append(signum))
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    out.mkdir(parents=True, exist_ok=True)
    done: list[int] = []
    deadline = time.monotonic() + LIFETIME_S
    while not stop and time.monotonic() < deadline:
        if len(done) < max_shards:
            shard = len(done)
            pid = os.fork()
            if pid == 0:  # the worker writes its shard and exits; nobody waits for it
                (out / f"shard-{shard:05d}.bin").write_bytes(os.urandom(1024))
                os._exit(0)
            while not (out / f"shard-{shard:05d}.bin").exists() and not stop:
                time.sleep(0.005)
            done.append(shard)
        time.sleep(every_s)
    (out / "progress.json").write_text(json.dumps({"shards_done": done}))
    print(f"stopping on signal {stop[0] if stop else 'none'}: progress saved, {len(done)} shards", flush=True)
    return 0


def spin(out: Path) -> int:
    """Burn CPU for ever, counting batches; the count is only in memory (written to ``out`` for show)."""
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    batches, last = 0, time.monotonic()
    deadline = last + LIFETIME_S
    while last < deadline:
        total = 0
        for value in range(20000):
            total += value * value % 7
        batches += 1
        if time.monotonic() - last > 0.5:
            last = time.monotonic()
            out.write_text(f"{batches}\n")
    return 0


def notify_ready() -> None:
    """Send ``READY=1`` to systemd's ``$NOTIFY_SOCKET`` (sd_notify(3)); nothing outside systemd."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    target = "\0" + address[1:] if address.startswith("@") else address  # '@': an abstract socket
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as conn:
        conn.sendto(b"READY=1", target)


def model(port: int, warmup_s: float) -> int:
    """Load (sleep), then listen on ``port``, report ready and answer each connection."""
    print(f"model server: loading weights ({warmup_s:g} s)", flush=True)
    time.sleep(float(os.environ.get("LABKIT_SCENARIO_WARMUP", warmup_s)))
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", port))
    server.listen(16)
    notify_ready()
    print(f"model server: ready on 127.0.0.1:{port}", flush=True)
    while True:
        conn, _ = server.accept()
        with conn:
            conn.sendall(b"model: ok\n")


def api(model_port: int) -> int:
    """Connect to the model server once; exit 1 when refused, else report ready and wait."""
    with socket.socket() as conn:
        if conn.connect_ex(("127.0.0.1", model_port)) != 0:
            print(f"api: cannot reach the model server at 127.0.0.1:{model_port}: connection refused", flush=True)
            return 1
    notify_ready()
    print(f"api: connected to the model server on port {model_port}; serving", flush=True)
    time.sleep(LIFETIME_S)
    return 0


def login(line: str) -> int:
    """Hold a login shell's terminal; type ``line``; on SIGUSR1 hang the terminal up."""
    import fcntl
    import select
    import termios

    hang: list[int] = []
    signal.signal(signal.SIGUSR1, lambda *_: hang.append(1))
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    master, slave = os.openpty()
    env = {**os.environ, "PS1": "$ ", "HISTFILE": "/dev/null", "TERM": "dumb"}
    def as_a_login() -> None:
        # setsid() runs before preexec_fn: the new session's leader takes the terminal as its controlling one
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)
        # a login starts with SIGHUP at its default; an ignored one (ours, the keeper's) would be inherited
        for sig in (signal.SIGHUP, signal.SIGUSR1):
            signal.signal(sig, signal.SIG_DFL)

    shell = subprocess.Popen(["bash", "--norc", "--noprofile", "-i"], stdin=slave, stdout=slave, stderr=slave,
                             start_new_session=True, env=env, preexec_fn=as_a_login)
    os.close(slave)
    os.write(master, (line + "\n").encode())
    print(f"login shell pid {shell.pid}", flush=True)
    deadline = time.monotonic() + LIFETIME_S
    while not hang and shell.poll() is None and time.monotonic() < deadline:
        try:
            if select.select([master], [], [], 0.2)[0]:
                sys.stdout.write(os.read(master, 4096).decode(errors="replace"))
                sys.stdout.flush()
        except InterruptedError:
            continue
        except OSError:  # EIO: the shell has gone
            break
    os.close(master)  # the hang-up
    print("terminal hung up", flush=True)
    try:
        shell.wait(timeout=20)
    except subprocess.TimeoutExpired:
        shell.kill()
        shell.wait()
    return 0


def train(argv: list[str]) -> int:
    """Run the trainer in this process, with the fault from the environment (never on the command line)."""
    from labkit.trainer.shutdown import install_early

    install_early()  # as ``python -m labkit.trainer`` does: a SIGTERM during imports still stops cleanly
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    from labkit.trainer.config import add_arguments, config_from_args
    from labkit.trainer.entry import run

    fault = os.environ.pop("LABKIT_SCENARIO_FAULT", "")
    extra = ["--fault", fault.split(":")[0], "--fault-step", fault.split(":")[1]] if fault else []
    parser = argparse.ArgumentParser(prog="trainer")
    add_arguments(parser)
    code = run(config_from_args(parser.parse_args(argv + extra)), argv)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def main(argv: list[str] | None = None) -> int:
    """Parse the role and run it."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["train"]:
        return train(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m labkit.scenarios._actors")
    roles = parser.add_subparsers(dest="role", required=True)
    p = roles.add_parser("serve")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--spawn-and-die", action="store_true")
    p = roles.add_parser("loader")
    p.add_argument("--run-dir", type=Path, required=True)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--memory-mb", type=int, default=16)
    p = roles.add_parser("prep")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--every", type=float, default=0.1)
    p.add_argument("--max", type=int, default=300)
    p = roles.add_parser("spin")
    p.add_argument("--out", type=Path, required=True)
    p = roles.add_parser("login")
    p.add_argument("--line", required=True)
    p = roles.add_parser("model")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--warmup", type=float, default=1.0)
    p = roles.add_parser("api")
    p.add_argument("--model-port", type=int, required=True)
    args = parser.parse_args(argv)
    if args.role == "login":
        return login(args.line)
    if args.role == "model":
        return model(args.port, args.warmup)
    if args.role == "api":
        return api(args.model_port)
    if args.role == "spin":
        return spin(args.out)
    if args.role == "serve":
        return spawn_and_die(args.port) if args.spawn_and_die else serve(args.port)
    if args.role == "loader":
        return loader(args.run_dir, args.workers, args.memory_mb,
                      float(os.environ.get("LABKIT_SCENARIO_CRASH_AFTER_S", "0")))
    return prep(args.out, args.every, args.max)


if __name__ == "__main__":
    sys.exit(main())
