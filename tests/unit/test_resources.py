"""Resources as users arrive with them: the official Slurm plugin's names, values Snakemake knows
only later, misspellings. Each either becomes what the official plugin would submit (in slurm-gpu's
one-rank-per-GPU layout) or is refused naming rule, resource and fix; none is dropped."""

from __future__ import annotations

from typing import Any

import pytest
from snakemake.common.tbdstring import TBDString

from snakemake_executor_plugin_slurm_gpu.batch_script import JobOptions, render_directives
from snakemake_executor_plugin_slurm_gpu.paths import StepPaths
from snakemake_executor_plugin_slurm_gpu.resources import (ResourceError, is_unknown, known, misspelt, parse_gres,
                                                            unknown_names)
from snakemake_executor_plugin_slurm_gpu.spec import build_spec

RULE = "r"


def directives(resources: dict[str, Any], threads: int = 1) -> list[str]:
    spec = build_spec(RULE, resources, threads)
    return render_directives(spec, StepPaths.of("/work/wf", RULE, {}), JobOptions())


def refusal(resources: dict[str, Any]) -> ResourceError:
    with pytest.raises(ResourceError) as excinfo:
        build_spec(RULE, resources)
    assert f"rule '{RULE}'" in str(excinfo.value) and "HINT:" in str(excinfo.value)
    return excinfo.value


# ---------------------------------------------------------------- values known later

def test_snakemakes_placeholder_is_unknown_not_wrong() -> None:
    resources = {"mem_mb": TBDString(), "disk_mb": "<TBD>", "runtime": 30}
    assert is_unknown(resources["mem_mb"]) and is_unknown(resources["disk_mb"])
    assert known(resources) == {"runtime": 30}
    assert unknown_names(resources) == ["disk_mb", "mem_mb"]
    build_spec(RULE, known(resources))  # the pre-flight checks what is known


# ---------------------------------------------------------------- gres

@pytest.mark.parametrize(
    ("text", "gpus", "model", "other"),
    [
        ("gpu:2", 2, None, ()),
        ("gpu", 1, None, ()),
        ("gpu:a100:2", 2, "a100", ()),
        ("gpu:a100", 1, "a100", ()),
        ("tmpspace:10G", None, None, ("tmpspace:10G",)),
        ("gpu:h100:4,tmpspace:10G", 4, "h100", ("tmpspace:10G",)),
    ],
)
def test_parse_gres(text: str, gpus: int | None, model: str | None, other: tuple[str, ...]) -> None:
    gres = parse_gres(text)
    assert (gres.gpus_per_node, gres.gpu_model, gres.other) == (gpus, model, other)


def test_gres_gpus_are_per_node_and_laid_out_one_rank_per_gpu() -> None:
    spec = build_spec(RULE, {"gres": "gpu:a100:2", "nodes": 2})
    assert (spec.gpus, spec.gpus_per_node, spec.tasks_per_node, spec.gpu_model) == (4, 2, 2, "a100")
    assert spec.resumable
    lines = directives({"gres": "gpu:a100:2", "nodes": 2})
    assert "#SBATCH --gpus-per-node=a100:2" in lines and not any(line.startswith("#SBATCH --gres") for line in lines)


def test_gres_other_than_gpus_is_passed_on() -> None:
    lines = directives({"gres": "gpu:1,tmpspace:10G"})
    assert "#SBATCH --gres=tmpspace:10G" in lines
    assert "#SBATCH --gpus-per-node=1" in lines


def test_gres_and_gpus_may_agree() -> None:
    assert build_spec(RULE, {"gres": "gpu:2", "gpus": 4, "nodes": 2}).gpus == 4


@pytest.mark.parametrize(
    ("resources", "resource", "fragment"),
    [
        ({"gres": "gpu:2", "gpus": 3}, "gres", "but gpus is 3"),
        ({"gres": "gpu:a100:2", "gpu_model": "h100"}, "gres", "but gpu_model is 'h100'"),
        ({"gres": "gpu:2;rm -rf"}, "gres", "is not name[:type][:count]"),
        ({"gres": "gpu:1,gpu:2"}, "gres", "second time"),
    ],
)
def test_gres_refusals(resources: dict[str, Any], resource: str, fragment: str) -> None:
    error = refusal(resources)
    assert error.resource == resource and fragment in str(error)


# ---------------------------------------------------------------- tasks, mpi, cpus_per_gpu

def test_cpu_tasks_are_spread_by_slurm_unless_nodes_are_given() -> None:
    lines = directives({"tasks": 8, "mpi": "srun"})
    assert "#SBATCH --ntasks=8" in lines
    assert not any(line.startswith(("#SBATCH --nodes", "#SBATCH --ntasks-per-node")) for line in lines)
    assert "#SBATCH --nodes=2" in directives({"tasks": 8, "nodes": 2})
    assert "#SBATCH --ntasks-per-node=4" in directives({"tasks": 8, "nodes": 2})
    uneven = directives({"tasks": 5, "nodes": 2})
    assert "#SBATCH --nodes=2" in uneven and "#SBATCH --ntasks=5" in uneven


def test_cpu_tasks_per_node() -> None:
    lines = directives({"tasks_per_node": 3, "nodes": 2}, threads=2)
    assert {"#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=3", "#SBATCH --cpus-per-task=2"} <= set(lines)


def test_tasks_that_say_one_rank_per_gpu_are_accepted_on_gpu_steps() -> None:
    for resources in ({"gpus": 4, "nodes": 2, "tasks": 4}, {"gpus": 4, "nodes": 2, "tasks": 1},
                      {"gpus": 4, "nodes": 2, "tasks_per_gpu": 1}, {"gpus": 4, "nodes": 2, "tasks_per_node": 2}):
        assert build_spec(RULE, resources).tasks_per_node == 2


@pytest.mark.parametrize(
    ("resources", "resource"),
    [
        ({"gpus": 4, "nodes": 2, "tasks": 8}, "tasks"),
        ({"gpus": 2, "tasks_per_gpu": 2}, "tasks_per_gpu"),
        ({"gpus": 4, "nodes": 2, "tasks_per_node": 1}, "tasks_per_node"),
        ({"tasks_per_gpu": 1}, "tasks_per_gpu"),
        ({"cpus_per_gpu": 4}, "cpus_per_gpu"),
        ({"gpus": 2, "cpus_per_gpu": 4, "cpus_per_task": 2}, "cpus_per_gpu"),
        ({"tasks": 6, "tasks_per_node": 2, "nodes": 2}, "tasks"),
    ],
)
def test_layouts_slurm_gpu_would_run_differently_are_refused(resources: dict[str, Any], resource: str) -> None:
    assert refusal(resources).resource == resource


def test_cpus_per_gpu_is_cpus_per_rank() -> None:
    assert build_spec(RULE, {"gpus": 2, "cpus_per_gpu": 6}).cpus_per_task == 6
    assert build_spec(RULE, {"gpus": 2, "cpus_per_gpu": 6, "launcher": "torchrun"}).cpus_per_task == 12


def test_negative_cpus_per_task_leaves_the_request_to_slurm() -> None:
    lines = directives({"cpus_per_task": -1})
    assert not any(line.startswith("#SBATCH --cpus-per-task") for line in lines)


def test_cores_of_the_job_side_snakemake_are_the_steps_cpus() -> None:
    assert build_spec(RULE, {}, threads=3).cores == 3
    assert build_spec(RULE, {"gpus": 4, "nodes": 2, "cpus_per_task": 5}).cores == 10
    assert build_spec(RULE, {"tasks": 8}, threads=2).cores == 16


# ---------------------------------------------------------------- clusters, partitions

@pytest.mark.parametrize("name", ["clusters", "cluster", "slurm_cluster"])
def test_every_cluster_name_of_the_official_plugin_gives_clusters(name: str) -> None:
    spec = build_spec(RULE, {name: "hpc2"})
    assert spec.clusters == "hpc2"
    assert "#SBATCH --clusters=hpc2" in directives({name: "hpc2"})


def test_cluster_names_must_agree_and_be_names() -> None:
    assert refusal({"clusters": "a", "cluster": "b"}).resource == "cluster"
    assert refusal({"clusters": "a b"}).resource == "clusters"


def test_partition_lists_are_passed_on() -> None:
    assert "#SBATCH --partition=gpu,gpu-long" in directives({"slurm_partition": "gpu, gpu-long"})
    assert refusal({"slurm_partition": "gpu,,long"}).resource == "slurm_partition"


# ---------------------------------------------------------------- misspellings

@pytest.mark.parametrize(
    ("name", "meant"),
    [("slurm_partiton", "slurm_partition"), ("slurm_acount", "slurm_account"), ("cpu_per_task", "cpus_per_task"),
     ("gpu_modle", "gpu_model"), ("partition", "slurm_partition"), ("time", "runtime"), ("load", None), ("mem_mb", None), ("_cores", None), ("disk_mb", None)],
)
def test_misspelt_names_the_closest_resource(name: str, meant: str | None) -> None:
    assert misspelt(name) == meant
