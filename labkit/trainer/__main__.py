"""``python -m labkit.trainer``: run the simulated training job."""

import os
import sys

from labkit.trainer.shutdown import install_early

install_early()  # before numpy loads: a SIGTERM during start-up is still a clean stop

# One BLAS thread: results stay bit-identical between runs, and the CPU the lessons
# plot is the trainer's own work, not idle BLAS threads spinning.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

from labkit.trainer.entry import main  # noqa: E402  (after the environment is set)

code = main()
# Everything that matters is durable by now: the checkpoint is fsynced, the log and metrics
# are closed, the workers are joined. Skipping the interpreter's finalisation (freeing
# numpy and every module) takes ~15 ms off every stop, time an orchestrator's grace period
# (docker stop, systemd's TimeoutStopSec, Kubernetes) is counting.
sys.stdout.flush()
sys.stderr.flush()
os._exit(code)
