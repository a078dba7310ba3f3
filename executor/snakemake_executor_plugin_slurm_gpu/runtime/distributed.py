"""Plain torch.distributed glue: what the Lightning callback gives, for a hand-written training loop.

    from snakemake_executor_plugin_slurm_gpu.runtime import signals
    signals.install()                     # first: before it, the requeue signal kills the process
    import torch
    from snakemake_executor_plugin_slurm_gpu.runtime.distributed import Session

    session = Session(every_n_steps=50)   # process group from the allocation (srun or torchrun)
    model = torch.nn.parallel.DistributedDataParallel(net.to(session.device))
    state = session.resume()              # the newest checkpoint that verifies, loaded; or None
    start = 0 if state is None else state["step"]
    for step in range(start + 1, total + 1):
        ...one optimizer step...
        session.step_done(step, lambda: {"step": step, "model": model.state_dict(), ...})
    if session.finish(step):              # False never returns: a stop raises Interrupted (exit 143)
        write_the_outputs()

step_done() is the step boundary: one all-reduce tells every rank whether any rank got the requeue
signal or SIGTERM, or whether rank 0's clock says a timed checkpoint is due, so all ranks act
together: rank 0 writes the checkpoint (temporary name in the same directory, rename, manifest),
and on the requeue signal asks Slurm to requeue the job; then every rank raises Interrupted.

Imports torch: import this module only in the training script.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import time
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as dist

from .. import checkpoints, events
from . import collective, rendezvous, requeue, signals
from .environment import Geometry, checkpoint_dir, geometry
from .requeue import Interrupted

log = logging.getLogger(__name__)

__all__ = ["Interrupted", "Session"]


class Session:
    """This rank's part of the step: process group, device, checkpoints, signals."""

    def __init__(self, every_n_steps: int | None = 100, every_minutes: float | None = None,
                 directory: str | Path | None = None, keep: int = 2, requeue: bool = True,
                 backend: str | None = None, timeout_s: float = 600.0) -> None:
        signals.install()  # idempotent; the script should already have called it before importing torch
        rendezvous.announce()  # first: in allocation mode it also settles MASTER_ADDR/PORT
        self.world: Geometry = geometry()
        self.every_n_steps = every_n_steps
        self.every_s = None if every_minutes is None else every_minutes * 60.0
        self.directory = Path(directory) if directory is not None else checkpoint_dir()
        self.keep = max(keep, 1)
        self.requeue = requeue
        self.restart = int(os.environ.get("SLURM_RESTART_COUNT") or 0)
        self.interrupted: str | None = None
        cuda = torch.cuda.is_available()
        self.device = torch.device(f"cuda:{self.world.local_rank}" if cuda else "cpu")
        if cuda:
            torch.cuda.set_device(self.device)
        if self.world.world_size > 1:
            self._init_process_group(backend or ("nccl" if cuda else "gloo"), timeout_s)
        events.emit("rank_ready", rank=self.rank, node=os.environ.get("SLURMD_NODENAME") or socket.gethostname(),
                    restart=self.restart, world_size=self.world_size)
        self._last_save = time.monotonic()
        self._last_saved_step: int | None = None
        if self.rank == 0:
            (self.directory / checkpoints.INTERRUPTED_MARKER).unlink(missing_ok=True)

    def _init_process_group(self, backend: str, timeout_s: float) -> None:
        # under srun the batch script exported MASTER_ADDR/MASTER_PORT and each task knows its
        # place from SLURM_*; under torchrun all of it is set already
        os.environ.setdefault("RANK", str(self.world.rank))
        os.environ.setdefault("WORLD_SIZE", str(self.world.world_size))
        os.environ.setdefault("LOCAL_RANK", str(self.world.local_rank))
        if not os.environ.get("MASTER_ADDR") or not os.environ.get("MASTER_PORT"):
            raise RuntimeError("slurm-gpu: MASTER_ADDR/MASTER_PORT are not set: run the script with srun inside a "
                               "slurm-gpu step (its batch script exports them)")
        dist.init_process_group(backend, init_method="env://", rank=self.world.rank,
                                world_size=self.world.world_size, timeout=timedelta(seconds=timeout_s))

    @property
    def rank(self) -> int:
        return self.world.rank

    @property
    def world_size(self) -> int:
        return self.world.world_size

    @property
    def distributed(self) -> bool:
        return self.world.world_size > 1 and dist.is_available() and dist.is_initialized()

    # ------------------------------------------------------------ resume
    def resume(self, map_location: Any = None, weights_only: bool = True) -> Any | None:
        """The newest checkpoint that verifies, loaded (every rank loads it), or None for a fresh
        start. Damaged newer files are skipped, not unpickled."""
        found = checkpoints.find_resumable(self.directory)
        if found is None:
            return None
        log.warning("slurm-gpu: resuming from %s", found)
        state = torch.load(found, map_location=map_location or self.device, weights_only=weights_only)
        if self.rank == 0:
            match = re.fullmatch(r"step-(\d+)\.ckpt", found.name)
            events.emit("resumed", from_step=int(match.group(1)) if match else None, path=str(found),
                        restart=self.restart)
        return state

    # ------------------------------------------------------------ the step boundary
    def step_done(self, step: int, state: Callable[[], Any]) -> None:
        """Call after every optimizer step, on every rank. `state` makes what is saved (called on
        rank 0 only, and only when a checkpoint is due). Raises Interrupted after a signal."""
        received = signals.received()
        periodic = bool(self.every_n_steps) and step % self.every_n_steps == 0
        timed = self.every_s is not None and self.rank == 0 and time.monotonic() - self._last_save >= self.every_s
        want_requeue, timed, terminate = collective.agree(timed, self.device, self.distributed)
        if terminate and not want_requeue:
            # SIGTERM: being killed now; the newest periodic checkpoint is what resumes
            self.interrupted = "SIGTERM"
            if self.rank == 0:
                events.emit("interrupted", global_step=step, why="SIGTERM")
            raise Interrupted("received SIGTERM")
        if want_requeue and self.rank == 0:
            events.emit("signal", signal=",".join(received.names) or "requeue", global_step=step,
                        restart=self.restart)
        if (periodic or timed or want_requeue) and step != self._last_saved_step:
            self.save(step, state, why="signal" if want_requeue else "periodic" if periodic else "timed")
        if want_requeue:
            self.interrupted = "requeue signal"
            if self.rank == 0:
                events.emit("interrupted", global_step=step, why="requeue signal")
                requeue.request(self.directory, step, requeue=self.requeue)
            raise Interrupted(f"checkpointed at step {step} on the requeue signal")

    def save(self, step: int, state: Callable[[], Any], why: str = "periodic") -> None:
        """Collective: rank 0 writes step-N.ckpt atomically with its manifest, everyone waits."""
        if self.rank == 0:
            final = self.directory / f"step-{step:09d}.ckpt"
            with checkpoints.atomic_output(final) as temporary:
                torch.save(state(), temporary)
            checkpoints.write_manifest(final, step)
            for old in sorted(self.directory.glob("step-*.ckpt"))[:-self.keep]:
                old.unlink(missing_ok=True)
                checkpoints.manifest_path(old).unlink(missing_ok=True)
            events.emit("checkpoint", global_step=step, path=str(final), why=why)
        if self.distributed:
            dist.barrier()
        self._last_save = time.monotonic()
        self._last_saved_step = step

    # ------------------------------------------------------------ the end
    def finish(self, step: int) -> bool:
        """Training reached its end: say so, leave the process group. True (an interrupted run
        never gets here: step_done raised)."""
        if self.rank == 0:
            events.emit("training_done", global_step=step)
        if self.distributed:
            dist.barrier()
            dist.destroy_process_group()
        return self.interrupted is None and not signals.received().terminate
