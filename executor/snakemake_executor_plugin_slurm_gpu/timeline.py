"""What happened to each step, from its event log (events.py): a summary per step for `slurm-gpu status`
and the data and picture of `slurm-gpu timeline`.

Pure functions over lists of event dicts; matplotlib is imported only inside render(), so that the
status table works without it.

A step's life is cut into *runs*: one per `started` record (a Slurm job id runs once, then once more
after every requeue, with the same id). A run ends at whichever comes first of
  - `interrupted` (rank 0 stopped training on purpose): on the requeue signal it checkpointed at the
    stop, a *signalled* stop; on SIGTERM (scancel, `scontrol requeue`, a preemption without the
    warning) it did not, which counts as a *hard stop* like the ones below,
  - `completed` / `failed` / `watchdog` of its job (the executor's verdict),
  - the next `started` of the same job (Slurm requeued it) or any record of a newer job (`submitted`,
    `resubmitted`, `started`): without an `interrupted` this is a *hard stop* (node failure, kill,
    time limit without a signal). When the executor saw the job back in the queue (`requeued`), or
    pending again after the run's last sign of life, the hard stop is dated at that record instead.
A run with none of these yet is still going.

Lost to preemption, for every run that ended by a signalled or hard stop:
  - seconds: the wait from the end of that run to the next `started` (or to now while the step still
    waits), plus the work since the run's last `checkpoint` (since the run's start when it wrote
    none) up to the end of the run;
  - steps: the highest global step the run reached (`interrupted`'s, else the highest any record of
    the run carried) minus the step the next run `resumed` from (0 when it trained without resuming).
    After a hard stop this is only a lower bound: what ran after the last record is not known.

Readers must ignore unknown events and fields and survive missing or mistyped ones: every field is
read through a checker, and a record without a usable timestamp takes the one before it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

STATES = ("pending", "running", "completed", "failed", "interrupted", "unknown")
RUN_ENDS = ("completed", "failed", "signalled", "hard-stop", "running")
MARKER_KINDS = ("signal", "checkpoint", "resumed", "requeue", "resubmitted", "watchdog")
PREEMPTED = ("signalled", "hard-stop")

# a `pending` record this long after a run's last sign of life means the job went back to the queue
# (a requeue Slurm did on its own); a shorter gap can be the executor's poll racing the job's start
PENDING_AFTER_RUN_S = 5.0

_RANK_EVENTS = {"rank_started", "rank_ready", "resumed", "checkpoint", "signal", "requeue_requested",
                "interrupted", "training_done"}


# ------------------------------------------------------------------ reading fields defensively
def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)
    except OverflowError:  # an integer too big for a float (JSON allows any number of digits)
        return None
    return number if math.isfinite(number) else None


def _int(value: Any) -> int | None:
    number = _num(value)
    return int(number) if number is not None else None


def _text(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def _ordered(events: Iterable[Any]) -> list[tuple[float, dict[str, Any]]]:
    """(ts, event) by time; file order breaks ties. A record without a usable ts takes the previous
    one's (the file is append-only, so it happened after it); one before any ts is dropped."""
    out: list[tuple[float, int, dict[str, Any]]] = []
    last: float | None = None
    for index, event in enumerate(events):
        if not isinstance(event, Mapping) or not isinstance(event.get("event"), str):
            continue
        ts = _num(event.get("ts"))
        if ts is None:
            ts = last
        if ts is None:
            continue
        last = ts
        out.append((ts, index, dict(event)))
    out.sort(key=lambda item: (item[0], item[1]))
    return [(ts, event) for ts, _, event in out]


# ------------------------------------------------------------------ the analysis of one step
@dataclass
class _Run:
    job_id: str | None
    restart: int | None
    nodes: str
    start: float
    end: float | None = None
    interrupted: bool = False
    interrupted_step: int | None = None
    verdict: str | None = None          # "completed" | "failed" (the watchdog counts as failed)
    last_seen: float = 0.0              # newest record of this run
    pending_since: float | None = None  # the executor saw the job pending again after last_seen
    last_checkpoint_ts: float | None = None
    max_step: int | None = None
    resumed_from: int | None = None
    trained: bool = False               # some record carried a global step
    succeeded: bool = False             # its batch script ended with exit status 0

    @property
    def ended(self) -> str:
        if self.verdict is not None:
            return self.verdict
        if self.succeeded:
            # finished, yet Slurm requeued the job (24.05+ once it was preempted): not a stop
            return "completed"
        if self.end is None:
            return "running"
        return "signalled" if self.interrupted else "hard-stop"

    def close(self, ts: float) -> None:
        if self.end is None:
            # a hard stop is dated by the executor's view of the job back in the queue, when it had one
            self.end = self.pending_since if (self.pending_since is not None and not self.interrupted) else ts

    def first_step(self) -> int | None:
        return self.resumed_from if self.resumed_from is not None else (0 if self.trained else None)


@dataclass
class _Marker:
    kind: str
    ts: float
    label: str


@dataclass
class _Step:
    step: str
    first_ts: float | None = None
    last_ts: float | None = None
    first_submitted: float | None = None
    job_ids: list[str] = field(default_factory=list)
    resubmitted: int = 0
    submitted: int = 0
    runs: list[_Run] = field(default_factory=list)
    markers: list[_Marker] = field(default_factory=list)
    pending: list[tuple[float, str | None, str]] = field(default_factory=list)  # (ts, job, reason)
    verdict: tuple[str, float, str | None] | None = None  # (completed|failed, ts, job)
    latest_job: str | None = None       # the job of the last `submitted` / `resubmitted`
    latest_job_ts: float | None = None
    last_checkpoint_step: int | None = None
    trained: bool = False

    def open_run(self) -> _Run | None:
        return self.runs[-1] if self.runs and self.runs[-1].end is None else None

    def run_of(self, job_id: str | None) -> _Run | None:
        """The newest run of `job_id` (of any job when the record names none)."""
        for run in reversed(self.runs):
            if job_id is None or run.job_id is None or run.job_id == job_id:
                return run
        return None

    def note_job(self, job_id: str | None) -> None:
        if job_id and job_id not in self.job_ids:
            self.job_ids.append(job_id)


def _fmt_step(step: int | None) -> str:
    return f"step {step:,}" if step is not None else "step ?"


def _analyse(events: Iterable[Any], step: str | None = None) -> _Step:
    ordered = _ordered(events)
    name = step
    if name is None:
        name = next((e["step"] for _, e in ordered if isinstance(e.get("step"), str) and e["step"]), "?")
    s = _Step(step=name)
    for ts, e in ordered:
        kind = e["event"]
        job = _text(e.get("job_id"))
        s.first_ts = ts if s.first_ts is None else s.first_ts
        s.last_ts = ts
        if kind == "submitted":
            s.submitted += 1
            s.note_job(job)
            s.first_submitted = ts if s.first_submitted is None else s.first_submitted
            s.latest_job, s.latest_job_ts = job, ts
            current = s.open_run()
            if current is not None and job is not None and current.job_id != job:
                current.close(ts)  # a new job for the step: the old one is gone
        elif kind == "resubmitted":
            s.resubmitted += 1
            new = _text(e.get("new_job_id"))
            s.note_job(job)
            s.note_job(new)
            s.latest_job, s.latest_job_ts = new, ts
            current = s.open_run()
            if current is not None and (job is None or current.job_id in (None, job)):
                current.close(ts)
            cause = _text(e.get("cause"))
            s.markers.append(_Marker("resubmitted", ts, f"job {job or '?'} -> {new or '?'}"
                                     + (f" ({cause})" if cause else "")))
        elif kind == "pending":
            s.pending.append((ts, job, _text(e.get("reason")) or ""))
            _queued_again(s, job, ts, since=lambda run: run.last_seen)
        elif kind == "requeued":
            # the executor saw this job run and then queued again: a stop for certain, however soon
            # after the run's last record (a requeue right after a checkpoint). Measured from the
            # run's start, so that a record written just after the job's next start ends nothing.
            _queued_again(s, job, ts, since=lambda run: run.start)
        elif kind == "started":
            s.note_job(job)
            current = s.open_run()
            if current is not None:
                current.close(ts)  # a requeue of the same job, or a newer job: the run before stopped
            s.runs.append(_Run(job_id=job, restart=_int(e.get("restart")), nodes=_text(e.get("nodes")) or "",
                               start=ts, last_seen=ts))
        elif kind == "ended":
            run = s.run_of(job)
            if run is not None and e.get("exit_code") == 0 and run.end is None:
                run.succeeded, run.end = True, ts
        elif kind in ("completed", "failed", "watchdog"):
            verdict = "completed" if kind == "completed" else "failed"
            run = s.run_of(job)
            if run is not None and run is s.runs[-1]:
                run.close(ts)
                run.verdict = verdict
            if kind == "watchdog":
                why = _text(e.get("why")) or "hang"
                s.markers.append(_Marker("watchdog", ts, f"watchdog: {why}"))
            s.verdict = (verdict, ts, job)
        elif kind == "stalled":
            silent = [r for r in e.get("silent") or [] if isinstance(r, dict)]
            who = ", ".join(f"rank {r.get('rank')} on {r.get('node')}" for r in silent) or "every rank waiting"
            s.markers.append(_Marker("watchdog", ts, f"stall watchdog: {who}"))
        elif kind in _RANK_EVENTS:
            _rank_event(s, ts, kind, job, e)
        # anything else: an event this version does not know, ignored
    current = s.open_run()
    if current is not None and current.pending_since is not None:
        current.end = current.pending_since  # back in the queue since: Slurm requeued it after a hard stop
    return s


def _queued_again(s: _Step, job: str | None, ts: float, since: Callable[[_Run], float]) -> None:
    """The executor saw `job` in the queue at `ts`: when that is PENDING_AFTER_RUN_S or more after
    `since` of its open run, the run stopped there (unless an earlier record already said so)."""
    current = s.open_run()
    if current is not None and current.pending_since is None and job is not None \
            and current.job_id == job and ts - since(current) >= PENDING_AFTER_RUN_S:
        current.pending_since = ts


def _rank_event(s: _Step, ts: float, kind: str, job: str | None, e: Mapping[str, Any]) -> None:
    run = s.run_of(job)
    global_step = _int(e.get("global_step"))
    if run is not None:
        if run.end is None:
            run.last_seen = ts
            run.pending_since = None  # the job is alive after all: that pending record was stale
        if global_step is not None:
            run.trained = True
            run.max_step = global_step if run.max_step is None else max(run.max_step, global_step)
    if global_step is not None:
        s.trained = True
    if kind == "checkpoint":
        s.last_checkpoint_step = global_step if global_step is not None else s.last_checkpoint_step
        if run is not None and global_step is not None:
            run.last_checkpoint_ts = ts
        why = _text(e.get("why"))
        s.markers.append(_Marker("checkpoint", ts, _fmt_step(global_step) + (f" ({why})" if why else "")))
    elif kind == "signal":
        name = _text(e.get("signal")) or "signal"
        s.markers.append(_Marker("signal", ts, f"{name} at {_fmt_step(global_step)}"))
    elif kind == "resumed":
        from_step = _int(e.get("from_step"))
        if run is not None and run.resumed_from is None and from_step is not None:
            run.resumed_from = from_step
            run.trained = True
            s.trained = True
        s.markers.append(_Marker("resumed", ts, f"from {_fmt_step(from_step)}"))
    elif kind == "requeue_requested":
        refused = e.get("requeued") is False
        s.markers.append(_Marker("requeue", ts, f"requeue at {_fmt_step(global_step)}"
                                 + (" (refused)" if refused else "")))
    elif kind == "interrupted":
        if run is not None and run.end is None:
            # only the requeue signal comes with a checkpoint at the stop; SIGTERM is a hard stop
            run.interrupted = _text(e.get("why")) != "SIGTERM"
            run.interrupted_step = global_step
            run.end = ts


# ------------------------------------------------------------------ loss accounting
@dataclass(frozen=True)
class _Loss:
    run: _Run
    waiting_s: float
    work_s: float
    steps: int | None       # None: not known
    steps_exact: bool


def _losses(s: _Step, now: float, waiting: bool) -> list[_Loss]:
    out = []
    for i, run in enumerate(s.runs):
        if run.ended not in PREEMPTED or run.end is None:
            continue
        later = s.runs[i + 1:]
        restart_ts = later[0].start if later else (now if waiting else run.end)
        since = run.last_checkpoint_ts if run.last_checkpoint_ts is not None else run.start
        work = max(0.0, run.end - since)
        reached = run.interrupted_step if run.interrupted_step is not None else run.max_step
        resumed_at = next((r.first_step() for r in later if r.first_step() is not None), None)
        steps = max(0, reached - resumed_at) if reached is not None and resumed_at is not None else None
        # exact when the run said where it stopped (signalled, or SIGTERM at a step boundary)
        exact = steps is not None and run.interrupted_step is not None
        out.append(_Loss(run, max(0.0, restart_ts - run.end), work, steps, exact))
    return out


def _state(s: _Step) -> str:
    if not s.runs and s.submitted == 0 and s.verdict is None and not s.pending:
        return "unknown"
    last = s.runs[-1] if s.runs else None
    # a job submitted after the newest run began, other than that run's (its own `submitted` can be
    # dated just after its start: the executor writes it once sbatch returned)
    newer_job = s.latest_job_ts is not None and (
        last is None or (s.latest_job_ts > last.start and s.latest_job != last.job_id))
    if last is not None and not newer_job:
        if last.ended == "running":
            return "running"
        if last.verdict is not None:
            return last.verdict
        # stopped: waiting for Slurm's requeue (or the executor's resubmission) once it is queued again
        if last.pending_since is not None or any(ts >= (last.end or 0) for ts, _, _ in s.pending):
            return "pending"
        return "interrupted"
    if s.verdict is not None and (s.latest_job_ts is None or s.verdict[1] >= s.latest_job_ts):
        return s.verdict[0]  # ended without ever starting (cancelled while pending, sbatch refused, ...)
    return "pending"


# ------------------------------------------------------------------ the summary of `status`
@dataclass
class StepSummary:
    """One step at a glance. Times are epoch seconds; durations seconds."""

    step: str
    state: str                          # one of STATES
    job_ids: list[str]                  # every Slurm job of the step, oldest first
    job_id: str | None                  # the newest
    nodes: str                          # of the newest run ("" before the first start)
    runs: int
    restarts: int                       # runs - 1, over all jobs
    resubmissions: int                  # new Slurm jobs after the first
    preemptions: int                    # runs that ended by a signalled or hard stop
    last_checkpoint_step: int | None
    steps_lost: int | None              # None: the step reported no training steps
    steps_lost_exact: bool              # False: a lower bound (a hard stop, or a resume not seen yet)
    seconds_lost: float                 # seconds_waiting + seconds_work_lost
    seconds_waiting: float              # queued again after preemptions
    seconds_work_lost: float            # run time after the last checkpoint of preempted runs
    pending_reason: str | None          # Slurm's, while pending
    first_submitted: float | None
    end: float | None                   # when it completed or failed; None while it is not over


def summarize(events: Iterable[Mapping[str, Any]], now: float | None = None, step: str | None = None) -> StepSummary:
    """The summary of one step's event log (events.read()). `now` (epoch seconds, default: the last
    record's time) ends the wait of a step queued again after a preemption; `step` names it (default:
    the records' own `step`)."""
    s = _analyse(events, step)
    return _summary(s, now)


def summaries(steps: Mapping[str, Iterable[Mapping[str, Any]]], now: float) -> list[StepSummary]:
    """One summary per step, in the order the timeline draws them (by first submission, then name)."""
    out = [summarize(step_events, now=now, step=name) for name, step_events in steps.items()]
    out.sort(key=lambda s: (s.first_submitted if s.first_submitted is not None else float("inf"), s.step))
    return out


def _summary(s: _Step, now: float | None) -> StepSummary:
    state = _state(s)
    clock = max(now if now is not None else (s.last_ts or 0.0), s.last_ts or 0.0)
    losses = _losses(s, clock, waiting=state in ("pending", "interrupted"))
    known = [loss.steps for loss in losses if loss.steps is not None]
    steps_lost = sum(known) if s.trained else None
    exact = all(loss.steps_exact for loss in losses)
    waiting = sum(loss.waiting_s for loss in losses)
    work = sum(loss.work_s for loss in losses)
    last = s.runs[-1] if s.runs else None
    end = None
    if state in ("completed", "failed"):
        end = last.end if last is not None and last.verdict is not None else (s.verdict[1] if s.verdict else None)
    reason = None
    if state == "pending" and s.pending:
        reason = s.pending[-1][2] or None
    return StepSummary(
        step=s.step, state=state, job_ids=list(s.job_ids), job_id=s.job_ids[-1] if s.job_ids else None,
        nodes=last.nodes if last else "", runs=len(s.runs), restarts=max(0, len(s.runs) - 1),
        resubmissions=max(s.resubmitted, s.submitted - 1, 0), preemptions=len(losses),
        last_checkpoint_step=s.last_checkpoint_step, steps_lost=steps_lost, steps_lost_exact=exact,
        seconds_lost=round(float(waiting + work), 3), seconds_waiting=round(float(waiting), 3),
        seconds_work_lost=round(float(work), 3),
        pending_reason=reason, first_submitted=s.first_submitted, end=end)


# ------------------------------------------------------------------ the data behind the picture
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
                        last_step=r.interrupted_step if r.interrupted_step is not None else r.max_step)
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


# ------------------------------------------------------------------ the picture
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
    variants = [" · ".join(part for part in (job, run.nodes, steps) if part),
                " · ".join(part for part in (short, run.nodes, steps) if part),
                " · ".join(part for part in (job, run.nodes) if part),
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


def format_duration(seconds: float) -> str:
    """12 -> '12s', 617 -> '10m 17s', 7380 -> '2h 03m'."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m {seconds % 60:02d}s"
    return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m"


def format_steps_lost(summary: StepSummary) -> str:
    """'140', '>=0' (a lower bound: a hard stop), '-' (no training steps reported)."""
    if summary.steps_lost is None:
        return "-"
    return ("" if summary.steps_lost_exact else ">=") + f"{summary.steps_lost:,}"


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
