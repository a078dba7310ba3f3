"""Failures carry Slurm's word and the log tail; outside cancels are failures; Ctrl-C cancels the run's jobs."""

import os
import signal
import subprocess

from conftest import PROFILE, VENV_BIN, KEEP_LOGS, _env, default_sigint, slurm, snakemake, wait_for, write_workflow

FAILING = '''
rule broken:
    output: "never.txt"
    resources: runtime=5
    shell: "echo about to fail; echo the-last-words-of-the-step >&2; exit 3"
'''

SLEEPER = '''
rule sleeper:
    output: "slept.txt"
    resources: runtime=5, nodes=2, gpus=2
    shell: "srun sleep 300 && touch {output}"
'''


def test_failed_step_reports_state_exit_code_and_log_tail(cluster, tmp_path):
    workdir = write_workflow(tmp_path / "wf", FAILING)
    run = snakemake(workdir)
    assert run.returncode != 0
    (job,) = run.jobs("broken")
    assert f"Slurm job {job}: Slurm job ended FAILED" in run.output
    assert "exit code 3:0" in run.output  # the command's own exit status: a plain shell rule runs directly
    assert "the-last-words-of-the-step" in run.output
    assert not (workdir / "never.txt").exists()


def _state(job_id):
    return slurm("squeue", "--noheader", "--states=all", f"--jobs={job_id}", "--format=%T").strip()


def _start(workdir):
    argv = [str(VENV_BIN / "snakemake"), "--profile", str(PROFILE), "--jobs", "4", KEEP_LOGS]
    return subprocess.Popen(argv, cwd=workdir, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, preexec_fn=default_sigint)


def _running_job(workdir):
    def job():
        logs = list((workdir / ".snakemake/slurm-gpu/logs/sleeper/all").glob("*.log"))
        return logs[0].stem if logs and _state(logs[0].stem) == "RUNNING" else None
    return wait_for(job, what="the sleeper job to run")


def test_job_cancelled_outside_snakemake_fails_the_step_with_who_cancelled(cluster, tmp_path):
    workdir = write_workflow(tmp_path / "wf", SLEEPER)
    proc = _start(workdir)
    try:
        job = _running_job(workdir)
        slurm("scancel", job)
        output, _ = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode != 0
    assert f"Slurm job {job}: Slurm job ended CANCELLED" in output, output


def test_ctrl_c_cancels_the_runs_slurm_jobs(cluster, tmp_path):
    workdir = write_workflow(tmp_path / "wf", SLEEPER)
    proc = _start(workdir)
    try:
        job = _running_job(workdir)
        os.kill(proc.pid, signal.SIGINT)
        output, _ = proc.communicate(timeout=120)
    finally:
        proc.kill()
    try:
        wait_for(lambda: _state(job).startswith("CANCELLED"), timeout_s=30, what=f"job {job} to be cancelled")
    except AssertionError as e:
        raise AssertionError(f"{e}; Snakemake printed:\n{output}") from None


SBATCH_REFUSES = '''
rule refused:
    output: "never.txt"
    resources: runtime=5, slurm_extra="--reservation=no-such-reservation"
    shell: "touch {output}"
'''


def test_step_that_sbatch_refuses_fails_with_sbatchs_words(cluster, tmp_path):
    workdir = write_workflow(tmp_path / "wf", SBATCH_REFUSES)
    run = snakemake(workdir)
    assert run.returncode != 0
    assert "slurm-gpu: step refused/all: could not submit" in run.output
    assert "sbatch --parsable" in run.output and "reservation" in run.output.lower()
    assert run.jobs("refused") == []
