"""The trainer control panel: start a run, send it signals, watch it live.

``TrainerPanel()`` in a notebook shows Start (epochs, workers, memory, fault), one button
per signal, "Stop (TERM, wait, KILL)", a status line, the log's tail and a live plot of
CPU, memory and loss with a marker at every signal sent. Every button has a method
(``start``, ``send``, ``stop``, ``wait_exit``) so notebooks and tests drive the panel
headless exactly as a click would.

The panel never leaks its trainer: creating a panel with the same name, closing it,
garbage-collecting it or shutting the kernel down stops the trainer's whole process group.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
import weakref
from pathlib import Path

import ipywidgets as w

import psutil

from labkit import checks, liveplot, monitor, signals
from labkit._prctl import set_parent_death_signal
from labkit.errors import BadArgument, JobTimeout, LabkitError
from labkit.jobs import labkit_home, trainer_command
from labkit.trainer.config import FAULTS

SIGNAL_BUTTONS = ("SIGTERM", "SIGINT", "SIGHUP", "SIGKILL", "SIGSTOP", "SIGCONT", "SIGUSR1", "SIGUSR2")
_LIVE: dict[str, weakref.ref[TrainerPanel]] = {}


def _stop_groups(procs: list[tuple[subprocess.Popen, float]], grace_s: float = 2.0) -> None:
    """TERM, wait, KILL every trainer group still holding a process (finalizer, close).

    A trainer that already exited may have left workers behind in its group (orphans):
    the group is found by id and start time, so those are stopped too.
    """
    for proc, started in procs:
        if proc.poll() is None or signals.group_members(proc.pid, started):
            try:
                signals.terminate_group(proc.pid, started, grace_s)
            except (psutil.Error, LabkitError):
                pass  # at interpreter exit, best effort: never raise from a finalizer
            proc.wait()


def _prepare_child() -> None:  # in the child, before exec: no imports here
    set_parent_death_signal(signal.SIGKILL)  # the kernel died without atexit: take the run with it
    # A Jupyter kernel ignores SIGINT (ipykernel's init_signal), and a server started by nohup
    # hands its kernels SIGHUP ignored; the trainer keeps an inherited SIG_IGN for SIGHUP (it
    # honours nohup). The panel's run is its own session: every signal button must act as on
    # a fresh terminal, so the run gets the default dispositions.
    signal.signal(signal.SIGHUP, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class TrainerPanel:
    """A live control panel for one trainer process.

    >>> panel = TrainerPanel()            # doctest: +SKIP
    >>> panel.start(epochs=2)             # doctest: +SKIP
    >>> panel.send("SIGTERM"); panel.wait_exit()   # doctest: +SKIP
    0
    """

    def __init__(self, name: str = "panel", run_dir: str | os.PathLike | None = None,
                 interval_s: float = 0.5, log_lines: int = 12) -> None:
        previous = _LIVE.get(name)
        panel = previous() if previous is not None else None
        if panel is not None:
            panel.close()  # re-running the cell replaces the old panel and its trainer
        self.name = name
        self.run_dir = Path(run_dir) if run_dir else labkit_home() / "runs" / name
        self.interval_s = interval_s
        self.log_lines = log_lines
        self.markers: list[tuple[float, str]] = []
        self.samples: list = []
        self.proc: subprocess.Popen | None = None
        self._procs: list[tuple[subprocess.Popen, float]] = []  # (trainer, its start time)
        self._lock = threading.RLock()
        self._stop_updates = threading.Event()
        self._updater: threading.Thread | None = None
        self._sampler: monitor.TreeSampler | None = None
        self._metrics = liveplot.MetricsTail(self.run_dir)
        self._plot = liveplot.LivePlot(title=f"trainer ({name})")
        self._message = "ready: press Start"
        self._build_widgets()
        _LIVE[name] = weakref.ref(self)
        # Runs when the panel is collected, and at interpreter exit (kernel shutdown).
        self._finalizer = weakref.finalize(self, _stop_groups, self._procs)

    # ----- actions (each button calls one of these) -----

    def start(self, epochs: int = 20, steps_per_epoch: int = 50, step_time_s: float = 0.02, workers: int = 0,
              memory_mb: int = 0, fault: str | None = None, checkpoint_every: int = 10, resume: bool = False,
              fresh: bool = True, extra_args: tuple[str, ...] = ()) -> int:
        """Start the trainer (stopping a running one first); return its pid.

        ``fresh`` removes the previous run's files first (train.log, metrics, checkpoints...),
        unless ``resume`` asks to continue from them; other files in the folder are kept.
        ``step_time_s`` is the trainer's ``--step-time``. A resumed run's plot starts at the run's first step, with a "resume" line
        where this process began.
        """
        if fault not in (None, "", "none") and fault not in FAULTS:
            raise BadArgument(f"unknown fault {fault!r}; choose one of {', '.join(FAULTS)}")
        with self._lock:
            if self.proc is not None and self.proc.poll() is None:
                self.stop(grace_s=3)
            if fresh and not resume:
                _empty_run_dir(self.run_dir)
            self.run_dir.mkdir(parents=True, exist_ok=True)
            command = trainer_command(
                self.run_dir, "--epochs", str(epochs), "--steps-per-epoch", str(steps_per_epoch),
                "--step-time", str(step_time_s), "--workers", str(workers), "--memory-mb", str(memory_mb),
                "--checkpoint-every", str(checkpoint_every), *extra_args)
            if fault not in (None, "", "none"):
                command += ["--fault", fault]
            if resume:
                command.append("--resume")
            main_thread = threading.current_thread() is threading.main_thread()
            with open(self.run_dir / "console.log", "ab") as console:
                self.proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=console, stderr=console,
                                             start_new_session=True,
                                             preexec_fn=_prepare_child if main_thread else None)
            try:
                started = psutil.Process(self.proc.pid).create_time()
            except psutil.NoSuchProcess:
                started = time.time()
            self._procs.append((self.proc, started))
            self.samples, self.markers = [], [(started, "resume")] if resume else []
            self._metrics = liveplot.MetricsTail(self.run_dir)
            if self._sampler is not None:
                self._sampler.close()
            self._sampler = monitor.TreeSampler(self.proc.pid)
            self._message = f"started pid {self.proc.pid}"
            self._start_updates()
        return self.proc.pid

    def send(self, sig: str | int | signal.Signals, group: bool = False) -> str:
        """Send ``sig`` to the trainer (or its whole process group) and mark it on the plot."""
        sig = signals.parse_signal(sig)
        with self._lock:  # the updater reaps under this lock: the pid cannot be recycled meanwhile
            proc = self._running_proc()
            if group:
                signals.send_group_signal(proc.pid, sig)
            else:
                signals.send_signal(proc.pid, sig)
            self._mark(sig.name + (" (group)" if group else ""))
        self._message = f"sent {sig.name} to {'group' if group else 'pid'} {proc.pid}: {signals.MEANINGS.get(sig, '')}"
        self.refresh()
        return self._message

    def stop(self, grace_s: float = 5.0) -> dict:
        """SIGTERM the trainer's group, wait ``grace_s``, then SIGKILL; report what happened."""
        # Under the lock the updater cannot reap the trainer, so its pid (and group id) cannot be
        # reused while we signal it; the exited trainer waits as a zombie, which counts as gone.
        with self._lock:
            proc = self._running_proc()
            self._mark("SIGTERM")
            escalated, seconds = signals.terminate_group(proc.pid, self._procs[-1][1], grace_s)
            if escalated:
                self._mark("SIGKILL")
            proc.wait()
        result = {"pid": proc.pid, "signal_sent": "SIGTERM", "escalated": escalated,
                  "exit_code": self.exit_code, "seconds": round(seconds, 3)}
        self._message = (f"stopped pid {proc.pid}: " + ("no exit within grace period, sent SIGKILL; " if escalated
                                                          else "") + signals.explain_exit_code(self.exit_code))
        self.refresh()
        return result

    def wait_exit(self, timeout_s: float = 30.0) -> int:
        """Wait for the trainer to exit; return its exit code (128+n if killed by signal n)."""
        if self.proc is None:
            raise LabkitError("nothing to wait for: press Start first")
        try:
            returncode = self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise JobTimeout(f"the trainer (pid {self.proc.pid}) is still running after {timeout_s:g} s "
                             f"(state {self.state}); try panel.stop()") from None
        self._finish_updates()
        return signals.shell_exit_code(returncode)

    def wait_for_step(self, step: int, timeout_s: float = 30.0) -> int:
        """Wait until the run has logged ``step``; return the last step seen."""
        deadline = time.monotonic() + timeout_s
        while (seen := checks.last_logged_step(self.run_dir)) < step:
            if self.proc is None or self.proc.poll() is not None or time.monotonic() > deadline:
                raise JobTimeout(f"the run reached step {seen}, not {step} (state {self.state})")
            time.sleep(0.05)
        return seen

    def close(self) -> None:
        """Stop the trainer (and anything left in its group) and the live updates."""
        self._stop_updates.set()
        _stop_groups(self._procs)
        self.refresh()
        if _LIVE.get(self.name) is not None and _LIVE[self.name]() is self:
            del _LIVE[self.name]

    # ----- what the panel shows -----

    @property
    def pid(self) -> int | None:
        """The trainer's pid (None before Start)."""
        return None if self.proc is None else self.proc.pid

    @property
    def exit_code(self) -> int | None:
        """Exit code, shell style (137 = killed by SIGKILL); None while running."""
        return None if self.proc is None else checks.exit_code_of(self.proc)

    @property
    def state(self) -> str:
        """'not started', psutil's state (running, sleeping, stopped...), or 'exited'."""
        if self.proc is None:
            return "not started"
        if self.proc.poll() is not None:
            return "exited"
        try:
            return psutil.Process(self.proc.pid).status()
        except psutil.Error:
            return "exited"

    @property
    def status_text(self) -> str:
        """The status line: state, pid, step, last checkpoint, exit code explained, steps lost."""
        if self.proc is None:
            return f"not started | {self._message}"
        step = checks.last_logged_step(self.run_dir)
        saved = checks.newest_checkpoint_step(self.run_dir, verify=False)  # cheap: redrawn twice a second
        lost = max(0, step - (saved or 0))
        parts = [self.state, f"pid {self.proc.pid}", f"step {step}", f"last checkpoint {saved}"]
        if self.exit_code is None:
            parts.append(f"{lost} steps at risk")
        else:
            parts += [f"exit {signals.explain_exit_code(self.exit_code)}", f"{lost} steps lost"]
        held = self.gpu_memory_mib()
        if held is not None:
            parts.append(f"GPU memory {held} MiB")
        return " | ".join(parts)

    def gpu_memory_mib(self) -> int | None:
        """MiB of GPU memory the trainer holds now (0 once it exited); None where NVML is unavailable."""
        if self.proc is None:
            return None
        from labkit.gpu import process_gpu_memory

        held = process_gpu_memory(self.proc.pid)
        return None if held is None else held >> 20

    def log_tail(self, lines: int | None = None) -> str:
        """The last lines of the run's train.log."""
        wanted = lines or self.log_lines
        try:
            with open(self.run_dir / "train.log", "rb") as handle:
                size = handle.seek(0, os.SEEK_END)
                handle.seek(max(0, size - 65536))  # redrawn twice a second: read the end, not the whole log
                text = handle.read().decode(errors="replace").splitlines()
                if len(text) <= wanted and size > 65536:  # a long stack dump: read it all after all
                    handle.seek(0)
                    text = handle.read().decode(errors="replace").splitlines()
        except FileNotFoundError:
            return ""
        return "\n".join(text[-wanted:])

    def refresh(self) -> None:
        """Redraw the status line, the log tail and the plot now."""
        with self._lock:
            self.status.value = f"<code>{_html(self.status_text)}</code><br><i>{_html(self._message)}</i>"
            self.log.value = self.log_tail()
            losses = self._metrics.read()
            ended = self.exit_code
            self._plot.update(self.samples, losses, self.markers,
                              end_label=None if ended is None else f"exit {ended}")
            self.plot.value = self._plot.to_png()

    def figure(self):
        """The live plot's matplotlib Figure (to save or show it)."""
        return self._plot.figure

    def save_plot(self, path: str | os.PathLike) -> Path:
        """Save the current plot as a PNG file."""
        self.refresh()
        Path(path).write_bytes(self.plot.value)
        return Path(path)

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)

    # ----- internals -----

    def _build_widgets(self) -> None:
        self.epochs = w.BoundedIntText(value=20, min=1, max=1000, description="epochs", layout=w.Layout(width="150px"))
        self.workers = w.BoundedIntText(value=0, min=0, max=8, description="workers", layout=w.Layout(width="150px"))
        self.memory = w.BoundedIntText(value=0, min=0, max=4096, description="MiB", layout=w.Layout(width="150px"))
        self.fault = w.Dropdown(options=["none", *FAULTS], value="none", description="fault",
                                layout=w.Layout(width="220px"))
        start = w.Button(description="Start", button_style="success", icon="play")
        start.on_click(_weakly(self, lambda panel: panel.start(
            epochs=panel.epochs.value, workers=panel.workers.value, memory_mb=panel.memory.value,
            fault=panel.fault.value)))
        buttons = []
        for name in SIGNAL_BUTTONS:
            button = w.Button(description=name, tooltip=signals.describe(name), layout=w.Layout(width="95px"),
                              button_style="danger" if name == "SIGKILL" else "")
            button.on_click(_weakly(self, lambda panel, n=name: panel.send(n)))
            buttons.append(button)
        stop = w.Button(description="Stop (TERM, wait, KILL)", button_style="warning", layout=w.Layout(width="200px"))
        stop.on_click(_weakly(self, lambda panel: panel.stop()))
        self.status = w.HTML()
        self.log = w.Textarea(layout=w.Layout(width="100%", height="200px"), disabled=True)
        self.plot = w.Image(format="png", layout=w.Layout(width="100%"))
        self.widget = w.VBox([
            w.HBox([start, self.epochs, self.workers, self.memory, self.fault]),
            w.HBox(buttons + [stop], layout=w.Layout(flex_flow="row wrap")),
            self.status, self.plot, self.log,
        ])
        self.refresh()

    def _guard(self, action) -> None:
        try:
            action()
        except (LabkitError, OSError, psutil.Error) as err:
            self._message = f"error: {err}"
            self.refresh()

    def _running_proc(self) -> subprocess.Popen:
        if self.proc is None:
            raise LabkitError("no trainer yet: press Start (or call panel.start())")
        if self.proc.poll() is not None:
            raise LabkitError(f"the trainer (pid {self.proc.pid}) has already exited: "
                              f"{signals.explain_exit_code(self.exit_code)}")
        return self.proc

    def mark(self, label: str) -> None:
        """Draw a labelled line at this moment on the live plot (e.g. after applying a limit)."""
        self._mark(label)

    def _mark(self, label: str) -> None:
        with self._lock:
            self.markers.append((time.time(), label))

    def _start_updates(self) -> None:
        self._stop_updates.set()  # the previous run's updater, if any, ends
        self._stop_updates = threading.Event()
        self._updater = threading.Thread(target=_update_loop, args=(weakref.ref(self), self._stop_updates),
                                         name=f"labkit-panel-{self.name}", daemon=True)
        self._updater.start()

    def _tick(self, redraw: bool = True) -> bool:
        """Take one sample (and redraw); False once the trainer has exited."""
        with self._lock:
            sample = self._sampler.sample() if self._sampler is not None else None
            if sample is not None:
                self.samples.append(sample)
            alive = self.proc is not None and self.proc.poll() is None
        if redraw or not alive:
            self.refresh()
        return alive

    def _finish_updates(self) -> None:
        self._tick()
        self._stop_updates.set()


SAMPLE_INTERVAL_S = 0.1  # 10 Hz sampling costs well under 1% of a core (bench/bench_monitor.py)


def _update_loop(panel_ref: weakref.ref, stop: threading.Event) -> None:
    """Sample at 10 Hz and redraw every ``interval_s`` until the trainer exits (no strong reference held)."""
    last_draw = 0.0
    while not stop.is_set():
        panel = panel_ref()
        if panel is None:
            return
        now = time.monotonic()
        redraw = now - last_draw >= panel.interval_s
        try:
            alive = panel._tick(redraw=redraw)
        except Exception as err:  # never let a drawing problem die silently in the kernel's thread
            panel._message = f"live update stopped: {err}"
            return
        if redraw:
            last_draw = now
        del panel
        if not alive:
            return
        stop.wait(SAMPLE_INTERVAL_S)


def _weakly(panel: TrainerPanel, action):
    """A click handler that holds the panel weakly (widgets live on in ipywidgets' registry,
    and must not keep a forgotten panel, and so its trainer, alive) and reports errors."""
    ref = weakref.ref(panel)

    def on_click(_button) -> None:
        target = ref()
        if target is not None:
            target._guard(lambda: action(target))

    return on_click


RUN_FILES = ("train.log", "metrics.jsonl", "heartbeat", "final.json", "console.log")


def _empty_run_dir(run_dir: Path) -> None:
    """Remove a previous run's files (and only those: the folder may hold the learner's own)."""
    from labkit.checkpoint import list_checkpoints, remove_stale_temporaries

    for name in RUN_FILES:
        (run_dir / name).unlink(missing_ok=True)
    folder = run_dir / "checkpoints"
    for _, path in list_checkpoints(folder):
        path.unlink()
    remove_stale_temporaries(folder)


def _html(text: str) -> str:
    import html

    return html.escape(text)
