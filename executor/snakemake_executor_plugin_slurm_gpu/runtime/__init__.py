"""Helpers for training scripts that run inside a slurm-gpu step.

    import lightning as L
    from snakemake_executor_plugin_slurm_gpu.runtime import trainer_kwargs
    trainer = L.Trainer(max_steps=1000, **trainer_kwargs())

Importing this package does not import torch; trainer_kwargs() does, when called (and, under
torchrun, lightning).
"""

from __future__ import annotations

import functools
from typing import Any

from .environment import (
    Geometry,
    GeometryError,
    GpuBinding,
    check_gpus_for_lightning,
    check_lightning_world,
    checkpoint_dir,
    geometry,
    gpu_binding,
    local_device_index,
    under_torchrun,
    visible_gpus,
)

__all__ = ["TORCHRUN_STRATEGY", "Geometry", "GeometryError", "GpuBinding", "check_gpus_for_lightning",
           "check_lightning_world", "checkpoint_dir", "geometry", "gpu_binding", "local_device_index", "trainer_kwargs",
           "under_torchrun", "visible_gpus"]


def trainer_kwargs(accelerator: str | None = None) -> dict[str, Any]:
    """num_nodes, devices, accelerator, strategy and default_root_dir for lightning.Trainer, taken
    from the allocation (see geometry()): the script cannot ask for a world Slurm did not start.
    On GPUs, raises GeometryError when the site binds one GPU to each task (see gpu_binding()):
    Lightning needs every rank of a node to see all of the node's GPUs.

    Under torchrun (launcher="torchrun"), devices is torchrun's processes per node and the strategy
    is TORCHRUN_STRATEGY: Lightning's DDP, which refuses, as soon as the Trainer is built, a cluster
    environment whose world is not torchrun's (a SLURMEnvironment there counts one rank per node:
    see check_lightning_world()). Lightning itself picks its TorchElasticEnvironment under torchrun,
    unless a script passes another one; Resumable.environment() gives the right one either way."""
    world = geometry()
    torchrun = under_torchrun()
    if accelerator is None:
        import torch  # only now: the plugin itself must stay importable without torch

        accelerator = "gpu" if torch.cuda.is_available() else "cpu"
    if accelerator in ("gpu", "cuda", "auto"):
        if torchrun:
            local_device_index()  # torchrun's one task per node must see all of the node's GPUs
        else:
            check_gpus_for_lightning()
    strategy: Any = "ddp" if world.world_size > 1 else "auto"
    if torchrun and world.world_size > 1:
        strategy = _register_torchrun_strategy()
    return {
        "num_nodes": world.num_nodes,
        "devices": world.devices,
        "accelerator": accelerator,
        "strategy": strategy,
        "default_root_dir": str(checkpoint_dir()),
    }


# a name in Lightning's strategy registry, like "ddp": every Trainer gets its own instance, so one
# trainer_kwargs() can serve several Trainers (a strategy instance belongs to the first)
TORCHRUN_STRATEGY = "slurm_gpu_torchrun_ddp"


@functools.cache
def _register_torchrun_strategy() -> str:
    """Registers TORCHRUN_STRATEGY with Lightning (imports lightning) and returns its name."""
    from lightning.pytorch.strategies import DDPStrategy, StrategyRegistry

    class TorchrunDDPStrategy(DDPStrategy):
        """DDP under torchrun: refuses, before any process group forms, a cluster environment whose
        ranks are not torchrun's (colliding ranks would hang the rendezvous instead)."""

        def set_world_ranks(self) -> None:  # Lightning calls it in Trainer() and again at fit()
            super().set_world_ranks()
            problem = check_lightning_world(self.world_size, self.global_rank,
                                            cluster_environment=type(self.cluster_environment).__name__)
            if problem:
                raise GeometryError(problem)

    if TORCHRUN_STRATEGY not in StrategyRegistry:
        StrategyRegistry.register(TORCHRUN_STRATEGY, TorchrunDDPStrategy,
                                  description="slurm-gpu: DDP under torchrun, world checked against torchrun's")
    return TORCHRUN_STRATEGY
