"""The step's DDP world, read from the allocation: SLURM_* as srun sets them for each rank, checked
against the geometry the executor submitted (SLURM_GPU_*), so Trainer arguments and #SBATCH lines
come from one source and cannot disagree."""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, MutableMapping

from ..contract import Env


class GeometryError(RuntimeError):
    """The processes that were started do not form the world the step was submitted for."""


@dataclass(frozen=True)
class Geometry:
    num_nodes: int
    devices: int          # ranks per node (one per GPU)
    world_size: int
    rank: int
    local_rank: int
    node_rank: int
    master_addr: str | None
    master_port: int | None
    under_slurm: bool
    # the node count the step was written for (resource nodes): an elastic step (min_nodes) may run on
    # fewer, and keeps its global batch by this count (see full_world_size)
    full_nodes: int | None = None

    @property
    def full_world_size(self) -> int:
        """The world at the step's full size: what a run on fewer nodes keeps its global batch for."""
        return (self.full_nodes or self.num_nodes) * self.devices


def _int(environ: Mapping[str, str], *names: str) -> int | None:
    for name in names:
        value = environ.get(name)
        if value:
            match = re.match(r"\d+", value)  # SLURM_TASKS_PER_NODE looks like "2(x2)" or "2,1"
            if match:
                return int(match.group())
    return None


def geometry(environ: Mapping[str, str] | None = None) -> Geometry:
    """This process's place in the step's world. Raises GeometryError on a mismatch that would make
    the ranks wait for each other forever."""
    env = os.environ if environ is None else environ
    declared_nodes = _int(env, Env.NODES)
    declared_tasks = _int(env, Env.TASKS_PER_NODE)
    under_slurm = "SLURM_JOB_ID" in env and "SLURM_NTASKS" in env
    if not under_slurm:
        nodes, tasks = declared_nodes or 1, declared_tasks or 1
        return Geometry(nodes, tasks, nodes * tasks, 0, 0, 0, env.get("MASTER_ADDR"),
                        _int(env, "MASTER_PORT"), False)
    nodes = _int(env, "SLURM_NNODES", "SLURM_JOB_NUM_NODES") or 1
    tasks = _int(env, "SLURM_NTASKS_PER_NODE", "SLURM_TASKS_PER_NODE") or 1
    world = _int(env, "SLURM_NTASKS") or nodes * tasks
    step = env.get(Env.STEP, "this step")
    if declared_nodes is not None and declared_tasks is not None:
        # an elastic step's runs may get any node count from min_nodes up (--nodes=min-max)
        fewest = min(_int(env, Env.MIN_NODES) or declared_nodes, declared_nodes)
        if tasks != declared_tasks or not fewest <= nodes <= declared_nodes:
            submitted = f"{fewest}-{declared_nodes}" if fewest < declared_nodes else str(declared_nodes)
            raise GeometryError(
                f"{step} was submitted for {submitted} node(s) x {declared_tasks} rank(s), but this process "
                f"runs in a world of {nodes} node(s) x {tasks} rank(s). HINT: start the ranks with a plain "
                f"`srun python ...` (no -N/-n/--ntasks-per-node of its own) so that srun uses the whole allocation")
    if under_torchrun(env):
        # torchrun (one Slurm task per node) started this process as one of the node's ranks
        local = _int(env, "LOCAL_WORLD_SIZE") or 1
        declared_ranks = _int(env, Env.GPUS_PER_NODE)
        if declared_ranks and local != declared_ranks:
            raise GeometryError(f"{step} was submitted for {declared_ranks} rank(s) per node, but torchrun started "
                                f"{local}. HINT: launch with `srun python -m snakemake_executor_plugin_slurm_gpu"
                                ".runtime.torchrun script.py`, which sets --nproc-per-node from the allocation")
        return Geometry(num_nodes=nodes, devices=local, world_size=_int(env, "WORLD_SIZE") or nodes * local,
                        rank=_int(env, "RANK") or 0, local_rank=_int(env, "LOCAL_RANK") or 0,
                        node_rank=_int(env, "GROUP_RANK", "SLURM_NODEID") or 0, master_addr=env.get("MASTER_ADDR"),
                        master_port=_int(env, "MASTER_PORT"), under_slurm=True, full_nodes=declared_nodes)
    if world != nodes * tasks:
        raise GeometryError(
            f"{step}: SLURM_NTASKS={world} but {nodes} node(s) x {tasks} task(s) per node = {nodes * tasks}; "
            "Lightning would wait for ranks that never start. HINT: do not pass --ntasks to srun")
    return Geometry(
        num_nodes=nodes,
        devices=tasks,
        world_size=world,
        rank=_int(env, "SLURM_PROCID") or 0,
        local_rank=_int(env, "SLURM_LOCALID") or 0,
        node_rank=_int(env, "SLURM_NODEID") or 0,
        master_addr=env.get("MASTER_ADDR"),
        master_port=_int(env, "MASTER_PORT"),
        under_slurm=True,
        full_nodes=declared_nodes,
    )


# ---------------------------------------------------------------- the GPUs this rank sees

# what a site's per-task GPU binding leaves in a rank's environment, besides CUDA_VISIBLE_DEVICES
BINDING_VARIABLES = ("SLURM_GPU_BIND", "SLURM_GPUS_PER_TASK", "SLURM_TRES_PER_TASK")


def visible_gpus(environ: Mapping[str, str] | None = None) -> list[str] | None:
    """The entries of CUDA_VISIBLE_DEVICES (indices or UUIDs, as Slurm wrote them); None when it is
    unset (no GRES management: CUDA shows every GPU of the machine), [] when it hides them all."""
    env = os.environ if environ is None else environ
    value = env.get("CUDA_VISIBLE_DEVICES")
    if value is None:
        return None
    if value.strip() == "NoDevFiles":  # Slurm's value when the GRES has no device files
        return []
    return [entry.strip() for entry in value.split(",") if entry.strip()]


@dataclass(frozen=True)
class GpuBinding:
    """This rank sees fewer GPUs than the ranks of its node need: the site binds GPUs to tasks
    (--gpu-bind, SLURM_GPU_BIND or --gpus-per-task), so the node's ranks do not share one view."""
    visible: tuple[str, ...]     # this rank's CUDA_VISIBLE_DEVICES
    gpus_per_node: int           # what the step was submitted for (SLURM_GPU_GPUS_PER_NODE)
    evidence: tuple[str, ...]    # "NAME=value" of the variables that show the binding

    def __str__(self) -> str:
        return "; ".join(self.evidence)


def gpu_binding(environ: Mapping[str, str] | None = None) -> GpuBinding | None:
    """The site's per-task GPU binding, when this rank of a step with several GPUs per node sees
    only some of them (typically one); None when it sees them all, on CPU-only steps, and outside
    a slurm-gpu step (no SLURM_GPU_GPUS_PER_NODE, or no CUDA_VISIBLE_DEVICES)."""
    env = os.environ if environ is None else environ
    gpus_per_node = _int(env, Env.GPUS_PER_NODE) or 0
    visible = visible_gpus(env)
    if gpus_per_node < 2 or not visible or len(visible) >= gpus_per_node:
        return None
    evidence = [f"CUDA_VISIBLE_DEVICES={env['CUDA_VISIBLE_DEVICES']} ({len(visible)} of the node's "
                f"{gpus_per_node} GPUs)"]
    evidence += [f"{name}={env[name]}" for name in BINDING_VARIABLES if env.get(name)]
    return GpuBinding(tuple(visible), gpus_per_node, tuple(evidence))


def local_device_index(environ: Mapping[str, str] | None = None) -> int:
    """The CUDA device index this rank trains on: its local rank while every rank of the node sees
    all of the node's GPUs (the layout slurm-gpu submits), 0 when the site bound exactly one GPU to
    this rank's task (the only one it can see). Raises GeometryError when the binding leaves several
    ranks of one task, or one rank with several of the node's GPUs, no way to pick its own."""
    env = os.environ if environ is None else environ
    local_rank = geometry(env).local_rank
    visible = visible_gpus(env)
    binding = gpu_binding(env)
    if binding is None:
        return 0 if visible is not None and len(visible) == 1 else local_rank
    step = env.get(Env.STEP, "this step")
    hint = ("HINT: start the ranks with `srun --gpu-bind=none python ...` (or unset the site's default, e.g. "
            "`unset SLURM_GPU_BIND`), so that every rank sees the GPUs slurm-gpu's batch script asked for per "
            f"node (--gpus-per-node={binding.gpus_per_node})")
    if under_torchrun(env):
        raise GeometryError(
            f"{step}: torchrun starts {_int(env, 'LOCAL_WORLD_SIZE') or binding.gpus_per_node} rank(s) in this "
            f"task, but the site bound only {len(binding.visible)} GPU(s) to it ({binding}). HINT: start torchrun "
            "with `srun --gpu-bind=none python -m snakemake_executor_plugin_slurm_gpu.runtime.torchrun "
            "script.py`, so that its task sees every GPU of the node")
    if len(binding.visible) > 1:
        raise GeometryError(
            f"{step}: local rank {local_rank} sees {len(binding.visible)} of the node's {binding.gpus_per_node} "
            f"GPUs ({binding}): the site binds GPUs to tasks, and which of them is this rank's own cannot be "
            f"told. {hint}")
    return 0


def check_gpus_for_lightning(environ: Mapping[str, str] | None = None) -> None:
    """Lightning (SLURMEnvironment, devices = ranks per node) starts rank i on the node's GPU i, so
    every rank must see all of the node's GPUs. Raises GeometryError under a per-task GPU binding,
    which Lightning cannot work with ("You requested gpu: [0, 1] But your machine only has: [0]")."""
    env = os.environ if environ is None else environ
    binding = gpu_binding(env)
    if binding is None:
        return
    step = env.get(Env.STEP, "this step")
    requested = list(range(binding.gpus_per_node))
    raise GeometryError(
        f"{step} was submitted for {binding.gpus_per_node} rank(s) per node, each seeing all "
        f"{binding.gpus_per_node} GPUs of its node as Lightning needs (devices={binding.gpus_per_node}), but "
        f"the site binds GPUs to tasks and this rank sees {len(binding.visible)} ({binding}); Lightning would "
        f"fail with \"You requested gpu: {requested} But your machine only has: "
        f"{list(range(len(binding.visible)))}\". HINT: start the ranks with `srun --gpu-bind=none python ...` "
        "(or unset the site's default, e.g. `unset SLURM_GPU_BIND`): slurm-gpu's batch script asks for "
        f"--gpus-per-node={binding.gpus_per_node}, so that without the binding every rank sees them all")


def settle_master(environ: MutableMapping[str, str] | None = None,
                  hostnames: Callable[[str], list[str]] | None = None) -> None:
    """Allocation mode (SLURM_GPU_ALLOCATION=1): this step runs on nodes Slurm picked when srun
    started it, maybe not the allocation's first, and beside other steps of the same job: rank 0's
    host is the first of the step's node list, the port is the job's plus the step id (Lightning's
    formula would give every step of the job the same port). Elsewhere the batch script already
    exported both; nothing changes."""
    env = os.environ if environ is None else environ
    nodes, step = env.get("SLURM_STEP_NODELIST"), env.get("SLURM_STEP_ID")
    if env.get(Env.ALLOCATION) != "1" or not nodes or step is None or not step.isdigit():
        return
    expand = hostnames or _hostnames
    env["MASTER_ADDR"] = expand(nodes)[0]
    job = env.get("SLURM_JOB_ID", "0")
    env["MASTER_PORT"] = str(15000 + (int(job[-4:]) + 1 + int(step)) % 10000)


def _hostnames(nodelist: str) -> list[str]:
    out = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    return out.split() or [nodelist]


def under_torchrun(environ: Mapping[str, str] | None = None) -> bool:
    """Was this process started by torchrun (which sets RANK, LOCAL_RANK, ... for each process)?"""
    env = os.environ if environ is None else environ
    return "TORCHELASTIC_RUN_ID" in env and "LOCAL_RANK" in env


def check_lightning_world(trainer_world_size: int, trainer_rank: int, environ: Mapping[str, str] | None = None,
                          cluster_environment: str | None = None) -> str | None:
    """Under torchrun (launcher="torchrun": one Slurm task per node, torchrun starts the node's
    ranks), the world Lightning's Trainer counts must be torchrun's (RANK of WORLD_SIZE). Returns
    what is wrong, with the fix, when it is not; else None, and always outside torchrun (srun's world
    is geometry()'s business).

    The usual causes: a SLURMEnvironment passed to the Trainer, which reads SLURM_PROCID/SLURM_NTASKS,
    which count srun's tasks (one per node), so the processes of a node claim the same rank and the
    process group never forms; and a Trainer left at Lightning's default of one device, so every
    process trains a model of its own. A one-process Trainer on torchrun's rank 0 alone (say, a test
    run after fit) is left alone: only the other ranks refuse one. `cluster_environment` (the class
    name of trainer.strategy.cluster_environment, if any) makes the message more precise."""
    env = os.environ if environ is None else environ
    if not under_torchrun(env):
        return None
    rank, world = _int(env, "RANK"), _int(env, "WORLD_SIZE")
    if rank is None or world is None or (trainer_rank, trainer_world_size) == (rank, world):
        return None
    if trainer_world_size == 1 and rank == 0:
        return None
    local = _int(env, "LOCAL_WORLD_SIZE") or 1
    nodes = max(world // local, 1)
    step = env.get(Env.STEP, "this step")
    slurm = ("Lightning's SLURMEnvironment takes the ranks from SLURM_PROCID/SLURM_NTASKS, which count srun's "
             "tasks (one per node under torchrun), not torchrun's processes")
    if trainer_world_size == 1:
        cause = ("the Trainer was built for a single process (Lightning's default devices and num_nodes), so "
                 "each of torchrun's processes would train a model of its own")
    elif cluster_environment in (None, "SLURMEnvironment"):
        cause = f"{slurm}, so the ranks would never form one world"
    else:
        cause = (f"its cluster environment ({cluster_environment}) does not take the ranks from torchrun, so the "
                 "ranks would never form one world")
    source = f" (cluster environment {cluster_environment})" if cluster_environment else ""
    return (f"{step} runs under torchrun (launcher=\"torchrun\"), which started this process as rank {rank} of "
            f"{world} ({nodes} node(s) x {local} process(es)), but Lightning's Trainer counts it as rank "
            f"{trainer_rank} of {trainer_world_size}{source}: {cause}. HINT: let Lightning take the world from "
            "torchrun: build the Trainer with **trainer_kwargs() (from snakemake_executor_plugin_slurm_gpu.runtime) "
            "and no SLURMEnvironment in plugins (Resumable.environment() gives the right one under either "
            f"launcher), or pass num_nodes={nodes}, devices={local} and plugins=[TorchElasticEnvironment()] "
            "yourself; or leave out launcher=\"torchrun\" (the default launcher=\"srun\" starts one Slurm task per "
            "GPU, where SLURMEnvironment is right) and start the script with a plain `srun python script.py`")


def checkpoint_dir(environ: Mapping[str, str] | None = None, default: str | Path = "checkpoints") -> Path:
    """The step's checkpoint directory: the same for every requeue and resubmission of the step.
    Outside slurm-gpu (a local test run) it is `default`."""
    env = os.environ if environ is None else environ
    path = Path(env.get(Env.CHECKPOINT_DIR) or default)
    path.mkdir(parents=True, exist_ok=True)
    return path


DEBUG_ENV = Env.DEBUG  # "1": the batch script of a --slurm-gpu-debug run


def world_view(rank: int, local_rank: int, world_size: int, environ: Mapping[str, str] | None = None) -> str | None:
    """With --slurm-gpu-debug, the line each rank prints at start: where it thinks it is (the seed
    page's first check when a world does not form); None otherwise."""
    env = os.environ if environ is None else environ
    if env.get(DEBUG_ENV) != "1":
        return None
    node = env.get("SLURMD_NODENAME") or os.uname().nodename
    return (f"[slurm-gpu debug] rank {rank} of {world_size}, local rank {local_rank}, node {node}, master "
            f"{env.get('MASTER_ADDR')}:{env.get('MASTER_PORT')}, CUDA_VISIBLE_DEVICES={env.get('CUDA_VISIBLE_DEVICES')}, "
            f"NCCL_SOCKET_IFNAME={env.get('NCCL_SOCKET_IFNAME')}, job {env.get('SLURM_JOB_ID')} step "
            f"{env.get('SLURM_STEP_ID')}")
