"""The step boundary: where all ranks of a step learn together that a checkpoint is due or that they
must stop, and stop the same way. One implementation for the Lightning callback, plain torch's
Session and the torch-free training commands (the sweep's trials, the scale test's ranks).

A stop, in this order (each part is read by the executor or by Slurm):
  requeue signal: rank 0 writes `signal`; the checkpoint is saved; rank 0 writes `interrupted` and
    asks Slurm to requeue (requeue.request: the interrupted marker, `requeue_requested`); every
    rank waits for rank 0; every rank raises Interrupted (exit 143).
  SIGTERM: a checkpoint only with checkpoint-on-sigterm (the site's GraceTime must cover a save);
    rank 0 writes `interrupted` and the marker (requeue.note_stop), but asks for no requeue (SIGTERM
    also comes from scancel, and a requeue would undo the cancel); every rank waits; Interrupted.
Every rank waits for rank 0 because the batch script sets SLURM_KILL_BAD_EXIT=1: the first rank to
exit 143 would get rank 0 killed in the middle of `scontrol requeue`.

Torch-free: the caller brings its collectives (`agree`, `wait`) and its `save`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, NoReturn

from .. import events
from ..contract import CheckpointReason, EventKind, StopReason
from . import requeue, signals
from .requeue import Interrupted

# (global_step, why): write the checkpoint of `global_step`; called on every rank, so that a collective save can be one
Save = Callable[[int, CheckpointReason], None]
# a barrier of all ranks; the name says which (Lightning's barriers take one)
Wait = Callable[[str], None]
# (timed on this rank) -> (requeue, timed, terminate), the same on every rank: one collective
Agree = Callable[[bool], tuple[bool, bool, bool]]

STOP_BARRIER = "slurm-gpu stop"
REQUEUE_BARRIER = "slurm-gpu requeue"


class Boundary:
    """One rank's view of the step boundaries of a training run."""

    def __init__(self, directory: str | Path, *, rank0: bool, restart: int, every_n_steps: int | None = None,
                 every_s: float | None = None, requeue: bool = True, mark_sigterm: bool = True) -> None:
        self.directory = Path(directory)
        self.rank0 = rank0
        self.restart = restart
        self.every_n_steps = every_n_steps
        self.every_s = every_s
        self.requeue = requeue           # False: stop on the requeue signal without asking Slurm
        self.mark_sigterm = mark_sigterm  # False: no interrupted marker on SIGTERM
        self.interrupted: str | None = None  # why training stopped on purpose (a StopReason), if it did
        self.last_saved_step: int | None = None
        self._last_save = time.monotonic()

    def start_clock(self) -> None:
        """Timed checkpoints count from now (training starts after set-up that may take long)."""
        self._last_save = time.monotonic()

    def saved(self, global_step: int) -> None:
        """The checkpoint of `global_step` is written: the clock restarts and `global_step` is not saved again."""
        self._last_save = time.monotonic()
        self.last_saved_step = global_step

    def reached(self, global_step: int, agree: Agree, save: Save, wait: Wait) -> None:
        """Every rank, after every optimizer step: agree on what is due, save it, stop when told to
        (raises Interrupted)."""
        periodic = bool(self.every_n_steps) and global_step % self.every_n_steps == 0
        timed = self.every_s is not None and self.rank0 and time.monotonic() - self._last_save >= self.every_s
        requeue_now, timed, terminate = agree(timed)
        fresh = global_step != self.last_saved_step
        if terminate and not requeue_now:
            self.stop(global_step, StopReason.SIGTERM, wait, save if signals.checkpoint_on_term() and fresh else None)
        if requeue_now:
            self.stop(global_step, StopReason.REQUEUE_SIGNAL, wait, save if fresh else None)
        if (periodic or timed) and fresh:
            save(global_step, CheckpointReason.PERIODIC if periodic else CheckpointReason.TIMED)

    def stop(self, global_step: int, why: StopReason, wait: Wait, save: Save | None = None) -> NoReturn:
        """Every rank, once all agreed to stop at `global_step`: the stop described at the top of this module.
        `save` None: no checkpoint now (the newest one resumes)."""
        if why is StopReason.SIGTERM:
            self.interrupted = why
            if save is not None:
                save(global_step, CheckpointReason.SIGTERM)
            if self.rank0:
                events.emit(EventKind.INTERRUPTED, global_step=global_step, why=why)
                if self.mark_sigterm:
                    requeue.note_stop(self.directory, global_step)
            wait(STOP_BARRIER)  # kill-on-bad-exit: rank 0 writes its marker first
            raise Interrupted("received SIGTERM")
        if self.rank0:
            events.emit(EventKind.SIGNAL, signal=",".join(signals.received().names) or "requeue",
                        global_step=global_step, restart=self.restart)
        if save is not None:
            save(global_step, CheckpointReason.SIGNAL)
        self.interrupted = why
        if self.rank0:
            # before the requeue request: once Slurm has it, this process may be killed any moment
            events.emit(EventKind.INTERRUPTED, global_step=global_step, why=why)
            requeue.request(self.directory, global_step, requeue=self.requeue)
        wait(REQUEUE_BARRIER)
        raise Interrupted(f"checkpointed at step {global_step} on the requeue signal")


class StopsAtBoundaries:
    """For a training driver that holds its Boundary as `_boundary` (Resumable, Session): why
    training stopped on purpose (contract.StopReason, or the SystemExit that ended a Lightning fit);
    None while it has not."""

    _boundary: Boundary

    @property
    def interrupted(self) -> str | None:
        return self._boundary.interrupted

    @interrupted.setter
    def interrupted(self, why: str | None) -> None:
        self._boundary.interrupted = why
