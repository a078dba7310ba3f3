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
import re
import socket
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.plugins.environments import ClusterEnvironment, SLURMEnvironment, TorchElasticEnvironment

from .. import checkpoints, events
from . import collective, rendezvous, requeue, signals
from .environment import checkpoint_dir, under_torchrun
from .requeue import INTERRUPTED_EXIT_CODE, Interrupted, note_stop  # noqa: F401 - part of this module's interface

log = logging.getLogger(__name__)

class Resumable(pl.Callback):
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
        self.interrupted: str | None = None
        self._last_save = time.monotonic()
        self._last_saved_step: int | None = None
        # the global rank: torchrun's under launcher="torchrun" (Slurm's SLURM_PROCID counts its tasks, one per node)
        self._rank = int(os.environ.get("RANK" if under_torchrun() else "SLURM_PROCID") or 0)
        self._restart = int(os.environ.get("SLURM_RESTART_COUNT") or 0)
        rendezvous.announce()  # rank_started, before the process group forms

    # ------------------------------------------------------------ resume
    def resume_path(self) -> str | None:
        """The newest checkpoint that verifies (periodic, on-signal or Lightning's hpc_ckpt_N), or
        None for a fresh start. Damaged newer files are skipped, not loaded."""
        found = checkpoints.find_resumable(self.directory)
        if found is not None:
            log.warning("slurm-gpu: resuming from %s", found)
            if self._rank == 0:
                match = re.fullmatch(r"step-(\d+)\.ckpt", found.name)
                events.emit("resumed", from_step=int(match.group(1)) if match else None, path=str(found),
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
        events.emit("rank_ready", rank=trainer.global_rank, node=os.environ.get("SLURMD_NODENAME")
                    or socket.gethostname(), restart=self._restart, world_size=trainer.world_size)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero and self.interrupted is None:
            events.emit("training_done", global_step=trainer.global_step)

    def on_sanity_check_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        signals.reclaim()  # the trainer has just put its signal handlers in (signals.reclaim says why)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        signals.reclaim()
        self._last_save = time.monotonic()
        if trainer.is_global_zero:
            (self.directory / checkpoints.INTERRUPTED_MARKER).unlink(missing_ok=True)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        step = trainer.global_step
        received = signals.received()
        periodic = bool(self.every_n_steps) and step % self.every_n_steps == 0
        timed = self.every_s is not None and trainer.is_global_zero and \
            time.monotonic() - self._last_save >= self.every_s
        requeue, timed, terminate = collective.agree(timed, trainer.strategy.root_device, trainer.world_size > 1)
        if terminate and not requeue:
            # SIGTERM: the job is being killed (preemption without the requeue signal, scancel, the
            # time limit): the last periodic checkpoint is what resumes, unless the step was told to
            # save now (checkpoint-on-sigterm: the site's GraceTime must cover a save; an interrupted
            # save leaves only its temporary file, never a damaged checkpoint)
            self.interrupted = "SIGTERM"
            if signals.checkpoint_on_term() and step != self._last_saved_step:
                self._save(trainer, step, why="sigterm")
            if trainer.is_global_zero:
                events.emit("interrupted", global_step=step, why="SIGTERM")
                note_stop(self.directory, step)
            trainer.strategy.barrier("slurm-gpu stop")  # kill-on-bad-exit: rank 0 writes its marker first
            raise Interrupted("received SIGTERM")
        if requeue and trainer.is_global_zero:
            events.emit("signal", signal=",".join(received.names) or "requeue", global_step=step,
                        restart=self._restart)
        if (periodic or timed or requeue) and step != self._last_saved_step:
            self._save(trainer, step, why="signal" if requeue else "periodic" if periodic else "timed")
        if requeue:
            self.interrupted = "requeue signal"
            if trainer.is_global_zero:
                # before the requeue request: once Slurm has it, this process may be killed any moment
                events.emit("interrupted", global_step=step, why="requeue signal")
            self._request_requeue(trainer, step)
            # every rank waits for rank 0's request: srun's kill-on-bad-exit (the batch script sets
            # it) would otherwise end rank 0 the moment another rank exits 143, mid-request
            trainer.strategy.barrier("slurm-gpu requeue")
            raise Interrupted(f"checkpointed at step {step} on the requeue signal")

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        # Lightning's SIGTERMException is a SystemExit without a code: the process would exit 0
        if isinstance(exception, SystemExit) and exception.code in (None, 0):
            self.interrupted = self.interrupted or type(exception).__name__
            exception.code = INTERRUPTED_EXIT_CODE

    # ------------------------------------------------------------ actions
    def _save(self, trainer: pl.Trainer, step: int, why: str = "periodic") -> None:
        final = self.directory / f"step-{step:09d}.ckpt"
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
                    checkpoints.publish_directory(tmp, final, step)
                else:
                    os.chmod(tmp, 0o600)  # a pickle: nobody else may read (or, with a lax umask, write) it
                    os.replace(tmp, final)
                    checkpoints.write_manifest(final, step)
                self._prune()
                events.emit("checkpoint", global_step=step, path=str(final), why=why)
            except Exception as error:  # noqa: BLE001 - passed to every rank below, then raised
                failure = error
        # rank 0's outcome where a bare barrier was: when rank 0 failed, every rank raises now instead
        # of waiting for it in the next collective until that one's timeout
        problem = trainer.strategy.broadcast(None if failure is None else f"{type(failure).__name__}: {failure}")
        if failure is not None:
            raise failure
        if problem is not None:
            raise RuntimeError(f"slurm-gpu: rank 0 could not finish checkpoint {final}: {problem}")
        self._last_save = time.monotonic()
        self._last_saved_step = step

    def _prune(self) -> None:
        ours = sorted(self.directory.glob("step-*.ckpt"))
        for old in ours[:-self.keep]:
            checkpoints.remove_checkpoint(old)  # a file or a sharded checkpoint's directory, and its manifest
        # what killed or failed saves left ('.tmp-step-*'): rank 0 prunes while no rank writes one
        checkpoints.remove_leftovers(self.directory)

    def _request_requeue(self, trainer: pl.Trainer, step: int) -> None:
        if trainer.is_global_zero:
            requeue.request(self.directory, step, requeue=self.requeue)
