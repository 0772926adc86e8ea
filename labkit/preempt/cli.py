"""``labkit preempt-test [options] -- COMMAND ...``: the options, and the command's life from a terminal or CI.

Exit codes: 0 every check passed, 1 a check failed, 2 bad options (one line on stderr); 130 or 143
when preempt-test itself is stopped by SIGINT or SIGTERM (after it has killed what it started).
"""

from __future__ import annotations

import argparse
import shlex
import signal
import sys
from pathlib import Path

from labkit.errors import BadArgument, LabkitError
from labkit.preempt.harness import Options, preempt_test
from labkit.preempt.report import table, write_json
from labkit.preempt.stops import STOP_KINDS


class Interrupted(LabkitError):
    """preempt-test itself got SIGINT or SIGTERM; what it started is stopped, it exits 128 + n."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"interrupted by {signal.Signals(signum).name}: stopped every process it had started")
        self.exit_code = 128 + signum


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text}")
    return value


def _count(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return int(text)


def _stops(text: str) -> tuple[str, ...]:
    kinds = tuple(k.strip() for k in text.split(",") if k.strip())
    unknown = [k for k in kinds if k not in STOP_KINDS]
    if unknown or not kinds:
        raise argparse.ArgumentTypeError(f"unknown stop kind {', '.join(unknown) or repr(text)}; "
                                         f"choose from {', '.join(STOP_KINDS)}")
    return kinds


def _codes(text: str) -> frozenset[int]:
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts or not all(p.isdigit() and int(p) <= 255 for p in parts):
        raise argparse.ArgumentTypeError(f"expected exit codes 0-255 separated by commas, got {text!r}")
    return frozenset(int(p) for p in parts)


def _words(text: str) -> list[str]:
    try:
        words = shlex.split(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"cannot split {text!r}: {err}") from None
    if not words:
        raise argparse.ArgumentTypeError("an empty command")
    return words


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``labkit preempt-test``; the command under test comes after ``--``."""
    parser.usage = "%(prog)s [options] -- COMMAND ..."
    parser.description = ("Run COMMAND once uninterrupted, then again and again, stopped at random moments the way "
                          "a scheduler stops it and resumed until it finishes; check each stop and the final result. "
                          "{run} in COMMAND and in the options is replaced by the run's own folder.")
    stops = ", ".join(f"{k}: {v}" for k, v in STOP_KINDS.items())
    parser.add_argument("--interruptions", "-n", type=_count, default=3, metavar="N", help="stops to send (default 3)")
    parser.add_argument("--stop", dest="stops", type=_stops, default=("term",), metavar="KIND[,KIND...]",
                        help=f"stop kinds, used in turn (default term). {stops}")
    parser.add_argument("--grace-s", type=_seconds, default=30.0, metavar="SEC",
                        help="seconds from the stop's SIGTERM/SIGINT to SIGKILL (default 30, Kubernetes' default)")
    parser.add_argument("--slurm-warning-s", type=_seconds, default=5.0, metavar="SEC",
                        help="slurm stops: seconds from SIGUSR1 to SIGTERM (default 5)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random moments (default 0)")
    parser.add_argument("--min-s", type=_seconds, default=1.0, metavar="SEC",
                        help="earliest moment of a stop after a run starts (default 1)")
    parser.add_argument("--max-s", type=_seconds, default=None, metavar="SEC",
                        help="latest moment (default: the reference run's duration / (N + 1))")
    parser.add_argument("--resume-command", type=_words, default=None, metavar="'CMD ...'",
                        help="how to restart after a stop, one quoted string (default: COMMAND itself)")
    parser.add_argument("--checkpoint", default=None, metavar="GLOB",
                        help="the checkpoint files, e.g. '{run}/ckpt/*.pt'; each stop must add or update one")
    parser.add_argument("--verify-command", default=None, metavar="'CMD {}'",
                        help="loads a checkpoint ({} = its path); exit 0 = intact. Run on the newest after each stop")
    parser.add_argument("--result", default=None, metavar="FILE",
                        help="the run's final output; its sha256 must equal the uninterrupted run's")
    parser.add_argument("--reference-digest", default=None, metavar="SHA256",
                        help="the expected sha256 of --result: skips the reference run (needs --max-s)")
    parser.add_argument("--compare-command", default=None, metavar="'CMD'",
                        help="compares results ({reference} and {run} = the two runs' folders); exit 0 = equal")
    parser.add_argument("--stop-exit-codes", type=_codes, default=frozenset({0}), metavar="CODES",
                        help="exit codes that count as a clean stop, e.g. 0,143 (default 0)")
    parser.add_argument("--settle-s", type=_seconds, default=1.0, metavar="SEC",
                        help="how long the run's other processes get to end after the main one (default 1)")
    parser.add_argument("--run-timeout-s", type=_seconds, default=3600.0, metavar="SEC",
                        help="longest an uninterrupted run may take (default 3600)")
    parser.add_argument("--work-dir", type=Path, default=None, metavar="DIR",
                        help="where the runs' folders and logs go (default: a temporary folder, removed if all passed)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder even when all passed")
    parser.add_argument("--json", type=Path, default=None, metavar="PATH", help="write the report as JSON (atomically)")


def options_from_args(args: argparse.Namespace, command: list[str]) -> Options:
    return Options(command=list(command), resume_command=args.resume_command, interruptions=args.interruptions,
                   stops=tuple(args.stops), seed=args.seed, grace_s=args.grace_s,
                   slurm_warning_s=args.slurm_warning_s, min_s=args.min_s, max_s=args.max_s,
                   checkpoint=args.checkpoint, verify_command=args.verify_command, result=args.result,
                   reference_digest=args.reference_digest, compare_command=args.compare_command,
                   stop_exit_codes=args.stop_exit_codes, settle_s=args.settle_s, run_timeout_s=args.run_timeout_s,
                   work_dir=args.work_dir, keep=args.keep)


def _progress(total: int):
    """A tqdm bar on a terminal (if tqdm is installed), else nothing; returns (callback, close)."""
    if not sys.stderr.isatty():
        return (lambda _text: None), (lambda: None)
    try:
        from tqdm import tqdm
    except ImportError:
        return (lambda _text: None), (lambda: None)
    bar = tqdm(total=total, file=sys.stderr, unit="run", leave=False)
    seen: list[str] = []

    def step(text: str) -> None:
        if seen:
            bar.update(1)
        seen.append(text)
        bar.set_description(text)

    return step, bar.close


def main(args: argparse.Namespace, command: list[str]) -> int:
    """``labkit preempt-test [options] -- COMMAND ...``: 0 all passed, 1 a check failed; BadArgument -> 2."""
    options = options_from_args(args, command)
    options.validate()
    if args.json is not None and not args.json.parent.is_dir():
        raise BadArgument(f"--json: no folder {args.json.parent}")

    def on_signal(signum, frame):
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)  # a second one must not cut the clean-up short
        raise Interrupted(signum)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    step, close = _progress(options.interruptions + (1 if options.reference_digest else 2))
    try:
        report = preempt_test(options, step)
    finally:
        close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print(table(report))
    if args.json is not None:
        write_json(args.json, report)
    return 0 if report.passed else 1
