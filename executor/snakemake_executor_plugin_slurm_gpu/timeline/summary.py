"""The summary of one step for `slurm-gpu status` (and efficiency.py), and the text forms of what
preemptions cost."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from .history import _analyse, _losses, _state, _Step


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
    # per run, oldest first: the nodes Slurm gave it (an elastic step's vary; None: not recorded)
    node_counts: list[int | None] = field(default_factory=list)


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
        pending_reason=reason, first_submitted=s.first_submitted, end=end,
        node_counts=[r.num_nodes for r in s.runs])


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
