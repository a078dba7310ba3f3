"""A step's history, read from its event log (events.py): cut into runs, each ended by a stop or a
verdict, with what every preemption cost.

A step's life is cut into *runs*: one per `started` record (a Slurm job id runs once, then once more
after every requeue, with the same id). A run ends at whichever comes first of
  - `interrupted` (rank 0 stopped training on purpose): on the requeue signal it checkpointed at the
    stop, a *signalled* stop; on SIGTERM (scancel, `scontrol requeue`, a preemption without the
    warning) it did not, which counts as a *hard stop* like the ones below,
  - `completed` / `failed` / `watchdog` of its job (the executor's verdict),
  - the executor's `requeued` record of its job: Slurm lists the job queued again after that run
    started (the record names the run by its `restart`; one without it, from an older version,
    ends the job's open run),
  - the next `started` of the same job (Slurm requeued it) or any record of a newer job (`submitted`,
    `resubmitted`, `started`).
Without an `interrupted` these last two are a *hard stop* (node failure, kill, time limit without a
signal). No end is inferred from time: a `pending` record only says why the job waits.
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
from typing import Any, Iterable, Mapping

STATES = ("pending", "running", "completed", "failed", "interrupted", "unknown")
RUN_ENDS = ("completed", "failed", "signalled", "hard-stop", "running")
MARKER_KINDS = ("signal", "checkpoint", "resumed", "requeue", "resubmitted", "watchdog")
PREEMPTED = ("signalled", "hard-stop")

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


def _stamped(events: Iterable[Any], last: float | None) -> tuple[list[tuple[float, dict[str, Any]]], float | None]:
    """(ts, event) in file order. A record without a usable ts takes the previous one's (the file is
    append-only, so it happened after it); one before any ts is dropped. Also the last ts seen."""
    out: list[tuple[float, dict[str, Any]]] = []
    for event in events:
        if not isinstance(event, Mapping) or not isinstance(event.get("event"), str):
            continue
        ts = _num(event.get("ts"))
        if ts is None:
            ts = last
        if ts is None:
            continue
        last = ts
        out.append((ts, dict(event)))
    return out, last


# ------------------------------------------------------------------ the analysis of one step
@dataclass
class Run:
    job_id: str | None
    restart: int | None
    nodes: str
    start: float
    num_nodes: int | None = None        # the nodes Slurm gave the run (an elastic step's vary); None: not said
    end: float | None = None
    interrupted: bool = False
    interrupted_step: int | None = None
    verdict: str | None = None          # "completed" | "failed" (the watchdog counts as failed)
    last_seen: float = 0.0              # newest record of this run
    last_checkpoint_ts: float | None = None
    max_step: int | None = None
    resumed_from: int | None = None
    trained: bool = False               # some record carried a global step
    succeeded: bool = False             # its batch script ended with exit status 0
    script_ended: float | None = None   # when its batch script said it ended, whatever the status
    records: list[dict[str, Any]] = field(default_factory=list)  # its job-side records (the watchdogs')

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
            self.end = ts

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
    runs: list[Run] = field(default_factory=list)
    markers: list[_Marker] = field(default_factory=list)
    pending: list[tuple[float, str | None, str]] = field(default_factory=list)  # (ts, job, reason)
    verdict: tuple[str, float, str | None] | None = None  # (completed|failed, ts, job)
    latest_job: str | None = None       # the job of the last `submitted` / `resubmitted`
    latest_job_ts: float | None = None
    last_checkpoint_step: int | None = None
    trained: bool = False

    def open_run(self) -> Run | None:
        return self.runs[-1] if self.runs and self.runs[-1].end is None else None

    def latest_run(self, job_id: str) -> Run | None:
        """The newest run of exactly `job_id`."""
        return next((run for run in reversed(self.runs) if run.job_id == job_id), None)

    def run_of(self, job_id: str | None) -> Run | None:
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


class History:
    """A step's history, read as its event log grows: `add` the records appended since the last
    call. It is the same whether the log is added at once or line by line, in file order: records
    are applied by time (file order breaks ties), and one dated before a record already applied
    (ranks on other nodes, other clocks) makes the whole history be read again in time order."""

    def __init__(self, step: str | None = None) -> None:
        self._name = step
        self._stamped: list[tuple[float, dict[str, Any]]] = []
        self._last_ts: float | None = None   # of the file's last record (a record without ts takes it)
        self._applied_ts: float | None = None  # the newest ts applied
        self.step = _Step(step=step or "?")

    def add(self, events: Iterable[Any]) -> None:
        new, self._last_ts = _stamped(events, self._last_ts)
        self._stamped.extend(new)
        if self._applied_ts is not None and any(ts < self._applied_ts for ts, _ in new):
            self.step = _Step(step=self._name or "?")
            self._applied_ts = None
            new = sorted(self._stamped, key=lambda item: item[0])  # sorted() is stable: file order breaks ties
        else:
            new = sorted(new, key=lambda item: item[0])
        for ts, event in new:
            if self._name is None and isinstance(event.get("step"), str) and event["step"]:
                self._name = self.step.step = event["step"]
            _apply(self.step, ts, event)
            self._applied_ts = ts


def _analyse(events: Iterable[Any], step: str | None = None) -> _Step:
    history = History(step)
    history.add(events)
    return history.step


def _apply(s: _Step, ts: float, e: dict[str, Any]) -> None:
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
    elif kind == "requeued":
        _requeued(s, job, _int(e.get("restart")), ts)
    elif kind == "started":
        s.note_job(job)
        current = s.open_run()
        if current is not None:
            current.close(ts)  # a requeue of the same job, or a newer job: the run before stopped
        s.runs.append(Run(job_id=job, restart=_int(e.get("restart")), nodes=_text(e.get("nodes")) or "",
                           num_nodes=_int(e.get("num_nodes")) or None, start=ts, last_seen=ts, records=[e]))
    elif kind == "ended":
        run = s.run_of(job)
        if run is not None:
            run.script_ended = ts
            run.records.append(e)
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


def _requeued(s: _Step, job: str | None, restart: int | None, ts: float) -> None:
    """The executor saw `job` queued again after its run `restart` started: that run ended (a
    record written after the job's next start names the run before it, which that start ended)."""
    s.pending.append((ts, job, ""))  # a sighting of the job in the queue, without a reason
    current = s.open_run()
    if current is None or job is None or current.job_id != job:
        return
    if restart is None or current.restart == restart:
        current.close(ts)


def _rank_event(s: _Step, ts: float, kind: str, job: str | None, e: Mapping[str, Any]) -> None:
    run = s.run_of(job)
    global_step = _int(e.get("global_step"))
    if run is not None:
        if run.job_id == job:
            run.records.append(e)
        if run.end is None:
            run.last_seen = ts
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
    run: Run
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
        if any(ts >= (last.end or 0) for ts, _, _ in s.pending):
            return "pending"
        return "interrupted"
    if s.verdict is not None and (s.latest_job_ts is None or s.verdict[1] >= s.latest_job_ts):
        return s.verdict[0]  # ended without ever starting (cancelled while pending, sbatch refused, ...)
    return "pending"
