"""The elastic global batch with real DistributedDataParallel (gloo, one process per rank on this machine):
a model trained on 1, 2 or 3 ranks with elastic.share/accumulate ends on the weights of the same training on
its full 4 ranks, to float64 rounding (only the order of the gradient sums differs)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")

WORKER = Path(__file__).with_name("elastic_ddp_worker.py")
FULL = 4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _weights(world: int, tmp_path: Path, *scale: str) -> list[list[float]]:
    out, port = tmp_path / f"weights-{world}.json", str(_free_port())
    ranks = [subprocess.Popen([sys.executable, str(WORKER), str(rank), str(world), port, str(out), *scale])
             for rank in range(world)]
    assert [r.wait(timeout=120) for r in ranks] == [0] * world
    return json.loads(out.read_text())


@pytest.fixture(scope="module")
def full(tmp_path_factory: pytest.TempPathFactory) -> list[list[float]]:
    return _weights(FULL, tmp_path_factory.mktemp("full"))


def test_fewer_ranks_train_the_same_model_as_the_full_world(full: list[list[float]], tmp_path: Path) -> None:
    for world in (1, 2, 3):  # 3 does not divide 4: ranks take unequal shares
        got = _weights(world, tmp_path)
        for a, b in zip(got, full):
            assert a == pytest.approx(b, rel=1e-12, abs=1e-12), world
    # the training moved the weights: the comparison is not between two untouched models
    sys.path.insert(0, str(WORKER.parent))
    from elastic_ddp_worker import initial_weights

    assert full[0] != pytest.approx(initial_weights()[0], abs=1e-3)


def test_without_the_loss_scale_a_smaller_world_trains_another_model(full: list[list[float]], tmp_path: Path) -> None:
    """What the scale is for: unscaled, 2 ranks sum twice the micro-batches DDP averages over."""
    assert _weights(2, tmp_path, "1.0")[0] != pytest.approx(full[0], rel=1e-6)
