"""What happened to each step, from its event log (events.py): a summary per step for `slurm-gpu status`
and the data and picture of `slurm-gpu timeline`.

Pure functions over lists of event dicts; matplotlib is imported only inside render(), so that the
status table works without it.

Modules: history (a step's event log cut into runs, stops and what preemptions cost; the executor
follows live steps through its History too), summary (one
step at a glance, and its text forms), model (the data behind the picture), picture (render). Every
name callers use is importable from here, as when this package was one module.
"""

from __future__ import annotations

from .history import MARKER_KINDS, PREEMPTED, RUN_ENDS, STATES, History
from .model import Bar, Marker, RunSpan, TimelineModel, Wait, build_timeline
from .picture import MARKER_STYLE, RUN_COLOURS, RUN_LEGEND, WAIT_COLOUR, render
from .summary import StepSummary, format_duration, format_steps_lost, summaries, summarize

__all__ = [
    "MARKER_KINDS", "MARKER_STYLE", "PREEMPTED", "RUN_COLOURS", "RUN_ENDS", "RUN_LEGEND",
    "STATES", "WAIT_COLOUR",
    "Bar", "History", "Marker", "RunSpan", "StepSummary", "TimelineModel", "Wait",
    "build_timeline", "format_duration", "format_steps_lost", "render", "summaries", "summarize",
]
