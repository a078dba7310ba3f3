"""The step boundary shared by the Lightning callback and plain torch's Session: where a signal
recorded by the flag-only handlers is acted on, by all ranks together. Imports torch."""

from __future__ import annotations

import time
from typing import Callable

import torch
import torch.distributed as dist

from .. import events
from . import signals
from .requeue import Interrupted


def _agree(timed: bool, device: torch.device, distributed: bool) -> tuple[bool, bool, bool]:
    """(requeue, timed, terminate), the same on every rank: whether any rank got the requeue signal,
    whether rank 0's clock says a timed checkpoint is due (other ranks pass False), and whether any
    rank got SIGTERM. One all-reduce, so all ranks save (a collective) at the same step or none does."""
    received = signals.received()
    flags = torch.tensor([float(received.requeue), float(timed), float(received.terminate)])
    if distributed and dist.is_available() and dist.is_initialized():
        flags = flags.to(device)  # NCCL reduces only device tensors
        dist.all_reduce(flags, op=dist.ReduceOp.MAX)
    requeue, timed, terminate = (bool(f) for f in flags.cpu().tolist())
    return requeue, timed, terminate


def step_boundary(step: int, *, every_n_steps: int | None, every_s: float | None, last_save: float,
                  last_saved_step: int | None, rank0: bool, device: torch.device, distributed: bool,
                  restart: int, save: Callable[[str], None], request_requeue: Callable[[], None]) -> None:
    """After every optimizer step, on every rank: checkpoint when one is due (`save(why)`, a
    collective), and after a signal stop. Raises Interrupted (`.why`: "SIGTERM" or "requeue signal");
    on the requeue signal the checkpoint of this very step is written first and rank 0 runs
    `request_requeue()`."""
    periodic = bool(every_n_steps) and step % every_n_steps == 0
    timed = every_s is not None and rank0 and time.monotonic() - last_save >= every_s
    requeue, timed, terminate = _agree(timed, device, distributed)
    if terminate and not requeue:
        # SIGTERM: the job is being killed; the last periodic checkpoint is what resumes
        if rank0:
            events.emit("interrupted", global_step=step, why="SIGTERM")
        raise Interrupted("received SIGTERM", why="SIGTERM")
    if requeue and rank0:
        events.emit("signal", signal=",".join(signals.received().names) or "requeue", global_step=step,
                    restart=restart)
    if (periodic or timed or requeue) and step != last_saved_step:
        save("signal" if requeue else "periodic" if periodic else "timed")
    if requeue:
        if rank0:
            # before the requeue request: once Slurm has it, this process may be killed any moment
            events.emit("interrupted", global_step=step, why="requeue signal")
            request_requeue()
        raise Interrupted(f"checkpointed at step {step} on the requeue signal", why="requeue signal")
