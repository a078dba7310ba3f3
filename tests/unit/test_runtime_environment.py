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
    checkpoint_dir,
    geometry,
    trainer_kwargs,
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
                                          master_addr="n1", master_port=19242, under_slurm=True)


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
