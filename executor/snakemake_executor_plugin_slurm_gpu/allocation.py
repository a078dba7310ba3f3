"""Allocation mode (`--slurm-gpu-allocation`): Snakemake runs inside an allocation it was started in
(`salloc -N2 --gpus-per-node=2 ...`, for development) and runs every step as job steps of it, not
as new jobs.

A step's batch script runs where Snakemake runs, with the allocation's SLURM_* variables narrowed
to the step (srun reads SLURM_JOB_NUM_NODES, SLURM_NTASKS, SLURM_NTASKS_PER_NODE, SLURM_GPUS_PER_NODE,
SLURM_CPUS_PER_TASK as its defaults; SLURM_EXACT lets steps share the allocation), so the rule's own
bare `srun python train.py` starts exactly the step's ranks. A step without GPUs runs its script
as a one-task job step itself. Slurm picks the step's nodes when srun starts, so MASTER_ADDR cannot
be fixed in advance: the script exports SLURM_GPU_ALLOCATION=1 and the runtime helpers take rank 0's
host from the step's node list (runtime.environment.settle_master).
"""

from __future__ import annotations

import os
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from .spec import ResourceError, StepSpec

# Lightning ignores Slurm in a job of one of these names (its "interactive mode") and would then
# start its own processes inside every srun task
INTERACTIVE_NAMES = ("bash", "interactive")


@dataclass(frozen=True)
class Allocation:
    job_id: str
    nodes: int
    gpus_per_node: int | None  # None: salloc was not given --gpus-per-node, so not known here
    name: str
    cpus_per_node: tuple[int, ...] | None = None  # each node's CPUs (SLURM_JOB_CPUS_PER_NODE); None: not known


def expand_counts(text: str) -> tuple[int, ...] | None:
    """Slurm's compressed per-node counts, "4,2(x3)" -> (4, 2, 2, 2); None for anything else."""
    counts: list[int] = []
    for part in text.split(","):
        value, repeated, times = part.partition("(x")
        if not value.isdigit() or (repeated and not (times.endswith(")") and times[:-1].isdigit())):
            return None
        counts.extend([int(value)] * (int(times[:-1]) if repeated else 1))
    return tuple(counts) or None


def detect(environ: Mapping[str, str]) -> Allocation | None:
    """The allocation this process runs in, from what salloc exported; None outside one."""
    job_id = environ.get("SLURM_JOB_ID", "")
    if not job_id.isascii() or not job_id.isdigit():
        return None
    nodes = environ.get("SLURM_JOB_NUM_NODES") or environ.get("SLURM_NNODES") or "1"
    gpus = environ.get("SLURM_GPUS_PER_NODE", "").rsplit(":", 1)[-1]
    return Allocation(job_id, int(nodes) if nodes.isdigit() else 1, int(gpus) if gpus.isdigit() else None,
                      environ.get("SLURM_JOB_NAME", ""), expand_counts(environ.get("SLURM_JOB_CPUS_PER_NODE", "")))


def check_fits(spec: StepSpec, allocation: Allocation) -> None:
    fix = ("start Snakemake in a bigger allocation (salloc --nodes=... --gpus-per-node=...), or without "
           "--slurm-gpu-allocation so that the step is submitted as a job of its own")
    if spec.nodes > allocation.nodes:
        raise ResourceError(spec.rule, "nodes", f"is {spec.nodes}, but the allocation Snakemake runs in "
                            f"(job {allocation.job_id}) has {allocation.nodes} node(s)", fix)
    if allocation.gpus_per_node is not None and spec.gpus_per_node > allocation.gpus_per_node:
        raise ResourceError(spec.rule, "gpus", f"puts {spec.gpus_per_node} GPU(s) on each node, but the allocation "
                            f"(job {allocation.job_id}) has {allocation.gpus_per_node} per node", fix)
    # srun takes the step's cpus_per_task from SLURM_CPUS_PER_TASK since Slurm 23.11 and then refuses a step
    # bigger than the allocation ("More processors requested than permitted"); 22.05 ignored the variable
    # and gave each rank one CPU. Refused here on every release, before anything runs.
    need = spec.cpus_per_task * spec.tasks_per_node
    if allocation.cpus_per_node and sum(c >= need for c in allocation.cpus_per_node) < spec.nodes:
        have = max(allocation.cpus_per_node)
        raise ResourceError(spec.rule, "cpus_per_task", f"is {spec.cpus_per_task}, so the step's {spec.tasks_per_node} "
                            f"rank(s) per node need {need} CPUs on each of its {spec.nodes} node(s), but the allocation "
                            f"(job {allocation.job_id}) has at most {have} CPUs on a node",
                            f"start Snakemake in an allocation with enough CPUs (salloc --cpus-per-task={spec.cpus_per_task} "
                            f"with --ntasks-per-node={spec.tasks_per_node}), or lower the rule's cpus_per_task")


def step_environment(spec: StepSpec, allocation: Allocation, environ: Mapping[str, str]) -> dict[str, str]:
    """The environment of the step's script: the allocation's, narrowed to the step's geometry."""
    env = dict(environ)
    for name in ("SLURM_GPUS_PER_NODE", "SLURM_GPUS", "SLURM_GPUS_PER_TASK", "SLURM_TRES_PER_TASK",
                 "SLURM_MEM_PER_NODE", "SLURM_MEM_PER_CPU", "SLURM_NPROCS"):
        env.pop(name, None)
    tasks = spec.nodes * spec.tasks_per_node
    env.update({
        "SLURM_JOB_NUM_NODES": str(spec.nodes), "SLURM_NNODES": str(spec.nodes),
        "SLURM_NTASKS": str(tasks), "SLURM_NTASKS_PER_NODE": str(spec.tasks_per_node),
        "SLURM_TASKS_PER_NODE": f"{spec.tasks_per_node}(x{spec.nodes})" if spec.nodes > 1 else str(spec.tasks_per_node),
        "SLURM_CPUS_PER_TASK": str(spec.cpus_per_task),
        "SLURM_EXACT": "1",
    })
    if spec.gpus_per_node:
        env["SLURM_GPUS_PER_NODE"] = f"{spec.gpu_model}:{spec.gpus_per_node}" if spec.gpu_model else str(spec.gpus_per_node)
    if allocation.name in INTERACTIVE_NAMES:
        env["SLURM_JOB_NAME"] = f"sg-{spec.rule}"  # srun names the step so; its tasks see that name
    return env


def step_command(spec: StepSpec, script: Path) -> list[str]:
    """GPU steps: the script, whose srun starts the ranks. Others: the script as a one-task job step."""
    if spec.uses_gpus or spec.distributed:
        return ["bash", str(script)]
    return ["srun", "--nodes=1", "--ntasks=1", f"--cpus-per-task={spec.cpus_per_task}", "--exact",
            "bash", str(script)]


@dataclass
class LocalSteps:
    """The steps running in the allocation: processes of this Snakemake, each in its own session."""

    _procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    _count: int = 0

    def start(self, allocation: Allocation, argv: list[str], env: Mapping[str, str], log: Path, cwd: Path) -> str:
        """Start a step; its id (allocation id + a counter, e.g. 812+3)."""
        self._count += 1
        step_id = f"{allocation.job_id}+{self._count}"
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND | getattr(os, "O_NOFOLLOW", 0), 0o600)
        try:
            self._procs[step_id] = subprocess.Popen(argv, env=dict(env), cwd=cwd, stdin=subprocess.DEVNULL,
                                                    stdout=fd, stderr=subprocess.STDOUT, start_new_session=True)
        finally:
            os.close(fd)
        return step_id

    def poll(self, step_id: str) -> int | None:
        """The exit status, or None while it runs (a step this process never started counts as failed)."""
        proc = self._procs.get(step_id)
        if proc is None:
            return -1
        code = proc.poll()
        if code is not None:
            self._procs.pop(step_id, None)
        return code

    def cancel(self) -> None:
        """SIGTERM to every running step's process group (srun passes it on to the tasks)."""
        for proc in self._procs.values():
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for proc in self._procs.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        self._procs.clear()
