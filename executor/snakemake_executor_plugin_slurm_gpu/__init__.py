"""slurm-gpu: a Snakemake executor that runs rules as Slurm jobs and training rules as multi-node DDP jobs.

Only the three names Snakemake looks for live here, and they are loaded when Snakemake first asks
for them (PEP 562): a training rank that imports `snakemake_executor_plugin_slurm_gpu.runtime` or
`.events` must not pay for the executor and Snakemake's interface (~0.2 s of CPU each; 256 ranks
starting on a few cores make that seconds of rendezvous time).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from ._version import __version__

if TYPE_CHECKING:
    from .executor import Executor
    from .settings import ExecutorSettings, common_settings

__all__ = ["Executor", "ExecutorSettings", "__version__", "common_settings"]

_HOME = {"Executor": ".executor", "ExecutorSettings": ".settings", "common_settings": ".settings"}


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(_HOME[name], __name__), name)
    globals()[name] = value  # once: later lookups do not come back here
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
