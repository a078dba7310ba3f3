"""Helpers for training scripts that run inside a slurm-gpu step.

    import lightning as L
    from snakemake_executor_plugin_slurm_gpu.runtime import trainer_kwargs
    trainer = L.Trainer(max_steps=1000, **trainer_kwargs())

Importing this package does not import torch; trainer_kwargs() does, when called.
"""

from __future__ import annotations

from typing import Any

from .environment import Geometry, GeometryError, checkpoint_dir, geometry

__all__ = ["Geometry", "GeometryError", "checkpoint_dir", "geometry", "trainer_kwargs"]


def trainer_kwargs(accelerator: str | None = None) -> dict[str, Any]:
    """num_nodes, devices, accelerator, strategy and default_root_dir for lightning.Trainer, taken
    from the allocation (see geometry()): the script cannot ask for a world Slurm did not start."""
    world = geometry()
    if accelerator is None:
        import torch  # only now: the plugin itself must stay importable without torch

        accelerator = "gpu" if torch.cuda.is_available() else "cpu"
    return {
        "num_nodes": world.num_nodes,
        "devices": world.devices,
        "accelerator": accelerator,
        "strategy": "ddp" if world.world_size > 1 else "auto",
        "default_root_dir": str(checkpoint_dir()),
    }
