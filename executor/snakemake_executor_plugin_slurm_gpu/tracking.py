"""What the executor follows of each live step between polls: the new lines in the step's event
log (written by the job and its ranks), turned into one console line per transition, and the step's
runs as timeline/history.py reads them (the same code as `status` and `timeline`): each job's
current run for the hang and stall watchdogs and for the lifecycle's RunStarted. What Slurm's queue
says is the step's life's (lifecycle.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, NamedTuple

from . import events
from .timeline.history import History, Run


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


class CurrentRun(NamedTuple):
    started_ts: float
    restart: int | None
    events: list[dict[str, Any]]   # its job-side records, `started` first
    num_nodes: int | None = None   # the nodes Slurm gave it, if its `started` record said

    def world_size(self, nodes: int, ranks_per_node: int) -> int:
        """The ranks this run has: on the nodes it got (an elastic step's may be fewer than `nodes`)."""
        return (self.num_nodes or nodes) * ranks_per_node


def _smaller_run(entry: dict[str, Any], nodes: int) -> str:
    """An elastic step's run that Slurm started on fewer nodes than the step's full size says so."""
    got = entry.get("num_nodes")
    if entry.get("event") == "started" and isinstance(got, int) and 0 < got < nodes:
        return f", {got} of its {nodes} nodes (min_nodes)"
    return ""


@dataclass
class StepTracker:
    """Per event log: the read offset and the step's History (timeline/history.py, the same reader
    as `slurm-gpu status` and `timeline`); per job id, the log it writes to. The runs, their ends
    and their records come from the History; this keeps only what the console said."""

    _offsets: dict[Path, int] = field(default_factory=dict)
    _histories: dict[Path, History] = field(default_factory=dict)
    _logs: dict[str, Path] = field(default_factory=dict)
    _announced: set[tuple[str, float]] = field(default_factory=set)  # runs whose full world was said

    def read(self, log: Path, job_id: str, nodes: int, ranks_per_node: int) -> list[str]:
        """New job-side events of `log` that belong to `job_id`: console lines for the transitions
        among them. The History takes every new record (the executor's too). `nodes`: the step's node
        count, for a run whose `started` record does not say how many it got."""
        new, self._offsets[log] = events.read_from(log, self._offsets.get(log, 0))
        self._logs[job_id] = log
        history = self._histories.setdefault(log, History())
        history.add(new)
        lines = [text + _smaller_run(entry, nodes) for entry in new
                 if entry.get("source") != "executor" and str(entry.get("job_id")) == job_id
                 and (text := describe(entry))]
        run = self.current_run(job_id)
        world_size = 0 if run is None else run.world_size(nodes, ranks_per_node)
        if run is not None and world_size > 1 and (job_id, run.started_ts) not in self._announced:
            ready = {e.get("rank") for e in run.events if e.get("event") == "rank_ready"}
            if len(ready) >= world_size:
                self._announced.add((job_id, run.started_ts))
                lines.append(f"all {world_size} ranks joined the process group")
        return lines

    def _run(self, job_id: str) -> Run | None:
        log = self._logs.get(job_id)
        history = self._histories.get(log) if log is not None else None
        return history.step.latest_run(job_id) if history is not None else None

    def current_run(self, job_id: str) -> CurrentRun | None:
        """The job's latest run, if it started."""
        run = self._run(job_id)
        return None if run is None else CurrentRun(run.start, run.restart, run.records, run.num_nodes)

    def ended_at(self, job_id: str) -> float | None:
        """When the job's batch script said it reached its end (its latest run), if it did."""
        run = self._run(job_id)
        return None if run is None else run.script_ended

    def forget(self, job_id: str, step_ended: bool = False) -> None:
        """The job is no longer followed; when its step ended, neither is the step's History (the
        read offset stays, so that a retry of the step does not say the old lines again)."""
        log = self._logs.pop(job_id, None)
        self._announced = {key for key in self._announced if key[0] != job_id}
        if step_ended and log is not None:
            self._histories.pop(log, None)
