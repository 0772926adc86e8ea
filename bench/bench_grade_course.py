"""One student's whole course, graded with and without the protections, against bare nbclient.

Run: python bench/bench_grade_course.py [--rounds 1]   (the same as ``bench_grade.py --course``)

The solutions of lessons 00-06 are, in each round: executed with bare nbclient (one fresh
kernel per notebook, one after the other); graded with ``labkit grade --jobs 1`` with every
protection this machine allows (the judge, the freezer, the sandbox user, PID and mount
namespaces); and graded with the judge alone (no freezer, the grader's own user, no
namespaces). Target: the protections add < 10 % to the student's wall time (median of rounds).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_grade import course  # noqa: E402

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    sys.exit(course(args.rounds))
