"""The timeline picture: a TimelineModel drawn with matplotlib, which is imported only inside
render(), so that everything else works without it."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from .history import RUN_ENDS
from .model import Bar, RunSpan, TimelineModel
from .summary import format_duration, format_steps_lost

RUN_COLOURS = {
    "completed": "#2f9e44",
    "running": "#1c7ed6",
    "signalled": "#f59f00",
    "hard-stop": "#e8590c",
    "failed": "#c92a2a",
}
RUN_LEGEND = {
    "completed": "run: completed",
    "running": "run: still running",
    "signalled": "run: stopped on a signal",
    "hard-stop": "run: hard stop (killed, node lost)",
    "failed": "run: failed",
}
WAIT_COLOUR = "#dee2e6"
# kind: (matplotlib marker, colour, size, lane, legend text); lanes: "above" the bar, on its "top" edge,
# "below" it. What happens at one moment shares no lane: signal (above), the checkpoint it forces (top
# edge) and the requeue request (below) are written within seconds of each other
MARKER_STYLE: dict[str, tuple[str, str, float, str, str]] = {
    "signal": ("v", "#e03131", 7.5, "above", "signal"),
    "watchdog": ("X", "#c92a2a", 8.0, "above", "watchdog cancelled a hang or stall"),
    "checkpoint": ("|", "#212529", 6.0, "top", "checkpoint"),
    "requeue": ("$\\circlearrowleft$", "#5f3dc4", 8.0, "below", "requeue requested"),
    "resumed": ("^", "#087f5b", 7.0, "below", "resumed from checkpoint"),
    "resubmitted": ("D", "#212529", 5.0, "below", "resubmitted as a new job"),
}
_BAR_HEIGHT = 0.5
_WAIT_HEIGHT = 0.26
_ROW_INCHES = 0.42


def _unit(span: float) -> tuple[float, str]:
    if span <= 180:
        return 1.0, "seconds"
    if span <= 3 * 3600:
        return 60.0, "minutes"
    return 3600.0, "hours"


def _caption_variants(run: RunSpan) -> list[str]:
    """The longest first: the caller keeps the first that fits its bar."""
    job = f"job {run.job_id or '?'}" + (f" restart {run.restart}" if run.restart else "")
    steps = f"steps {run.first_step or 0:,}–{run.last_step:,}" if run.last_step is not None else ""
    short = f"{run.job_id or '?'}" + (f" r{run.restart}" if run.restart else "")
    # how many nodes, beside which: an elastic step's runs differ in size
    nodes = run.nodes + (f" ({run.num_nodes} node{'s' if run.num_nodes > 1 else ''})" if run.num_nodes else "")
    variants = [" · ".join(part for part in (job, nodes, steps) if part),
                " · ".join(part for part in (short, nodes, steps) if part),
                " · ".join(part for part in (job, nodes) if part),
                " · ".join(part for part in (short, run.nodes) if part), short]
    return list(dict.fromkeys(variants))


def render(model: TimelineModel, path: str | Path, title: str | None = None) -> Path:
    """Draw the model to `path` (.png or .svg, by suffix) with matplotlib's Agg backend."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".png", ".svg"):
        raise ValueError(f"{path}: the picture is written as .png or .svg, not '{path.suffix}'")
    # the Agg canvas directly, not pyplot: no global backend switch, no GUI, safe in threads
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    bars = model.bars
    rows = max(1, len(bars))
    longest = max([len(bar.label) for bar in bars] + [10])
    label_inches = min(4.0, 0.075 * min(longest, 48) + 0.3)
    fig = Figure(figsize=(11.5 + label_inches, 1.9 + _ROW_INCHES * rows), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    scale, unit = _unit(model.span)

    used_runs: set[str] = set()
    used_markers: set[str] = set()
    has_wait = False
    captions = []
    for y, bar in enumerate(bars):
        for wait in bar.waits:
            has_wait = True
            ax.barh(y, (wait.end - wait.start) / scale, left=wait.start / scale, height=_WAIT_HEIGHT,
                    color=WAIT_COLOUR, edgecolor="#adb5bd", linewidth=0.6, zorder=1)
        for run in bar.runs:
            used_runs.add(run.ended)
            ax.barh(y, max(run.end - run.start, 0.0) / scale, left=run.start / scale, height=_BAR_HEIGHT,
                    color=RUN_COLOURS.get(run.ended, "#868e96"), edgecolor="white", linewidth=0.8, zorder=2)
            captions.append((y, run))
        for kind in MARKER_STYLE:
            times = [m.ts / scale for m in bar.markers if m.kind == kind]
            if not times:
                continue
            used_markers.add(kind)
            marker, colour, size, where, _ = MARKER_STYLE[kind]
            offset = {"above": -(_BAR_HEIGHT / 2 + 0.11), "top": -_BAR_HEIGHT / 2,
                      "below": _BAR_HEIGHT / 2 + 0.11}[where]
            ax.plot(times, [y + offset] * len(times), linestyle="none", marker=marker, color=colour,
                    markersize=size, markeredgewidth=1.4 if marker == "|" else 0.5,
                    markeredgecolor=colour if marker in ("|", "X") else "white", zorder=4, clip_on=False)

    ax.set_ylim(rows - 0.4, -0.6)
    ax.set_yticks(range(len(bars)), [_row_label(bar) for bar in bars], fontsize=8.5, linespacing=1.15)
    ax.tick_params(axis="y", length=0)
    right = model.span / scale
    ax.set_xlim(-0.01 * right, right * 1.01 if right > 0 else 1)
    ax.set_xlabel(f"time since the first submission ({unit})")
    ax.grid(axis="x", color="#e9ecef", linewidth=0.8, zorder=0)
    ax.set_axisbelow(True)
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)
    if any(bar.state in ("running", "pending", "interrupted") for bar in bars):
        ax.axvline(model.now / scale, color="#868e96", linestyle="--", linewidth=0.8, zorder=0)
        ax.annotate("now", (model.now / scale, 1.0), xycoords=("data", "axes fraction"), xytext=(2, 2),
                    textcoords="offset points", fontsize=8, color="#868e96")
    if bars:
        start = datetime.fromtimestamp(model.origin).astimezone()
        default_title = (f"slurm-gpu timeline: {len(bars)} step{'s' if len(bars) != 1 else ''}, "
                         f"from {start:%Y-%m-%d %H:%M:%S %Z}")
    else:
        default_title = "slurm-gpu timeline: no steps"
        ax.text(0.5, 0.5, "no events recorded yet", transform=ax.transAxes, ha="center", va="center",
                color="#868e96")
    ax.set_title(title or default_title, fontsize=11, loc="left")

    handles = [Patch(facecolor=RUN_COLOURS[kind], label=RUN_LEGEND[kind]) for kind in RUN_ENDS if kind in used_runs]
    if has_wait:
        handles.append(Patch(facecolor=WAIT_COLOUR, edgecolor="#adb5bd", label="waiting in the queue"))
    for kind, (marker, colour, size, _, text) in MARKER_STYLE.items():
        if kind in used_markers:
            handles.append(Line2D([], [], linestyle="none", marker=marker, color=colour, markersize=size,
                                  markeredgecolor=colour, label=text))
    if handles:
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.005, 1.0), fontsize=8, frameon=False,
                  borderaxespad=0.0)

    # captions inside the run bars, only where they fit (never over a neighbour)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    for y, run in captions:
        box = ax.transData.transform([(run.start / scale, y), (run.end / scale, y)])
        room = box[1][0] - box[0][0] - 6
        for text in _caption_variants(run):
            if not text:
                continue
            artist = ax.text((run.start + run.end) / 2 / scale, y, text, ha="center", va="center", fontsize=7,
                             color="white", zorder=3, clip_on=True)
            if artist.get_window_extent(renderer).width <= room:
                break
            artist.remove()
    # SVG text stays text (searchable, selectable, small), not glyph outlines
    with matplotlib.rc_context({"svg.fonttype": "none"}):
        fig.savefig(path, format=suffix[1:])
    return path


def _row_label(bar: Bar) -> str:
    """The step, and under it what preemptions cost it."""
    name = _short(bar.label)
    summary = bar.summary
    if summary is None or not summary.preemptions:
        return name
    lost = f"lost {format_duration(summary.seconds_lost)}"
    if summary.steps_lost is not None:
        lost += f", {format_steps_lost(summary)} steps"
    return f"{name}\n{lost}"


def _short(label: str, limit: int = 48) -> str:
    return label if len(label) <= limit else label[: limit - 1] + "…"
