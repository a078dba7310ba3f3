"""What a step's batch script runs: the rule's own shell command (direct.py) or the job-side
Snakemake call, and the preparation a direct step needs before it is submitted."""

from __future__ import annotations

from snakemake_interface_executor_plugins.executors.remote import RemoteExecutor
from snakemake_interface_executor_plugins.jobs import JobExecutorInterface
from snakemake_interface_executor_plugins.settings import SharedFSUsage
from snakemake_interface_executor_plugins.utils import encode_target_jobs_cli_args

from . import direct
from .batch_script import StepCommand, inner_command_line
from .paths import StepPaths
from .spec import StepSpec
from .step_files import StepFiles

# more files to wait for than this go to a file (--wait-for-files-file): argv has a limit
WAIT_FOR_FILES_ON_COMMAND_LINE = 20


def step_command(executor: RemoteExecutor, files: StepFiles, job: JobExecutorInterface, paths: StepPaths,
                 spec: StepSpec, job_side_snakemake: bool) -> StepCommand:
    """A plain shell rule's own command, unless the step is resumable, asks for more threads than
    CPUs (the job-side Snakemake caps {threads} at the CPUs Slurm gives), or the user asked for the
    job-side Snakemake everywhere."""
    if not (spec.resumable or job_side_snakemake or job.threads > spec.cores):
        from snakemake.shell import shell  # Snakemake itself: loaded already when a run gets here

        command = direct.direct_shell(job, shell, executor.workflow.execution_settings.latency_wait)
        if command is not None:
            return StepCommand(direct.render(command), direct=True)
    return StepCommand(inner_command(executor, files, job, paths, spec))


def prepare_direct(executor: RemoteExecutor, job: JobExecutorInterface) -> None:
    """What the job-side Snakemake would do before a direct step's command: remove stale outputs,
    make the output and log directories, wait for the inputs (Snakemake's own Job.prepare())."""
    executor.workflow.async_run(job.prepare())


def inner_command(executor: RemoteExecutor, files: StepFiles, job: JobExecutorInterface, paths: StepPaths,
                  spec: StepSpec) -> str:
    """The job-side Snakemake call. Built word by word and quoted with shlex: Snakemake's own
    formatting uses repr(), which lets a wildcard like a'$(cmd) reach the shell."""
    workflow = executor.workflow
    words = [executor.get_python_executable(), "-m", "snakemake", "--snakefile", str(executor.get_snakefile()),
             "--target-jobs", *encode_target_jobs_cli_args(job.get_target_spec()),
             "--allowed-rules", *job.rules]
    if job.is_group():
        words += ["--local-groupid", str(job.jobid)]
    else:
        words += ["--force-use-threads"]
    # the CPUs Slurm gives the job, not "all" (the node's hardware count, which is not ours)
    words += ["--cores", str(spec.cores), "--attempt", str(job.attempt)]
    temp_files = list(workflow.dag.get_unneeded_temp_files(job))
    if temp_files:
        words += ["--unneeded-temp-files", *temp_files]
    if SharedFSUsage.INPUT_OUTPUT in workflow.storage_settings.shared_fs_usage:
        wait_for = [executor.tmpdir, *job.get_wait_for_files()]
        if len(wait_for) > WAIT_FOR_FILES_ON_COMMAND_LINE:
            listing = files.write_listing(paths, f"wait-for-files-{job.jobid}.txt", [str(f) for f in wait_for])
            words += ["--wait-for-files-file", str(listing)]
        else:
            words += ["--wait-for-files", *wait_for]
    factory = workflow.spawned_job_args_factory
    general = factory.general_args(executor_common_settings=executor.common_settings)
    precommand = factory.precommand(executor_common_settings=executor.common_settings)
    return inner_command_line(words, general, precommand)
