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
    declared_nodes = _int(env, "SLURM_GPU_NODES")
    declared_tasks = _int(env, "SLURM_GPU_TASKS_PER_NODE")
    under_slurm = "SLURM_JOB_ID" in env and "SLURM_NTASKS" in env
    if not under_slurm:
        nodes, tasks = declared_nodes or 1, declared_tasks or 1
        return Geometry(nodes, tasks, nodes * tasks, 0, 0, 0, env.get("MASTER_ADDR"),
                        _int(env, "MASTER_PORT"), False)
    nodes = _int(env, "SLURM_NNODES", "SLURM_JOB_NUM_NODES") or 1
    tasks = _int(env, "SLURM_NTASKS_PER_NODE", "SLURM_TASKS_PER_NODE") or 1
    world = _int(env, "SLURM_NTASKS") or nodes * tasks
    step = env.get("SLURM_GPU_STEP", "this step")
    if declared_nodes is not None and declared_tasks is not None:
        if (nodes, tasks) != (declared_nodes, declared_tasks):
            raise GeometryError(
                f"{step} was submitted for {declared_nodes} node(s) x {declared_tasks} rank(s), but this process "
                f"runs in a world of {nodes} node(s) x {tasks} rank(s). HINT: start the ranks with a plain "
                f"`srun python ...` (no -N/-n/--ntasks-per-node of its own) so that srun uses the whole allocation")
    if under_torchrun(env):
        # torchrun (one Slurm task per node) started this process as one of the node's ranks
        local = _int(env, "LOCAL_WORLD_SIZE") or 1
        declared_ranks = _int(env, "SLURM_GPU_GPUS_PER_NODE")
        if declared_ranks and local != declared_ranks:
            raise GeometryError(f"{step} was submitted for {declared_ranks} rank(s) per node, but torchrun started "
                                f"{local}. HINT: launch with `srun python -m snakemake_executor_plugin_slurm_gpu"
                                ".runtime.torchrun script.py`, which sets --nproc-per-node from the allocation")
        return Geometry(num_nodes=nodes, devices=local, world_size=_int(env, "WORLD_SIZE") or nodes * local,
                        rank=_int(env, "RANK") or 0, local_rank=_int(env, "LOCAL_RANK") or 0,
                        node_rank=_int(env, "GROUP_RANK", "SLURM_NODEID") or 0, master_addr=env.get("MASTER_ADDR"),
                        master_port=_int(env, "MASTER_PORT"), under_slurm=True)
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
    )


def settle_master(environ: MutableMapping[str, str] | None = None,
                  hostnames: Callable[[str], list[str]] | None = None) -> None:
    """Allocation mode (SLURM_GPU_ALLOCATION=1): this step runs on nodes Slurm picked when srun
    started it, maybe not the allocation's first, and beside other steps of the same job: rank 0's
    host is the first of the step's node list, the port is the job's plus the step id (Lightning's
    formula would give every step of the job the same port). Elsewhere the batch script already
    exported both; nothing changes."""
    env = os.environ if environ is None else environ
    nodes, step = env.get("SLURM_STEP_NODELIST"), env.get("SLURM_STEP_ID")
    if env.get("SLURM_GPU_ALLOCATION") != "1" or not nodes or step is None or not step.isdigit():
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


def checkpoint_dir(environ: Mapping[str, str] | None = None, default: str | Path = "checkpoints") -> Path:
    """The step's checkpoint directory: the same for every requeue and resubmission of the step.
    Outside slurm-gpu (a local test run) it is `default`."""
    env = os.environ if environ is None else environ
    path = Path(env.get("SLURM_GPU_CHECKPOINT_DIR") or default)
    path.mkdir(parents=True, exist_ok=True)
    return path
