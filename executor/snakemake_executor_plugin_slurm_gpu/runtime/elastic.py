"""Same training whatever the node count: how an elastic step (min_nodes) keeps its global batch.

At full size the step has F ranks (`Geometry.full_world_size`), and each optimizer step every rank computes
one micro-batch of m samples: the global batch is F micro-batches, numbered 0..F-1. A run on W <= F ranks
computes the same F micro-batches, rank r taking r, r+W, r+2W, ... (its `Share`), accumulates their
gradients and steps once. DDP averages the ranks' gradients over W, so each micro-batch's mean loss is
scaled by W/F before backward: the all-reduced gradient is then (1/F) x the sum of the F micro-batch
gradients, the full-size run's gradient, for any W (W need not divide F; ranks may take unequal shares).
Only the order of the floating-point sums differs.

`GlobalBatches` says which samples make up global batch k and each of its micro-batches, from the global
step alone: the same for every world size, so a run that resumes on fewer nodes continues with exactly the
samples the full-size run would have used. Pure index arithmetic, no torch.

A plain torch loop (Session.share and Session.accumulate wrap the first and last call for this rank):

    batches = GlobalBatches(len(dataset), micro_batch_size=32, full_world_size=session.world.full_world_size)
    for step in range(start, total):
        optimizer.zero_grad()
        for indices, scale in session.accumulate(model, batches.for_rank(step, session.world_size, session.rank)):
            x, y = collate([dataset[i] for i in indices])
            (loss_fn(model(x), y) * scale).backward()
        optimizer.step()
        session.step_done(step + 1, lambda: {...})
"""

from __future__ import annotations

import contextlib
import random
from dataclasses import dataclass
from typing import Any, Iterator, Sequence, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Share:
    """One rank's part of each global batch."""

    parts: tuple[int, ...]   # the micro-batches (0..full_world_size-1) this rank computes, in order
    loss_scale: float        # multiply each micro-batch's mean loss by this before backward

    @property
    def accumulation(self) -> int:
        """Backward passes per optimizer step on this rank (gradient accumulation)."""
        return len(self.parts)


def share(world_size: int, rank: int, full_world_size: int) -> Share:
    """Rank `rank`'s share in a world of `world_size` of a step written for `full_world_size` ranks."""
    if not 1 <= world_size <= full_world_size:
        raise ValueError(f"a world of {world_size} rank(s) cannot hold the global batch of {full_world_size}: "
                         "an elastic step runs on at most its full size")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside a world of {world_size}")
    return Share(tuple(range(rank, full_world_size, world_size)), world_size / full_world_size)


@dataclass(frozen=True)
class LockstepShare:
    """One rank's part of each global batch in a loop where every rank must run the same number of
    micro-batches per optimizer step (Lightning runs a collective at every batch): the longest share's count,
    A = ceil(F/W), this rank's parts padded with its last part again. A framework that divides each loss by
    A (gradient accumulation) and averages over W (DDP) gives each slot the weight 1/(A*W); `weights` make
    that 1/F for a real part and 0 for the padding."""

    parts: tuple[int, ...]
    weights: tuple[float, ...]  # multiply the slot's loss (already divided by A) by this before backward

    @property
    def accumulation(self) -> int:
        return len(self.parts)


def lockstep(world_size: int, rank: int, full_world_size: int) -> LockstepShare:
    """Rank `rank`'s LockstepShare in a world of `world_size` of a step written for `full_world_size` ranks."""
    mine = share(world_size, rank, full_world_size).parts
    slots = len(share(world_size, 0, full_world_size).parts)  # rank 0's share is the longest
    weight = slots * world_size / full_world_size
    return LockstepShare(mine + (mine[-1],) * (slots - len(mine)),
                         (weight,) * len(mine) + (0.0,) * (slots - len(mine)))


class GlobalBatches:
    """The samples of each global batch: `full_world_size` micro-batches of `micro_batch_size`, drawn
    without replacement from a permutation of the dataset that depends on the epoch and `seed` only.
    An epoch is the whole global batches that fit the dataset (the remainder is dropped, as
    DistributedSampler(drop_last=True) does), so its length does not depend on the world size."""

    def __init__(self, dataset_size: int, micro_batch_size: int, full_world_size: int, seed: int = 0,
                 shuffle: bool = True) -> None:
        if micro_batch_size < 1 or full_world_size < 1:
            raise ValueError("micro_batch_size and full_world_size must be at least 1")
        self.dataset_size, self.micro_batch_size = dataset_size, micro_batch_size
        self.full_world_size, self.seed, self.shuffle = full_world_size, seed, shuffle
        self.global_batch_size = micro_batch_size * full_world_size
        self.per_epoch = dataset_size // self.global_batch_size
        if self.per_epoch < 1:
            raise ValueError(f"a dataset of {dataset_size} sample(s) holds no global batch of "
                             f"{self.global_batch_size} ({full_world_size} x {micro_batch_size})")
        self._order: tuple[int, list[int]] | None = None

    def _epoch_order(self, epoch: int) -> list[int]:
        if self._order is None or self._order[0] != epoch:
            order = list(range(self.dataset_size))
            if self.shuffle:
                random.Random(self.seed * 1_000_003 + epoch).shuffle(order)
            self._order = (epoch, order)
        return self._order[1]

    def global_batch(self, step: int) -> list[int]:
        """The samples of the global batch of optimizer step `step` (0-based, over all epochs)."""
        epoch, k = divmod(step, self.per_epoch)
        start = k * self.global_batch_size
        return self._epoch_order(epoch)[start:start + self.global_batch_size]

    def micro_batch(self, step: int, part: int) -> list[int]:
        batch = self.global_batch(step)
        return batch[part * self.micro_batch_size:(part + 1) * self.micro_batch_size]

    def for_rank(self, step: int, world_size: int, rank: int) -> list[list[int]]:
        """The micro-batches rank `rank` computes at optimizer step `step` in a world of `world_size`."""
        return [self.micro_batch(step, part) for part in share(world_size, rank, self.full_world_size).parts]


def accumulate(model: Any, micro_batches: Sequence[T], loss_scale: float) -> Iterator[tuple[T, float]]:
    """(micro-batch, loss scale) for each of this rank's micro-batches of one optimizer step, the loss's
    backward to be done in the loop's body. DDP's gradient all-reduce is held back (model.no_sync()) until
    the last micro-batch's backward: one all-reduce per optimizer step on every rank, however many
    micro-batches each has."""
    last = len(micro_batches) - 1
    for i, micro_batch in enumerate(micro_batches):
        hold = getattr(model, "no_sync", None) if i < last else None
        with hold() if hold is not None else contextlib.nullcontext():
            yield micro_batch, loss_scale
