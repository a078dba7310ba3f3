"""Each rank gets the CPUs its rule asked for where the site binds tasks to CPUs (task/affinity), on
the cluster's own Slurm release: srun of 22.05 to 23.02 does not take the job's --cpus-per-task, so
without SRUN_CPUS_PER_TASK (exported by the batch script) every rank would be bound to one CPU."""

from __future__ import annotations

import re

from conftest import slurm, snakemake, write_workflow

PRINT_CPUS = "python3 -c 'import os; print(\"rank\", os.environ[\"SLURM_PROCID\"], *sorted(os.sched_getaffinity(0)))'"

SNAKEFILE = f'''
rule all:
    input: "two_cpus.txt", "two_ranks.txt", "unexported.txt"

rule two_cpus:
    output: "two_cpus.txt"
    resources: nodes=1, gpus=1, cpus_per_task=2, runtime=5
    shell: "srun {PRINT_CPUS} > {{output}}"

rule two_ranks:
    output: "two_ranks.txt"
    resources: nodes=1, gpus=2, cpus_per_task=1, runtime=5
    shell: "srun {PRINT_CPUS} > {{output}}"

rule unexported:
    output: "unexported.txt"
    resources: nodes=1, gpus=1, cpus_per_task=2, runtime=5
    shell: "env -u SRUN_CPUS_PER_TASK srun {PRINT_CPUS} > {{output}}"
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
    # the pitfall itself, on this release: without the export, srun binds the rank to one CPU
    release = tuple(int(n) for n in re.findall(r"\d+", slurm("sinfo", "--version"))[:2])
    unexported = cpus_by_rank((workdir / "unexported.txt").read_text())
    if release < (23, 11):
        assert len(unexported[0]) == 1, unexported
    else:
        assert unexported == {0: [0, 1]}
