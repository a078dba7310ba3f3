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
    requeue_signal: str = field(
        default="USR1",
        metadata={"help": "Signal Slurm sends to the ranks of GPU (training) steps before their time limit "
                          "and at preemption (sbatch --signal); Lightning's SLURMEnvironment listens for "
                          "USR1 by default (its requeue_signal)."},
    )
    signal_lead_s: int = field(
        default=90,
        metadata={"help": "Seconds before the time limit at which GPU steps get the requeue signal: enough "
                          "to finish a step and write a checkpoint. A rule can override it with the "
                          "resource signal_lead_s."},
    )
    no_requeue: bool = field(
        default=False,
        metadata={"help": "Never restart a step from outside: every job is submitted with --no-requeue and no "
                          "requeue signal, and a preemption, node failure or time-out fails its step instead of a "
                          "requeue or resubmission. A rule can set its own with the resource requeue=0/1."},
    )
    debug: bool = field(
        default=False,
        metadata={"help": "GPU and distributed steps run with NCCL_DEBUG=INFO and TORCH_DISTRIBUTED_DEBUG=DETAIL, "
                          "and each rank prints its rank, local rank, node, master address and visible devices "
                          "at start into the step's log (through slurm-gpu's runtime)."},
    )
    setup: Optional[str] = field(
        default=None,
        metadata={"help": "Shell lines run in every batch script before the step, in every job of it (requeues "
                          "and resubmissions too), e.g. \"module load cuda/12.4; source ~/envs/train/bin/activate\". "
                          "A rule adds its own with the resource slurm_setup (a plain string, run after these)."},
    )
    checkpoint_on_sigterm: bool = field(
        default=False,
        metadata={"help": "Training steps (slurm-gpu's Resumable callback or Session) also write a checkpoint when "
                          "they get SIGTERM, before they stop: for sites that preempt with SIGTERM only (no "
                          "preempt_send_user_signal) and a GraceTime long enough for one save. By default SIGTERM "
                          "stops them at once and they resume from their last periodic checkpoint."},
    )
    max_preemptions: int = field(
        default=10,
        metadata={"help": "How often one step may be resubmitted after a stop that is the cluster's doing "
                          "(PREEMPTED or NODE_FAIL that Slurm did not requeue, BOOT_FAIL)."},
    )
    max_timeouts: int = field(
        default=3,
        metadata={"help": "How often one GPU step may be resubmitted after reaching its time limit without "
                          "requeueing itself (TIMEOUT). Steps without GPUs are not resubmitted on time-out."},
    )
    checkpoint_cleanup: str = field(
        default="keep-last",
        metadata={"help": "What happens to a step's checkpoint directory once the step succeeded: "
                          "keep (everything), keep-last (the newest valid checkpoint only), delete.",
                  "choices": ["keep", "keep-last", "delete"]},
    )
    rendezvous_timeout_s: int = field(
        default=300,
        metadata={"help": "Hang watchdog: a distributed step whose ranks (using slurm-gpu's Resumable "
                          "callback) have not all joined the process group this many seconds after the job "
                          "started is cancelled and failed, naming the missing ranks and nodes and the likely "
                          "cause (Lightning itself waits 30 minutes). 0 turns it off."},
    )
    stall_timeout_s: Optional[int] = field(
        default=None,
        metadata={"help": "Stall watchdog: a distributed step whose ranks stop advancing in the middle of a run "
                          "(a stopped or hung rank, with the others waiting in a collective) for this many "
                          "seconds is cancelled, the stalled ranks and nodes are named, and the step is "
                          "resubmitted from its last checkpoint without the stalled node (once; a second stall "
                          "fails it). Default: derived from the step's own pace (at least 60 s when a rank went "
                          "silent, 300 s when every rank is alive but none advances). 0 turns it off."},
    )
    allocation: bool = field(
        default=False,
        metadata={"help": "Run every step inside the Slurm allocation Snakemake was started in (salloc), as "
                          "job steps, instead of submitting jobs: for development. The steps' geometry must "
                          "fit the allocation. No requeue signals, requeues or resubmissions in this mode."},
    )
    explain: bool = field(
        default=False,
        metadata={"help": "Print the batch script every step of this run would be submitted with, and "
                          "submit nothing (the run then stops with an error saying so). `slurm-gpu explain "
                          "[snakemake args]` does the same and exits 0."},
    )
    job_side_snakemake: bool = field(
        default=False,
        metadata={"help": "Run every step through a Snakemake inside its job, as the official plugin does. "
                          "By default a plain shell rule (no conda, container, script, run block, shadow, "
                          "benchmark, storage or group) runs its command directly in the batch script: the "
                          "main Snakemake prepares its outputs before submission and checks them after the "
                          "job, which saves the job-side Snakemake's start (about a second of CPU per job). "
                          "Resumable (GPU) steps always keep the job-side Snakemake."},
    )
    array_jobs: Optional[str] = field(
        default=None,
        metadata={"help": "Submit the ready steps of these rules as Slurm job arrays: 'all', or a comma-separated "
                          "list of rule names. Ready steps of one rule that ask Slurm for the same resources go "
                          "in one sbatch --array (one task per step, each running exactly its own step, "
                          "training steps with their own checkpoint directory); a step alone, a group job and a "
                          "resubmission are submitted on their own. Off by default."},
    )
    array_concurrency: Optional[int] = field(
        default=None,
        metadata={"help": "At most this many tasks of one job array run at a time (sbatch --array=...%%N). "
                          "Default: no limit beyond the cluster's."},
    )
    status_interval_min_s: int = field(
        default=2,
        metadata={"help": "Seconds between status polls while jobs are changing state (one batched "
                          "squeue per poll for all jobs)."},
    )
    status_event_interval_s: float = field(
        default=0.5,
        metadata={"help": "Seconds between looks at the live steps' event logs (files on the shared file "
                          "system, no Slurm call). A step whose batch script wrote that it ended is asked "
                          "about at once instead of at the next status poll."},
    )
    status_interval_max_s: int = field(
        default=10,
        metadata={"help": "Longest wait between status polls: the interval grows towards it while "
                          "nothing changes."},
    )
    missing_job_timeout_s: int = field(
        default=600,
        metadata={"help": "How long a job that Slurm no longer lists (or lists in a state unknown to "
                          "slurm-gpu) is waited for before its step fails."},
    )
    slurm_retry_s: int = field(
        default=600,
        metadata={"help": "How long submissions and the first look at the partitions retry, with backoff, "
                          "while Slurm fails transiently (controller restarting or busy: socket timed out, "
                          "unable to contact the controller). Status polls retry for as long as it takes. "
                          "Permanent errors (an invalid partition) are never retried."},
    )
    logdir: Optional[Path] = field(
        default=None,
        metadata={"help": "Directory for the steps' Slurm logs (<logdir>/<rule>/<wildcards>/<job id>.log), on a "
                          "filesystem the nodes share. Default: .snakemake/slurm-gpu/logs in the working directory."},
    )
    keep_successful_logs: bool = field(
        default=False,
        metadata={"help": "Keep the Slurm log and batch scripts of steps that succeeded. By default they are "
                          "removed once the step succeeded (as the official Slurm plugin does); those of failed "
                          "steps are kept, and every step's event log stays for `slurm-gpu status`."},
    )
    delete_logs_older_than: int = field(
        default=10,
        metadata={"help": "At the end of each run, remove Slurm logs, batch scripts and event logs of this "
                          "directory that are older than this many days. 0 keeps them forever."},
    )
    jobname_prefix: str = field(
        default="sg",
        metadata={"help": "Slurm job names are <prefix>-<rule> (letters, digits, '_' and '-'; at most 50)."},
    )
    qos: Optional[str] = field(
        default=None,
        metadata={"help": "Quality of service of every job (sbatch --qos); a rule's qos resource wins."},
    )
    reservation: Optional[str] = field(
        default=None,
        metadata={"help": "Reservation every job runs in (sbatch --reservation)."},
    )
    reuse_failed_nodes: bool = field(
        default=False,
        metadata={"help": "Let a step that slurm-gpu resubmits after its node failed (NODE_FAIL, BOOT_FAIL) run "
                          "on that node again. By default the new job excludes it (sbatch --exclude), as long as "
                          "the partition keeps enough other nodes for the step."},
    )
    efficiency_report: Optional[Path] = field(
        default=None,
        metadata={"help": "After the run, write what each step used of its CPUs, memory and GPUs (from sacct) "
                          "and the GPU-hours lost to preemption to this file (CSV if it ends in .csv, else a "
                          "table); `slurm-gpu efficiency` prints the same at any time."},
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
