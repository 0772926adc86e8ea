"""The stops a scheduler sends, as sequences of signals, and what each run did with them.

Sources for the sequences:

- ``term``: Kubernetes sends SIGTERM to the container's main process, waits
  ``terminationGracePeriodSeconds`` (default 30) and sends SIGKILL to what is left (Kubernetes docs,
  "Pod lifecycle: termination of Pods"); ``docker stop`` does the same with 10 s, torchrun's agent
  forwards SIGTERM to its workers and SIGKILLs them after 30 s.
- ``slurm``: ``sbatch --signal=B:USR1@N`` sends SIGUSR1 to the batch script N seconds before the time
  limit; at the limit SLURM sends SIGTERM to every process of the job, then SIGKILL after ``KillWait``
  (default 30 s) (sbatch(1) ``--signal``, slurm.conf(5) ``KillWait``).
- ``int-group``: Ctrl-C makes the terminal send SIGINT to every process of its foreground process group
  (termios(3), ``ISIG``), workers included; SIGKILL after the grace, as a user who gives up would.
- ``kill``: SIGKILL to every process at once, nothing to catch: the OOM killer on a cgroup
  (``memory.oom.group``), a node that disappears. Only the checkpoints already written count.
"""

from __future__ import annotations

import signal
import time
from dataclasses import dataclass, field

from labkit.preempt.runner import Run, signal_name

STOP_KINDS: dict[str, str] = {
    "term": "SIGTERM to the main process, SIGKILL to every process after the grace (Kubernetes, docker stop)",
    "slurm": "SIGUSR1 to the main process, SIGTERM to every process after --slurm-warning-s, SIGKILL after the grace",
    "int-group": "SIGINT to the process group (Ctrl-C), SIGKILL to every process after the grace",
    "kill": "SIGKILL to every process at once (the OOM killer, a lost node): nothing to catch",
}


@dataclass
class Outcome:
    signals: list[str] = field(default_factory=list)  # "SIGTERM@0.41": the signal, seconds after the start
    stop_to_exit_s: float = 0.0                        # from the first signal to the main process's exit
    escalated: bool = False                            # SIGKILL ended it after the grace
    term_sent: bool = True                             # slurm: whether SIGTERM was needed (or SIGUSR1 sufficed)


def stop(run: Run, kind: str, grace_s: float, warning_s: float) -> Outcome:
    """Send the stop ``kind`` to ``run`` and wait until its main process has exited."""
    outcome = Outcome()
    first = time.monotonic()

    def send(sig: int, how) -> None:
        how(sig)
        outcome.signals.append(f"{signal_name(sig)}@{run.elapsed():.2f}")

    if kind == "kill":
        send(signal.SIGKILL, run.send_all)
    else:
        if kind == "term":
            send(signal.SIGTERM, run.send_main)
        elif kind == "int-group":
            send(signal.SIGINT, run.send_group)
        elif kind == "slurm":
            send(signal.SIGUSR1, run.send_main)
            outcome.term_sent = not run.wait(run.elapsed() + warning_s)
            if outcome.term_sent:
                send(signal.SIGTERM, run.send_all)
        else:
            raise ValueError(f"unknown stop kind {kind!r}")
        if not run.wait(run.elapsed() + grace_s):
            send(signal.SIGKILL, run.send_all)
            outcome.escalated = True
    run.wait(run.elapsed() + 30.0)
    if not run.exited():  # in uninterruptible sleep (D state) past SIGKILL: rare; kill_all waits again
        run.kill_all()
    outcome.stop_to_exit_s = time.monotonic() - first
    return outcome
