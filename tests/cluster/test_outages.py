"""What happens around a run: the Snakemake process is killed while its steps run and is started
again (it re-attaches to the live jobs instead of submitting copies), and Slurm's controller and
accounting daemon go away for a while (checks and submissions wait and retry; nothing fails)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from conftest import Background, daemon_pid, jobs_from, slurm, snakemake, start_daemon, wait_for, write_workflow

# two training-like steps of different lengths and a report over both, all on Slurm: each step
# writes the id of the Slurm job that made it, so "exactly one job" shows in the outputs too
REATTACH = '''
rule all:
    input: "report.txt"

rule train:
    output: "model-{length}.txt"
    params: seconds=lambda wc: {"long": 45, "short": 6}[wc.length]
    resources: runtime=10, nodes=1, gpus=2
    shell: "srun --ntasks=1 sleep {params.seconds} && echo trained-by-job-$SLURM_JOB_ID > {output}"

rule report:
    input: "model-long.txt", "model-short.txt"
    output: "report.txt"
    resources: runtime=5
    shell: "cat {input} > {output}"
'''


def _step_jobs(workdir: Path, since: str) -> dict[str, set[str]]:
    """Slurm job ids per job name (sg-<rule>) of every job that ran in workdir."""
    found: dict[str, set[str]] = {}
    for row in jobs_from(workdir, since):
        found.setdefault(row["name"], set()).add(row["id"])
    return found


def _running(workdir: Path, log_dir: str) -> str | None:
    logs = list((workdir / ".snakemake/slurm-gpu/logs" / log_dir).glob("*.log"))
    if len(logs) != 1:
        return None
    state = slurm("squeue", "--noheader", "--states=all", f"--jobs={logs[0].stem}", "--format=%T").strip()
    return logs[0].stem if state == "RUNNING" else None


def test_a_killed_snakemake_restarted_waits_for_its_live_jobs_instead_of_submitting_copies(cluster, tmp_path):
    since = time.strftime("%Y-%m-%dT%H:%M:%S")
    workdir = write_workflow(tmp_path / "wf", REATTACH)
    first = Background(workdir)
    long_job = wait_for(lambda: _running(workdir, "train/length=long"), what="the long step to run")
    short_job = wait_for(lambda: _running(workdir, "train/length=short"), what="the short step to run")
    first.proc.send_signal(signal.SIGKILL)  # no Ctrl-C handler runs: the jobs are left behind
    first.kill()
    # the short step ends while no Snakemake watches it; the long one is still running after the restart
    wait_for(lambda: (workdir / "model-short.txt").exists(), what="the short step to finish on its own")
    assert slurm("squeue", "--noheader", f"--jobs={long_job}", "--format=%T").strip() == "RUNNING"

    unlock = snakemake(workdir, "--unlock")
    assert unlock.returncode == 0, unlock.output
    second = snakemake(workdir, "--rerun-incomplete")
    assert second.returncode == 0, second.output
    assert f"step train/length=long is still Slurm job {long_job}, submitted by an earlier run" in second.output

    jobs = _step_jobs(workdir, since)
    assert jobs["sg-train"] == {long_job, short_job}, jobs  # exactly one Slurm job per training step
    assert len(jobs["sg-report"]) == 1
    assert (workdir / "report.txt").read_text().split() == [f"trained-by-job-{long_job}",
                                                            f"trained-by-job-{short_job}"]
    events = (workdir / ".snakemake/slurm-gpu/events/train/length=long.jsonl").read_text()
    assert '"event": "reattached"' in events
    # every step's verdict was seen: no record of an unwatched job is left
    assert list((workdir / ".snakemake/slurm-gpu/submissions").rglob("*.json")) == []
    # and a third run has nothing to do and asks Slurm nothing about earlier jobs
    third = snakemake(workdir)
    assert third.returncode == 0 and "Nothing to be done" in third.output


# a job that runs through the controller's absence, a local step that ends during it (so its
# successor is submitted while the controller is away), and a final step after both
OUTAGE = '''
localrules: all, prepare

rule all:
    input: "final.txt"

rule prepare:
    output: "prepared.txt"
    shell: "sleep 20 && echo prepared > {output}"

rule through:
    output: "through.txt"
    resources: runtime=10, nodes=1, gpus=1
    shell: "srun bash -c 'touch through.started && sleep 25' && echo $SLURM_JOB_ID > {output}"

rule train:
    input: "prepared.txt"
    output: "trained.txt"
    resources: runtime=10, nodes=1, gpus=1
    shell: "srun bash -c 'touch train.started && sleep 20' && echo $SLURM_JOB_ID > {output}"

rule final:
    input: "through.txt", "trained.txt"
    output: "final.txt"
    resources: runtime=5
    shell: "cat {input} > {output}"
'''


def _stop_daemon(name: str) -> None:
    pid = daemon_pid(name)
    os.kill(pid, signal.SIGTERM)
    wait_for(lambda: not Path(f"/proc/{pid}").exists(), 30, f"{name} to stop")


def test_the_controller_away_for_a_minute_and_accounting_restarting_fail_nothing(cluster, tmp_path):
    since = time.strftime("%Y-%m-%dT%H:%M:%S")
    workdir = write_workflow(tmp_path / "wf", OUTAGE)
    run = Background(workdir)
    try:
        # srun needs the controller to start a job step (it fails at once without one): stop it
        # once the step's tasks run
        wait_for(lambda: (workdir / "through.started").exists(), what="the first job's task to run")
        _stop_daemon("slurmctld")
        try:
            # the local step ends after 20 s: its successor's sbatch finds no controller
            wait_for(lambda: (workdir / "prepared.txt").exists(), 60, "the local step")
            time.sleep(max(0.0, 60 - 20))
        finally:
            start_daemon("slurmctld")
        wait_for(lambda: (workdir / "train.started").exists(), what="the step submitted during the outage to run")
        _stop_daemon("slurmdbd")
        try:
            time.sleep(20)  # the train step ends and the final one is submitted without accounting
        finally:
            start_daemon("slurmdbd")
        result = run.wait(timeout_s=300)
    finally:
        run.kill()
    assert result.returncode == 0, result.output
    assert "Error in rule" not in result.output
    assert "status query failed, will retry" in result.output  # the polls waited for the controller
    assert "Slurm is busy or unreachable, retrying in" in result.output  # and so did the submission
    jobs = _step_jobs(workdir, since)
    assert {name: len(ids) for name, ids in jobs.items()} == {"sg-through": 1, "sg-train": 1, "sg-final": 1}, jobs
    assert (workdir / "final.txt").read_text().split() == [*jobs["sg-through"], *jobs["sg-train"]]
