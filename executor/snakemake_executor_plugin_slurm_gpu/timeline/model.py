"""The data behind the timeline picture: one bar per step, with its runs, its waits in the queue and
what happened when (signals, checkpoints, resumes, requeues), in seconds from the first record."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from .history import _analyse, _Step
from .summary import StepSummary, _summary


@dataclass
class RunSpan:
    """One run of a Slurm job, in seconds from the model's origin."""

    start: float
    end: float                          # `now` while it runs
    job_id: str | None
    restart: int | None
    nodes: str
    ended: str                          # one of RUN_ENDS
    first_step: int | None = None       # resumed from (0: trained from scratch); None: not training
    last_step: int | None = None        # the highest global step it reached
    num_nodes: int | None = None        # the nodes Slurm gave it (None: not recorded)


@dataclass
class Wait:
    """Time in the queue: submission to the first start, or between two runs."""

    start: float
    end: float
    reason: str = ""                    # the last pending reason seen during it


@dataclass
class Marker:
    kind: str                           # one of MARKER_KINDS
    ts: float                           # seconds from the origin
    label: str                          # "step 1,200", "SIGUSR1 at step 1,200", ...


@dataclass
class Bar:
    """One step's row."""

    label: str                          # the step, "rule/wildcards"
    start: float                        # its first submission (or first record)
    end: float                          # when it ended, or `now`
    state: str
    runs: list[RunSpan] = field(default_factory=list)
    waits: list[Wait] = field(default_factory=list)
    markers: list[Marker] = field(default_factory=list)
    summary: StepSummary | None = None


@dataclass
class TimelineModel:
    origin: float                       # epoch seconds of time 0: the earliest record of any step
    now: float                          # seconds from the origin: where running bars end
    bars: list[Bar]

    @property
    def span(self) -> float:
        return max([self.now] + [bar.end for bar in self.bars])


def build_timeline(steps: Mapping[str, Iterable[Mapping[str, Any]]], now: float | None = None) -> TimelineModel:
    """The picture's data for {step: its events}: one bar per step that has any record, ordered by
    when it began (then by name). `now` (epoch seconds, default: the newest record of any step) ends
    what is still running or waiting."""
    analysed = [_analyse(events, name) for name, events in steps.items()]
    analysed = [s for s in analysed if s.first_ts is not None]
    if not analysed:
        return TimelineModel(origin=now or 0.0, now=0.0, bars=[])
    origin = min(s.first_ts for s in analysed if s.first_ts is not None)
    newest = max(s.last_ts for s in analysed if s.last_ts is not None)
    clock = max(now, newest) if now is not None else newest

    def rel(ts: float) -> float:
        return round(ts - origin, 3)

    bars = []
    for s in analysed:
        summary = _summary(s, clock)
        # the first submission, or the first start when the job logged it before the executor did
        begun = [ts for ts in (s.first_submitted, s.runs[0].start if s.runs else None) if ts is not None]
        start = min(begun) if begun else s.first_ts
        assert start is not None
        end = max(start, summary.end if summary.end is not None else clock)
        runs = [RunSpan(start=rel(r.start), end=rel(r.end if r.end is not None else clock), job_id=r.job_id,
                        restart=r.restart, nodes=r.nodes, ended=r.ended, first_step=r.first_step(),
                        last_step=r.interrupted_step if r.interrupted_step is not None else r.max_step,
                        num_nodes=r.num_nodes)
                for r in s.runs]
        waits = []
        edge = start
        for r in s.runs:
            if r.start > edge:
                waits.append(Wait(rel(edge), rel(r.start), _reason(s, edge, r.start)))
            edge = r.end if r.end is not None else clock
        if summary.state in ("pending", "interrupted") and end > edge:
            waits.append(Wait(rel(edge), rel(end), _reason(s, edge, end)))
        markers = [Marker(m.kind, rel(m.ts), m.label) for m in s.markers]
        bars.append(Bar(label=s.step, start=rel(start), end=rel(end), state=summary.state, runs=runs,
                        waits=waits, markers=markers, summary=summary))
    bars.sort(key=lambda bar: (bar.start, bar.label))
    return TimelineModel(origin=origin, now=rel(clock), bars=bars)


def _reason(s: _Step, start: float, end: float) -> str:
    reasons = [reason for ts, _, reason in s.pending if start <= ts <= end and reason]
    return reasons[-1] if reasons else ""
