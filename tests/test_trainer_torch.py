"""The torch trainer (``--framework torch``): exact resume, real DataLoader workers, real torchrun.

Skipped where PyTorch is not installed (``pip install -e '.[torch]'``). Each test leaves nothing
running: trainers start in sessions of their own (the ``spawn`` fixture kills their groups), and
torchrun's ranks, which torchrun puts in sessions of their own, are killed one by one at the end.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import psutil
import pytest

from conftest import final_hash, log_text, metrics, wait_for, wait_for_step

pytest.importorskip("torch", reason="the torch trainer needs PyTorch: pip install -e '.[torch]'")

FAST = ("--epochs", "2", "--steps-per-epoch", "15", "--step-time", "0", "--checkpoint-every", "5")
SLOW = ("--epochs", "2", "--steps-per-epoch", "15", "--step-time", "0.05", "--checkpoint-every", "5")
LONG = ("--epochs", "50", "--steps-per-epoch", "15", "--step-time", "0.05", "--checkpoint-every", "5")


def torch_trainer(run_dir: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "labkit.trainer", "--framework", "torch", "--run-dir", str(run_dir), *args]


def run_torch(run_dir: Path, *args: str, timeout_s: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(torch_trainer(run_dir, *args), capture_output=True, text=True, timeout=timeout_s)


def wait_until_training(run_dir: Path, pid: int, timeout_s: float = 60) -> None:
    """Until trainer ``pid`` has resumed (or started afresh) and completed a step of its own."""
    log, path = run_dir / "train.log", run_dir / "metrics.jsonl"
    size = None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if size is None and f"[pid {pid}] resume:" in log_text(run_dir):
            size = path.stat().st_size if path.exists() else 0
        elif size is not None and path.exists() and path.stat().st_size > size:
            return
        time.sleep(0.01)
    raise AssertionError(f"trainer {pid} did not train in {run_dir}: {log.read_text()[-500:] if log.exists() else ''}")


def worker_pids(run_dir: Path, pid: int) -> list[int]:
    marker = f"[pid {pid}] started 2 data-loader workers: pids "
    line = wait_for(lambda: next((l for l in log_text(run_dir).splitlines() if marker in l), None), 60, "workers")
    return json.loads(line.split("pids ", 1)[1])


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The hash of an uninterrupted run (FAST, no workers)."""
    run_dir = tmp_path_factory.mktemp("torch-reference")
    done = run_torch(run_dir, *FAST)
    assert done.returncode == 0, done.stderr
    return final_hash(run_dir)


def test_a_run_completes_learns_and_writes_the_run_files(tmp_path, reference):
    done = run_torch(tmp_path, *FAST)
    assert done.returncode == 0, done.stderr
    final = json.loads((tmp_path / "final.json").read_text())
    assert final["status"] == "completed" and final["global_step"] == 30 and final["epoch"] == 2
    assert final["weights_sha256"] == reference  # deterministic: same seed, same bytes
    losses = [row["loss"] for row in metrics(tmp_path)]
    assert len(losses) == 30 and sum(losses[-5:]) < sum(losses[:5])
    assert (tmp_path / "heartbeat").exists()
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == \
        ["ckpt-00000020.pt", "ckpt-00000025.pt", "ckpt-00000030.pt"]


@pytest.mark.parametrize("workers", [0, 2])
def test_exact_resume_after_random_sigterms_and_sigkills(tmp_path, spawn, reference, workers):
    rng = random.Random(workers)
    args = (*SLOW, "--workers", str(workers))
    for sig in (signal.SIGTERM, signal.SIGKILL, signal.SIGTERM, signal.SIGKILL):
        proc = spawn.popen(torch_trainer(tmp_path, *args, "--resume"))
        wait_until_training(tmp_path, proc.pid)
        pids = worker_pids(tmp_path, proc.pid) if workers else []
        time.sleep(rng.uniform(0.0, 0.2))
        proc.send_signal(sig)
        code = proc.wait(timeout=30)
        mine = "\n".join(l for l in log_text(tmp_path).splitlines() if f"[pid {proc.pid}]" in l)
        if sig == signal.SIGTERM:
            assert code == 0 and "stopped cleanly on SIGTERM" in mine, mine[-800:]
            if workers:
                assert "data-loader workers exited: " in mine and "killed" not in mine.split("workers exited")[1]
        else:
            assert code == -signal.SIGKILL
        wait_for(lambda: all(gone(p) for p in pids), 5, "the data-loader workers to exit")
        assert not (tmp_path / "final.json").exists(), "the run ended before all stops were made"
    done = run_torch(tmp_path, *FAST, "--workers", str(workers), "--resume")
    assert done.returncode == 0, done.stderr
    assert final_hash(tmp_path) == reference
    assert [row["step"] for row in metrics(tmp_path)] == list(range(1, 31))


def test_sigint_to_the_group_keeps_the_workers_alive_until_the_save(tmp_path, spawn, reference):
    proc = spawn.popen(torch_trainer(tmp_path, *SLOW, "--workers", "2"))
    pids = worker_pids(tmp_path, proc.pid)
    wait_for_step(tmp_path, 4, 60)
    assert sorted(p.pid for p in psutil.Process(proc.pid).children()) == sorted(pids)
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C in a terminal: the whole foreground group
    assert proc.wait(timeout=30) == 0
    log = log_text(tmp_path)
    stopped_at = int(log.split("stopping on SIGINT at step ")[1].split()[0])
    assert f"checkpoint ckpt-{stopped_at:08d}.pt saved" in log or stopped_at % 5 == 0
    ended = log.split("data-loader workers exited: ")[1].splitlines()[0]
    assert ended == ", ".join(f"pid {p} exit code 0" for p in pids)  # each one, after the save
    assert log.index("stopping on SIGINT") < log.index("data-loader workers exited")
    assert all(gone(p) for p in pids)
    assert run_torch(tmp_path, *FAST, "--workers", "2", "--resume").returncode == 0
    assert final_hash(tmp_path) == reference


DEFAULT_WORKERS = """
import signal, time, torch
from torch.utils.data import DataLoader, TensorDataset
loader = DataLoader(TensorDataset(torch.arange(100000.0)), batch_size=10, num_workers=2, persistent_workers=True)
batches = iter(loader)  # the workers start here, with Python's default SIGINT handler
stop = []
signal.signal(signal.SIGINT, lambda signum, frame: stop.append(signum))  # the main process's own
print("workers", *[w.pid for w in batches._workers], flush=True)
step = 0
while True:
    step += 1
    print("step", step, flush=True)
    for micro in range(64):  # finish the step: 64 micro-batches, far more than the 4 prefetched
        next(batches)
        time.sleep(0.005)
    if stop:
        print("saved", flush=True)
        break
"""


def test_default_dataloader_workers_die_of_a_group_sigint_before_the_save(tmp_path, spawn):
    script = tmp_path / "default_workers.py"
    script.write_text(DEFAULT_WORKERS)
    proc = spawn.popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    pids = [int(p) for p in proc.stdout.readline().split()[1:]]
    assert len(pids) == 2
    # early in step 2: a SIGINT late in a step would let the prefetched batches (2 per worker)
    # finish it without the workers, and the save would happen (seen once in CI under load)
    for line in proc.stdout:
        if line.strip() == "step 2":
            break
    else:
        pytest.fail("the script ended before its second step")
    os.killpg(proc.pid, signal.SIGINT)
    wait_for(lambda: all(gone(p) for p in pids), 5, "the default workers to die of SIGINT")
    out, err = proc.communicate(timeout=30)
    assert proc.returncode != 0 and "saved" not in out, (out, err[-500:])


def _flip_a_byte_inside_a_tensor(path: Path) -> None:
    with zipfile.ZipFile(path) as archive:
        info = max((i for i in archive.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    data = bytearray(path.read_bytes())
    start = info.header_offset + 30 + len(info.filename.encode()) + int.from_bytes(
        data[info.header_offset + 28:info.header_offset + 30], "little")
    data[start + info.file_size // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_resume_skips_torn_and_altered_checkpoints_and_stays_exact(tmp_path, reference):
    assert run_torch(tmp_path, *FAST).returncode == 0
    folder = tmp_path / "checkpoints"
    newest = folder / "ckpt-00000030.pt"
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])  # torn
    _flip_a_byte_inside_a_tensor(folder / "ckpt-00000025.pt")  # loads, but is not what was saved
    (tmp_path / "final.json").unlink()
    done = run_torch(tmp_path, *FAST, "--resume")
    assert done.returncode == 0, done.stderr
    log = log_text(tmp_path)
    assert "resume: skipped ckpt-00000030.pt: torch.load failed" in log
    assert "resume: skipped ckpt-00000025.pt: checksum mismatch" in log
    assert "resume: from ckpt-00000020.pt at step 20" in log
    assert final_hash(tmp_path) == reference


def test_other_settings_and_unsupported_options_are_refused_in_one_line(tmp_path):
    assert run_torch(tmp_path, *FAST, "--epochs", "1").returncode == 0
    done = run_torch(tmp_path, *FAST, "--hidden", "32", "--resume")
    assert done.returncode == 2 and "different settings: hidden 64 (this run: 32)" in done.stderr
    for extra in (("--fault", "hang-io"), ("--ranks", "2")):
        done = run_torch(tmp_path / "other", *FAST, *extra)
        lines = [l for l in done.stderr.splitlines() if l.strip()]
        assert done.returncode == 2 and len(lines) == 1 and lines[0].startswith("labkit: error:"), done.stderr


# --- torchrun --------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Torchrun:
    """Start torchrun jobs; at the end, kill every process they started (ranks have own sessions)."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []
        self.seen: dict[int, psutil.Process] = {}

    def start(self, run_dir: Path, *trainer_args: str, launcher: tuple[str, ...] = ("--standalone",),
              nproc: int = 2) -> subprocess.Popen:
        command = [sys.executable, "-m", "torch.distributed.run", *launcher, "--nproc-per-node", str(nproc),
                   "-m", "labkit.trainer", "--framework", "torch", "--run-dir", str(run_dir), *trainer_args]
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
        self.procs.append(proc)
        return proc

    def ranks(self, proc: subprocess.Popen, count: int) -> list[psutil.Process]:
        """The rank processes of ``proc`` (waits until ``count`` exist)."""
        def found():
            try:
                kids = [k for k in psutil.Process(proc.pid).children() if "labkit.trainer" in " ".join(k.cmdline())]
            except psutil.Error:
                return None
            return kids if len(kids) >= count else None
        kids = wait_for(found, 120, f"{count} ranks")
        self.seen.update({k.pid: k for k in kids})
        return kids

    def cleanup(self) -> None:
        for proc in self.procs:
            try:
                self.seen.update({k.pid: k for k in psutil.Process(proc.pid).children(recursive=True)})
            except psutil.Error:
                pass
            if proc.poll() is None:
                proc.kill()
            proc.communicate()
        for child in self.seen.values():
            try:
                child.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(list(self.seen.values()), timeout=5)


@pytest.fixture
def torchrun():
    runner = Torchrun()
    yield runner
    runner.cleanup()


@pytest.fixture(scope="module")
def torchrun_reference(tmp_path_factory):
    """The hash of an uninterrupted 2-rank torchrun job (FAST)."""
    run_dir = tmp_path_factory.mktemp("torchrun-reference")
    runner = Torchrun()
    try:
        proc = runner.start(run_dir, *FAST)
        out, _ = proc.communicate(timeout=180)
        assert proc.returncode == 0, out[-2000:]
    finally:
        runner.cleanup()
    return final_hash(run_dir)


def _rank_log(run_dir: Path, rank: int) -> str:
    return log_text(run_dir if rank == 0 else run_dir / "ranks" / str(rank))


def test_sigterm_to_torchrun_reaches_the_ranks_they_agree_save_and_exit_0(tmp_path, torchrun, torchrun_reference):
    proc = torchrun.start(tmp_path, *LONG)
    ranks = torchrun.ranks(proc, 2)
    wait_for_step(tmp_path, 3, 120)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert all(gone(r.pid) for r in ranks)
    steps = set()
    for rank in (0, 1):
        log = _rank_log(tmp_path, rank)
        assert "stopping on SIGTERM at step " in log and "stopped cleanly on SIGTERM" in log, log[-800:]
        steps.add(int(log.split("stopping on SIGTERM at step ")[1].split()[0]))
    assert len(steps) == 1, f"the ranks stopped at different steps: {steps}"
    step = steps.pop()
    assert (tmp_path / "checkpoints" / f"ckpt-{step:08d}.pt").exists()
    assert "forcefully exiting" not in out  # nobody needed SIGKILL
    resumed = torchrun.start(tmp_path, *FAST, "--resume")
    out, _ = resumed.communicate(timeout=180)
    assert resumed.returncode == 0, out[-2000:]
    assert final_hash(tmp_path) == torchrun_reference


def test_a_save_longer_than_torchruns_shutdown_timeout_is_cut_by_sigkill(tmp_path, torchrun):
    proc = torchrun.start(tmp_path, *LONG, "--fault", "slow-shutdown", "--shutdown-seconds", "8",
                          launcher=("--standalone", "--shutdown-timeout", "2"))
    ranks = torchrun.ranks(proc, 2)
    wait_for_step(tmp_path, 3, 120)
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    wait_for(lambda: all(gone(r.pid) for r in ranks), 30, "the ranks to end")
    cut_after = time.monotonic() - sent
    out, _ = proc.communicate(timeout=30)
    log = _rank_log(tmp_path, 0)
    assert "fault slow-shutdown: flushing for 8 s" in log and "stopped cleanly" not in log
    step = int(log.split("stopping on SIGTERM at step ")[1].split()[0])
    assert step % 5 == 0 or not (tmp_path / "checkpoints" / f"ckpt-{step:08d}.pt").exists()
    assert "forcefully exiting via" in out, out[-2000:]  # "Unable to shutdown process N via 15, ..."
    assert 1.5 < cut_after < 7, f"SIGTERM -> SIGKILL took {cut_after:.1f} s with --shutdown-timeout 2"


def test_a_dead_rank_ends_the_job(tmp_path, torchrun):
    proc = torchrun.start(tmp_path, *LONG)
    ranks = torchrun.ranks(proc, 2)
    wait_for_step(tmp_path, 3, 120)
    rank1 = int(_rank_log(tmp_path, 1).split("start: pid ")[1].split()[0])
    os.kill(rank1, signal.SIGKILL)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode != 0
    assert all(gone(r.pid) for r in ranks)
    assert "exitcode  : -9" in out or "Signal 9" in out, out[-2000:]


def test_two_nodes_on_localhost_with_a_c10d_rendezvous_give_the_same_weights(tmp_path, torchrun, torchrun_reference):
    endpoint = f"127.0.0.1:{free_port()}"
    nodes = [torchrun.start(tmp_path, *FAST, nproc=1,
                            launcher=("--nnodes", "2", "--rdzv-backend", "c10d", "--rdzv-endpoint", endpoint,
                                      "--rdzv-id", "labkit-test"))
             for _ in range(2)]
    for node in nodes:
        out, _ = node.communicate(timeout=180)
        assert node.returncode == 0, out[-2000:]
    assert final_hash(tmp_path) == torchrun_reference
