"""The training problem of the elastic example: a small float64 regression whose data, model and one
optimizer step depend on nothing but the step number and the global batch, so a run on any number of
ranks, resumed from any checkpoint, trains the model that one process training alone would
(`train_alone`, which the tests use as the reference)."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch

from snakemake_executor_plugin_slurm_gpu.runtime import elastic

SAMPLES = 4096


def data(samples: int = SAMPLES) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(2026)
    x = torch.randn(samples, 8, generator=g, dtype=torch.float64)
    y = torch.sin(x @ torch.linspace(-1.0, 1.0, 8, dtype=torch.float64).unsqueeze(1)) + 0.05 * torch.randn(
        samples, 1, generator=g, dtype=torch.float64)
    return x, y


def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1)).double()


def optimizer(net: torch.nn.Module, lr: float) -> torch.optim.Optimizer:
    return torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9)


SEED = 1  # of the order of the samples in each epoch


def batches(micro_batch: int, full_world_size: int, samples: int = SAMPLES) -> elastic.GlobalBatches:
    return elastic.GlobalBatches(samples, micro_batch, full_world_size, seed=SEED)


def loss(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.mse_loss(net(x), y)


def arguments() -> argparse.Namespace:
    """The command line of both training scripts (train.py in plain torch, train_lightning.py)."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, required=True)
    ap.add_argument("--micro-batch", type=int, required=True)
    ap.add_argument("--lr", type=float, required=True)
    ap.add_argument("--step-s", type=float, default=0.0, help="simulated compute per micro-batch")
    ap.add_argument("--checkpoint-every", type=int, default=20)
    ap.add_argument("--samples", type=int, default=SAMPLES)
    ap.add_argument("--out", required=True)
    ap.add_argument("--runs", required=True)
    return ap.parse_args()


def write_results(model_path: str, state_dict: dict, runs_path: str, runs: list[dict]) -> None:
    """The training step's outputs: the model's weights and the runs it took (world size, first and last
    step), each written whole under a temporary name, then renamed: never half an output."""
    for path, write in ((model_path, lambda p: torch.save(state_dict, p)),
                        (runs_path, lambda p: Path(p).write_text(json.dumps(runs, indent=1)))):
        tmp = f"{path}.tmp-{os.getpid()}"
        write(tmp)
        os.replace(tmp, path)


def train_alone(steps: int, micro_batch: int, full_world_size: int, lr: float,
                samples: int = SAMPLES) -> dict[str, torch.Tensor]:
    """The reference: one process computing every micro-batch of every global batch."""
    x, y = data(samples)
    net, plan = model(), batches(micro_batch, full_world_size, samples)
    opt = optimizer(net, lr)
    mine = elastic.share(1, 0, full_world_size)
    for step in range(steps):
        opt.zero_grad()
        for indices, scale in elastic.accumulate(net, plan.for_rank(step, 1, 0), mine.loss_scale):
            (loss(net, x[indices], y[indices]) * scale).backward()
        opt.step()
    return net.state_dict()
