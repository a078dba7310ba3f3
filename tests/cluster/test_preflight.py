"""Bad resources are refused before anything is submitted: for the whole run, not just the bad rule."""

import datetime

import pytest

from conftest import jobs_from, snakemake, write_workflow

GOOD_FIRST_STEP = '''
rule all:
    input: "trained.txt"

rule prepare:
    output: "data.txt"
    resources: runtime=5
    shell: "echo data > {{output}}"

rule train:
    input: "data.txt"
    output: "trained.txt"
    resources: {resources}
    shell: "{shell}"
'''

CASES = {
    "gpus_not_divisible": ("nodes=2, gpus=3", "srun true > {output}", ["'gpus'", "not divisible by nodes=2", "gpus=2 or 4"]),
    "no_srun": ("nodes=2, gpus=4", "python train.py > {output}", ["does not start with srun", "Initializing distributed"]),
    "managed_flag": ("gpus=1, slurm_extra='--nodes=3'", "srun true > {output}", ["'slurm_extra'", "--nodes", "'nodes'"]),
    "unknown_partition": ("gpus=1, slurm_partition='nosuch'", "srun true > {output}", ["'slurm_partition'", "'nosuch'", "debug"]),
    "too_many_gpus_per_node": ("nodes=1, gpus=4", "srun true > {output}", ["'gpus'", "at most 2", "nodes=2"]),
    "not_a_number": ("nodes='two', gpus=2", "srun true > {output}", ["'nodes'", "'two'"]),
    "both_gpu_names": ("gpus=2, gpu=4", "srun true > {output}", ["'gpus'", "'gpu' is 4"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_invalid_resources_fail_before_any_job_is_created(cluster, tmp_path, case):
    resources, shell, expected = CASES[case]
    workdir = write_workflow(tmp_path / "wf", GOOD_FIRST_STEP.format(resources=resources, shell=shell))
    since = (datetime.datetime.now() - datetime.timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%S")
    run = snakemake(workdir)
    assert run.returncode != 0
    assert "nothing was submitted" in run.output
    assert "rule 'train'" in run.output and "HINT:" in run.output
    for text in expected:
        assert text in run.output, (text, run.output)
    # not even the valid first step reached Slurm
    assert jobs_from(workdir, since) == []
    assert not (workdir / ".snakemake/slurm-gpu/scripts").exists()
