"""Each rank gets the CPUs its rule asked for where the site binds tasks to CPUs (task/affinity). srun
of some 22.05 to 23.02 releases does not take the job's --cpus-per-task, and would bind every rank to
one CPU: the batch script exports SRUN_CPUS_PER_TASK. (Debian's 22.05.8 does not show that pitfall on
this machine: its 2 cores allow only one rank of 2 CPUs, and a one-task step gets the whole allocation
whatever srun is told, so the test pins the binding, not the pitfall.)"""

from __future__ import annotations

from conftest import snakemake, write_workflow

PRINT_CPUS = r"python3 -c 'import os; print(\"rank\", os.environ[\"SLURM_PROCID\"], *sorted(os.sched_getaffinity(0)))'"

SNAKEFILE = f'''
rule all:
    input: "two_cpus.txt", "two_ranks.txt"

rule two_cpus:
    output: "two_cpus.txt"
    resources: nodes=1, gpus=1, cpus_per_task=2, runtime=5
    shell: "srun {PRINT_CPUS} > {{output}}"

rule two_ranks:
    output: "two_ranks.txt"
    resources: nodes=1, gpus=2, cpus_per_task=1, runtime=5
    shell: "srun {PRINT_CPUS} > {{output}}"
'''


def cpus_by_rank(text: str) -> dict[int, list[int]]:
    return {int(parts[1]): [int(c) for c in parts[2:]] for parts in (line.split() for line in text.splitlines())
            if parts and parts[0] == "rank"}


def test_every_rank_is_bound_to_the_cpus_of_its_rule(affinity_cluster, tmp_path):
    workdir = write_workflow(tmp_path / "wf", SNAKEFILE)
    run = snakemake(workdir, "--jobs", "1")
    assert run.returncode == 0, run.output
    assert cpus_by_rank((workdir / "two_cpus.txt").read_text()) == {0: [0, 1]}
    two = cpus_by_rank((workdir / "two_ranks.txt").read_text())
    assert sorted(two) == [0, 1] and all(len(cpus) == 1 for cpus in two.values())
    assert two[0] != two[1]  # one CPU each, not the same one
