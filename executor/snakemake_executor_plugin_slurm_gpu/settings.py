"""Executor settings (CLI flags --slurm-gpu-*, profile keys slurm-gpu-*) and the plugin's common settings.

Plain values only (and no `from __future__ import annotations`: the registry reads the field types as
objects to build the CLI): importing this module runs nothing, because every `snakemake` start imports every plugin.
"""


from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from snakemake_interface_executor_plugins.settings import CommonSettings, ExecutorSettingsBase


@dataclass
class ExecutorSettings(ExecutorSettingsBase):
    socket_ifname: Optional[str] = field(
        default=None,
        metadata={"help": "Network interface that NCCL and Gloo use between nodes (exported as "
                          "NCCL_SOCKET_IFNAME and GLOO_SOCKET_IFNAME in distributed steps), e.g. ib0. "
                          "Default: let them choose."},
    )
    checkpoint_root: Optional[Path] = field(
        default=None,
        metadata={"help": "Directory under which each step gets its checkpoint directory "
                          "(SLURM_GPU_CHECKPOINT_DIR = <root>/<rule>/<wildcards>). Must be on a filesystem "
                          "that all nodes share. Default: .snakemake/slurm-gpu/checkpoints in the working "
                          "directory."},
    )
    status_interval_min_s: int = field(
        default=2,
        metadata={"help": "Seconds between status polls while jobs are changing state (one batched "
                          "squeue per poll for all jobs)."},
    )
    status_interval_max_s: int = field(
        default=30,
        metadata={"help": "Longest wait between status polls: the interval grows towards it while "
                          "nothing changes."},
    )
    missing_job_timeout_s: int = field(
        default=600,
        metadata={"help": "How long a job that Slurm no longer lists (or lists in a state unknown to "
                          "slurm-gpu) is waited for before its step fails."},
    )
    slurm_timeout_s: int = field(
        default=60,
        metadata={"help": "Timeout of each Slurm command (sbatch, squeue, sacct, scancel, sinfo)."},
    )


common_settings = CommonSettings(
    non_local_exec=True,
    implies_no_shared_fs=False,
    job_deploy_sources=False,
    # Slurm passes the environment itself (--export=ALL); declarations written into the batch
    # script would put the user's variables, tokens included, into a file
    pass_envvar_declarations_to_cmd=False,
    auto_deploy_default_storage_provider=False,
    init_seconds_before_status_checks=1,
)
