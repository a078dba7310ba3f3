"""One rank of test_runtime_elastic_ddp.py's training: its own process (no fork of a test runner's threads).

    python elastic_ddp_worker.py RANK WORLD PORT OUT
"""

from __future__ import annotations

import json
import sys
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist

from snakemake_executor_plugin_slurm_gpu.runtime import elastic

FULL = 4
MICRO = 3
STEPS = 6


def data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    x = torch.randn(FULL * MICRO * 4, 5, generator=g, dtype=torch.float64)
    y = x @ torch.tensor([[0.5], [-1.0], [2.0], [0.1], [0.0]], dtype=torch.float64) + 0.3
    return x, y


def initial_weights() -> list[list[float]]:
    torch.manual_seed(0)
    return [p.detach().flatten().tolist() for p in torch.nn.Linear(5, 1).double().parameters()]


def train(rank: int, world: int, port: int, out: str, loss_scale: float | None = None) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                            timeout=timedelta(seconds=60))
    try:
        torch.manual_seed(0)
        model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(5, 1).double())
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        x, y = data()
        batches = elastic.GlobalBatches(len(x), MICRO, FULL, seed=3)
        mine = elastic.share(world, rank, FULL)
        scale = mine.loss_scale if loss_scale is None else loss_scale
        for step in range(STEPS):
            optimizer.zero_grad()
            for indices, s in elastic.accumulate(model, batches.for_rank(step, world, rank), scale):
                (torch.nn.functional.mse_loss(model(x[indices]), y[indices]) * s).backward()
            optimizer.step()
        if rank == 0:
            Path(out).write_text(json.dumps([p.detach().flatten().tolist() for p in model.module.parameters()]))
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    rank, world, port = (int(a) for a in sys.argv[1:4])
    train(rank, world, port, sys.argv[4], float(sys.argv[5]) if len(sys.argv) > 5 else None)
