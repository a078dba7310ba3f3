"""What a distributed rule sees inside its job: the whole allocation for its own srun, SLURM_* intact
for seed-style scripts, the DDP rendezvous, and a checkpoint directory that outlives its outputs."""

import re

from conftest import slurm, snakemake, write_workflow

SNAKEFILE = r'''
rule ranks:
    output: "ranks.txt"
    resources: nodes=2, gpus=4, runtime=5
    shell:
        "srun python3 -c 'import os; e=os.environ; print(\"rank\", e[\"SLURM_PROCID\"], e[\"SLURM_NNODES\"], "
        "e[\"SLURM_NTASKS_PER_NODE\"], e[\"SLURM_NTASKS\"], e[\"MASTER_ADDR\"], e[\"MASTER_PORT\"], "
        "e[\"SLURM_GPU_CHECKPOINT_DIR\"], e[\"CUDA_VISIBLE_DEVICES\"], os.uname().nodename)' > {output}"
        " && ls $SLURM_GPU_CHECKPOINT_DIR >> {output}"
        " && date +%s%N > $SLURM_GPU_CHECKPOINT_DIR/marker-$SLURM_JOB_ID"
'''


def parse(text):
    ranks = [line.split()[1:] for line in text.splitlines() if line.startswith("rank ")]
    listing = [line for line in text.splitlines() if line.startswith("marker-")]
    return ranks, listing


def test_rule_srun_gets_whole_allocation_and_checkpoint_dir_survives_reruns(cluster, tmp_path):
    workdir = write_workflow(tmp_path / "wf", SNAKEFILE)
    first = snakemake(workdir)
    assert first.returncode == 0, first.output
    (job1,) = first.jobs("ranks")
    ranks, listing = parse((workdir / "ranks.txt").read_text())
    assert sorted(int(r[0]) for r in ranks) == [0, 1, 2, 3]
    for _, nnodes, ntasks_per_node, ntasks, master, port, ckpt, gpus, host in ranks:
        # what a seed-style script reads itself
        assert (nnodes, ntasks_per_node, ntasks) == ("2", "2", "4")
        assert master == "n1" and int(port) == 15000 + int(job1[-4:])
        assert gpus == "0,1"  # both GPUs of the node visible to each rank: GPUs per node, not per task
    assert sorted(r[-1] for r in ranks) == ["n1", "n1", "n2", "n2"]
    ckpt_dirs = {r[6] for r in ranks}
    assert ckpt_dirs == {str(workdir / ".snakemake/slurm-gpu/checkpoints/ranks/all")}
    assert listing == []

    # a forced rerun: Snakemake deletes ranks.txt first, the checkpoint directory stays
    second = snakemake(workdir, "--forcerun", "ranks")
    assert second.returncode == 0, second.output
    (job2,) = [j for j in second.jobs("ranks") if j != job1]
    ranks, listing = parse((workdir / "ranks.txt").read_text())
    assert {r[6] for r in ranks} == ckpt_dirs
    assert listing == [f"marker-{job1}"]
    assert re.search(rf"Slurm job {job2}\b", second.output)


CPUS_SNAKEFILE = r'''
rule cpus:
    output: "cpus.txt"
    resources: nodes=1, gpus=2, cpus_per_task=2, runtime=5
    shell:
        "srun python3 -c 'import os; print(\"rank\", os.environ[\"SLURM_PROCID\"], os.environ.get(\"SLURM_CPUS_PER_TASK\"))'"
        " > {output} && echo step $SLURM_JOB_ID >> {output}"
'''


def test_the_rules_srun_gives_each_rank_its_cpus_per_task(cluster, tmp_path):
    """Each rank of the rule's own srun knows its cpus_per_task and the step holds them all (the batch
    script exports SRUN_CPUS_PER_TASK for the srun releases that do not take it from the job)."""
    workdir = write_workflow(tmp_path / "wf", CPUS_SNAKEFILE)
    run = snakemake(workdir)
    assert run.returncode == 0, run.output
    text = (workdir / "cpus.txt").read_text()
    assert sorted(line.split()[1:] for line in text.splitlines() if line.startswith("rank ")) == [["0", "2"], ["1", "2"]]
    job = text.split("step ")[-1].strip()
    steps = slurm("sacct", "--noheader", "--parsable2", f"--jobs={job}", "--format=JobID,AllocCPUS").splitlines()
    alloc = dict(line.split("|") for line in steps)
    assert alloc[f"{job}.0"] == "4", steps  # the rule's srun step: 2 ranks x 2 CPUs
