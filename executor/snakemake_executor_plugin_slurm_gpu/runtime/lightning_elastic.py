"""Lightning glue for elastic steps (min_nodes): the same training whatever node count a run got.

    from snakemake_executor_plugin_slurm_gpu.runtime import trainer_kwargs
    from snakemake_executor_plugin_slurm_gpu.runtime.lightning import Resumable
    from snakemake_executor_plugin_slurm_gpu.runtime.lightning_elastic import ElasticBatches

    resumable, elastic = Resumable(every_n_steps=100), ElasticBatches(micro_batch_size=32, seed=0)
    trainer = L.Trainer(max_steps=1000, callbacks=[resumable, elastic], **trainer_kwargs())
    trainer.fit(model, elastic.loader(dataset, num_workers=4), ckpt_path=resumable.resume_path())

The loader gives this rank its micro-batches of each global batch (elastic.GlobalBatches: F micro-batches
for a step of F ranks at full size, rank r of W taking r, r+W, ...), starting at the global step the run
resumed from; the callback sets the Trainer's accumulate_grad_batches to match. Lightning divides each
micro-batch's loss by the accumulation A and DDP averages over W: when W divides F, A is F/W on every rank
and the all-reduced gradient is (1/F) x the sum of the F micro-batch gradients, the full-size run's. When it
does not (3 of 4 nodes), the shares differ; Lightning runs a collective at every batch, so every rank
still runs A = ceil(F/W) batches (elastic.lockstep): a rank with a shorter share repeats its last
micro-batch, and the callback weighs each loss before its backward, 0 for the repeat and A*W/F for the rest.

A Lightning epoch is an epoch of GlobalBatches (its whole global batches), so it has the same number of
optimizer steps on every world size; a run that resumes mid-epoch on another world continues with the
next global batch, and Lightning's count of the epoch's batches is put to this world's (A per step),
which is where its accumulation boundaries come from.

Imports torch and lightning: import this module only in the training script.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Sized

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, DistributedSampler

from . import elastic
from .environment import Geometry, GeometryError, geometry

# (epoch, first global batch of the epoch still to compute): where this rank's next pass over the data starts
Position = Callable[[int], tuple[int, int]]


class ElasticSampler(DistributedSampler):
    """This rank's samples, micro-batch after micro-batch, for the global batches of one epoch from the
    step the run is at. A DistributedSampler, so that Lightning leaves the loader alone (it would put one
    of its own in the place of any other sampler)."""

    def __init__(self, dataset: Sized, batches: elastic.GlobalBatches, world_size: int, rank: int,
                 position: Position) -> None:
        super().__init__(dataset, num_replicas=world_size, rank=rank,  # type: ignore[arg-type]
                         shuffle=False, drop_last=True)
        self.batches = batches
        self.parts = elastic.lockstep(world_size, rank, batches.full_world_size).parts
        self._position = position

    def __len__(self) -> int:
        # a whole epoch, also when a resumed run starts in its middle: Lightning counts the batches done before
        return len(self.parts) * self.batches.per_epoch * self.batches.micro_batch_size

    def __iter__(self) -> Iterator[int]:
        epoch, first = self._position(self.epoch)
        for k in range(first, self.batches.per_epoch):
            step = epoch * self.batches.per_epoch + k
            for part in self.parts:
                yield from self.batches.micro_batch(step, part)


class ElasticBatches(pl.Callback):
    """The loader and the Trainer settings of an elastic step's training (see the module's docstring)."""

    def __init__(self, micro_batch_size: int, seed: int = 0, shuffle: bool = True,
                 world: Geometry | None = None) -> None:
        self.micro_batch_size, self.seed, self.shuffle = micro_batch_size, seed, shuffle
        self.world = geometry() if world is None else world
        self.share = elastic.lockstep(self.world.world_size, self.world.rank, self.world.full_world_size)
        self._slot = 0  # which of this rank's micro-batches of the optimizer step is being computed
        self._trainer: pl.Trainer | None = None
        self._batches: elastic.GlobalBatches | None = None

    @property
    def accumulation(self) -> int:
        """Micro-batches this rank computes per optimizer step (the Trainer's accumulate_grad_batches)."""
        return self.share.accumulation

    def loader(self, dataset: Any, **dataloader_kwargs: Any) -> DataLoader:
        """The training loader: batches of micro_batch_size, this rank's share of each global batch.
        Any DataLoader argument but the ones that choose the samples (num_workers, collate_fn, pin_memory...)."""
        chosen = sorted({"batch_size", "sampler", "batch_sampler", "shuffle", "drop_last"} & set(dataloader_kwargs))
        if chosen:
            raise ValueError(f"ElasticBatches.loader chooses the samples itself; drop {', '.join(chosen)} "
                             "(the micro-batch size and seed are ElasticBatches' arguments)")
        self._batches = elastic.GlobalBatches(len(dataset), self.micro_batch_size, self.world.full_world_size,
                                              seed=self.seed, shuffle=self.shuffle)
        sampler = ElasticSampler(dataset, self._batches, self.world.world_size, self.world.rank, self._position)
        return DataLoader(dataset, batch_size=self.micro_batch_size, sampler=sampler, drop_last=False,
                          **dataloader_kwargs)

    def _position(self, sampler_epoch: int) -> tuple[int, int]:
        """(epoch, first global batch to compute in it): from the trainer's global step while it fits (after a
        resume, the step it resumed from), else from the epoch Lightning set on the sampler."""
        if self._trainer is None or self._batches is None:
            return sampler_epoch, 0
        epoch = self._trainer.current_epoch
        return epoch, min(max(self._trainer.global_step - epoch * self._batches.per_epoch, 0), self._batches.per_epoch)

    # ------------------------------------------------------------ hooks
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        problems = []
        if trainer.world_size != self.world.world_size:
            problems.append(f"the Trainer forms a world of {trainer.world_size} rank(s) but Slurm started "
                            f"{self.world.world_size}: build it with **trainer_kwargs()")
        if trainer.accumulate_grad_batches != 1:
            problems.append(f"accumulate_grad_batches={trainer.accumulate_grad_batches} is set: an elastic step sets "
                            "it itself from the world it got (make the micro-batch smaller instead)")
        if trainer.limit_train_batches not in (1.0, None):
            problems.append("limit_train_batches is set: an epoch must hold every global batch of the data")
        if trainer.strategy.handles_gradient_accumulation:
            problems.append(f"strategy {type(trainer.strategy).__name__} does its own gradient accumulation")
        if problems:
            raise GeometryError("ElasticBatches: " + "; ".join(problems))
        trainer.accumulate_grad_batches = self.accumulation  # as Lightning's GradientAccumulationScheduler does
        self._trainer = trainer

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        self._slot = batch_idx % self.accumulation  # batch_idx counts this world's batches: see on_train_start

    def on_before_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: torch.Tensor) -> None:
        weight = self.share.weights[self._slot]
        if weight != 1.0:
            # in place: Lightning backpropagates this very tensor next (its logged copy was taken before)
            loss.mul_(weight)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._batches is None or not _trains_on_our_loader(trainer, self._batches):
            raise GeometryError("ElasticBatches: the training loader is not ElasticBatches.loader(...); "
                            "another loader would split the data by this run's world, not by the global batch")
        # a resumed run: the epoch's batch counts are the world's that wrote the checkpoint; Lightning's
        # accumulation boundaries and end of epoch come from them, so they become this world's
        progress = trainer.fit_loop.epoch_loop.batch_progress.current
        done = self._position(trainer.current_epoch)[1] * self.accumulation
        shift = done - progress.ready
        if shift:
            progress.ready += shift
            progress.started += shift
            progress.processed += shift
            progress.completed += shift


def _trains_on_our_loader(trainer: pl.Trainer, batches: elastic.GlobalBatches) -> bool:
    loader = trainer.train_dataloader
    return isinstance(loader, DataLoader) and isinstance(loader.sampler, ElasticSampler) and \
        loader.sampler.batches is batches
