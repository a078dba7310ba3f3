"""What the executor (submit host) and the job side (batch script, training ranks) agree on, in one
place: the environment variables between them, the kinds of event in a step's event log and the
reasons they give, the names in a step's checkpoint directory, and the interrupted marker.

Until this module each side spelled these as strings of its own; a typo on one side was a silent
disagreement (an event nobody reads, a marker nobody finds). Both sides import the names from here.

Stdlib only and free of package imports at import time: the executor imports it on the submit host,
which must never import torch, and so do ranks before torch, and so can any module of the package
(no import cycle can go through it).
"""

from __future__ import annotations

import enum
import os
import json
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping, Sequence


# ---------------------------------------------------------------- environment variables

class Env(enum.StrEnum):
    """SLURM_GPU_* variables. Set by the batch script unless said otherwise; read by the job side.
    (SLURM_GPU_BIND is not ours: Slurm sets it for --gpu-bind.)"""

    STEP = "SLURM_GPU_STEP"                      # "rule/wildcards" (StepPaths.key)
    JOB_ID = "SLURM_GPU_JOB_ID"                  # the id the executor follows (job_id() below)
    NODES = "SLURM_GPU_NODES"                    # the geometry submitted, checked against the allocation
    MIN_NODES = "SLURM_GPU_MIN_NODES"            # an elastic step (min_nodes): the fewest nodes it may run on
    TASKS_PER_NODE = "SLURM_GPU_TASKS_PER_NODE"
    GPUS_PER_NODE = "SLURM_GPU_GPUS_PER_NODE"
    CHECKPOINT_DIR = "SLURM_GPU_CHECKPOINT_DIR"  # the same directory for every run of the step
    EVENT_LOG = "SLURM_GPU_EVENT_LOG"            # the step's event log (events.py)
    REQUEUE_SIGNAL = "SLURM_GPU_REQUEUE_SIGNAL"  # e.g. "USR1"; unset: the step gets no requeue signal
    CHECKPOINT_ON_TERM = "SLURM_GPU_CHECKPOINT_ON_TERM"  # "1": checkpoint on SIGTERM too
    HEARTBEAT_DIR = "SLURM_GPU_HEARTBEAT_DIR"    # distributed steps: where the ranks' heartbeats go
    DEBUG = "SLURM_GPU_DEBUG"                    # "1": a --slurm-gpu-debug run
    ALLOCATION = "SLURM_GPU_ALLOCATION"          # "1": a job step inside Snakemake's own allocation
    # set by the user in Snakemake's environment (it reaches the job with --export=ALL), never by slurm-gpu:
    HEARTBEAT_S = "SLURM_GPU_HEARTBEAT_S"        # seconds between heartbeats
    MAX_REQUEUES = "SLURM_GPU_MAX_REQUEUES"      # restarts after which rank 0 stops asking Slurm to requeue


def job_id(environ: Mapping[str, str] | None = None) -> str | None:
    """The Slurm job id the executor knows this job by, as every record and marker of the job side
    names it: an array task's is `<array job id>_<task id>` (its own SLURM_JOB_ID is a number the
    executor never saw), any other job's is SLURM_JOB_ID. The batch script exports it; a process
    started without it (a script run by hand under srun) works it out the same way."""
    env = os.environ if environ is None else environ
    if env.get(Env.JOB_ID):
        return env[Env.JOB_ID]
    array_id, task_id = env.get("SLURM_ARRAY_JOB_ID"), env.get("SLURM_ARRAY_TASK_ID")
    if array_id and task_id:
        return f"{array_id}_{task_id}"
    return env.get("SLURM_JOB_ID") or None


# without SLURM_GPU_MAX_REQUEUES: in effect no limit of the job side's own; the executor's budgets
# (max-preemptions, max-timeouts) and Slurm's MaxBatchRequeue still apply
DEFAULT_MAX_REQUEUES = 1000

# the exit status of a rank that stopped on purpose (requeue signal, SIGTERM): never 0, so nothing
# downstream mistakes an interrupted run for a finished one; 128 + SIGTERM, as a shell reports a kill
INTERRUPTED_EXIT_CODE = 143


# ---------------------------------------------------------------- events

class EventKind(enum.StrEnum):
    """Every kind of record in a step's event log (events.EVENTS lists each one's fields)."""

    # the executor
    SUBMITTED = "submitted"
    PENDING = "pending"
    REQUEUED = "requeued"
    RESUBMITTED = "resubmitted"
    REATTACHED = "reattached"
    COMPLETED = "completed"
    FAILED = "failed"
    WATCHDOG = "watchdog"
    STALLED = "stalled"
    # the batch script
    STARTED = "started"
    ENDED = "ended"
    ALREADY_FINISHED = "already_finished"
    # the training ranks
    RANK_STARTED = "rank_started"
    RANK_READY = "rank_ready"
    RESUMED = "resumed"
    CHECKPOINT = "checkpoint"
    SIGNAL = "signal"
    REQUEUE_REQUESTED = "requeue_requested"
    INTERRUPTED = "interrupted"
    TRAINING_DONE = "training_done"


class CheckpointReason(enum.StrEnum):
    """`why` of a `checkpoint` event."""

    PERIODIC = "periodic"  # every n steps
    TIMED = "timed"        # every n minutes, by rank 0's clock
    SIGNAL = "signal"      # the requeue signal
    SIGTERM = "sigterm"    # SIGTERM with checkpoint-on-sigterm


class StopReason(enum.StrEnum):
    """`why` of an `interrupted` event: why rank 0 stopped training on purpose."""

    REQUEUE_SIGNAL = "requeue signal"
    SIGTERM = "SIGTERM"


# the fields whose values are one of a closed set, per event kind
_REASONS: dict[EventKind, tuple[str, type[enum.StrEnum]]] = {
    EventKind.CHECKPOINT: ("why", CheckpointReason),
    EventKind.INTERRUPTED: ("why", StopReason),
}


def event_kind(kind: str, fields: Mapping[str, Any] | None = None) -> EventKind:
    """`kind` as an EventKind; ValueError for a kind no reader knows, or a reason outside its set
    (a typo on the writing side would otherwise be an event nobody acts on)."""
    try:
        known = EventKind(kind)
    except ValueError:
        raise ValueError(f"unknown event kind {kind!r}: it must be one of {', '.join(EventKind)} "
                         "(contract.EventKind)") from None
    field, reasons = _REASONS.get(known, (None, None))
    if field is not None and fields is not None and field in fields and fields[field] not in tuple(reasons):
        raise ValueError(f"event {known}: {field}={fields[field]!r} is not one of {', '.join(reasons)} "
                         f"(contract.{reasons.__name__})")
    return known


# ---------------------------------------------------------------- the checkpoint directory

CHECKPOINT_SUFFIX = ".ckpt"
MANIFEST_SUFFIX = ".json"               # X.ckpt -> X.ckpt.json
PROVENANCE_FILE = "provenance.json"
TEMP_PREFIX = ".tmp-"                   # half-written files; every scan skips them
# written by rank 0 when training stopped on purpose; read by the executor when the job has ended
INTERRUPTED_MARKER = "interrupted.json"

_STEP_CHECKPOINT = re.compile(r"step-(\d+)\.ckpt")


def checkpoint_name(global_step: int) -> str:
    """The file (or sharded directory) name of the runtime's checkpoint of `global_step`: 'step-000001200.ckpt'
    (zero-padded, so names sort by step)."""
    return f"step-{global_step:09d}{CHECKPOINT_SUFFIX}"


def checkpoint_step(name: str) -> int | None:
    """The step of a name checkpoint_name() made; None for any other name (Lightning's hpc_ckpt_N)."""
    match = _STEP_CHECKPOINT.fullmatch(name)
    return int(match.group(1)) if match else None


# ---------------------------------------------------------------- the interrupted marker

def write_interrupted_marker(checkpoint_dir: str | Path, *, job_id: str | None, global_step: int,
                             signals: Sequence[str], requeued: bool) -> Path:
    """Rank 0, when it stopped on purpose: which job stopped at which global step on which signals, and
    whether Slurm accepted the requeue request. Written all-or-nothing; returns its path."""
    # imported here, not at the top: this module stays a leaf that every module may import
    from .atomic import atomic_write_bytes

    marker = {"job_id": job_id, "step": global_step, "signals": list(signals),
              "at": datetime.now(timezone.utc).isoformat(), "requeued": requeued}
    path = Path(checkpoint_dir) / INTERRUPTED_MARKER
    atomic_write_bytes(path, json.dumps(marker).encode())
    return path


def read_interrupted_marker(checkpoint_dir: str | Path) -> dict[str, Any] | None:
    """The marker as written, or None when there is none, it cannot be read, or it is not an object."""
    try:
        marker = json.loads((Path(checkpoint_dir) / INTERRUPTED_MARKER).read_text())
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) else None


def clear_interrupted_marker(checkpoint_dir: str | Path) -> None:
    """Rank 0 at the start of training: the marker of an earlier run must not speak for this one."""
    (Path(checkpoint_dir) / INTERRUPTED_MARKER).unlink(missing_ok=True)


def interrupted_for_requeue(checkpoint_dir: str | Path, job_id: str) -> bool:
    """Did job `job_id` checkpoint and stop for a restart that Slurm has not carried out? (The
    executor then resubmits the step instead of failing it.)"""
    marker = read_interrupted_marker(checkpoint_dir)
    # a marker of a requeue that Slurm carried out belongs to an earlier run of the same job id
    return marker is not None and str(marker.get("job_id")) == job_id and not marker.get("requeued")
