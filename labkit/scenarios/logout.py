"""Scenario ``logout``: a training job that the next logout will stop.

The run was started from an SSH login shell as a plain background job (``cmd > out 2>&1 &``): it
is in the shell's session, on its terminal, with SIGHUP at its default. When the connection drops,
the kernel hangs up the terminal, SIGHUP goes to the session leader (bash), and bash sends SIGHUP
to each of its jobs (bash(1), SIGNALS); this trainer treats SIGHUP as a stop request, saves and
exits. Here the login shell is real: a bash on a pseudo-terminal held by a small process, as sshd
holds it (``_actors login``). The learner, in another terminal, cannot change the running process's
SIGHUP disposition (that needs a debugger), so the fix is to stop it cleanly (SIGTERM: it saves a
checkpoint) and start it again with ``--resume`` where a hang-up cannot reach it: ``nohup``
(SIGHUP ignored, inherited across exec), ``setsid`` (no controlling terminal), tmux or screen.
``check`` does the logout (it hangs the terminal up, once) and then looks: a trainer must be
running on the run's folder, not tied to any terminal's hang-up, resumed from the newest saved step.
Wrong fixes: doing nothing (it stops at the logout), restarting from scratch under nohup (steps are
redone), restarting with ``--resume`` as a plain ``&`` job of another terminal (the next logout of
that terminal stops it). A job put in the background with ``disown`` in its own shell survives a
hang-up too, but that is invisible from outside the shell, so ``check`` asks for nohup, setsid or
a multiplexer.
"""

from __future__ import annotations

import random
import shlex
import signal
import time
from pathlib import Path
from typing import Any

import psutil

from labkit.scenarios import _runs
from labkit.scenarios.base import Context, Scenario, ScenarioError, kill_verified, python, wait_for


class Logout(Scenario):
    """A run that dies with its SSH session: make it survive the logout without losing steps."""

    name = "logout"
    topic = "sessions"
    summary = "a run started with a plain & will stop at the next logout: make it survive, keep its steps"

    def plan(self, rng: random.Random) -> dict[str, Any]:
        return {"run": f"{rng.choice(('t5', 'gpt2', 'deit', 'hubert'))}-{rng.choice(('base', 'large', 'xl'))}-"
                       f"{rng.randrange(1, 80)}",
                "every": rng.randrange(10, 20), "seed": rng.randrange(1000), "epochs": rng.randrange(40, 80),
                "host": rng.choice(("gpu-03", "dgx-b", "node17", "a100-x")),
                "minutes": rng.randrange(5, 20)}

    def story(self, data: dict[str, Any]) -> str:
        return (f"Run {data['run']} was started on {data['host']} from an SSH shell with a plain `&`, and that "
                f"SSH session will be closed in {data['minutes']} minutes (the laptop goes home). The run saves a "
                f"checkpoint every {data['every']} steps, stops cleanly on SIGTERM, and can continue with --resume. "
                f"`labkit scenario check` closes that session, as the logout will.\n"
                f"Goal: the run keeps training after the logout, without redoing steps it has already saved.")

    def run_dir(self, ctx: Context) -> Path:
        return ctx.folder / "runs" / ctx.data["run"]

    def command(self, ctx: Context) -> list[str]:
        """The run's original command (also in launch.sh)."""
        return _runs.trainer_command(python(), self.run_dir(ctx), ctx.data, "0.03")

    def start(self, ctx: Context) -> None:
        run_dir = self.run_dir(ctx)
        run_dir.mkdir(parents=True)
        _runs.write_launch(run_dir, self.command(ctx))
        line = (f"cd {shlex.quote(str(run_dir))}; {shlex.join(self.command(ctx))} > stdout.log 2>&1 & "
                "echo $! > train.pid")
        ctx.spawn("login", [python(), "-m", "labkit.scenarios._actors", "login", "--line", line],
                  log=ctx.folder / "login.log")
        pid_file = run_dir / "train.pid"
        wait_for(lambda: pid_file.exists() and pid_file.read_text().strip().isdigit(), 20.0, "the run to start")
        ctx.record("run", int(pid_file.read_text()))
        shell = next((p for p in ctx.descendants() if p.name() == "bash"), None)
        if shell is None:
            raise ScenarioError("the login shell did not start")
        ctx.record("shell", shell.pid)
        wait_for(lambda: _runs.newest_saved([_runs.read_log(run_dir)]) >= 0, 60.0, "the run's first checkpoint")

    def _log_out(self, ctx: Context) -> None:
        """Hang the login terminal up (once) and wait until its shell and its jobs have reacted."""
        login, shell = ctx.process("login"), ctx.process("shell")
        if login is None or shell is None:
            return
        kill_verified(login, signal.SIGUSR1)
        psutil.wait_procs([shell], timeout=10)
        run = ctx.process("run")
        if run is not None:  # it saves a checkpoint on SIGHUP, then exits
            psutil.wait_procs([run], timeout=15)
        time.sleep(0.3)  # a job that would die of the hang-up has had its signal by now

    def _detached(self, proc: psutil.Process, piece: str) -> bool:
        """Would a hang-up of the terminal it came from leave ``proc`` running?"""
        from labkit._linux import proc as _proc

        try:  # psutil's terminal() maps tty_nr through /dev, which may not show a pty of another devpts
            if _proc.read_stat(proc.pid).tty_nr == 0:  # setsid, a service, a daemon's child: no terminal to lose
                return True
        except OSError:
            return False
        ignored = _proc.read_status(proc.pid).get("SigIgn", "0")
        if int(ignored or "0", 16) & (1 << (signal.SIGHUP - 1)) or "SIGHUP is ignored" in piece:  # nohup
            return True
        return _runs.pane_of(proc)[0] is not None  # tmux or screen hold the terminal, not a login

    def check(self, ctx: Context) -> list[str]:
        run_dir = self.run_dir(ctx)
        self._log_out(ctx)
        pieces = _runs.starts(_runs.read_log(run_dir))
        live = _runs.trainers(run_dir)
        if not live:
            said = "it stopped on SIGHUP when the session closed" if pieces and "on SIGHUP" in pieces[-1] else \
                "nothing trains on its folder"
            return [f"the run is not running after the logout: {said}"]
        problems = []
        if len(live) > 1:
            problems.append(f"{len(live)} trainers write to the same run folder at once")
        if not all(self._detached(proc, pieces[-1] if pieces else "") for proc in live):
            problems.append("the run still depends on a terminal: when that terminal closes, it gets SIGHUP and "
                            "stops")
        if len(pieces) > 1:
            resumed, saved = _runs.resumed_step(pieces[-1]), _runs.newest_saved(pieces[:-1])
            if resumed is None:
                problems.append(f"the run began again from step 0: the {saved} steps already saved are computed "
                                "again")
            elif resumed < saved:
                problems.append(f"the run resumed from step {resumed}, but step {saved} was saved: steps are "
                                "computed again")
        return problems

    def hints(self, ctx: Context) -> list[str]:
        run_dir = self.run_dir(ctx)
        return [
            "Find out what the logout will send to the run, and why. You cannot change how a running process "
            "treats that signal from another terminal, but this run can stop without losing anything.",
            f"`ps -o pid,ppid,pgid,sid,tty,stat,args -p $(cat {run_dir / 'train.pid'})`: same session and "
            "terminal as the login shell. `grep SigIgn /proc/PID/status`: is SIGHUP (bit 1) ignored? "
            "What does the run do on SIGTERM (train.log says)?",
            f"`kill -TERM $(cat {run_dir / 'train.pid'})`, wait for \"stopped cleanly\" in train.log, then "
            f"`nohup $(tail -n 1 {run_dir / 'launch.sh'}) --resume > {run_dir / 'stdout.log'} 2>&1 &` "
            "(or setsid, or a tmux session). Then `labkit scenario check`.",
        ]

    def solution(self, ctx: Context) -> str:
        run_dir = self.run_dir(ctx)
        return (f"ps -o pid,sid,tty,args -p {ctx.pid('run')}   # the login shell's session and terminal\n"
                f"kill -TERM {ctx.pid('run')}                 # saves a checkpoint, exits 0\n"
                f"nohup {shlex.join(self.command(ctx))} --resume > {run_dir / 'stdout.log'} 2>&1 &\n"
                "# or: setsid ... --resume, or tmux new-session -d '... --resume'\n"
                "Without --resume the run starts over; a plain & ties the new run to your own terminal.")

    def cleanup(self, ctx: Context) -> None:
        _runs.end_panes(self.run_dir(ctx))
