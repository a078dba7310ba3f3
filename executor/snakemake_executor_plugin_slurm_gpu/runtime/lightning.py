"""Lightning glue: periodic and on-signal checkpoints in the step's checkpoint directory, agreed by
all ranks at a step boundary, and a resume path that skips damaged files.

    from snakemake_executor_plugin_slurm_gpu.runtime import trainer_kwargs
    from snakemake_executor_plugin_slurm_gpu.runtime.lightning import Resumable

    resumable = Resumable(every_n_steps=100)          # installs the signal handlers at once
    trainer = L.Trainer(max_steps=1000, callbacks=[resumable], **trainer_kwargs())
    trainer.fit(model, loader, ckpt_path=resumable.resume_path())
    if resumable.finished(trainer):                   # False after a requeue signal or SIGTERM
        save_the_model()

The same script runs under either launcher. With launcher="torchrun" (one Slurm task per node, in
which torchrun starts the node's ranks) trainer_kwargs() gives torchrun's processes per node as
devices, environment() a TorchElasticEnvironment (ranks from RANK/WORLD_SIZE, not SLURM_PROCID),
and torchrun passes the requeue signal on to every rank, whose handlers act on it as under srun.
A SLURMEnvironment passed there beside trainer_kwargs() is refused when the Trainer is built: it
would count one rank per node (see environment.check_lightning_world()).

Imports torch and lightning: import this module only in the training script.
"""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.plugins.environments import ClusterEnvironment, SLURMEnvironment, TorchElasticEnvironment

from .. import checkpoints, contract, events
from ..atomic import replace_durably
from ..contract import CheckpointReason, EventKind
from . import collective, rendezvous, signals
from .boundary import Boundary, StopsAtBoundaries
from .environment import GeometryError, checkpoint_dir, geometry, under_torchrun
from .requeue import INTERRUPTED_EXIT_CODE, Interrupted, note_stop  # noqa: F401 - part of this module's interface

log = logging.getLogger(__name__)

class Resumable(StopsAtBoundaries, pl.Callback):
    """Checkpoint every `every_n_steps` steps and/or `every_minutes` minutes, and right away when
    Slurm sends the requeue signal; then rank 0 alone asks Slurm to requeue the job."""

    def __init__(self, every_n_steps: int | None = 100, every_minutes: float | None = None,
                 directory: str | Path | None = None, keep: int = 2, requeue: bool = True) -> None:
        signals.install()  # now, not at fit(): a signal during imports or data loading must not kill us
        self.every_n_steps = every_n_steps
        self.every_s = None if every_minutes is None else every_minutes * 60.0
        self.directory = Path(directory) if directory is not None else checkpoint_dir()
        self.keep = max(keep, 1)
        self.requeue = requeue
        # the global rank: torchrun's under launcher="torchrun" (Slurm's SLURM_PROCID counts its tasks, one per node)
        self._rank = int(os.environ.get("RANK" if under_torchrun() else "SLURM_PROCID") or 0)
        self._restart = int(os.environ.get("SLURM_RESTART_COUNT") or 0)
        self._last_step: int | None = None  # the global step of the last boundary
        self._boundary = Boundary(self.directory, rank0=self._rank == 0, restart=self._restart,
                                  every_n_steps=every_n_steps, every_s=self.every_s, requeue=requeue)
        rendezvous.announce()  # rank_started, before the process group forms

    # ------------------------------------------------------------ resume
    def resume_path(self) -> str | None:
        """The newest checkpoint that verifies (periodic, on-signal or Lightning's hpc_ckpt_N), or
        None for a fresh start. Damaged newer files are skipped, not loaded."""
        found = checkpoints.find_resumable(self.directory)
        if found is not None:
            log.warning("slurm-gpu: resuming from %s", found)
            if self._rank == 0:
                events.emit(EventKind.RESUMED, from_step=contract.checkpoint_step(found.name), path=str(found),
                            restart=self._restart)
        return None if found is None else str(found)

    def environment(self) -> ClusterEnvironment:
        """The cluster environment for `Trainer(plugins=[...])`. Under srun (one task per rank): a
        SLURMEnvironment whose own requeue handler stays off, since this callback does that job. Under
        torchrun (launcher="torchrun", one Slurm task per node): a TorchElasticEnvironment, which takes
        the ranks from torchrun (RANK, LOCAL_RANK, WORLD_SIZE, GROUP_RANK); SLURM_PROCID/SLURM_NTASKS
        count one rank per node there. It has no requeue handler of its own either."""
        if under_torchrun():
            return TorchElasticEnvironment()
        return SLURMEnvironment(auto_requeue=False)

    def finished(self, trainer: pl.Trainer) -> bool:
        """True only when fit ended by reaching its limits, not by a signal."""
        return self.interrupted is None and not signals.received().terminate and \
            trainer.state.status.value == "finished"

    # ------------------------------------------------------------ hooks
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        # Lightning calls setup hooks after the process group formed: this rank has joined
        events.emit(EventKind.RANK_READY, rank=trainer.global_rank, node=os.environ.get("SLURMD_NODENAME")
                    or socket.gethostname(), restart=self._restart, world_size=trainer.world_size)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero and self.interrupted is None:
            events.emit(EventKind.TRAINING_DONE, global_step=trainer.global_step)

    def on_sanity_check_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        signals.reclaim()  # the trainer has just put its signal handlers in (signals.reclaim says why)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        signals.reclaim()
        self._boundary.start_clock()
        self._last_step = trainer.global_step
        self._warn_if_the_global_batch_shrinks(trainer)
        if trainer.is_global_zero:
            contract.clear_interrupted_marker(self.directory)

    def _warn_if_the_global_batch_shrinks(self, trainer: pl.Trainer) -> None:
        """An elastic step's run on fewer nodes without ElasticBatches trains on: each rank's batches stay
        as they were, so every optimizer step takes fewer samples than at full size. Said, not refused: a
        script may keep its global batch some other way."""
        from .lightning_elastic import ElasticBatches

        try:
            full = geometry().full_world_size
        except GeometryError:
            return
        if trainer.is_global_zero and trainer.world_size < full and \
                not any(isinstance(c, ElasticBatches) for c in trainer.callbacks):
            log.warning("slurm-gpu: this run of an elastic step (min_nodes) has %d of its %d ranks, and no "
                        "ElasticBatches callback keeps its global batch: each optimizer step takes %d/%d of the "
                        "samples of a full-size step (see the README's Elastic steps)", trainer.world_size, full,
                        trainer.world_size, full)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        if trainer.global_step == self._last_step:
            # a micro-batch of gradient accumulation: the boundary is after the optimizer step. Ranks may
            # compute different numbers of micro-batches per step (an elastic run), never of steps
            return
        self._last_step = trainer.global_step
        # rank 0 as the trainer counts it: the environment's guess at __init__ is only for the resume event
        self._boundary.rank0 = trainer.is_global_zero
        self._boundary.reached(
            trainer.global_step,
            agree=lambda timed: collective.agree(timed, trainer.strategy.root_device, trainer.world_size > 1),
            save=lambda step, why: self._save(trainer, step, why=why),
            wait=trainer.strategy.barrier)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        # Lightning's SIGTERMException is a SystemExit without a code: the process would exit 0
        if isinstance(exception, SystemExit) and exception.code in (None, 0):
            self.interrupted = self.interrupted or type(exception).__name__
            exception.code = INTERRUPTED_EXIT_CODE

    # ------------------------------------------------------------ actions
    def _save(self, trainer: pl.Trainer, global_step: int, why: str = CheckpointReason.PERIODIC) -> None:
        final = self.directory / contract.checkpoint_name(global_step)
        # collective: every rank takes part. DDP-like strategies have rank 0 write one file; FSDP with
        # state_dict_type="sharded" and DeepSpeed make `tmp` a directory every rank writes into. So the
        # temporary name is rank 0's, the same on every rank, and fresh: no leftover of a killed save
        # of the same step mixes in. Lightning may stage a file's bytes through $TMPDIR; the rename
        # onto the final name happens inside the directory, so it is atomic
        tmp = self.directory / trainer.strategy.broadcast(checkpoints.temporary_name(final))
        trainer.save_checkpoint(tmp, weights_only=False)  # explicit: Lightning logs its default at every save
        # every rank's shards are on disk before rank 0 looks; the same collectives on every rank,
        # whatever the strategy wrote
        trainer.strategy.barrier("slurm-gpu checkpoint written")
        failure: Exception | None = None
        if trainer.is_global_zero:
            try:
                if tmp.is_dir() and not tmp.is_symlink():
                    # sharded: 0700/0600 throughout, manifest of every file, one rename onto `final`
                    checkpoints.publish_directory(tmp, final, global_step)
                else:
                    os.chmod(tmp, 0o600)  # a pickle: nobody else may read (or, with a lax umask, write) it
                    # durable as atomic_output's renames: the data before the name, the name before the manifest
                    replace_durably(tmp, final)
                    checkpoints.write_manifest(final, global_step)
                self._prune()
                events.emit(EventKind.CHECKPOINT, global_step=global_step, path=str(final), why=why)
            except Exception as error:  # noqa: BLE001 - passed to every rank below, then raised
                failure = error
        # rank 0's outcome where a bare barrier was: when rank 0 failed, every rank raises now instead
        # of waiting for it in the next collective until that one's timeout
        problem = trainer.strategy.broadcast(None if failure is None else f"{type(failure).__name__}: {failure}")
        if failure is not None:
            raise failure
        if problem is not None:
            raise RuntimeError(f"slurm-gpu: rank 0 could not finish checkpoint {final}: {problem}")
        self._boundary.saved(global_step)

    def _prune(self) -> None:
        ours = sorted(self.directory.glob("step-*.ckpt"))
        for old in ours[:-self.keep]:
            checkpoints.remove_checkpoint(old)  # a file or a sharded checkpoint's directory, and its manifest
        # what killed or failed saves left ('.tmp-step-*'): rank 0 prunes while no rank writes one
        checkpoints.remove_leftovers(self.directory)
