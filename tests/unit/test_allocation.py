"""Allocation mode: Snakemake inside `salloc` runs its steps as job steps of that allocation. The
step's environment narrows the allocation to the step (srun reads it as its defaults), the script
leaves rank 0's address to the runtime, which takes it from the step's node list."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from snakemake_executor_plugin_slurm_gpu import allocation
from snakemake_executor_plugin_slurm_gpu.allocation import Allocation, LocalSteps
from snakemake_executor_plugin_slurm_gpu.batch_script import JobOptions, render_batch_script
from snakemake_executor_plugin_slurm_gpu.paths import StepPaths
from snakemake_executor_plugin_slurm_gpu.runtime.environment import settle_master
from snakemake_executor_plugin_slurm_gpu.spec import ResourceError, build_spec

# what salloc -N2 --ntasks-per-node=2 --gpus-per-node=2 -J interactive exported here (Slurm 22.05)
SALLOC = {"SLURM_JOB_ID": "36", "SLURM_JOB_NAME": "interactive", "SLURM_JOB_NODELIST": "n[1-2]",
          "SLURM_JOB_NUM_NODES": "2", "SLURM_NNODES": "2", "SLURM_NTASKS": "4", "SLURM_NTASKS_PER_NODE": "2",
          "SLURM_GPUS_PER_NODE": "2", "SLURM_TASKS_PER_NODE": "2(x2)", "SLURM_JOB_CPUS_PER_NODE": "2(x2)",
          "PATH": "/usr/bin"}


def test_the_allocation_is_read_from_what_salloc_exported() -> None:
    assert allocation.detect(SALLOC) == Allocation("36", 2, 2, "interactive", (2, 2))
    assert allocation.detect({"PATH": "/usr/bin"}) is None
    assert allocation.detect({**SALLOC, "SLURM_GPUS_PER_NODE": "a100:4"}).gpus_per_node == 4


def test_a_step_bigger_than_the_allocation_is_refused_with_the_fix() -> None:
    alloc = allocation.detect(SALLOC)
    allocation.check_fits(build_spec("train", {"nodes": 2, "gpus": 4}), alloc)
    with pytest.raises(ResourceError, match=r"rule 'train': resource 'nodes' is 3.*has 2 node\(s\).*HINT: .*salloc"):
        allocation.check_fits(build_spec("train", {"nodes": 3, "gpus": 3}), alloc)
    with pytest.raises(ResourceError, match="puts 4 GPU"):
        allocation.check_fits(build_spec("train", {"nodes": 1, "gpus": 4}), alloc)


def test_a_step_wanting_more_cpus_than_the_allocation_has_is_refused_on_every_release() -> None:
    # Slurm 23.11+ srun reads the narrowed SLURM_CPUS_PER_TASK and refuses such a step when it starts;
    # 22.05 quietly gave each rank one CPU
    alloc = allocation.detect(SALLOC)  # 2 CPUs on each of 2 nodes
    allocation.check_fits(build_spec("train", {"nodes": 2, "gpus": 4, "cpus_per_task": 1}), alloc)
    allocation.check_fits(build_spec("prepare", {"cpus_per_task": 2}), alloc)
    with pytest.raises(ResourceError, match=r"rule 'train': resource 'cpus_per_task' is 2.*need 4 CPUs.*at most 2 CPUs"
                                            r".*HINT: .*salloc --cpus-per-task=2 with --ntasks-per-node=2"):
        allocation.check_fits(build_spec("train", {"nodes": 2, "gpus": 4, "cpus_per_task": 2}), alloc)
    uneven = allocation.detect({**SALLOC, "SLURM_JOB_CPUS_PER_NODE": "4,2"})
    allocation.check_fits(build_spec("train", {"nodes": 1, "gpus": 2, "cpus_per_task": 2}), uneven)
    with pytest.raises(ResourceError, match="cpus_per_task"):
        allocation.check_fits(build_spec("train", {"nodes": 2, "gpus": 4, "cpus_per_task": 2}), uneven)
    unknown = allocation.detect({k: v for k, v in SALLOC.items() if k != "SLURM_JOB_CPUS_PER_NODE"})
    allocation.check_fits(build_spec("train", {"nodes": 2, "gpus": 4, "cpus_per_task": 8}), unknown)


@pytest.mark.parametrize("text, counts", [("2(x2)", (2, 2)), ("4,2(x3)", (4, 2, 2, 2)), ("8", (8,)),
                                          ("", None), ("2(x", None), ("a", None)])
def test_slurms_compressed_per_node_counts_are_expanded(text, counts) -> None:
    assert allocation.expand_counts(text) == counts


def test_the_step_environment_narrows_the_allocation_to_the_step() -> None:
    alloc = allocation.detect(SALLOC)
    env = allocation.step_environment(build_spec("train", {"nodes": 1, "gpus": 1, "cpus_per_task": 2}), alloc, SALLOC)
    assert {k: env[k] for k in ("SLURM_JOB_NUM_NODES", "SLURM_NTASKS", "SLURM_NTASKS_PER_NODE", "SLURM_GPUS_PER_NODE",
                                "SLURM_CPUS_PER_TASK", "SLURM_EXACT")} == {
        "SLURM_JOB_NUM_NODES": "1", "SLURM_NTASKS": "1", "SLURM_NTASKS_PER_NODE": "1", "SLURM_GPUS_PER_NODE": "1",
        "SLURM_CPUS_PER_TASK": "2", "SLURM_EXACT": "1"}
    # Lightning ignores Slurm in jobs named interactive or bash: the step gets a name of its own
    assert env["SLURM_JOB_NAME"] == "sg-train"
    assert env["SLURM_JOB_ID"] == "36" and env["PATH"] == "/usr/bin"
    cpu = allocation.step_environment(build_spec("prepare", {}), alloc, SALLOC)
    assert "SLURM_GPUS_PER_NODE" not in cpu and cpu["SLURM_NTASKS"] == "1"
    named = allocation.step_environment(build_spec("train", {"gpus": 1}), Allocation("36", 2, 2, "dev"), SALLOC)
    assert named["SLURM_JOB_NAME"] == "interactive"  # a name Lightning honours is left alone


def test_gpu_steps_run_their_script_and_cpu_steps_become_one_task_job_steps(tmp_path: Path) -> None:
    script = tmp_path / "s.sh"
    assert allocation.step_command(build_spec("train", {"gpus": 2}), script) == ["bash", str(script)]
    assert allocation.step_command(build_spec("prepare", {"cpus_per_task": 3}), script) == [
        "srun", "--nodes=1", "--ntasks=1", "--cpus-per-task=3", "--exact", "bash", str(script)]


def test_in_allocation_mode_the_script_leaves_rank_0s_address_to_the_runtime() -> None:
    spec, paths = build_spec("train", {"nodes": 2, "gpus": 4}), StepPaths.of(Path("/wf"), "train", {})
    text = render_batch_script(spec, paths, "snakemake", JobOptions(allocation=True))
    assert "export SLURM_GPU_ALLOCATION=1" in text and "MASTER_ADDR" not in text.replace("MASTER_ADDR/", "")
    assert "MASTER_ADDR=$(scontrol" in render_batch_script(spec, paths, "snakemake", JobOptions())


def test_the_runtime_takes_rank_0_from_the_steps_nodes_and_a_port_per_step() -> None:
    env = {"SLURM_GPU_ALLOCATION": "1", "SLURM_STEP_NODELIST": "n[2-3]", "SLURM_STEP_ID": "4",
           "SLURM_JOB_ID": "123456", "MASTER_ADDR": "n1"}
    settle_master(env, hostnames=lambda nodes: {"n[2-3]": ["n2", "n3"]}[nodes])
    assert (env["MASTER_ADDR"], env["MASTER_PORT"]) == ("n2", str(15000 + 3456 + 1 + 4))
    untouched = {"SLURM_STEP_NODELIST": "n[2-3]", "SLURM_STEP_ID": "4", "MASTER_ADDR": "n1", "MASTER_PORT": "1"}
    settle_master(untouched, hostnames=lambda nodes: ["n2"])  # a batch job: its script exported them
    assert (untouched["MASTER_ADDR"], untouched["MASTER_PORT"]) == ("n1", "1")


def test_local_steps_report_their_exit_status_and_are_cancelled_by_process_group(tmp_path: Path) -> None:
    steps, alloc = LocalSteps(), Allocation("36", 1, None, "dev")
    ok = steps.start(alloc, ["bash", "-c", "echo hello"], {"PATH": "/usr/bin:/bin"}, tmp_path / "ok.log", tmp_path)
    bad = steps.start(alloc, ["bash", "-c", "exit 3"], {"PATH": "/usr/bin:/bin"}, tmp_path / "bad.log", tmp_path)
    slow = steps.start(alloc, ["bash", "-c", "sleep 60 & wait"], {"PATH": "/usr/bin:/bin"}, tmp_path / "slow.log",
                       tmp_path)
    assert (ok, bad, slow) == ("36+1", "36+2", "36+3")
    deadline = time.monotonic() + 10
    while steps.poll(ok) is None or steps.poll(bad) is None:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert (tmp_path / "ok.log").read_text() == "hello\n"
    assert steps.poll(slow) is None
    started = time.monotonic()
    steps.cancel()
    assert time.monotonic() - started < 10  # the whole group got SIGTERM, the background sleep too
    assert steps.poll(slow) == -1  # gone
