"""Asking Slurm to requeue this job after a checkpoint, torch-free: the Lightning callback and
plain-Python training commands (the rendezvous stand-ins) do it the same way."""

from __future__ import annotations

import logging
import os
import subprocess
from pathlib import Path

from .. import contract, events
from ..contract import (DEFAULT_MAX_REQUEUES, INTERRUPTED_EXIT_CODE, Env, EventKind,  # noqa: F401 - exit code
                        write_interrupted_marker)                                      # also importable here
from . import signals

log = logging.getLogger(__name__)

# (INTERRUPTED_EXIT_CODE: Lightning <= 2.6.6 itself exits 0 on SIGTERM, hence a code of our own)


class Interrupted(SystemExit):
    """Training stopped early on purpose: a checkpoint is written and the job is being requeued."""

    def __init__(self, reason: str) -> None:
        super().__init__(INTERRUPTED_EXIT_CODE)
        self.reason = reason


def request(directory: str | Path, global_step: int, requeue: bool = True) -> bool:
    """Rank 0 only, after the checkpoint of `global_step` is on disk: `scontrol requeue` this job (unless
    `requeue` is False or SLURM_GPU_MAX_REQUEUES restarts have happened) and leave the
    interrupted marker that the executor reads when the job ends without Slurm having requeued it,
    to resubmit the step instead. Returns whether Slurm accepted the requeue."""
    # the marker names the job id the executor knows; for an array task that is also the form
    # scontrol needs to requeue only this task, not the whole array (Lightning #15022)
    job_id = target = contract.job_id()
    requeued = False
    if requeue and target:
        restarts = int(os.environ.get("SLURM_RESTART_COUNT") or 0)
        limit = int(os.environ.get(Env.MAX_REQUEUES) or DEFAULT_MAX_REQUEUES)
        if restarts < limit:
            try:
                done = subprocess.run(["scontrol", "requeue", target], capture_output=True, text=True,
                                      timeout=60, check=False)
                requeued = done.returncode == 0
                if done.returncode:
                    log.warning("slurm-gpu: scontrol requeue %s failed: %s", target, done.stderr.strip())
            except (OSError, subprocess.SubprocessError) as e:
                log.warning("slurm-gpu: scontrol requeue %s failed: %s", target, e)
    write_interrupted_marker(directory, job_id=job_id, global_step=global_step, signals=signals.received().names,
                             requeued=requeued)
    events.emit(EventKind.REQUEUE_REQUESTED, global_step=global_step, requeued=requeued)
    return requeued


def note_stop(directory: str | Path, global_step: int) -> None:
    """Rank 0 only, when the ranks stop on SIGTERM: leave the interrupted marker, so that a job that
    ends FAILED while Slurm's preemption grace time runs (the batch script ends with its ranks,
    before Slurm's requeue comes) is resubmitted by the executor instead of failing the step. No
    requeue request: SIGTERM also comes from scancel, and a requeue would undo the cancel."""
    write_interrupted_marker(directory, job_id=contract.job_id(), global_step=global_step,
                             signals=signals.received().names, requeued=False)
