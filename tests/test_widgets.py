"""The control panel, driven headless exactly as its buttons would drive it."""

from __future__ import annotations

import gc
import os
import time

import psutil
import pytest

from labkit import checks
from labkit.errors import BadArgument, LabkitError
from labkit.widgets import SIGNAL_BUTTONS, TrainerPanel


@pytest.fixture
def panel(tmp_path):
    made = TrainerPanel(name="test", run_dir=tmp_path / "run", interval_s=0.2)
    yield made
    made.close()


def test_term_then_kill_shows_exit_codes_steps_lost_and_markers(panel, tmp_path):
    panel.start(epochs=20)
    panel.wait_for_step(25)
    panel.send("SIGTERM")
    assert panel.wait_exit() == 0
    assert "exit 0: success" in panel.status_text and "0 steps lost" in panel.status_text
    panel.start(epochs=20, checkpoint_every=1000)
    panel.wait_for_step(25)  # no checkpoint yet (every 1000 steps): every step is lost
    panel.send("SIGKILL")
    assert panel.wait_exit() == 137
    status = panel.status_text
    assert "137 = 128 + 9: killed by SIGKILL" in status
    assert checks.steps_lost(panel.run_dir) > 0 and f"{checks.steps_lost(panel.run_dir)} steps lost" in status
    assert [label for _, label in panel.markers] == ["SIGKILL"]
    assert len(panel.samples) >= 3 and panel.samples[-1].ended
    end_marks = [text.get_text().strip() for text in panel.figure().axes[0].texts]
    assert " / ".join(end_marks) == "SIGKILL / exit 137"  # merged when too close to be read apart
    xs = _label_x_pixels(panel.figure())
    assert all(b - a >= 8 * panel.figure().dpi / 72 for a, b in zip(xs, xs[1:])), xs  # never on top of each other
    png = panel.save_plot(tmp_path / "panel.png").read_bytes()
    assert png.startswith(b"\x89PNG")


def test_every_signal_button_has_a_method(panel):
    assert set(SIGNAL_BUTTONS) == {"SIGTERM", "SIGINT", "SIGHUP", "SIGKILL", "SIGSTOP", "SIGCONT", "SIGUSR1",
                                   "SIGUSR2"}
    panel.start(epochs=20)
    panel.wait_for_step(3)
    panel.send("SIGSTOP")
    time.sleep(0.2)
    assert panel.state == "stopped"
    panel.send("SIGCONT")
    panel.send("SIGUSR2")
    panel.send("SIGUSR1")
    time.sleep(0.5)
    assert "(SIGUSR2," in panel.log_tail(50) and "status: step" in panel.log_tail(50)
    panel.send("SIGHUP")
    assert panel.wait_exit() == 0
    assert "stopping on SIGHUP" in panel.log_tail(50)


def test_stop_escalates_and_reaches_workers(panel):
    panel.start(epochs=100, workers=2, fault="ignore-sigterm")
    panel.wait_for_step(3)
    workers = psutil.Process(panel.pid).children()
    result = panel.stop(grace_s=1.0)
    assert result["escalated"] and result["exit_code"] == 137 and 0.9 < result["seconds"] < 3
    assert all(_exited(w) for w in workers)


def test_stop_on_a_stopped_process_still_ends_it_cleanly(panel):
    panel.start(epochs=20)
    panel.wait_for_step(3)
    panel.send("SIGSTOP")
    result = panel.stop(grace_s=5)
    assert (result["escalated"], result["exit_code"]) == (False, 0)


def test_buttons_report_errors_in_the_status_line_instead_of_raising(panel):
    with pytest.raises(LabkitError, match="press Start"):
        panel.send("SIGTERM")
    panel._guard(lambda: panel.send("SIGTERM"))
    assert "error: no trainer yet" in panel.status.value
    with pytest.raises(BadArgument):
        panel.start(fault="explode")


def test_a_new_panel_with_the_same_name_stops_the_old_trainer(tmp_path):
    first = TrainerPanel(name="same", run_dir=tmp_path / "a")
    pid = first.start(epochs=100)
    second = TrainerPanel(name="same", run_dir=tmp_path / "b")
    try:
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    finally:
        second.close()


def test_a_forgotten_panel_stops_its_trainer_when_collected(tmp_path):
    panel = TrainerPanel(name="forgotten", run_dir=tmp_path / "run")
    proc = panel.proc if panel.start(epochs=100) else None
    panel.wait_for_step(2)
    del panel
    gc.collect()
    assert proc.wait(timeout=5) == 0  # SIGTERM from the finalizer: a clean stop


def test_the_widget_has_start_signal_and_stop_buttons(panel):
    descriptions = [child.description for row in panel.widget.children[:2] for child in row.children
                    if hasattr(child, "on_click")]
    assert descriptions == ["Start", *SIGNAL_BUTTONS, "Stop (TERM, wait, KILL)"]
    panel.widget.children[0].children[0].click()  # Start, as a click
    try:
        panel.wait_for_step(2)
        assert panel.state in ("running", "sleeping")
    finally:
        panel.widget.children[1].children[-1].click()  # Stop (TERM, wait, KILL)
    assert panel.exit_code == 0


def _exited(proc: psutil.Process) -> bool:
    try:
        return proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


KERNEL = """
import sys, time
from labkit.widgets import TrainerPanel
panel = TrainerPanel(name="orphan", run_dir=sys.argv[1])
print(panel.start(epochs=100), flush=True)
time.sleep(60)
"""


def test_the_trainer_dies_with_a_kernel_that_is_killed(spawn, tmp_path):
    import subprocess
    import sys

    kernel = spawn.popen([sys.executable, "-c", KERNEL, str(tmp_path / "run")], stdout=subprocess.PIPE)
    trainer = psutil.Process(int(kernel.stdout.readline()))
    kernel.kill()  # no atexit, no finalizer: only PR_SET_PDEATHSIG can save us
    kernel.wait()
    gone, alive = psutil.wait_procs([trainer], timeout=2)
    assert not alive or all(_exited(p) for p in alive)


def test_close_also_stops_workers_orphaned_by_a_crashed_trainer(panel):
    pid = panel.start(epochs=100, fault="orphan-workers", extra_args=("--fault-step", "2"))
    assert panel.wait_exit(timeout_s=20) == 1
    import labkit.signals as sigs

    started = psutil.Process().create_time()  # any time before the trainer started
    orphans = sigs.group_members(pid, started)
    assert len(orphans) == 2
    panel.close()
    assert sigs.group_members(pid, started) == []


def test_restarting_keeps_one_updater_and_keeps_the_learners_files(panel):
    (panel.run_dir).mkdir(parents=True, exist_ok=True)
    (panel.run_dir / "notes.txt").write_text("mine")
    panel.start(epochs=100)
    panel.start(epochs=100)
    import threading

    def updaters() -> list:
        return [t for t in threading.enumerate() if t.name == "labkit-panel-test" and t.is_alive()]

    # the first run's updater ends once the redraw it is in finishes (long on a loaded machine)
    deadline = time.monotonic() + 10
    while len(updaters()) > 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)  # and no second one appears
    assert len(updaters()) == 1
    assert (panel.run_dir / "notes.txt").read_text() == "mine"


def _label_x_pixels(figure) -> list[float]:
    axes = figure.axes[0]
    return sorted(text.get_transform().transform(text.get_position())[0] for text in axes.texts)


def test_labels_close_in_time_are_merged_and_the_rest_never_overlap():
    from labkit import liveplot
    from labkit.monitor import Sample

    samples = [Sample(1000.0 + i, 7, 50.0, 2**20, 1, 0, "running") for i in range(30)]
    samples.append(Sample(1030.004, 7, 0.0, 0, 0, 0, "zombie"))
    live = liveplot.LivePlot()
    marks = [(1005.0, "SIGSTOP"), (1005.2, "SIGCONT"), (1012.0, "SIGTERM"), (1030.0, "SIGKILL")]
    live.update(samples, markers=marks, end_label="exit 137")
    texts = [text.get_text().strip() for text in live.ax_cpu.texts]
    assert texts == ["SIGSTOP / SIGCONT", "SIGTERM", "SIGKILL / exit 137"]
    xs = _label_x_pixels(live.figure)
    label_px = 8 * live.figure.dpi / 72  # one line of the 8 pt labels
    assert all(b - a >= label_px for a, b in zip(xs, xs[1:])), xs
    assert len(live.ax_cpu.lines) == 1 + 5  # the CPU line, then one dashed line per marker (the exit's too)
    assert liveplot.label_groups([(1.0, "a"), (1.05, "b"), (1.2, "c")], 0.1) == [(1.0, "a / b"), (1.2, "c")]


def test_a_resumed_run_plots_its_earlier_loss_from_zero_not_at_negative_time(panel):
    panel.start(epochs=20, checkpoint_every=5)
    panel.wait_for_step(12)
    panel.send("SIGTERM")
    assert panel.wait_exit() == 0
    stopped_at = checks.last_logged_step(panel.run_dir)
    time.sleep(0.5)  # a pause between the two processes, as when a learner resumes later
    panel.start(epochs=20, checkpoint_every=5, resume=True)
    assert checks.wait_for_log(panel.run_dir, "resume: from", timeout_s=30)
    panel.wait_for_step(stopped_at + 8)
    panel.send("SIGTERM")
    assert panel.wait_exit() == 0
    panel.refresh()
    figure = panel.figure()
    loss_x, _ = figure.axes[2].lines[0].get_data()
    cpu_x, _ = figure.axes[0].lines[0].get_data()
    assert len(loss_x) >= 20 and min(loss_x) >= 0 and figure.axes[0].get_xlim()[0] == 0
    assert min(loss_x) < 0.5 < min(cpu_x)  # the earlier process's loss first, this one's samples after it
    assert figure.axes[0].get_xlabel().startswith("seconds since the run's first step")
    assert [label for _, label in panel.markers] == ["resume", "SIGTERM"]


def test_start_passes_step_time_s_to_the_trainer(panel):
    def step_time_of_trainer() -> str:
        command = psutil.Process(panel.pid).cmdline()
        return command[command.index("--step-time") + 1]

    panel.start(epochs=1, steps_per_epoch=400, step_time_s=0.25)
    assert step_time_of_trainer() == "0.25"
