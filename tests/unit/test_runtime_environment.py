"""The DDP world a training script sees, read from the SLURM_* variables srun gives each rank and
checked against the geometry slurm-gpu submitted (SLURM_GPU_*)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from snakemake_executor_plugin_slurm_gpu.runtime import (
    Geometry,
    GeometryError,
    check_gpus_for_lightning,
    check_lightning_world,
    checkpoint_dir,
    geometry,
    gpu_binding,
    local_device_index,
    trainer_kwargs,
    visible_gpus,
)

# rank 3 of a 2 nodes x 2 GPUs step, as srun sets it up
RANK_2X2 = {
    "SLURM_JOB_ID": "4242",
    "SLURM_NTASKS": "4",
    "SLURM_NNODES": "2",
    "SLURM_NTASKS_PER_NODE": "2",
    "SLURM_TASKS_PER_NODE": "2(x2)",
    "SLURM_PROCID": "3",
    "SLURM_LOCALID": "1",
    "SLURM_NODEID": "1",
    "MASTER_ADDR": "n1",
    "MASTER_PORT": "19242",
    "SLURM_GPU_NODES": "2",
    "SLURM_GPU_TASKS_PER_NODE": "2",
    "SLURM_GPU_STEP": "train/model=resnet",
}


def env(**changes: str | None) -> dict[str, str]:
    """RANK_2X2 with some variables changed (None removes one)."""
    result = dict(RANK_2X2)
    for name, value in changes.items():
        if value is None:
            result.pop(name, None)
        else:
            result[name] = value
    return result


def test_rank_of_a_2x2_step() -> None:
    assert geometry(RANK_2X2) == Geometry(num_nodes=2, devices=2, world_size=4, rank=3, local_rank=1, node_rank=1,
                                          master_addr="n1", master_port=19242, under_slurm=True, full_nodes=2)


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        pytest.param(dict(SLURM_NTASKS_PER_NODE=None), dict(devices=2, world_size=4),
                     id="tasks-per-node-from-SLURM_TASKS_PER_NODE"),
        pytest.param(dict(SLURM_NNODES=None, SLURM_JOB_NUM_NODES="2"), dict(num_nodes=2),
                     id="nodes-from-SLURM_JOB_NUM_NODES"),
        pytest.param(dict(SLURM_PROCID="0", SLURM_LOCALID="0", SLURM_NODEID="0"),
                     dict(rank=0, local_rank=0, node_rank=0), id="rank-zero"),
        pytest.param(dict(SLURM_PROCID=None, SLURM_LOCALID=None, SLURM_NODEID=None),
                     dict(rank=0, local_rank=0, node_rank=0), id="ids-missing-default-to-zero"),
        pytest.param(dict(MASTER_ADDR=None, MASTER_PORT=None), dict(master_addr=None, master_port=None),
                     id="no-rendezvous-yet"),
        pytest.param(dict(SLURM_GPU_NODES=None, SLURM_GPU_TASKS_PER_NODE=None), dict(num_nodes=2, devices=2),
                     id="no-declared-geometry-no-check"),
    ],
)
def test_geometry_variants(changes: dict[str, str | None], expected: dict[str, object]) -> None:
    world = geometry(env(**changes))
    assert {name: getattr(world, name) for name in expected} == expected


def test_tasks_per_node_fallback_alone() -> None:
    world = geometry({"SLURM_JOB_ID": "1", "SLURM_NTASKS": "4", "SLURM_NNODES": "2",
                      "SLURM_TASKS_PER_NODE": "2(x2)"})
    assert (world.num_nodes, world.devices, world.world_size) == (2, 2, 4)


@pytest.mark.parametrize(
    "changes",
    [
        # `srun -N1 python train.py` in a 2-node step
        pytest.param(dict(SLURM_NNODES="1", SLURM_NTASKS="2"), id="srun-on-one-node"),
        # `srun --ntasks-per-node=1` in a 2x2 step
        pytest.param(dict(SLURM_NTASKS_PER_NODE="1", SLURM_TASKS_PER_NODE="1(x2)", SLURM_NTASKS="2"),
                     id="srun-one-task-per-node"),
        pytest.param(dict(SLURM_GPU_TASKS_PER_NODE="4"), id="declared-differently"),
    ],
)
def test_world_that_differs_from_the_submitted_one(changes: dict[str, str | None]) -> None:
    with pytest.raises(GeometryError) as excinfo:
        geometry(env(**changes))
    message = str(excinfo.value)
    assert "train/model=resnet" in message
    assert "HINT:" in message
    assert "srun" in message.split("HINT:", 1)[1]


@pytest.mark.parametrize("ntasks", ["3", "5", "1"])
def test_ntasks_that_is_not_nodes_times_tasks(ntasks: str) -> None:
    with pytest.raises(GeometryError) as excinfo:
        geometry(env(SLURM_NTASKS=ntasks))
    message = str(excinfo.value)
    assert f"SLURM_NTASKS={ntasks}" in message
    assert "HINT:" in message and "--ntasks" in message


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        pytest.param({}, Geometry(1, 1, 1, 0, 0, 0, None, None, False), id="bare"),
        pytest.param({"SLURM_GPU_NODES": "2", "SLURM_GPU_TASKS_PER_NODE": "4"},
                     Geometry(2, 4, 8, 0, 0, 0, None, None, False), id="declared"),
        pytest.param({"MASTER_ADDR": "localhost", "MASTER_PORT": "29500"},
                     Geometry(1, 1, 1, 0, 0, 0, "localhost", 29500, False), id="local-rendezvous"),
        # an salloc shell without tasks, or the SLURM_* of the submitting shell: not a rank
        pytest.param({"SLURM_JOB_ID": "1", "SLURM_NNODES": "2"},
                     Geometry(1, 1, 1, 0, 0, 0, None, None, False), id="job-id-without-ntasks"),
        pytest.param({"SLURM_NTASKS": "4", "SLURM_PROCID": "3"},
                     Geometry(1, 1, 1, 0, 0, 0, None, None, False), id="ntasks-without-job-id"),
    ],
)
def test_outside_slurm(environ: dict[str, str], expected: Geometry) -> None:
    assert geometry(environ) == expected


def test_geometry_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(("SLURM", "MASTER_")):
            monkeypatch.delenv(name)
    for name, value in RANK_2X2.items():
        monkeypatch.setenv(name, value)
    assert geometry() == geometry(RANK_2X2)


# ---------------------------------------------------------------- the GPUs a rank sees

# local rank 2 of a 1 node x 4 GPUs step, as srun sets it up with slurm-gpu's --gpus-per-node=4
RANK_1X4 = {
    "SLURM_JOB_ID": "4243", "SLURM_NTASKS": "4", "SLURM_NNODES": "1", "SLURM_NTASKS_PER_NODE": "4",
    "SLURM_PROCID": "2", "SLURM_LOCALID": "2", "SLURM_NODEID": "0", "MASTER_ADDR": "n1", "MASTER_PORT": "19243",
    "SLURM_GPU_NODES": "1", "SLURM_GPU_TASKS_PER_NODE": "4", "SLURM_GPU_GPUS_PER_NODE": "4",
    "SLURM_GPU_STEP": "train/model=vit", "CUDA_VISIBLE_DEVICES": "0,1,2,3",
}


def rank_1x4(**changes: str | None) -> dict[str, str]:
    result = dict(RANK_1X4)
    for name, value in changes.items():
        if value is None:
            result.pop(name, None)
        else:
            result[name] = value
    return result


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(None, None, id="unset-all-of-the-machine"),
        pytest.param("0,1,2,3", ["0", "1", "2", "3"], id="four"),
        pytest.param("2", ["2"], id="one-bound"),
        pytest.param("GPU-8f3a,GPU-11c2", ["GPU-8f3a", "GPU-11c2"], id="uuids"),
        pytest.param("", [], id="empty-hides-all"),
        pytest.param("NoDevFiles", [], id="slurm-without-device-files"),
    ],
)
def test_visible_gpus_are_the_entries_of_cuda_visible_devices(value: str | None, expected: list[str] | None) -> None:
    assert visible_gpus({} if value is None else {"CUDA_VISIBLE_DEVICES": value}) == expected


def test_every_rank_sees_all_of_its_nodes_gpus_no_binding_and_it_trains_on_its_local_rank() -> None:
    assert gpu_binding(RANK_1X4) is None
    assert local_device_index(RANK_1X4) == 2
    check_gpus_for_lightning(RANK_1X4)  # nothing to object to


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param(dict(CUDA_VISIBLE_DEVICES="2"), id="gpu-bind-single-keeps-the-index"),
        pytest.param(dict(CUDA_VISIBLE_DEVICES="0"), id="renumbered-by-the-cgroup"),
        pytest.param(dict(CUDA_VISIBLE_DEVICES="GPU-8f3a"), id="bound-by-uuid"),
    ],
)
def test_one_gpu_bound_to_each_task_is_a_binding_and_the_rank_trains_on_cuda_0(changes: dict[str, str]) -> None:
    binding = gpu_binding(rank_1x4(**changes))
    assert binding is not None
    assert (len(binding.visible), binding.gpus_per_node) == (1, 4)
    assert local_device_index(rank_1x4(**changes)) == 0


def test_the_binding_names_the_variables_that_show_it() -> None:
    binding = gpu_binding(rank_1x4(CUDA_VISIBLE_DEVICES="2", SLURM_GPU_BIND="single:1", SLURM_GPUS_PER_TASK="1"))
    assert binding is not None
    assert binding.evidence == ("CUDA_VISIBLE_DEVICES=2 (1 of the node's 4 GPUs)", "SLURM_GPU_BIND=single:1",
                                "SLURM_GPUS_PER_TASK=1")


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param(dict(SLURM_GPU_GPUS_PER_NODE="0", CUDA_VISIBLE_DEVICES=None), id="cpu-step"),
        pytest.param(dict(SLURM_GPU_GPUS_PER_NODE=None), id="outside-slurm-gpu"),
        pytest.param(dict(SLURM_GPU_GPUS_PER_NODE="1", CUDA_VISIBLE_DEVICES="3"), id="one-gpu-per-node"),
        pytest.param(dict(CUDA_VISIBLE_DEVICES=None), id="no-gres-management"),
        pytest.param(dict(CUDA_VISIBLE_DEVICES=""), id="no-gpu-visible-at-all"),
        pytest.param(dict(CUDA_VISIBLE_DEVICES="0,1,2,3,4,5,6,7"), id="more-than-needed"),
    ],
)
def test_no_binding(changes: dict[str, str | None]) -> None:
    assert gpu_binding(rank_1x4(**changes)) is None
    check_gpus_for_lightning(rank_1x4(**changes))


def test_a_single_visible_gpu_is_cuda_0_even_outside_slurm_gpu() -> None:
    # `srun --gpus-per-task=1 python train.py` by hand: no SLURM_GPU_*, one GPU, local rank 1
    environ = {"SLURM_JOB_ID": "9", "SLURM_NTASKS": "2", "SLURM_NNODES": "1", "SLURM_NTASKS_PER_NODE": "2",
               "SLURM_PROCID": "1", "SLURM_LOCALID": "1", "CUDA_VISIBLE_DEVICES": "1"}
    assert local_device_index(environ) == 0
    assert local_device_index({**environ, "CUDA_VISIBLE_DEVICES": "0,1"}) == 1


def test_a_binding_that_leaves_a_rank_several_gpus_is_a_geometry_error() -> None:
    # --gpu-bind=closest on a 2-socket node: each task sees its socket's two GPUs
    with pytest.raises(GeometryError) as excinfo:
        local_device_index(rank_1x4(CUDA_VISIBLE_DEVICES="2,3", SLURM_GPU_BIND="closest"))
    message = str(excinfo.value)
    assert message.startswith("train/model=vit: local rank 2 sees 2 of the node's 4 GPUs")
    assert "SLURM_GPU_BIND=closest" in message
    assert "srun --gpu-bind=none" in message.split("HINT:", 1)[1]


def test_torchrun_in_a_task_bound_to_one_gpu_is_a_geometry_error() -> None:
    environ = {"SLURM_JOB_ID": "77", "SLURM_NTASKS": "1", "SLURM_NNODES": "1", "SLURM_NTASKS_PER_NODE": "1",
               "SLURM_PROCID": "0", "SLURM_NODEID": "0", "SLURM_LOCALID": "0", "SLURM_GPU_NODES": "1",
               "SLURM_GPU_TASKS_PER_NODE": "1", "SLURM_GPU_GPUS_PER_NODE": "4", "TORCHELASTIC_RUN_ID": "none",
               "RANK": "1", "LOCAL_RANK": "1", "WORLD_SIZE": "4", "LOCAL_WORLD_SIZE": "4",
               "SLURM_GPUS_PER_TASK": "1", "CUDA_VISIBLE_DEVICES": "0"}
    with pytest.raises(GeometryError) as excinfo:
        local_device_index(environ)
    message = str(excinfo.value)
    assert "torchrun starts 4 rank(s) in this task, but the site bound only 1 GPU(s) to it" in message
    assert "SLURM_GPUS_PER_TASK=1" in message
    assert "srun --gpu-bind=none python -m snakemake_executor_plugin_slurm_gpu.runtime.torchrun" in message
    assert local_device_index({**environ, "CUDA_VISIBLE_DEVICES": "0,1,2,3"}) == 1


def test_lightning_under_a_per_task_binding_is_a_geometry_error_that_names_cause_and_fix() -> None:
    with pytest.raises(GeometryError) as excinfo:
        check_gpus_for_lightning(rank_1x4(CUDA_VISIBLE_DEVICES="2", SLURM_GPU_BIND="single:1"))
    message = str(excinfo.value)
    cause, hint = message.split("HINT:", 1)
    assert cause.startswith("train/model=vit was submitted for 4 rank(s) per node")
    assert "CUDA_VISIBLE_DEVICES=2 (1 of the node's 4 GPUs); SLURM_GPU_BIND=single:1" in cause
    assert "You requested gpu: [0, 1, 2, 3] But your machine only has: [0]" in cause
    assert "srun --gpu-bind=none python ..." in hint
    assert "--gpus-per-node=4" in hint


# ---------------------------------------------------------------- checkpoint_dir

def test_checkpoint_dir_default_is_created(tmp_path: Path) -> None:
    default = tmp_path / "local" / "ckpt"
    assert checkpoint_dir(environ={}, default=default) == default
    assert default.is_dir()


def test_checkpoint_dir_from_the_step(tmp_path: Path) -> None:
    step_dir = tmp_path / "wf" / ".snakemake" / "slurm-gpu" / "checkpoints" / "train" / "all"
    default = tmp_path / "unused"
    assert checkpoint_dir(environ={"SLURM_GPU_CHECKPOINT_DIR": str(step_dir)}, default=default) == step_dir
    assert step_dir.is_dir()
    assert not default.exists()


def test_checkpoint_dir_empty_variable_means_default(tmp_path: Path) -> None:
    assert checkpoint_dir(environ={"SLURM_GPU_CHECKPOINT_DIR": ""}, default=tmp_path / "d") == tmp_path / "d"


def test_checkpoint_dir_exists_already(tmp_path: Path) -> None:
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "last.ckpt").write_text("x")
    assert checkpoint_dir(environ={"SLURM_GPU_CHECKPOINT_DIR": str(tmp_path / "c")}) == tmp_path / "c"
    assert (tmp_path / "c" / "last.ckpt").read_text() == "x"


# ---------------------------------------------------------------- trainer_kwargs (accelerator given: no torch)

@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        pytest.param(RANK_2X2, dict(num_nodes=2, devices=2, strategy="ddp"), id="2x2"),
        pytest.param({}, dict(num_nodes=1, devices=1, strategy="auto"), id="single-process"),
    ],
)
def test_trainer_kwargs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, environ: dict[str, str],
                        expected: dict[str, object]) -> None:
    for name in list(os.environ):
        if name.startswith(("SLURM", "MASTER_")):
            monkeypatch.delenv(name)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("SLURM_GPU_CHECKPOINT_DIR", str(tmp_path / "ckpt"))
    kwargs = trainer_kwargs(accelerator="cpu")
    assert kwargs == {**expected, "accelerator": "cpu", "default_root_dir": str(tmp_path / "ckpt")}


def _slurm_environ(monkeypatch: pytest.MonkeyPatch, environ: dict[str, str], tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith(("SLURM", "MASTER_", "CUDA_VISIBLE")):
            monkeypatch.delenv(name)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("SLURM_GPU_CHECKPOINT_DIR", str(tmp_path / "ckpt"))


@pytest.mark.parametrize("accelerator", ["gpu", "cuda", "auto"])
def test_trainer_kwargs_refuses_gpus_bound_one_per_task(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                        accelerator: str) -> None:
    _slurm_environ(monkeypatch, rank_1x4(CUDA_VISIBLE_DEVICES="0", SLURM_GPU_BIND="closest"), tmp_path)
    with pytest.raises(GeometryError, match=r"SLURM_GPU_BIND=closest.*HINT: start the ranks with `srun --gpu-bind"):
        trainer_kwargs(accelerator=accelerator)


def test_trainer_kwargs_on_the_cpu_ignores_the_binding(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _slurm_environ(monkeypatch, rank_1x4(CUDA_VISIBLE_DEVICES="0"), tmp_path)
    assert trainer_kwargs(accelerator="cpu")["devices"] == 4


def test_trainer_kwargs_on_gpus_every_rank_sees(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _slurm_environ(monkeypatch, RANK_1X4, tmp_path)
    kwargs = trainer_kwargs(accelerator="gpu")
    assert (kwargs["num_nodes"], kwargs["devices"], kwargs["accelerator"], kwargs["strategy"]) == (1, 4, "gpu", "ddp")


def test_trainer_kwargs_on_a_cpu_only_step_never_checks_gpus(monkeypatch: pytest.MonkeyPatch,
                                                             tmp_path: Path) -> None:
    _slurm_environ(monkeypatch, rank_1x4(SLURM_GPU_GPUS_PER_NODE="0", CUDA_VISIBLE_DEVICES="0"), tmp_path)
    assert trainer_kwargs(accelerator="auto")["devices"] == 4


# ---------------------------------------------------------------- Lightning's world under torchrun

# node 1, local rank 1 of a 2 nodes x 2 GPUs step with launcher="torchrun": srun started one task per
# node (SLURM_PROCID is the node's index), torchrun the node's two processes
TORCHRUN_2X2 = {
    "SLURM_JOB_ID": "4244", "SLURM_NTASKS": "2", "SLURM_NNODES": "2", "SLURM_NTASKS_PER_NODE": "1",
    "SLURM_TASKS_PER_NODE": "1(x2)", "SLURM_PROCID": "1", "SLURM_LOCALID": "0", "SLURM_NODEID": "1",
    "SLURM_GPU_NODES": "2", "SLURM_GPU_TASKS_PER_NODE": "1", "SLURM_GPU_GPUS_PER_NODE": "2",
    "SLURM_GPU_LAUNCHER": "torchrun", "SLURM_GPU_STEP": "train/model=elastic",
    "TORCHELASTIC_RUN_ID": "none", "RANK": "3", "LOCAL_RANK": "1", "WORLD_SIZE": "4", "LOCAL_WORLD_SIZE": "2",
    "GROUP_RANK": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "19244",
}


def test_a_trainer_that_counts_torchruns_world_passes() -> None:
    assert check_lightning_world(4, 3, TORCHRUN_2X2, cluster_environment="TorchElasticEnvironment") is None
    assert check_lightning_world(4, 3, TORCHRUN_2X2) is None


def test_outside_torchrun_nothing_is_checked() -> None:
    # srun's world (one task per rank) is geometry()'s to check; a local run has no torchrun either
    assert check_lightning_world(2, 1, RANK_2X2, cluster_environment="SLURMEnvironment") is None
    assert check_lightning_world(1, 0, {}) is None


def test_a_slurm_environment_under_torchrun_is_refused_with_cause_and_fix() -> None:
    # what Lightning's SLURMEnvironment makes of this process: rank SLURM_PROCID=1 of SLURM_NTASKS=2
    message = check_lightning_world(2, 1, TORCHRUN_2X2, cluster_environment="SLURMEnvironment")
    assert message is not None
    cause, hint = message.split("HINT:", 1)
    assert cause.startswith('train/model=elastic runs under torchrun (launcher="torchrun"), which started this '
                            "process as rank 3 of 4 (2 node(s) x 2 process(es)), but Lightning's Trainer counts it "
                            "as rank 1 of 2 (cluster environment SLURMEnvironment)")
    assert "SLURM_PROCID/SLURM_NTASKS" in cause and "never form one world" in cause
    # the fixes: slurm-gpu's kwargs without SLURMEnvironment, the right Lightning arguments, or srun
    assert "**trainer_kwargs()" in hint and "Resumable.environment()" in hint
    assert "num_nodes=2, devices=2 and plugins=[TorchElasticEnvironment()]" in hint
    assert 'the default launcher="srun" starts one Slurm task per GPU' in hint


def test_an_unknown_cluster_environment_is_named_and_srun_counts_are_the_likely_cause() -> None:
    message = check_lightning_world(2, 1, TORCHRUN_2X2, cluster_environment="MyClusterEnvironment")
    assert message is not None and "its cluster environment (MyClusterEnvironment) does not take the ranks" in message
    message = check_lightning_world(2, 1, TORCHRUN_2X2)
    assert message is not None and "SLURM_PROCID/SLURM_NTASKS" in message and "cluster environment " not in message


def test_a_one_process_trainer_on_every_torchrun_rank_is_refused_but_on_rank_0_alone_it_may_run() -> None:
    # Lightning's defaults (devices=1 on the CPU): every process would train a model of its own
    message = check_lightning_world(1, 0, TORCHRUN_2X2)
    assert message is not None and "built for a single process" in message
    assert "rank 3 of 4" in message and "counts it as rank 0 of 1" in message
    # rank 0 alone may run one (say, a test run after fit): the other ranks are the ones that refuse
    assert check_lightning_world(1, 0, {**TORCHRUN_2X2, "RANK": "0", "LOCAL_RANK": "0", "GROUP_RANK": "0"}) is None


def test_check_lightning_world_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(("SLURM", "MASTER_", "TORCHELASTIC_")) or name in ("RANK", "LOCAL_RANK", "WORLD_SIZE"):
            monkeypatch.delenv(name)
    for name, value in TORCHRUN_2X2.items():
        monkeypatch.setenv(name, value)
    assert check_lightning_world(2, 1) == check_lightning_world(2, 1, TORCHRUN_2X2)
    assert check_lightning_world(4, 3) is None


def test_trainer_kwargs_under_torchrun_refuse_a_task_bound_to_one_gpu_with_torchruns_fix(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    environ = {**TORCHRUN_2X2, "CUDA_VISIBLE_DEVICES": "0", "SLURM_GPUS_PER_TASK": "1"}
    for name in ("TORCHELASTIC_RUN_ID", "RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK"):
        monkeypatch.delenv(name, raising=False)
    _slurm_environ(monkeypatch, environ, tmp_path)
    with pytest.raises(GeometryError, match=r"torchrun starts 2 rank\(s\) in this task, but the site bound only 1"):
        trainer_kwargs(accelerator="gpu")


# ---------------------------------------------------------------- the plugin import stays light

POISON_TORCH = 'raise RuntimeError("torch was imported")\n'


def _python(code: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """Run code in a fresh interpreter where `import torch` raises, whatever is installed."""
    poison = tmp_path / "poison" / "torch"
    poison.mkdir(parents=True, exist_ok=True)
    (poison / "__init__.py").write_text(POISON_TORCH)
    env = {"PYTHONPATH": str(poison.parent), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=60)


@pytest.mark.parametrize(
    "module", ["snakemake_executor_plugin_slurm_gpu", "snakemake_executor_plugin_slurm_gpu.runtime"])
def test_import_does_not_import_torch(tmp_path: Path, module: str) -> None:
    result = _python(f"""
        import sys
        import {module}
        assert "torch" not in sys.modules, "torch in sys.modules"
        print("ok")
    """, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_poisoned_torch_is_noticed(tmp_path: Path) -> None:
    # the check above would notice a torch import: trainer_kwargs() without an accelerator does one
    result = _python("""
        from snakemake_executor_plugin_slurm_gpu.runtime import trainer_kwargs
        trainer_kwargs()
    """, tmp_path)
    assert result.returncode != 0
    assert "torch was imported" in result.stderr


# ---------------------------------------------------------------- an elastic step (min_nodes)

def test_an_elastic_step_runs_on_the_nodes_it_got_and_knows_its_full_size() -> None:
    # submitted as nodes=4, min_nodes=2 (2 ranks per node); this run got 2 nodes
    world = geometry(env(SLURM_GPU_NODES="4", SLURM_GPU_MIN_NODES="2"))
    assert (world.num_nodes, world.devices, world.world_size) == (2, 2, 4)
    assert (world.full_nodes, world.full_world_size) == (4, 8)


@pytest.mark.parametrize("fewest", ["3", "4", None])
def test_fewer_nodes_than_min_nodes_is_still_a_geometry_error(fewest: str | None) -> None:
    with pytest.raises(GeometryError) as excinfo:
        geometry(env(SLURM_GPU_NODES="4", SLURM_GPU_MIN_NODES=fewest))
    submitted = "3-4" if fewest == "3" else "4"
    assert f"submitted for {submitted} node(s) x 2 rank(s)" in str(excinfo.value)
    assert "world of 2 node(s) x 2 rank(s)" in str(excinfo.value)


def test_a_rigid_steps_full_size_is_its_size() -> None:
    world = geometry(RANK_2X2)
    assert world.full_world_size == world.world_size == 4
