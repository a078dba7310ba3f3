"""slurm-gpu: a Snakemake executor that runs rules as Slurm jobs and training rules as multi-node DDP jobs.

Only the three names Snakemake looks for live here. Nothing heavy is imported: every `snakemake`
start imports every installed executor plugin.
"""

from .executor import Executor
from .settings import ExecutorSettings, common_settings

__all__ = ["Executor", "ExecutorSettings", "common_settings"]
