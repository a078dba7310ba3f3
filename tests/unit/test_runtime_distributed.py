"""Plain torch.distributed support: the `launcher` resource, the world as torchrun describes it, the
torchrun command built from the allocation, and runtime.distributed.Session in a real single-process
training loop on the CPU (periodic checkpoints, the requeue signal, SIGTERM, resume)."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import pytest

from snakemake_executor_plugin_slurm_gpu.checkpoints import INTERRUPTED_MARKER, verify_checkpoint
from snakemake_executor_plugin_slurm_gpu.runtime import signals
from snakemake_executor_plugin_slurm_gpu.runtime.environment import GeometryError, geometry
from snakemake_executor_plugin_slurm_gpu.runtime.torchrun import torchrun_argv
from snakemake_executor_plugin_slurm_gpu.spec import ResourceError, build_spec

torch = pytest.importorskip("torch")

from snakemake_executor_plugin_slurm_gpu.runtime.distributed import Interrupted, Session  # noqa: E402


# ---------------------------------------------------------------- the launcher resource

def test_torchrun_runs_one_task_per_node_holding_every_rank_and_its_cpus() -> None:
    spec = build_spec("train", {"nodes": 2, "gpus": 8, "cpus_per_task": 4, "launcher": "torchrun"})
    assert (spec.tasks_per_node, spec.ranks_per_node, spec.cpus_per_task) == (1, 4, 16)
    default = build_spec("train", {"nodes": 2, "gpus": 8, "cpus_per_task": 4})
    assert (default.launcher, default.tasks_per_node, default.ranks_per_node, default.cpus_per_task) == \
        ("srun", 4, 4, 4)


@pytest.mark.parametrize("resources, problem", [
    ({"gpus": 2, "launcher": "mpirun"}, "resource 'launcher' is 'mpirun'"),
    ({"launcher": "torchrun"}, "asks for no GPUs"),
])
def test_a_launcher_that_cannot_work_is_refused_before_submission(resources, problem) -> None:
    with pytest.raises(ResourceError, match=problem) as excinfo:
        build_spec("train", resources)
    assert "rule 'train'" in str(excinfo.value) and "HINT" in str(excinfo.value)


# ---------------------------------------------------------------- the world under torchrun

TORCHRUN_RANK = {  # what srun (one task on the second node) and then torchrun set for one process
    "SLURM_JOB_ID": "77", "SLURM_NTASKS": "2", "SLURM_NNODES": "2", "SLURM_NTASKS_PER_NODE": "1",
    "SLURM_PROCID": "1", "SLURM_NODEID": "1", "SLURM_LOCALID": "0",
    "SLURM_GPU_NODES": "2", "SLURM_GPU_TASKS_PER_NODE": "1", "SLURM_GPU_GPUS_PER_NODE": "4",
    "TORCHELASTIC_RUN_ID": "none", "RANK": "6", "LOCAL_RANK": "2", "WORLD_SIZE": "8", "LOCAL_WORLD_SIZE": "4",
    "GROUP_RANK": "1", "MASTER_ADDR": "n1", "MASTER_PORT": "15077",
}


def test_a_process_started_by_torchrun_sees_torchruns_place_in_the_world() -> None:
    world = geometry(TORCHRUN_RANK)
    assert (world.num_nodes, world.devices, world.world_size, world.rank, world.local_rank, world.node_rank) == \
        (2, 4, 8, 6, 2, 1)


def test_torchrun_starting_other_than_one_process_per_gpu_is_a_geometry_error() -> None:
    with pytest.raises(GeometryError, match="torchrun started 2"):
        geometry({**TORCHRUN_RANK, "LOCAL_WORLD_SIZE": "2"})


def test_the_torchrun_command_comes_from_the_allocation_and_forwards_the_requeue_signal() -> None:
    env = {"SLURM_GPU_NODES": "2", "SLURM_GPU_GPUS_PER_NODE": "4", "SLURM_NODEID": "1", "MASTER_ADDR": "n1",
           "MASTER_PORT": "15077", "SLURM_GPU_REQUEUE_SIGNAL": "USR2"}
    argv = torchrun_argv(["train.py", "--lr", "0.1"], env, python="/venv/bin/python")
    assert argv == ["/venv/bin/python", "-m", "torch.distributed.run", "--nnodes=2", "--nproc-per-node=4",
                    "--node-rank=1", "--master-addr=n1", "--master-port=15077", "--max-restarts=0",
                    "--signals-to-handle=SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR2", "--shutdown-timeout=600",
                    "train.py", "--lr", "0.1"]
    # the user's own choice of torchrun's grace period stands
    assert "--shutdown-timeout=45" in torchrun_argv(["t.py"], {**env, "TORCH_ELASTIC_SHUTDOWN_TIMEOUT": "45"})
    # an elastic step's run on fewer nodes than submitted: torchrun's node count is the allocation's
    assert "--nnodes=1" in torchrun_argv(["t.py"], {**env, "SLURM_GPU_MIN_NODES": "1", "SLURM_NNODES": "1"})


def test_torchrun_outside_a_slurm_gpu_step_says_what_is_missing() -> None:
    with pytest.raises(SystemExit, match="SLURM_NODEID, MASTER_ADDR"):
        torchrun_argv(["train.py"], {"SLURM_GPU_NODES": "1", "SLURM_GPU_GPUS_PER_NODE": "2", "MASTER_PORT": "1"})


# ---------------------------------------------------------------- Session in a training loop

STEPS = 12


def train(session: Session, signal_at: tuple[int, int] | None = None) -> tuple[torch.nn.Module, list[int]]:
    """A tiny loop in the shape of workflows/plain-torch/scripts/train.py; the batches are a
    function of the step number."""
    torch.manual_seed(0)
    net = torch.nn.Linear(4, 1)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    step, ran = 0, []
    state = session.resume()
    if state is not None:
        net.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step = state["step"]
    while step < STEPS:
        step += 1
        ran.append(step)
        x = torch.randn(8, 4, generator=torch.Generator().manual_seed(step))
        loss = torch.nn.functional.mse_loss(net(x), x.sum(dim=1, keepdim=True))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if signal_at is not None and step == signal_at[0]:
            os.kill(os.getpid(), signal_at[1])
        session.step_done(step, lambda: {"step": step, "model": net.state_dict(),
                                         "optimizer": optimizer.state_dict()})
    assert session.finish(step)
    return net, ran


def saved(directory: Path) -> list[int]:
    return sorted(int(p.name[5:-5]) for p in directory.glob("step-*.ckpt"))


def test_periodic_checkpoints_are_atomic_verified_and_pruned(ckpt_dir: Path) -> None:
    net, ran = train(Session(every_n_steps=5, keep=2))
    assert ran == list(range(1, STEPS + 1))
    assert saved(ckpt_dir) == [5, 10]
    for step in (5, 10):
        info = verify_checkpoint(ckpt_dir / f"step-{step:09d}.ckpt")
        assert info is not None and info.global_step == step


def test_the_requeue_signal_checkpoints_at_that_step_requeues_and_the_rerun_ends_where_one_run_would(
        ckpt_dir: Path, fake_scontrol: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    uninterrupted, _ = train(Session(every_n_steps=100, directory=ckpt_dir.parent / "reference"))
    with pytest.raises(Interrupted) as excinfo:
        train(Session(every_n_steps=5), signal_at=(7, signal.SIGUSR1))
    assert excinfo.value.code == 143
    assert saved(ckpt_dir) == [5, 7]  # the signal's checkpoint is of the very step it arrived in
    assert fake_scontrol.read_text().split() == ["requeue", "4242"]
    marker = json.loads((ckpt_dir / INTERRUPTED_MARKER).read_text())
    assert (marker["step"], marker["requeued"]) == (7, True)
    signals.reset()
    resumed, ran = train(Session(every_n_steps=5))
    assert ran == list(range(8, STEPS + 1))
    assert not (ckpt_dir / INTERRUPTED_MARKER).exists()
    # model and momentum came back whole: bit for bit the uninterrupted result
    assert all(torch.equal(a, b) for a, b in zip(resumed.state_dict().values(), uninterrupted.state_dict().values()))


def test_sigterm_stops_at_the_step_boundary_without_a_checkpoint(ckpt_dir: Path) -> None:
    with pytest.raises(Interrupted) as excinfo:
        train(Session(every_n_steps=5), signal_at=(8, signal.SIGTERM))
    assert excinfo.value.reason == "received SIGTERM" and excinfo.value.code == 143
    assert saved(ckpt_dir) == [5]  # being killed: no time to save; the rerun resumes from step 5
    signals.reset()
    _, ran = train(Session(every_n_steps=5))
    assert ran[0] == 6


def test_importing_the_launcher_does_not_import_torch() -> None:
    code = ("import sys; import snakemake_executor_plugin_slurm_gpu.runtime.torchrun; "
            "sys.exit('torch' in sys.modules)")
    assert os.spawnv(os.P_WAIT, sys.executable, [sys.executable, "-c", code]) == 0


# ---------------------------------------------------------------- the GPU a Session picks

RANK_2_OF_4 = {  # local rank 2 of a 1 node x 4 GPUs step started by srun
    "SLURM_JOB_ID": "78", "SLURM_NTASKS": "4", "SLURM_NNODES": "1", "SLURM_NTASKS_PER_NODE": "4",
    "SLURM_PROCID": "2", "SLURM_LOCALID": "2", "SLURM_NODEID": "0", "MASTER_ADDR": "localhost", "MASTER_PORT": "15078",
    "SLURM_GPU_NODES": "1", "SLURM_GPU_TASKS_PER_NODE": "4", "SLURM_GPU_GPUS_PER_NODE": "4",
}


@pytest.fixture
def pretend_cuda(ckpt_dir: Path, monkeypatch: pytest.MonkeyPatch) -> list[torch.device]:
    """A machine with CUDA, as far as Session can tell: the devices it sets, and no process group."""
    chosen: list[torch.device] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    monkeypatch.setattr(Session, "_init_process_group", lambda self, backend, timeout_s: None)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    for name, value in RANK_2_OF_4.items():
        monkeypatch.setenv(name, value)
    return chosen


def test_session_trains_on_its_local_rank_when_it_sees_every_gpu_of_the_node(
        pretend_cuda: list[torch.device], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3")
    session = Session()
    assert session.device == torch.device("cuda:2") and pretend_cuda == [torch.device("cuda:2")]


@pytest.mark.parametrize("visible", ["2", "0"])
def test_session_trains_on_the_one_gpu_the_site_bound_to_its_task(
        pretend_cuda: list[torch.device], monkeypatch: pytest.MonkeyPatch, visible: str) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)  # --gpu-bind=single:1: cuda:2 would be an invalid ordinal
    monkeypatch.setenv("SLURM_GPU_BIND", "single:1")
    session = Session()
    assert session.device == torch.device("cuda:0") and pretend_cuda == [torch.device("cuda:0")]


def test_session_on_the_cpu_needs_no_gpu(ckpt_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")  # a binding it cannot resolve, but no CUDA: no question
    monkeypatch.setenv("SLURM_GPU_GPUS_PER_NODE", "4")
    assert Session().device == torch.device("cpu")
