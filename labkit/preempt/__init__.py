"""``labkit preempt-test``: prove that a training command survives preemption.

It runs the command once uninterrupted, then again with a scheduler's stop at random moments
(SIGTERM then SIGKILL after a grace, SLURM's SIGUSR1 before SIGTERM, Ctrl-C's SIGINT to the process
group, or SIGKILL alone), resumes it until it finishes, and checks each stop and the final result.

Modules: :mod:`~labkit.preempt.runner` (one run, its own session, its processes found and killed),
:mod:`~labkit.preempt.stops` (the stop kinds), :mod:`~labkit.preempt.checks` (one verdict per check),
:mod:`~labkit.preempt.harness` (the reference run and the chain), :mod:`~labkit.preempt.report`
(table and JSON), :mod:`~labkit.preempt.cli` (the options). Docs: docs/preempt-test.md.

>>> from labkit.preempt import Options, preempt_test
>>> sorted(STOP_KINDS)
['int-group', 'kill', 'slurm', 'term']
"""

from labkit.preempt.harness import Options, preempt_test
from labkit.preempt.report import Check, Report, RunRecord, table
from labkit.preempt.stops import STOP_KINDS

__all__ = ["Options", "preempt_test", "Check", "Report", "RunRecord", "table", "STOP_KINDS"]
