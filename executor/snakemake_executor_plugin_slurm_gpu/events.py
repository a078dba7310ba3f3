"""Each step's event log: what happened to it, one JSON object per line, appended by the executor
on the submit host and by the job itself (the batch script and the training ranks).

File: `.snakemake/slurm-gpu/events/<rule>/<wildcards>.jsonl` (StepPaths.event_log); inside a job
its path is `$SLURM_GPU_EVENT_LOG`. Every line is one whole write(2) to a file opened O_APPEND under
an flock, so concurrent writers (the executor, rank 0, the batch shell on requeue) never interleave.
Created 0600 in a 0700 directory; nothing secret goes in.

Every record has:
    ts      float, seconds since the epoch (time.time() of the writer; nodes share a clock)
    event   one of EVENTS (contract.EventKind: writing any other kind raises ValueError)
    step    "rule/wildcards" (StepPaths.key)
    source  "executor" | "job" | "rank"
    job_id  Slurm job id (string), when one exists
plus the fields listed per event below. Readers must ignore unknown events and fields.

Torch-free: imported by the executor and, in the job, by runtime code.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from .contract import Env, event_kind
from .contract import job_id as contract_job_id

ENV_VAR = Env.EVENT_LOG

# event -> the fields it carries besides the common ones (the kinds themselves: contract.EventKind)
EVENTS: dict[str, tuple[str, ...]] = {
    # executor
    "submitted": ("script", "attempt", "nodes_requested", "tasks_per_node", "gpus_per_node"),  # attempt: 1, 2, ...
    "pending": ("reason",),                      # Slurm's pending reason changed (Priority, Resources, ...)
    "requeued": ("state", "restart"),            # seen back in the queue after its run `restart` started: that run ended
    "resubmitted": ("new_job_id", "cause", "why"),  # cause: timeout | preemption
    "reattached": (),                            # a new Snakemake found the step's job still in Slurm
    "completed": ("state", "exit_code"),
    "failed": ("state", "reason", "exit_code", "message"),
    "watchdog": ("missing_ranks", "missing_nodes", "joined", "expected", "why"),  # the executor cancelled a hang
    # the stall watchdog (stall.py) cancelled a run whose ranks stopped advancing; action: resubmit | fail
    "stalled": ("idle_s", "limit_s", "global_step", "silent", "missing", "waiting", "action"),
    # the batch script, at every start of the job (also after each requeue)
    "started": ("nodes", "restart"),             # nodes: Slurm's (compressed) node list; restart: SLURM_RESTART_COUNT
    "ended": ("exit_code",),                     # the batch script reached its end (not written when it is killed)
    # the batch script found the step finished by an earlier run of this job and ran nothing: Slurm
    # 24.05+ requeues a job once preempted at its next end, a successful one too
    "already_finished": ("restart",),
    # training ranks (runtime)
    "rank_started": ("rank", "local_rank", "node", "restart", "world_size"),  # every rank, before the rendezvous
    "rank_ready": ("rank", "node", "restart", "world_size"),  # every rank, after the process group formed
    "resumed": ("from_step", "path", "restart"),  # rank 0
    "checkpoint": ("global_step", "path", "why"),  # rank 0; why: contract.CheckpointReason
    "signal": ("signal", "global_step", "restart"),  # rank 0, acted on at a step boundary
    "requeue_requested": ("global_step", "requeued"),  # rank 0 asked Slurm to requeue (requeued: scontrol said ok)
    "interrupted": ("global_step", "why"),          # rank 0 stopped training on purpose (contract.StopReason)
    "training_done": ("global_step",),              # rank 0 reached the end of training
}


def record(event: str, step: str, source: str, job_id: str | None = None, **fields: Any) -> dict[str, Any]:
    """One event as a dict, with the common fields first. ValueError for an event kind or reason
    outside the contract (contract.event_kind)."""
    out: dict[str, Any] = {"ts": round(time.time(), 3), "event": str(event_kind(event, fields)), "step": step,
                           "source": source}
    if job_id is not None:
        out["job_id"] = str(job_id)
    out.update(fields)
    return out


def append(path: str | Path, entry: Mapping[str, Any]) -> None:
    """Append one event line to `path` (created 0600; its directory must exist)."""
    line = (json.dumps(entry, sort_keys=False, default=str, ensure_ascii=True) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            view = memoryview(line)
            while view:
                view = view[os.write(fd, view):]
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def read(path: str | Path) -> list[dict[str, Any]]:
    """Every event in the file, in order; a torn or foreign line is skipped."""
    events, _ = read_from(path, 0)
    return events


def read_from(path: str | Path, offset: int) -> tuple[list[dict[str, Any]], int]:
    """The whole lines appended since byte `offset`, and the offset after them (a line still being
    written is left for the next call)."""
    try:
        # a stat first: the executor looks at every live step's log several times a second
        if os.stat(path).st_size <= offset:
            return [], offset
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read()
    except FileNotFoundError:
        return [], offset
    end = data.rfind(b"\n") + 1
    events = []
    for raw in data[:end].splitlines():
        try:
            entry = json.loads(raw)
        except ValueError:
            continue
        if isinstance(entry, dict) and isinstance(entry.get("event"), str):
            events.append(entry)
    return events, offset + end


def step_logs(state_dir: str | Path) -> Iterator[Path]:
    """Every step's event log under a workflow's .snakemake/slurm-gpu directory."""
    base = Path(state_dir) / "events"
    if base.is_dir():
        yield from sorted(base.glob("*/*.jsonl"))


def read_steps(state_dir: str | Path, on_error: Callable[[Path, OSError], None] | None = None,
               ) -> dict[str, list[dict[str, Any]]]:
    """{"rule/wildcards": its events} for every step log under `state_dir`. A log that cannot be read
    (permissions, a directory named *.jsonl) is told to `on_error` and left out: the rest still count."""
    steps: dict[str, list[dict[str, Any]]] = {}
    for log in step_logs(state_dir):
        try:
            steps[f"{log.parent.name}/{log.stem}"] = read(log)
        except OSError as e:
            if on_error is not None:
                on_error(log, e)
    return steps


def emit(event: str, **fields: Any) -> None:
    """From inside a job: append an event to $SLURM_GPU_EVENT_LOG (no-op outside slurm-gpu). Never
    raises for the log itself: an event log must not be what kills a training run. An event kind or
    reason outside the contract is a bug of the writer: ValueError, inside a job or not."""
    event_kind(event, fields)
    path = os.environ.get(ENV_VAR)
    if not path:
        return
    try:
        append(path, record(event, os.environ.get(Env.STEP, ""), fields.pop("source", "rank"),
                            contract_job_id(), **fields))
    except OSError:
        pass
