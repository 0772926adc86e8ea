"""``python -m labkit.trainer``: run the simulated training job."""

import os
import sys

# One BLAS thread: results stay bit-identical between runs, and the CPU the lessons
# plot is the trainer's own work, not idle BLAS threads spinning.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

from labkit.trainer.loop import main  # noqa: E402  (after the environment is set)

sys.exit(main())
