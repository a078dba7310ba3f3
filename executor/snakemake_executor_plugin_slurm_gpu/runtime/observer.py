"""What slurm-gpu adds to every Lightning Trainer of a step, with no change to the training script.

Lightning appends the callbacks of every installed package's `lightning.pytorch.callbacks_factory`
entry point to each Trainer (pyproject.toml registers `callbacks` below). Inside a slurm-gpu step it
gives a StepObserver; anywhere else nothing, so installing the plugin changes no other Trainer.

The observer
- beats (progress.py), so that the executor's stall watchdog sees a rank that stopped;
- keeps the requeue signal from killing a rank whose training is over: Lightning puts the signal's
  default action back when fit() ends, and the default action of SIGUSR1 is to terminate, so a
  time-limit warning or a preemption notice arriving while the script writes its outputs failed a
  finished step. It is ignored from fit's end until the next fit() starts; ignored earlier, it
  would switch Lightning's own auto-requeue off (Lightning installs its handler only where none is).

Imports lightning: loaded by Lightning itself, never by the executor.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

import lightning.pytorch as pl

from . import signals
from ..contract import Env
from .environment import GeometryError, check_lightning_world, world_view
from .progress import Progress

STEP_ENV = Env.STEP


def callbacks() -> list[pl.Callback]:
    """The entry point: a StepObserver inside a slurm-gpu step, else nothing."""
    if not os.environ.get(STEP_ENV):
        return []  # (a one-rank step has no heartbeat directory: the observer then only guards the signal)
    return [StepObserver()]


class StepObserver(pl.Callback):
    def __init__(self) -> None:
        self.progress: Progress | None = None
        self._ignoring = False

    # ------------------------------------------------------------ the late requeue signal
    def _ignore_requeue_signal(self) -> None:
        if signals.owned():
            return  # the Resumable callback's recorder is in place: it acts on the signal
        try:
            sig = signals.requeue_signal()
            if signal.getsignal(sig) in (signal.SIG_DFL, None):
                signal.signal(sig, signal.SIG_IGN)
                self._ignoring = True
        except (ValueError, OSError, KeyError):  # not the main thread, or an odd signal name
            pass

    def _stop_ignoring(self) -> None:
        if not self._ignoring:
            return
        self._ignoring = False
        try:
            sig = signals.requeue_signal()
            if signal.getsignal(sig) == signal.SIG_IGN:
                signal.signal(sig, signal.SIG_DFL)  # Lightning's auto-requeue installs its own at fit()
        except (ValueError, OSError, KeyError):
            pass

    # ------------------------------------------------------------ hooks
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        # after the process group formed, before Lightning installs its signal handlers. Under
        # torchrun a plain script's Trainer may count a world other than torchrun's (SLURMEnvironment
        # wins inside srun): refused here rather than trained as several separate models
        env = getattr(trainer.strategy, "cluster_environment", None)
        problem = check_lightning_world(trainer.world_size, trainer.global_rank,
                                        cluster_environment=None if env is None else type(env).__name__)
        if problem:
            raise GeometryError(problem)
        self._stop_ignoring()
        view = world_view(trainer.global_rank, trainer.local_rank, trainer.world_size)
        if view:
            print(view, file=sys.stderr, flush=True)
        if self.progress is None:
            self.progress = Progress(rank=trainer.global_rank)
        self.progress.start()

    def _advance(self, trainer: pl.Trainer) -> None:
        if self.progress is not None:
            self.progress.advance(trainer.global_step)

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any, **kwargs: Any) -> None:
        self._advance(trainer)

    def on_validation_batch_end(self, trainer: pl.Trainer, *args: Any, **kwargs: Any) -> None:
        self._advance(trainer)

    def on_test_batch_end(self, trainer: pl.Trainer, *args: Any, **kwargs: Any) -> None:
        self._advance(trainer)

    def on_predict_batch_end(self, trainer: pl.Trainer, *args: Any, **kwargs: Any) -> None:
        self._advance(trainer)

    def on_save_checkpoint(self, trainer: pl.Trainer, *args: Any, **kwargs: Any) -> None:
        self._advance(trainer)  # a save is work done: a long one is not a stall

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Lightning has just put the signal's default action back
        self._ignore_requeue_signal()

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self.progress is not None:
            self.progress.done()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if self.progress is not None:
            self.progress.done()
