"""The one collective of a step boundary, shared by the Lightning callback and plain torch's Session.
Imports torch."""

from __future__ import annotations

import torch
import torch.distributed as dist

from . import signals


def agree(timed: bool, device: torch.device, distributed: bool) -> tuple[bool, bool, bool]:
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
