"""The ``labkit`` command (contract in docs/cli.md and ../shared/design.md).

Exit codes: 0 success, 1 the thing asked failed, 2 bad usage or input. Every error is
one line on stderr; a traceback means a bug in labkit, never a user mistake.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import NoReturn

import psutil

from labkit.errors import BadArgument, LabkitError


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (argparse prints usage + error by default)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise BadArgument(f"{message} (see `{self.prog} --help`)")


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not 0 <= value < float("inf"):  # also refuses nan, which compares false to everything
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text}")
    return value


def _non_negative_int(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}")
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    """Build the parser of every ``labkit`` sub-command."""
    from labkit import __version__

    parser = _Parser(prog="labkit", description="A hands-on lab on managing ML training processes on Linux.")
    parser.add_argument("--version", action="version", version=f"labkit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    doctor = sub.add_parser("doctor", help="what this machine can do for the lessons")
    doctor.add_argument("--json", action="store_true", help="one JSON object")

    train = sub.add_parser("train", help="run the simulated trainer in the foreground")
    from labkit.trainer.config import add_arguments

    add_arguments(train)

    lab = sub.add_parser("lab", help="open JupyterLab on the lessons",
                         usage="labkit lab [-h] [--notebook-dir DIR] [--] [JUPYTER_OPTION ...]",
                         description="Open JupyterLab on the course. Every option but --notebook-dir goes to "
                                     "`jupyter lab` as typed (e.g. --port 8899 --no-browser); after `--` all do.")
    where = str(_default_notebooks()).replace("%", "%%")  # argparse formats help with %
    lab.add_argument("--notebook-dir", type=Path, default=None, metavar="DIR",
                     help="the folder JupyterLab opens (default: the course root, the folder holding notebooks/ "
                          "and exercises/: the current folder, else labkit's own checkout; here: " + where + ")")
    lab.add_argument("jupyter_args", nargs="*", metavar="JUPYTER_OPTION", help="passed to `jupyter lab` as typed")

    _add_jobs_parser(sub)

    course = sub.add_parser("course", help="build and check the course's exercises")
    csub = course.add_subparsers(dest="course_command", metavar="ACTION", parser_class=_Parser)
    csub.required = True
    from labkit.course.build import add_arguments as add_course_arguments

    add_course_arguments(csub.add_parser("build", help="solutions/ -> exercises/; --check fails if they differ"))

    from labkit.course.grade import add_arguments as add_grade_arguments

    add_grade_arguments(sub.add_parser("grade", help="grade exercise notebooks: gradebook.csv and feedback pages"))

    progress = sub.add_parser("progress", help="your progress across the course's exercises")
    from labkit.course.progress import add_arguments as add_progress_arguments

    add_progress_arguments(progress)
    scenario = sub.add_parser("scenario", help="broken machines to fix from a real terminal")
    from labkit.scenarios.cli import add_arguments as add_scenario_arguments

    add_scenario_arguments(scenario)

    diagnose = sub.add_parser("diagnose", help="why a process seems stuck: a verdict, its evidence, next steps")
    from labkit.diagnose import add_arguments as add_diagnose_arguments

    add_diagnose_arguments(diagnose)

    limit = sub.add_parser("limit", help="run a command (or limit a running pid) under CPU and memory limits")
    from labkit.limits import add_arguments as add_limit_arguments

    add_limit_arguments(limit)

    unit = sub.add_parser("unit", help="lint and run systemd unit files (systemd's semantics, no systemd needed)")
    from labkit.systemd.commands import add_arguments as add_unit_arguments

    add_unit_arguments(unit)

    real = sub.add_parser("systemd", help="start, stop and find a real systemd user manager where systemd is not PID 1")
    from labkit.systemd.commands import add_manager_arguments

    add_manager_arguments(real)

    monitor = sub.add_parser("monitor", help="sample a process tree's CPU, memory, threads and I/O")
    from labkit.monitor import add_arguments as add_monitor_arguments

    add_monitor_arguments(monitor)
    preempt = sub.add_parser("preempt-test",
                             help="prove a training command survives preemption: stop it at random moments, resume, check")
    from labkit.preempt.cli import add_arguments as add_preempt_arguments

    add_preempt_arguments(preempt)
    return parser


def _add_jobs_parser(sub) -> None:
    jobs = sub.add_parser("jobs", help="start, watch and stop detached jobs")
    jsub = jobs.add_subparsers(dest="jobs_command", metavar="ACTION", parser_class=_Parser)
    jsub.required = True
    start = jsub.add_parser("start", help="start a detached job (default: the trainer); CMD after --")
    start.add_argument("name")
    from labkit.jobs import MODES

    start.add_argument("--mode", choices=MODES, default="setsid",
                       help="setsid: own session; nohup: ignores SIGHUP in this session; "
                            "tmux/screen: a detached session you can attach to")
    start.add_argument("--run-dir", type=Path, default=None, help="the trainer's run folder")
    start.add_argument("--pid-file", type=Path, default=None, help="write the job's pid here")
    start.add_argument("--json", action="store_true")
    attach = jsub.add_parser("attach", help="print the command that reattaches a tmux/screen job's terminal")
    attach.add_argument("name")
    stop = jsub.add_parser("stop", help="signal the job's group, wait, escalate to SIGKILL")
    stop.add_argument("name")
    stop.add_argument("--grace", "--timeout", dest="grace_s", type=_positive_float, default=10.0,
                      help="seconds between the signal and SIGKILL (default 10; --timeout is the old name)")
    stop.add_argument("--signal", default="SIGTERM", help="first signal (default SIGTERM)")
    stop.add_argument("--json", action="store_true")
    status = jsub.add_parser("status", help="state, pid and exit code of one job or all")
    status.add_argument("name", nargs="?")
    status.add_argument("--json", action="store_true", help="one JSON object per job, one per line")
    listing = jsub.add_parser("list", help="every known job")
    listing.add_argument("--json", action="store_true", help="one JSON object per job, one per line")
    logs = jsub.add_parser("logs", help="the job's console output")
    logs.add_argument("name")
    logs.add_argument("--lines", "-n", type=_non_negative_int, default=None)
    logs.add_argument("--follow", "-f", action="store_true", help="keep printing until the job ends")
    signal_ = jsub.add_parser("signal", help="send a signal to the job's process group")
    signal_.add_argument("name")
    signal_.add_argument("signal")
    remove = jsub.add_parser("remove", help="forget an ended job")
    remove.add_argument("name")


def main(argv: list[str] | None = None) -> int:
    """Run ``labkit`` with ``argv``; return the exit code."""
    called_as_program = argv is None  # the `labkit` command or `python -m labkit`, not a call from Python
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        argv, command = _split_command(argv)
        if argv[:1] == ["lab"]:
            argv, command = _split_lab(argv)
        if argv[:1] == ["grade"] and argv[1:2] and argv[1] in ("merge", "report", "export"):
            from labkit.course.grade import run_action  # `grade` takes notebooks; these take folders

            return run_action(argv[1:])
        args = build_parser().parse_args(argv)
        if args.command == "train":
            code = _train(args, argv[1:])
            if called_as_program:
                _leave(code)
            return code
        return _dispatch(args, command)
    except LabkitError as err:
        print(f"labkit: error: {err}", file=sys.stderr)
        return err.exit_code
    except psutil.NoSuchProcess as err:
        print(f"labkit: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `labkit jobs logs x | head`
        sys.stderr.close()
        return 0


def _split_command(argv: list[str]) -> tuple[list[str], list[str]]:
    """Separate ``jobs start NAME ... -- CMD`` and ``limit ... -- CMD`` into labkit's arguments and the command."""
    if (argv[:2] == ["jobs", "start"] or argv[:1] in (["limit"], ["preempt-test"])) and "--" in argv:
        cut = argv.index("--")
        return argv[:cut], argv[cut + 1:]
    return argv, []


def _split_lab(argv: list[str]) -> tuple[list[str], list[str]]:
    """Separate ``lab``'s own options (--notebook-dir, --help) from Jupyter's, kept in their order.

    Jupyter has hundreds of options (``--port 8899``, ``--ServerApp.ip=0.0.0.0``, ``--no-browser``):
    they pass through unparsed, so any that ``jupyter lab --help-all`` lists works here too.
    After ``--`` everything is Jupyter's.
    """
    own: list[str] = argv[:1]
    jupyter: list[str] = []
    rest = iter(argv[1:])
    for arg in rest:
        if arg == "--":
            jupyter.extend(rest)
        elif arg in ("-h", "--help") or arg.startswith("--notebook-dir="):
            own.append(arg)
        elif arg == "--notebook-dir":
            own += [arg, *[value for value in [next(rest, None)] if value is not None]]
        else:
            jupyter.append(arg)
    return own, jupyter


def _dispatch(args: argparse.Namespace, command: list[str]) -> int:
    if args.command == "doctor":
        from labkit import doctor

        return doctor.main(as_json=args.json)
    if args.command == "lab":
        return _lab(args, command)
    if args.command == "course":
        from labkit.course.build import main as course_build

        return course_build(args)
    if args.command == "grade":
        from labkit.course.grade import main as grade_main

        return grade_main(args)
    if args.command == "scenario":
        from labkit.scenarios.cli import main as scenario_main

        return scenario_main(args)
    if args.command == "preempt-test":
        from labkit.preempt.cli import main as preempt_main

        return preempt_main(args, command)
    if args.command == "progress":
        from labkit.course.progress import main as progress_main

        return progress_main(args)
    if args.command == "diagnose":
        from labkit.diagnose import main as diagnose_main

        return diagnose_main(args)
    if args.command == "limit":
        from labkit.limits import main as limit_main

        return limit_main(args, command)
    if args.command == "unit":
        from labkit.systemd.commands import main as unit_main

        return unit_main(args)
    if args.command == "systemd":
        from labkit.systemd.commands import manager_main

        return manager_main(args)
    if args.command == "monitor":
        from labkit.monitor import main as monitor_main

        return monitor_main(args)
    return _jobs(args, command)


def _leave(code: int) -> NoReturn:
    """End this process now with ``code``, skipping the interpreter's finalisation.

    Called once the trainer has returned: its checkpoint is fsynced, its log and metrics are
    closed, its workers joined and its process group destroyed. Finalising the modules it
    loaded is all that is left, and with torch loaded that took ~0.9 s of every stop (measured:
    `labkit train --framework torch` SIGTERM -> exit p50 1036 ms before, 71 ms after; NumPy 67 -> 23
    ms), time an orchestrator's grace period is counting. ``python -m labkit.trainer`` does the same.
    """
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe or stream: nothing more can reach it anyway
            pass
    os._exit(code)


def _train(args: argparse.Namespace, argv: list[str]) -> int:
    from labkit.trainer.shutdown import install_early

    install_early()  # a SIGTERM while numpy loads is still a clean stop
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")  # before numpy loads: see labkit/trainer/__main__.py
    from labkit.trainer import config_from_args, run

    return run(config_from_args(args), argv)  # argv: what each rank gets with --ranks N


def _lab(args: argparse.Namespace, extra: list[str]) -> int:
    import importlib.util

    folder = (args.notebook_dir or _default_notebooks()).resolve()
    if not folder.is_dir():
        raise BadArgument(f"no notebooks folder at {folder}; pass --notebook-dir")
    if importlib.util.find_spec("jupyterlab") is None:
        raise LabkitError("JupyterLab is not installed here: pip install jupyterlab")
    # This interpreter's JupyterLab, whatever PATH says (a venv used without activating it).
    command = [sys.executable, "-m", "jupyterlab", f"--notebook-dir={folder}"]
    if os.geteuid() == 0:
        command.append("--allow-root")  # common in containers; Jupyter refuses root otherwise
    welcome = folder / "notebooks" / "00_welcome.ipynb"
    if welcome.exists() and not any("default_url" in arg for arg in extra):
        # the course root: lessons and exercises side by side, opening on the first lesson
        command.append("--LabApp.default_url=/lab/tree/notebooks/00_welcome.ipynb")
    if not any("terminado_settings" in arg for arg in extra):
        shell = terminal_shell_command()
        if shell is not None:
            command.append("--ServerApp.terminado_settings=shell_command=" + json.dumps(shell))
    bin_dir = str(Path(sys.executable).parent)
    path = os.environ.get("PATH", "").split(os.pathsep)
    os.environ["PATH"] = os.pathsep.join([bin_dir, *[p for p in path if p and p != bin_dir]])  # kernels' `!` too
    print(f"labkit: opening JupyterLab on {folder}", file=sys.stderr)
    os.execv(sys.executable, command + extra)
    return 0  # not reached


TERMINAL_RC = """\
# Written by `labkit lab`: JupyterLab's terminals start `bash --rcfile` this file.
# A login shell's start-up first (/etc/profile resets PATH, then your own profile), as
# Jupyter's default `bash -l` would do; then this course's Python environment goes first
# on PATH, so `labkit` and `python` are the ones the notebooks' kernel uses.
[ -f /etc/profile ] && . /etc/profile
if [ -f "$HOME/.bash_profile" ]; then . "$HOME/.bash_profile"
elif [ -f "$HOME/.bash_login" ]; then . "$HOME/.bash_login"
elif [ -f "$HOME/.profile" ]; then . "$HOME/.profile"
fi
PATH="{bin}:$PATH"
export PATH
"""


def terminal_shell_command(bin_dir: str | os.PathLike | None = None) -> list[str] | None:
    """The shell JupyterLab's terminals run: bash that puts ``bin_dir`` first on PATH after the profile.

    Jupyter starts a login shell (``$SHELL -l``) when the server has no terminal of its own
    (jupyter_server_terminals ``app.py``), and Debian's ``/etc/profile`` sets PATH from scratch:
    a venv's ``labkit`` and ``python`` vanish from a terminal of a server started by a service,
    a script or ``nohup``. The rc file (under ``$LABKIT_HOME/lab``) runs the profile, then
    prepends ``bin_dir`` (default: this interpreter's). None where there is no bash.
    """
    import shutil

    from labkit._atomic import write_atomic
    from labkit.jobs import labkit_home

    bash = shutil.which("bash")
    if bash is None:
        return None
    folder = str(Path(bin_dir) if bin_dir is not None else Path(sys.executable).parent)
    if any(c in folder for c in '"$`\\\n'):
        return None  # not safe to write into the rc file; Jupyter's default shell is used
    rc = labkit_home() / "lab" / "bashrc"
    try:
        rc.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(rc, TERMINAL_RC.replace("{bin}", folder).encode())
    except OSError as err:
        print(f"labkit: terminals keep Jupyter's default shell: cannot write {rc}: {err.strerror}", file=sys.stderr)
        return None
    return [bash, "--rcfile", str(rc), "-i"]


def _default_notebooks() -> Path:
    """The course root (notebooks/ and exercises/ side by side), else a notebooks/ folder."""
    for root in (Path.cwd(), Path(__file__).resolve().parent.parent):
        if (root / "notebooks").is_dir() and (root / "exercises").is_dir():
            return root
        if (root / "notebooks").is_dir():
            return root / "notebooks"
    return Path.cwd() / "notebooks"


def _jobs(args: argparse.Namespace, command: list[str]) -> int:
    from labkit import jobs
    from labkit.signals import explain_exit_code, parse_signal

    action = args.jobs_command
    if action == "start":
        job = jobs.start(args.name, command or None, mode=args.mode, run_dir=args.run_dir)
        if args.pid_file:
            _write_pid_file(args.pid_file, job.pid)
        if args.json:
            print(json.dumps(job.status()))
        else:
            print(f"started job {job.name}: pid {job.pid}, group {job.pgid}, mode {args.mode}, "
                  f"log {job.log_path}" + (f", run dir {job.run_dir}" if job.run_dir else ""))
        if job.terminal is not None and not args.json:
            print(f"reattach with: {job.attach_command()}")
        return 0
    if action == "attach":
        print(jobs.Job(args.name).attach_command())
        return 0
    if action == "stop":
        result = jobs.Job(args.name).stop(grace_s=args.grace_s, sig=args.signal)
        if args.json:
            print(json.dumps(result.as_dict()))
        elif result.signal_sent is None:
            print(f"job {result.name} had already ended: {explain_exit_code(result.exit_code)}")
        else:
            how = f"did not exit within {args.grace_s:g} s, sent SIGKILL; " if result.escalated else ""
            print(f"job {result.name} (pid {result.pid}): sent {result.signal_sent}; {how}"
                  f"ended after {result.seconds:.2f} s with {explain_exit_code(result.exit_code)}")
        return 0
    if action in ("status", "list"):
        selected = [jobs.Job(args.name)] if getattr(args, "name", None) else jobs.list_jobs()
        for job in selected:
            _print_status(job.status(), args.json)
        if not selected and not args.json:
            print("no jobs yet: `labkit jobs start NAME` starts one")
        return 0
    if action == "logs":
        job = jobs.Job(args.name)
        if args.follow:
            stream = job.follow(from_end=True)  # opened before printing the tail: no line is lost
            print(job.logs(args.lines if args.lines is not None else 10), end="", flush=True)
            for chunk in stream:
                print(chunk, end="", flush=True)
        else:
            print(job.logs(args.lines), end="")
        return 0
    if action == "signal":
        wanted = parse_signal(args.signal)  # a bad signal name is reported before a bad job name
        job = jobs.Job(args.name)
        sent = job.send_signal(wanted)
        print(f"sent {sent.name} to job {job.name} (process group {job.pgid})")
        return 0
    if action == "remove":
        jobs.remove(args.name)
        print(f"removed job {args.name}")
        return 0
    raise BadArgument(f"unknown jobs action {action!r}")


def _write_pid_file(path: Path, pid: int) -> None:
    from labkit._atomic import write_atomic

    try:
        write_atomic(path, f"{pid}\n".encode())
    except OSError as err:
        raise LabkitError(f"the job started (pid {pid}) but its pid file {path} could not be written: "
                          f"{err.strerror}") from None


def _print_status(status: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(status))
        return
    from labkit.signals import explain_exit_code

    ended = "" if status["alive"] else f", {explain_exit_code(status['exit_code'])}"
    extra = len(status["group_members"]) - (1 if status["alive"] else 0)
    left = f", {extra} other process(es) still in its group" if extra > 0 else ""
    print(f"{status['name']}: {status['state']}, pid {status['pid']}, mode {status['mode']}{ended}{left}")


if __name__ == "__main__":
    sys.exit(main())
