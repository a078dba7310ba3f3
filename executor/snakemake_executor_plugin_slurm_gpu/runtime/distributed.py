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
import socket
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch
import torch.distributed as dist

from .. import checkpoints, contract, events
from ..contract import CheckpointReason, EventKind, StopReason
from . import collective, elastic, rendezvous, signals
from .boundary import Boundary, StopsAtBoundaries
from .progress import Progress
from .environment import Geometry, checkpoint_dir, geometry, local_device_index, world_view
from .requeue import Interrupted

log = logging.getLogger(__name__)

__all__ = ["Interrupted", "Session"]


class Session(StopsAtBoundaries):
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
        self._boundary = Boundary(self.directory, rank0=self.world.rank == 0, restart=self.restart,
                                  every_n_steps=every_n_steps, every_s=self.every_s, requeue=requeue)
        cuda = torch.cuda.is_available()
        # cuda:LOCAL_RANK where each rank sees all of its node's GPUs; cuda:0 where the site binds one to each task
        self.device = torch.device(f"cuda:{local_device_index()}" if cuda else "cpu")
        if cuda:
            torch.cuda.set_device(self.device)
        if self.world.world_size > 1:
            self._init_process_group(backend or ("nccl" if cuda else "gloo"), timeout_s)
        events.emit(EventKind.RANK_READY, rank=self.rank,
                    node=os.environ.get("SLURMD_NODENAME") or socket.gethostname(), restart=self.restart,
                    world_size=self.world_size)
        view = world_view(self.rank, self.world.local_rank, self.world_size)
        if view:
            print(view, file=sys.stderr, flush=True)
        self.progress = Progress(self.rank)  # the stall watchdog's heartbeat (a distributed step's only)
        self.progress.start()
        self._boundary.start_clock()
        if self.rank == 0:
            contract.clear_interrupted_marker(self.directory)

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
    def share(self) -> elastic.Share:
        """This rank's part of each global batch: one micro-batch at the step's full size, more on an elastic
        step's smaller run (runtime/elastic.py), so that the training is the full size's."""
        return elastic.share(self.world.world_size, self.rank, self.world.full_world_size)

    def accumulate(self, model: Any, micro_batches: Sequence[Any]) -> Iterator[tuple[Any, float]]:
        """elastic.accumulate with this rank's loss scale: (micro-batch, scale) pairs, one all-reduce."""
        return elastic.accumulate(model, micro_batches, self.share.loss_scale)

    @property
    def distributed(self) -> bool:
        return self.world.world_size > 1 and dist.is_available() and dist.is_initialized()

    # ------------------------------------------------------------ resume
    def resume(self, map_location: Any = None, weights_only: bool = True, *, template: Any = None) -> Any | None:
        """The newest checkpoint that verifies, loaded (every rank loads it), or None for a fresh
        start. Damaged newer files are skipped, not unpickled. Rank 0 picks it and tells the others,
        so every rank loads the same one (and only rank 0 reads it all to verify it).

        A sharded checkpoint (a directory: save(..., sharded=True)) is loaded with
        torch.distributed.checkpoint into `template`, a state dict or a callable that makes one:
        the keys that were saved, each tensor (or DTensor) of its full size and sharded as this run
        shards it (DCP reshards). It is filled in place and returned; without one, ValueError. DCP
        unpickles its .metadata and non-tensor values itself, `weights_only` does not apply. For a
        file checkpoint `template` is ignored: torch.load's result is returned."""
        if self.distributed:
            found, failure = None, None
            if self.rank == 0:
                try:
                    found = checkpoints.find_resumable(self.directory)
                except Exception as error:  # noqa: BLE001 - reaches every rank through _from_rank0
                    failure = error
            chosen = self._from_rank0(None if found is None else str(found), failure, "pick a checkpoint")
            found = None if chosen is None else Path(chosen)
        else:
            found = checkpoints.find_resumable(self.directory)
        if found is None:
            return None
        log.warning("slurm-gpu: resuming from %s", found)
        if found.is_dir():
            if template is None:
                raise ValueError(f"slurm-gpu: the checkpoint to resume from, {found}, is sharded (a "
                                 "torch.distributed.checkpoint directory). HINT: pass the state dict to load it "
                                 "into: session.resume(template=...), the same keys and shapes as what was saved")
            import torch.distributed.checkpoint as dcp

            state = template() if callable(template) else template
            dcp.load(state, checkpoint_id=found)  # collective: every rank reads the parts it holds
        else:
            state = torch.load(found, map_location=map_location or self.device, weights_only=weights_only)
        if self.rank == 0:
            events.emit(EventKind.RESUMED, from_step=contract.checkpoint_step(found.name), path=str(found),
                        restart=self.restart)
        return state

    # ------------------------------------------------------------ the step boundary
    def step_done(self, step: int, state: Callable[[], Any]) -> None:
        """Call after every optimizer step, on every rank. `state` makes what is saved (called on
        rank 0 only, and only when a checkpoint is due). Raises Interrupted after a signal."""
        self.progress.advance(step)
        try:
            self._boundary.reached(step, agree=lambda timed: collective.agree(timed, self.device, self.distributed),
                                   save=lambda at, why: self.save(at, state, why=why), wait=self._barrier)
        except Interrupted:
            if self.interrupted == StopReason.REQUEUE_SIGNAL:
                self.progress.done()  # the requeue's stop is a clean end of this run's beats
            raise

    def _barrier(self, name: str) -> None:
        if self.distributed:
            dist.barrier()

    def save(self, step: int, state: Callable[[], Any], why: str = CheckpointReason.PERIODIC, *,
             sharded: bool | None = None) -> None:
        """Collective: rank 0 writes step-N.ckpt atomically with its manifest, everyone waits.

        Sharded (sharded=True, or a `state` wrapped by Session.sharded, which is how step_done saves
        sharded): every rank calls `state()` and torch.distributed.checkpoint writes each rank's part
        into one directory, which rank 0 publishes as step-N.ckpt (see checkpoints.publish_directory).
        When rank 0 fails to finish a checkpoint, every rank raises (rank 0 its own error)."""
        if sharded is None:
            sharded = bool(getattr(state, "slurm_gpu_sharded", False))
        final = self.directory / contract.checkpoint_name(step)
        failure: Exception | None = None
        if sharded:
            import torch.distributed.checkpoint as dcp

            name = None
            if self.rank == 0:
                try:
                    name = checkpoints.temporary_name(final)  # fresh: no leftover of a killed save mixes in
                    (self.directory / name).mkdir(mode=0o700)
                except OSError as error:
                    failure = error
            temporary = self.directory / self._from_rank0(name, failure, f"start checkpoint {final}")
            # collective: DCP gathers every rank's write results, rank 0 writes .metadata, and an
            # error on any rank is raised on all of them
            dcp.save(state(), checkpoint_id=temporary)
        if self.rank == 0:
            try:
                if sharded:
                    checkpoints.publish_directory(temporary, final, step)  # 0700/0600, manifest, one rename
                else:
                    with checkpoints.atomic_output(final) as temporary:
                        torch.save(state(), temporary)
                    checkpoints.write_manifest(final, step)
                for old in sorted(self.directory.glob("step-*.ckpt"))[:-self.keep]:
                    checkpoints.remove_checkpoint(old)  # a file or a sharded checkpoint's directory
                checkpoints.remove_leftovers(self.directory)  # of killed saves; no rank writes one now
                events.emit(EventKind.CHECKPOINT, global_step=step, path=str(final), why=why)
            except Exception as error:  # noqa: BLE001 - reaches every rank through _from_rank0
                failure = error
        # rank 0's outcome where a bare barrier was: when it failed, every rank raises now instead of
        # waiting for it in the next collective until that one's timeout
        self._from_rank0(None, failure, f"write checkpoint {final}")
        self._boundary.saved(step)

    @staticmethod
    def sharded(state: Callable[[], Any]) -> Callable[[], Any]:
        """`state` marked for a sharded save, e.g. step_done(step, Session.sharded(lambda: {...})):
        then every rank calls it (not rank 0 alone) and what it returns (DTensors, FSDP's sharded
        state dict, or plain tensors) is saved with torch.distributed.checkpoint into the directory
        step-N.ckpt. Resume it with resume(template=...)."""
        def sharded_state() -> Any:
            return state()
        sharded_state.slurm_gpu_sharded = True  # type: ignore[attr-defined]
        return sharded_state

    def _from_rank0(self, value: Any, failure: Exception | None, what: str) -> Any:
        """Collective: rank 0's `value` on every rank; or, when rank 0 failed (`failure`), an error on
        every rank: rank 0's own, RuntimeError elsewhere. Without a process group: `value` or `failure`."""
        problem = None if failure is None else f"{type(failure).__name__}: {failure}"
        if self.distributed:
            box = [(value, problem)]
            dist.broadcast_object_list(box, src=0)
            value, problem = box[0]
        if failure is not None:
            raise failure
        if problem is not None:
            raise RuntimeError(f"slurm-gpu: rank 0 could not {what}: {problem}")
        return value

    # ------------------------------------------------------------ the end
    def finish(self, step: int) -> bool:
        """Training reached its end: say so, leave the process group. True (an interrupted run
        never gets here: step_done raised)."""
        self.progress.done()
        if self.rank == 0:
            events.emit(EventKind.TRAINING_DONE, global_step=step)
        if self.distributed:
            dist.barrier()
            dist.destroy_process_group()
        return self.interrupted is None and not signals.received().terminate
