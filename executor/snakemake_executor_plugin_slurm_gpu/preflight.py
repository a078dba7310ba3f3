"""The checks of a step before it is submitted that need more than its resources: its wildcards
(what Snakemake's --target-jobs can carry to the job), its shell command (how its ranks are started)
and the cluster's partitions (whether they can ever run it).

Every check raises an error naming the rule, the resource, the value and the fix. Nothing here does
I/O: capacity checks take a ClusterInfo value that the caller got from Slurm.
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING, Mapping

from .resources import ResourceError

if TYPE_CHECKING:  # spec.py re-exports these checks, so it cannot be imported from here at run time
    from .spec import ClusterInfo, StepSpec


class WildcardError(ValueError):
    """A wildcard value that the job-side Snakemake could not be told about intact."""

    def __init__(self, rule: str, wildcard: str, value: str, problem: str) -> None:
        self.rule, self.wildcard, self.value = rule, wildcard, value
        super().__init__(
            f"rule '{rule}': wildcard '{wildcard}' is {value!r}, which {problem}: Snakemake's --target-jobs, "
            "which tells the job which step to run, splits values at ',' and strips quotes from both ends, "
            f"so the job would run a different step or none. HINT: keep such characters out of the value "
            f"(e.g. wildcard_constraints: {wildcard}=r\"[^,'\\\"]+\"), or pass it through params or config")


def check_target_wildcards(rule: str, wildcards: Mapping[str, object]) -> None:
    """Refuse wildcard values that Snakemake's own --target-jobs encoding would change on the way
    to the job (snakemake.target_jobs.parse_target_jobs_cli_args, Snakemake 9)."""
    for name, raw in wildcards.items():
        value = str(raw)
        if "," in value:
            raise WildcardError(rule, str(name), value, "contains a comma")
        if value != value.strip("'\""):
            raise WildcardError(rule, str(name), value, "begins or ends with a quote character")


_COMMAND_SPLIT = re.compile(r"\n|;|&&|\|\||\|")
_ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=\S*")


def _started_by_srun(shell_command: str) -> bool:
    """Some command of the line starts with srun, after variable assignments, export, exec, time, env."""
    for segment in _COMMAND_SPLIT.split(shell_command):
        words = segment.strip().split()
        while words and (_ASSIGNMENT.fullmatch(words[0]) or words[0] in ("export", "exec", "time", "env")):
            words = words[1:]
        if words and os.path.basename(words[0]) == "srun":
            return True
    return False


def check_launch(spec: StepSpec, shell_command: str | None) -> None:
    """A distributed step must start its ranks with srun; without it one process waits for the
    others forever ("stuck at Initializing distributed")."""
    if not spec.distributed:
        return
    fix = ("start the rule's shell command with srun, e.g. shell: \"srun python train.py\": "
           "the batch step is one process, srun starts one rank per GPU on every node")
    if not shell_command:
        raise ResourceError(spec.rule, "gpus/nodes",
                            f"ask for {spec.nodes} node(s) x {spec.gpus_per_node} GPU(s), but the rule has no "
                            "shell command to launch ranks with srun, so one process would hang at "
                            "'Initializing distributed'", fix)
    if _started_by_srun(shell_command):
        return
    first = shell_command.strip().splitlines()[0] if shell_command.strip() else ""
    raise ResourceError(spec.rule, "gpus/nodes",
                        f"ask for {spec.nodes} node(s) x {spec.gpus_per_node} GPU(s), but the shell command "
                        f"({first!r}) does not start with srun, so only one rank would run and it would hang "
                        "at 'Initializing distributed'", fix)


def launch_warning(spec: StepSpec, shell_command: str | None) -> str | None:
    """A GPU step that is not launched with srun runs, but the requeue signal (sent to job steps,
    i.e. srun's tasks, not the batch shell) never reaches it."""
    if not spec.signal or spec.distributed:
        return None
    if shell_command and _started_by_srun(shell_command):
        return None
    return (f"rule '{spec.rule}': its GPU step is not started with srun, so it will not get Slurm's "
            f"{spec.signal} warning before its time limit or at preemption and cannot checkpoint then "
            "(it still resumes from periodic checkpoints after a time-out). HINT: start it with srun, "
            "e.g. shell: \"srun python train.py\"")


def check_capacity(spec: StepSpec, cluster: ClusterInfo) -> None:
    """Every partition named exists, and one of them has nodes with the GPUs the step puts on each
    node. A step without a partition on a cluster without a default one is left to the site's
    routing (a job_submit plugin picks the partition): nothing to check here."""
    if spec.partition is None and cluster.default_partition is None:
        return
    names = spec.partition.split(",") if spec.partition else [str(cluster.default_partition)]
    known = ", ".join(sorted(cluster.gpus_per_node)) or "none"
    for partition in names:
        if partition not in cluster.gpus_per_node:
            raise ResourceError(spec.rule, "slurm_partition", f"is {spec.partition or partition!r}, "
                                f"but this cluster has no partition {partition!r}", f"use one of: {known}")
    available = max(cluster.gpus_per_node[partition] for partition in names)
    if spec.gpus_per_node > available:
        fix = "choose a partition with GPU nodes"
        if available:
            # the fewest nodes that split the GPUs evenly and fit
            nodes = next(n for n in range(1, spec.gpus + 1) if spec.gpus % n == 0 and spec.gpus // n <= available)
            fix = f"use at most {available} GPUs per node there, e.g. nodes={nodes} for gpus={spec.gpus}"
        where = f"partition '{names[0]}'" if len(names) == 1 else f"partitions '{','.join(names)}'"
        raise ResourceError(spec.rule, "gpus",
                            f"puts {spec.gpus_per_node} GPUs on each of {spec.nodes} node(s), but the nodes of "
                            f"{where} have at most {available}", fix)
    _check_node_size(spec, names, cluster)


def _check_node_size(spec: StepSpec, partitions: list[str], cluster: ClusterInfo) -> None:
    """CPUs and memory one node must hold: more than any node has would leave the job pending for ever
    (Slurm accepts it, reason PartitionConfig)."""
    sizes = [cluster.sizes.get(p, (None, None)) for p in partitions]
    where = f"partition '{partitions[0]}'" if len(partitions) == 1 else f"partitions '{','.join(partitions)}'"
    cpus = max(spec.cpus_per_task, 1) * (spec.tasks_per_node if spec.ntasks is None else 1)
    most_cpus = [c for c, _ in sizes]
    if None not in most_cpus and cpus > max(most_cpus):
        limit = max(most_cpus)
        name = "cpus_per_task" if spec.uses_gpus or spec.tasks_per_node > 1 else "cpus_per_task / threads"
        raise ResourceError(spec.rule, name, f"asks for {cpus} CPUs on one node, but the nodes of {where} have "
                            f"at most {limit}, so the job would wait for ever",
                            f"ask for at most {limit} CPUs per node (threads, cpus_per_task x tasks per node)")
    mem = spec.mem_mb if spec.mem_mb is not None else (
        spec.mem_mb_per_cpu * cpus if spec.mem_mb_per_cpu is not None else None)
    most_mem = [m for _, m in sizes]
    if mem is not None and None not in most_mem and mem > max(most_mem):
        name = "mem_mb" if spec.mem_mb is not None else "mem_mb_per_cpu"
        raise ResourceError(spec.rule, name, f"asks for {mem} MB on one node, but the nodes of {where} have at "
                            f"most {max(most_mem)} MB, so the job would wait for ever",
                            f"ask for at most {max(most_mem)} MB per node")
