"""The sweep's arithmetic, shared by its scripts and by the test that checks the summary.

Each trial fits y = w*x + b to the same 64 noisy points by full-batch gradient descent, data-parallel:
rank r of a world of W holds the points j with j % W == r and the ranks add their partial gradients
in rank order (slurm-gpu's rendezvous all-reduce does it that way), so a trial's result is a pure
function of (trial, world size): a resumed run must end on exactly the floats of an uninterrupted one.
"""

from __future__ import annotations

import math
from typing import Sequence

POINTS = 64


def trial_names(n: int) -> list[str]:
    return [f"t{i:03d}" for i in range(n)]


def hyper(trial: str) -> dict[str, float | int]:
    """Learning rate and geometry of a trial: 1 or 2 nodes, 1, 2 or 4 GPUs per node."""
    i = int(trial[1:])
    nodes = 2 if i % 4 == 3 else 1
    return {"lr": round(0.05 + 0.01 * (i % 23), 4), "nodes": nodes, "gpus": nodes * (1, 2, 4)[i % 3]}


def data(j: int) -> tuple[float, float]:
    x = 2.0 * j / (POINTS - 1) - 1.0
    return x, 3.0 * x - 2.0 + 0.1 * math.sin(17.0 * j)


def partial_gradient(w: float, b: float, rank: int, world: int) -> list[float]:
    """Sums over this rank's shard: d(loss)/dw, d(loss)/db and the squared error, each times POINTS."""
    gw = gb = sq = 0.0
    for j in range(rank, POINTS, world):
        x, y = data(j)
        err = w * x + b - y
        gw += 2.0 * err * x
        gb += 2.0 * err
        sq += err * err
    return [gw, gb, sq]


def fold(parts: Sequence[Sequence[float]]) -> list[float]:
    """What the all-reduce computes: element-wise sums, left to right in rank order."""
    total = [float(v) for v in parts[0]]
    for part in parts[1:]:
        total = [a + float(b) for a, b in zip(total, part)]
    return total


def update(w: float, b: float, summed: Sequence[float], lr: float) -> tuple[float, float, float]:
    gw, gb, sq = summed[0] / POINTS, summed[1] / POINTS, summed[2] / POINTS
    return w - lr * gw, b - lr * gb, sq


def expected_model(trial: str, steps: int) -> dict[str, float]:
    """What a correct run of `trial` ends with, computed here without Slurm."""
    h = hyper(trial)
    world = int(h["gpus"])
    w = b = loss = 0.0
    for _ in range(steps):
        w, b, loss = update(w, b, fold([partial_gradient(w, b, r, world) for r in range(world)]), float(h["lr"]))
    return {"w": w, "b": b, "train_loss": loss}


def test_loss(w: float, b: float) -> float:
    """Mean squared error against the noise-free line on points between the training points."""
    xs = [2.0 * (j + 0.5) / (POINTS - 1) - 1.0 for j in range(POINTS - 1)]
    return sum((w * x + b - (3.0 * x - 2.0)) ** 2 for x in xs) / len(xs)


def summary(scores: dict[str, float]) -> dict[str, object]:
    ranked = sorted(scores.items(), key=lambda kv: (kv[1], kv[0]))
    return {"trials": len(scores), "best": ranked[0][0], "best_test_loss": ranked[0][1],
            "ranking": [name for name, _ in ranked], "test_loss": dict(sorted(scores.items()))}
