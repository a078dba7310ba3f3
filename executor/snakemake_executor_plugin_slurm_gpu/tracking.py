"""What the executor follows of each live step between polls: the new lines in the step's event
log (written by the job and its ranks), turned into one console line per transition, the events of
each job's current run (for the hang and stall watchdogs). What Slurm's queue says is the step's
life's (lifecycle.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from . import events


def _n(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) else str(value)


def describe(entry: Mapping[str, Any]) -> str | None:
    """One console line for an event from the job side, or None for the routine ones."""
    kind = entry.get("event")
    restart = entry.get("restart")
    on_restart = f" (restart {restart})" if isinstance(restart, int) and restart > 0 else ""
    if kind == "started":
        return f"started on {entry.get('nodes')}{on_restart}"
    if kind == "resumed":
        return f"resumed from step {_n(entry.get('from_step'))}{on_restart}"
    if kind == "signal":
        return f"got {entry.get('signal')} at step {_n(entry.get('global_step'))}: checkpointing"
    if kind == "checkpoint" and entry.get("why") == "signal":
        return f"checkpoint written at step {_n(entry.get('global_step'))}"
    if kind == "requeue_requested":
        return ("Slurm requeues the job" if entry.get("requeued")
                else "Slurm did not requeue the job; slurm-gpu resubmits it when it ends")
    if kind == "interrupted":
        return f"preempted at step {_n(entry.get('global_step'))} ({entry.get('why')})"
    if kind == "training_done":
        return f"training finished at step {_n(entry.get('global_step'))}"
    return None


@dataclass
class _Run:
    started_ts: float
    events: list[dict[str, Any]] = field(default_factory=list)
    announced_ready: bool = False


@dataclass
class StepTracker:
    """Per job id: the current run and when its batch script said it ended; per event log: the read offset."""

    _offsets: dict[Path, int] = field(default_factory=dict)
    _runs: dict[str, _Run] = field(default_factory=dict)
    _ended: dict[str, float] = field(default_factory=dict)

    def read(self, log: Path, job_id: str, world_size: int) -> list[str]:
        """New job-side events of `log` that belong to `job_id`: console lines for the transitions
        among them. Also keeps the current run's events for run_events()."""
        new, self._offsets[log] = events.read_from(log, self._offsets.get(log, 0))
        lines = []
        for entry in new:
            if entry.get("source") == "executor" or str(entry.get("job_id")) != job_id:
                continue
            if entry.get("event") == "started":
                self._runs[job_id] = _Run(float(entry.get("ts") or 0))
                self._ended.pop(job_id, None)
            elif entry.get("event") == "ended":
                self._ended[job_id] = float(entry.get("ts") or 0)
            run = self._runs.get(job_id)
            if run is not None:
                run.events.append(entry)
            text = describe(entry)
            if text:
                lines.append(text)
            if run is not None and not run.announced_ready and entry.get("event") == "rank_ready":
                ready = {e.get("rank") for e in run.events if e.get("event") == "rank_ready"}
                if len(ready) >= world_size > 1:
                    run.announced_ready = True
                    lines.append(f"all {world_size} ranks joined the process group")
        return lines

    def current_run(self, job_id: str) -> tuple[float, list[dict[str, Any]]] | None:
        """(start time, events) of the job's latest run, if it started."""
        run = self._runs.get(job_id)
        return None if run is None else (run.started_ts, run.events)

    def ended_at(self, job_id: str) -> float | None:
        """When the job's batch script said it reached its end (its latest run), if it did."""
        return self._ended.get(job_id)

    def forget(self, job_id: str) -> None:
        self._ended.pop(job_id, None)
        self._runs.pop(job_id, None)
