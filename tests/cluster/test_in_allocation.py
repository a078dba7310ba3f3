"""Allocation mode on the real cluster: `salloc ... snakemake --slurm-gpu-allocation` runs the example
pipeline's steps as job steps of that one allocation (no sbatch), Lightning's DDP world forms across
both nodes although the allocation is named "interactive" (which makes Lightning ignore Slurm), and a
step bigger than the allocation is refused before anything runs."""

from __future__ import annotations

import json
import re
import subprocess
import time

from conftest import PROFILE, VENV_BIN, _env, copy_workflow, jobs_from, slurm, KEEP_LOGS

SALLOC = ["salloc", "--nodes=2", "--ntasks-per-node=2", "--gpus-per-node=2", "--job-name=interactive"]


def _in_allocation(workdir, *args: str, salloc: list[str] = SALLOC, timeout_s: float = 600) -> subprocess.CompletedProcess:
    argv = [*salloc, str(VENV_BIN / "snakemake"), "--profile", str(PROFILE), "--jobs", "4", KEEP_LOGS,
            "--slurm-gpu-allocation", *args]
    return subprocess.run(argv, cwd=workdir, env=_env(), capture_output=True, text=True, timeout=timeout_s)


def test_the_example_pipeline_runs_as_steps_of_one_interactive_allocation(cluster, slurm_release, tmp_path):
    since = time.strftime("%Y-%m-%dT%H:%M:%S")
    workdir = copy_workflow("train-eval", tmp_path)
    run = _in_allocation(workdir)
    output = run.stdout + run.stderr
    assert run.returncode == 0, output
    (allocation,) = re.findall(r"salloc: Granted job allocation (\d+)", output)
    assert f"step train/all runs in allocation {allocation}" in output

    # nothing was submitted: the allocation is the only job of this directory, and its steps did the work
    assert {row["id"] for row in jobs_from(workdir, since)} == {allocation}
    steps = slurm("sacct", "-j", allocation, "--noheader", "--parsable2", "--format=JobID,NNodes,NTasks,State")
    step_rows = [line.split("|") for line in steps.splitlines() if re.match(rf"{allocation}\.\d+\|", line)]
    assert ["2", "4"] in [row[1:3] for row in step_rows], steps  # the training ranks: 2 nodes x 2 tasks
    assert all(row[3] == "COMPLETED" for row in step_rows), steps

    # Lightning formed its world from Slurm in a job named "interactive": 4 ranks, 2 per node,
    # rank 0's host and port from the step itself
    joined = re.findall(r"rank_joined rank=(\d) world_size=(\d) node_rank=(\d) local_rank=(\d) host=(\S+) "
                        r"master=(\S+)", (workdir / "results/logs/train.log").read_text())
    assert sorted(int(r[0]) for r in joined) == [0, 1, 2, 3]
    assert sorted(r[4] for r in joined) == ["n1", "n1", "n2", "n2"]
    (master,) = {r[5] for r in joined}
    assert master.split(":")[0] == next(r[4] for r in joined if r[0] == "0")
    assert json.loads((workdir / "results/metrics.json").read_text())["accuracy"] > 0.9


def test_a_step_bigger_than_the_allocation_is_refused_before_anything_runs(cluster, tmp_path):
    workdir = copy_workflow("train-eval", tmp_path)
    # the example's training step wants 2 nodes; this allocation has one
    run = _in_allocation(workdir, salloc=["salloc", "--nodes=1", "--ntasks-per-node=2", "--gpus-per-node=2"],
                         timeout_s=300)
    output = run.stdout + run.stderr
    assert run.returncode != 0
    assert "rule 'train': resource 'nodes' is 2, but the allocation Snakemake runs in" in output, output
    assert "HINT: start Snakemake in a bigger allocation" in output
    assert "nothing was submitted" in output
    assert not (workdir / "data").exists()  # not even the prepare step ran


def test_a_step_wanting_more_cpus_than_the_allocation_holds_is_refused_before_anything_runs(cluster, tmp_path):
    # 2 ranks per node x 2 CPUs each, in an allocation of 2 tasks x 1 CPU per node: srun of Slurm 23.11
    # and later would refuse the step when it starts ("More processors requested than permitted")
    workdir = copy_workflow("train-eval", tmp_path)
    run = _in_allocation(workdir, "--set-resources", "train:cpus_per_task=2", timeout_s=300)
    output = run.stdout + run.stderr
    assert run.returncode != 0
    assert "rule 'train': resource 'cpus_per_task' is 2, so the step's 2 rank(s) per node need 4 CPUs" in output, output
    assert "HINT: start Snakemake in an allocation with enough CPUs (salloc --cpus-per-task=2" in output
    assert not (workdir / "data").exists()


# Lightning's "interactive mode": in a job named bash or interactive, SLURMEnvironment.detect() is False
# and a Trainer without an explicit SLURMEnvironment would start processes of its own in every task
PROBE = '''
import os
from lightning.fabric.plugins.environments import SLURMEnvironment
print(f"detect={SLURMEnvironment.detect()} name={os.environ.get('SLURM_JOB_NAME')} rank={os.environ['SLURM_PROCID']}")
'''

PROBE_SNAKEFILE = '''
rule probe:
    output: "probe.txt"
    resources: nodes=2, gpus=4, runtime=5
    shell: "srun python probe.py > {output}"
'''


def test_lightning_detects_slurm_in_steps_of_an_interactive_allocation(cluster, tmp_path):
    workdir = tmp_path / "probe"
    workdir.mkdir()
    (workdir / "probe.py").write_text(PROBE)
    (workdir / "Snakefile").write_text(PROBE_SNAKEFILE)
    # first a bare srun in the same kind of allocation: Lightning's bypass is real
    bare = subprocess.run([*SALLOC, "srun", str(VENV_BIN / "python"), "probe.py"], cwd=workdir, env=_env(),
                          capture_output=True, text=True, timeout=300)
    assert sorted(bare.stdout.split("\n"))[-4:] == [f"detect=False name=interactive rank={r}" for r in range(4)], \
        bare.stdout + bare.stderr
    run = _in_allocation(workdir, timeout_s=300)
    assert run.returncode == 0, run.stdout + run.stderr
    lines = sorted((workdir / "probe.txt").read_text().split("\n"))[-4:]
    assert lines == [f"detect=True name=sg-probe rank={r}" for r in range(4)]
