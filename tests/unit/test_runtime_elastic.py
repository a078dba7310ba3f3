"""An elastic step's global batch: whatever the world a run got, one optimizer step computes the same
micro-batches, of the same samples, to the same gradient as the full-size run."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from snakemake_executor_plugin_slurm_gpu.runtime.elastic import GlobalBatches, lockstep, share


@st.composite
def worlds(draw) -> tuple[int, int]:
    full = draw(st.integers(1, 64))
    return full, draw(st.integers(1, full))


@given(worlds())
@settings(max_examples=300)
def test_the_ranks_of_any_world_compute_every_micro_batch_once(world: tuple[int, int]) -> None:
    full, size = world
    shares = [share(size, rank, full) for rank in range(size)]
    parts = sorted(p for s in shares for p in s.parts)
    assert parts == list(range(full))
    assert all(s.accumulation >= 1 for s in shares)  # every rank takes part in every all-reduce
    assert max(s.accumulation for s in shares) - min(s.accumulation for s in shares) <= 1
    assert all(s.loss_scale == size / full for s in shares)


def test_a_full_size_run_is_plain_ddp() -> None:
    assert share(8, 3, 8).parts == (3,) and share(8, 3, 8).loss_scale == 1.0


@pytest.mark.parametrize(("size", "rank", "full"), [(0, 0, 4), (5, 0, 4), (2, 2, 4), (2, -1, 4)])
def test_a_world_that_cannot_hold_the_global_batch_is_refused(size: int, rank: int, full: int) -> None:
    with pytest.raises(ValueError):
        share(size, rank, full)


@given(worlds())
@settings(max_examples=300)
def test_in_lockstep_every_rank_runs_as_many_micro_batches_and_each_part_weighs_one_fth(
        world: tuple[int, int]) -> None:
    full, size = world
    shares = [lockstep(size, rank, full) for rank in range(size)]
    slots = shares[0].accumulation
    assert all(s.accumulation == slots == math.ceil(full / size) for s in shares)
    # the weight of a part in the all-reduced gradient: its slot's weight, after the framework's 1/slots and 1/size
    weight: dict[int, float] = {}
    for s in shares:
        for part, w in zip(s.parts, s.weights):
            weight[part] = weight.get(part, 0.0) + w / (slots * size)
    assert sorted(weight) == list(range(full))
    assert all(math.isclose(w, 1 / full, rel_tol=1e-12) for w in weight.values())
    # padding repeats a part of the rank's own with weight 0; where the world divides the global batch there is none
    assert all(s.parts == share(size, r, full).parts for r, s in enumerate(shares)) == (full % size == 0)
    if full % size == 0:
        assert all(w == 1.0 for s in shares for w in s.weights)


def _gradient(w: float, b: float, samples: list[tuple[float, float]]) -> tuple[float, float]:
    """d/d(w, b) of the mean squared error over `samples` (one micro-batch's mean loss)."""
    gw = sum(2 * (w * x + b - y) * x for x, y in samples) / len(samples)
    gb = sum(2 * (w * x + b - y) for x, y in samples) / len(samples)
    return gw, gb


@given(worlds(), st.integers(1, 5))
@settings(max_examples=200)
def test_the_all_reduced_gradient_is_the_full_size_runs(world: tuple[int, int], micro: int) -> None:
    full, size = world
    data = [(i * 0.37 - 3.0, (i * 0.37 - 3.0) * 1.5 + (i % 7) * 0.1) for i in range(full * micro * 3)]
    batches = GlobalBatches(len(data), micro, full, seed=11)
    w, b = 0.3, -0.2

    def micro_gradient(indices: list[int]) -> tuple[float, float]:
        return _gradient(w, b, [data[i] for i in indices])

    # full size: one micro-batch per rank, DDP averages over the full world
    at_full = [micro_gradient(batches.micro_batch(5, part)) for part in range(full)]
    expected = (sum(g[0] for g in at_full) / full, sum(g[1] for g in at_full) / full)
    # this world: each rank accumulates its scaled micro-batch gradients, DDP averages over this world
    per_rank = []
    for rank in range(size):
        mine = share(size, rank, full)
        grads = [micro_gradient(indices) for indices in batches.for_rank(5, size, rank)]
        per_rank.append((sum(mine.loss_scale * g[0] for g in grads), sum(mine.loss_scale * g[1] for g in grads)))
    got = (sum(g[0] for g in per_rank) / size, sum(g[1] for g in per_rank) / size)
    assert math.isclose(got[0], expected[0], rel_tol=1e-12, abs_tol=1e-12)
    assert math.isclose(got[1], expected[1], rel_tol=1e-12, abs_tol=1e-12)


@given(worlds(), st.integers(0, 40))
@settings(max_examples=200)
def test_a_global_batch_is_the_same_samples_for_every_world(world: tuple[int, int], step: int) -> None:
    full, size = world
    batches = GlobalBatches(1000, 3, full, seed=5)
    taken = sorted(i for rank in range(size) for mb in batches.for_rank(step, size, rank) for i in mb)
    assert taken == sorted(batches.global_batch(step))
    assert len(taken) == 3 * full


def test_epochs_draw_without_replacement_and_differ() -> None:
    batches = GlobalBatches(100, 4, 3, seed=1)  # 12 a global batch: 8 per epoch, 4 samples dropped
    assert batches.per_epoch == 8
    epoch0 = [i for step in range(8) for i in batches.global_batch(step)]
    epoch1 = [i for step in range(8, 16) for i in batches.global_batch(step)]
    assert len(set(epoch0)) == len(epoch0) == 96 and len(set(epoch1)) == 96
    assert epoch0 != epoch1
    # the same seed, the same batches: a resumed run draws what the interrupted one would have
    assert GlobalBatches(100, 4, 3, seed=1).global_batch(13) == batches.global_batch(13)


def test_a_dataset_smaller_than_one_global_batch_is_refused() -> None:
    with pytest.raises(ValueError, match="holds no global batch of 32"):
        GlobalBatches(30, 4, 8)
