"""What a user's environment may and may not do to a step's job (submit_env.py)."""

from __future__ import annotations

from snakemake_executor_plugin_slurm_gpu.batch_script import JobOptions, render_batch_script
from snakemake_executor_plugin_slurm_gpu.paths import StepPaths
from snakemake_executor_plugin_slurm_gpu.spec import build_spec
from snakemake_executor_plugin_slurm_gpu.submit_env import (SBATCH_VARIABLES, SlurmEnvironment, outer_job_variables, overriding,
                                                             script_options, without)

GPU_SCRIPT = render_batch_script(build_spec("train", {"gpus": 2, "runtime": 30, "mem_mb": 4000}),
                                 StepPaths.of("/work/wf", "train", {}), "srun python train.py", JobOptions())


def test_script_options_are_read_until_the_first_command() -> None:
    options = script_options(GPU_SCRIPT + "#SBATCH --exclusive\n")
    assert {"--requeue", "--signal", "--time", "--mem", "--gpus-per-node", "--job-name"} <= options
    assert "--exclusive" not in options  # sbatch stops reading directives at the first command too


def test_variables_that_would_override_a_line_of_the_script_are_found() -> None:
    environ = {"SBATCH_NO_REQUEUE": "1", "SBATCH_TIMELIMIT": "5", "SBATCH_MEM_PER_CPU": "100",
               "SBATCH_ACCOUNT": "site-default", "SBATCH_WCKEY": "x", "PATH": "/usr/bin"}
    # the script sets requeue, time and memory; it names no account, so the site's default stays one
    assert overriding(environ, GPU_SCRIPT) == ["SBATCH_MEM_PER_CPU", "SBATCH_NO_REQUEUE", "SBATCH_TIMELIMIT"]


def test_every_variable_maps_to_long_options() -> None:
    assert all(flags and all(f.startswith("--") for f in flags) for flags in SBATCH_VARIABLES.values())


def test_outside_a_job_nothing_of_slurm_is_dropped() -> None:
    assert outer_job_variables({"SLURM_CONF": "/etc/slurm/slurm.conf", "SLURM_MEM_PER_CPU": "4"}) == []


def test_inside_a_job_its_variables_are_dropped_but_the_users_setup_is_kept() -> None:
    environ = {"SLURM_JOB_ID": "7", "SLURM_MEM_PER_CPU": "400", "SLURM_CPUS_ON_NODE": "1", "SLURM_CONF": "/x",
               "SLURM_GPU_MAX_REQUEUES": "2", "SLURM_TIME_FORMAT": "standard", "HOME": "/root"}
    dropped = outer_job_variables(environ)
    assert dropped == ["SLURM_CPUS_ON_NODE", "SLURM_JOB_ID", "SLURM_MEM_PER_CPU"]
    assert without(environ, dropped) == {"SLURM_CONF": "/x", "SLURM_GPU_MAX_REQUEUES": "2",
                                         "SLURM_TIME_FORMAT": "standard", "HOME": "/root"}


def test_the_run_environment_says_each_leaving_out_once() -> None:
    said: list[str] = []
    environ = {"SLURM_JOB_ID": "7", "SLURM_MEM_PER_CPU": "400", "SBATCH_NO_REQUEUE": "1", "PATH": "/usr/bin"}
    env = SlurmEnvironment(environ, keep_outer_job=False, say=said.append)
    assert env.of(["squeue", "--me"]) == {"SBATCH_NO_REQUEUE": "1", "PATH": "/usr/bin"}
    assert env.of(["sbatch", "--parsable"], GPU_SCRIPT) == {"PATH": "/usr/bin"}
    env.of(["sbatch", "--parsable"], GPU_SCRIPT)
    assert len(said) == 2 and "inside Slurm job 7" in said[0] and "SBATCH_NO_REQUEUE set in the environment" in said[1]


def test_allocation_mode_keeps_the_allocations_variables() -> None:
    environ = {"SLURM_JOB_ID": "7", "SLURM_NTASKS": "4"}
    assert SlurmEnvironment(environ, keep_outer_job=True, say=print).base == environ
