"""Draw a process tree's samples next to a trainer's loss, live or into a file.

:class:`LivePlot` redraws one figure in place (the control panel calls it twice a second);
:func:`plot` draws once; :class:`MetricsTail` reads a run's metrics.jsonl incrementally.
matplotlib is imported only by the functions that draw, so importing this module is cheap.
"""

from __future__ import annotations

import io
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from labkit.monitor import Sample

_MIB = 2**20


def read_losses(run_dir: str | os.PathLike) -> list[tuple[float, int, float]]:
    """Return ``(time, step, loss)`` per line of ``run_dir/metrics.jsonl`` ([] if none yet)."""
    return MetricsTail(run_dir).read()


class MetricsTail:
    """Read a run's metrics.jsonl incrementally: each :meth:`read` parses only the new lines.

    A live panel redraws twice a second; re-parsing an hour-long run's whole file each time
    would cost more than the run. A file that shrank or was replaced (a resume rewrites it
    atomically) is read again from the start.
    """

    def __init__(self, run_dir: str | os.PathLike) -> None:
        self.path = Path(run_dir) / "metrics.jsonl"
        self.rows: list[tuple[float, int, float]] = []
        self._offset = 0
        self._inode: int | None = None

    def read(self) -> list[tuple[float, int, float]]:
        """Return every ``(time, step, loss)`` so far, parsing what was appended since the last call."""
        try:
            info = self.path.stat()
        except FileNotFoundError:
            self.rows, self._offset, self._inode = [], 0, None
            return self.rows
        if info.st_ino != self._inode or info.st_size < self._offset:
            self.rows, self._offset, self._inode = [], 0, info.st_ino
        with open(self.path, "rb") as handle:
            handle.seek(self._offset)
            data = handle.read()
        complete = data[: data.rfind(b"\n") + 1]  # a line being written now waits for the next call
        self._offset += len(complete)
        for line in complete.splitlines():
            try:
                row = json.loads(line)
                self.rows.append((float(row["time"]), int(row["step"]), float(row["loss"])))
            except (ValueError, KeyError, TypeError):
                continue  # a line cut short by a kill, then appended to
        return self.rows


class LivePlot:
    """CPU %, RSS and loss over time in one figure that ``update`` redraws in place.

    >>> live = LivePlot()                                                     # doctest: +SKIP
    >>> live.update(samples, read_losses(run_dir), [(sent_at, "SIGTERM")])   # doctest: +SKIP
    >>> png = live.to_png()                                                   # doctest: +SKIP
    """

    def __init__(self, fig: Figure | None = None, ax: Axes | None = None, title: str | None = None) -> None:
        self._own_layout = fig is None and ax is None  # never move the axes of a caller's figure
        if ax is None:
            ax = (_new_figure() if fig is None else fig).add_subplot()
        from matplotlib.figure import Figure as _Figure  # matplotlib is loaded: ax exists

        owner = ax.figure  # a SubFigure when ax is in one; plotting needs the whole Figure
        self.figure: Figure = owner if isinstance(owner, _Figure) else owner.figure
        self.title = title
        self.ax_cpu, self.ax_rss, self.ax_loss = ax, ax.twinx(), ax.twinx()
        self.ax_loss.spines["right"].set_position(("axes", 1.13))
        self.ax_loss.set_visible(False)  # shown once there is a loss to draw
        # Steps, not slopes: a sample's value holds until the next one, so the drop at exit is
        # drawn where it happened instead of as a ramp from the last live sample.
        (self.cpu_line,) = ax.plot([], [], color="tab:blue", lw=1.5, drawstyle="steps-post")
        (self.rss_line,) = self.ax_rss.plot([], [], color="tab:orange", lw=1.5, drawstyle="steps-post")
        (self.loss_line,) = self.ax_loss.plot([], [], color="tab:green", lw=1, alpha=0.8)
        for axis, line, label in ((ax, self.cpu_line, "CPU % (100 = one core)"),
                                  (self.ax_rss, self.rss_line, "RSS (MiB)"), (self.ax_loss, self.loss_line, "loss")):
            axis.set_ylabel(label, color=line.get_color())
            axis.tick_params(axis="y", colors=line.get_color())
        ax.set_xlabel("seconds since the first sample")
        self._markers: list = []
        self._markers_key: tuple | None = None

    def update(self, samples: Sequence[Sample], losses: Sequence[tuple[float, int, float]] | None = None,
               markers: Sequence[tuple[float, str]] | None = None, end_label: str | None = None) -> None:
        """Show these samples, losses (``read_losses``) and markers ``(t, label)``, t on ``Sample.t``'s clock.

        The end of a target that exited is marked with ``end_label`` (e.g. "exit 137"), else its status.
        """
        losses = losses or []
        # Times are epoch seconds: with nothing sampled yet, anchor on a marker, or a label
        # would be drawn ~1.8e9 units away (FreeType fails on such coordinates). A resumed run's
        # metrics.jsonl holds the loss of its earlier processes, logged before this one's first
        # sample: the axis then starts at the run's first step, so nothing sits at negative time.
        starts = [samples[0].t] if samples else [t for t, _ in markers or []][:1]
        starts += [t for t, _, _ in losses[:1]]
        t0 = min(starts) if starts else 0.0
        earlier = bool(losses and samples and losses[0][0] < samples[0].t)
        self.ax_cpu.set_xlabel("seconds since the run's first step (before the resume too)"
                               if earlier else "seconds since the first sample")
        xs = [s.t - t0 for s in samples]
        self.cpu_line.set_data(xs, [s.cpu_percent for s in samples])
        self.rss_line.set_data(xs, [s.rss_bytes / _MIB for s in samples])
        loss_xs = [t - t0 for t, _, _ in losses]
        self.loss_line.set_data(loss_xs, [loss for _, _, loss in losses])
        self.ax_loss.set_visible(bool(losses))
        if self._own_layout:  # room on the right for the loss axis only when it is shown
            self.figure.subplots_adjust(left=0.08, right=0.8 if losses else 0.88, top=0.9)
        if losses:
            self.ax_loss.relim()
            self.ax_loss.autoscale_view(scalex=False)
        left, right = 0.0, max([1.0, *xs[-1:], *loss_xs[-1:]])
        self.ax_cpu.set_xlim(left, right + 0.02 * (right - left))  # a marker at the last sample stays visible
        self.ax_cpu.set_ylim(0, max([100.0, *(1.1 * s.cpu_percent for s in samples)]))
        self.ax_rss.set_ylim(0, max([1.0, *(1.15 * s.rss_bytes / _MIB for s in samples)]))
        marks = list(markers or [])
        if samples and samples[-1].ended:
            marks.append((samples[-1].t, end_label or samples[-1].status))
        self._draw_markers(marks, t0)
        self.ax_cpu.set_title(self.title or (f"pid {samples[0].pid}" if samples else ""), fontsize=10)
        self.figure.canvas.draw_idle()  # a no-op on a bare Figure; redraws an interactive backend

    def _draw_markers(self, marks: list[tuple[float, str]], t0: float) -> None:
        groups = label_groups([(t - t0, label) for t, label in marks], self._min_label_gap())
        key = (t0, tuple(marks), tuple(groups))
        if key == self._markers_key:
            return  # markers change rarely: keep the artists
        for artist in self._markers:
            artist.remove()
        self._markers, self._markers_key = [], key
        for t, _ in marks:
            self._markers.append(self.ax_cpu.axvline(t - t0, color="0.4", ls="--", lw=1))
        for x, label in groups:
            self._markers.append(self.ax_cpu.text(x, 0.98, f" {label}", rotation=90, va="top", fontsize=_LABEL_PT,
                                                  color="0.25", transform=self.ax_cpu.get_xaxis_transform()))

    def _min_label_gap(self) -> float:
        """The x distance (in seconds) two labels need not to overlap: one rotated line of text."""
        left, right = self.ax_cpu.get_xlim()
        width_px = self.ax_cpu.get_position().width * self.figure.get_figwidth() * self.figure.dpi
        label_px = _LABEL_PT * self.figure.dpi / 72 * 1.4  # a line of text is ~1.2-1.4 em high
        return label_px * (right - left) / max(width_px, 1.0)

    def to_png(self, dpi: int = 100) -> bytes:
        """Render the figure as PNG bytes (for an ipywidgets Image)."""
        buffer = io.BytesIO()
        self.figure.savefig(buffer, format="png", dpi=dpi)
        return buffer.getvalue()

    def save(self, path: str | os.PathLike) -> None:
        """Write the figure to ``path`` (the format follows the extension)."""
        self.figure.savefig(path)


_LABEL_PT = 8


def label_groups(marks: Sequence[tuple[float, str]], min_gap: float) -> list[tuple[float, str]]:
    """Merge labels closer than ``min_gap`` in x into one ``"A / B"`` label at the first one's x.

    A SIGKILL and the exit it causes are milliseconds apart: drawn as two rotated labels they
    print on top of each other. Returns ``(x, label)`` per group, in time order.

    >>> label_groups([(5.0, "SIGKILL"), (5.01, "exit 137"), (9.0, "SIGCONT")], min_gap=0.2)
    [(5.0, 'SIGKILL / exit 137'), (9.0, 'SIGCONT')]
    """
    groups: list[tuple[float, list[str]]] = []
    for x, label in sorted(marks, key=lambda mark: mark[0]):
        if groups and x - groups[-1][0] < min_gap:
            groups[-1][1].append(label)
        else:
            groups.append((x, [label]))
    return [(x, " / ".join(labels)) for x, labels in groups]


def plot(samples: Sequence[Sample], path: str | os.PathLike | None = None,
         run_dir: str | os.PathLike | None = None, markers: Sequence[tuple[float, str]] | None = None,
         ax: Axes | None = None, fig: Figure | None = None) -> Figure:
    """Draw CPU % and RSS over time, the run's loss if ``run_dir`` is given, and marker lines; save to ``path``."""
    live = LivePlot(fig=fig, ax=ax)
    live.update(samples, read_losses(run_dir) if run_dir else None, markers)
    if path is not None:
        live.save(path)
    return live.figure


def _new_figure() -> Figure:
    # A bare Figure, not pyplot's: no backend to pick (so it works headless and never clobbers a
    # notebook's), nothing held in pyplot's registry; savefig renders it with Agg.
    ipython = sys.modules.get("IPython")
    if ipython is not None and ipython.get_ipython() is not None:
        import matplotlib.pyplot  # noqa: F401  registers Jupyter's display of a returned Figure
    from matplotlib.figure import Figure

    return Figure(figsize=(9, 4), dpi=100)
