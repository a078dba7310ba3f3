"""Rule resources as users arrive with them: Snakemake's standard ones, values Snakemake only knows
once a step's inputs exist, the official Slurm plugin's names (gres, tasks, cpus_per_gpu, clusters,
...) and misspellings of them. Pure: spec.py turns the result into a StepSpec.

The table in the README ("Resources") says what each name becomes in the batch script and how the
official plugin (snakemake-executor-plugin-slurm 2.8) treats it; keep the two in step.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Any, Mapping


class ResourceError(ValueError):
    """A rule asks for something that cannot be submitted as it stands."""

    def __init__(self, rule: str, resource: str, problem: str, fix: str) -> None:
        self.rule, self.resource = rule, resource
        super().__init__(f"rule '{rule}': resource '{resource}' {problem}. HINT: {fix}")


# Characters that would end an #SBATCH line or a quoted value in it (sbatch treats a backslash as
# an escape even inside quotes).
_FORBIDDEN_IN_DIRECTIVE = re.compile(r'[\x00-\x08\x0a-\x1f\x7f\x85\u2028\u2029"\\]')


def _as_count(rule: str, name: str, value: Any, minimum: int, fix: str) -> int:
    if isinstance(value, bool):
        raise ResourceError(rule, name, f"is {value!r}, not a whole number", fix)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str) and re.fullmatch(r"\s*\d+\s*", value):
        value = int(value)
    if not isinstance(value, int):
        raise ResourceError(rule, name, f"is {value!r}, not a whole number", fix)
    if value < minimum:
        raise ResourceError(rule, name, f"is {value}, but must be at least {minimum}", fix)
    return value


def _as_text(rule: str, name: str, value: Any) -> str | None:
    if value is None or value == "":
        return None
    text = str(value)
    if _FORBIDDEN_IN_DIRECTIVE.search(text):
        raise ResourceError(rule, name, f"is {text!r}, which contains a newline or other control character, "
                                        "double quote or backslash",
                            f"set '{name}' to a plain Slurm value without those characters")
    return text


# What slurm-gpu reads (spec.build_spec). Names shared with the official plugin mean the same.
SLURM_RESOURCES = (
    "nodes", "min_nodes", "gpus", "gpu", "gpu_model", "gres", "tasks", "tasks_per_node", "tasks_per_gpu", "mpi",
    "cpus_per_task", "cpus_per_gpu", "mem_mb", "mem_mb_per_cpu", "runtime", "slurm_partition",
    "slurm_account", "constraint", "qos", "clusters", "cluster", "slurm_cluster", "slurm_extra",
    "launcher", "signal_lead_s", "requeue", "slurm_setup",
)
# Snakemake's own (standard, derived or internal) resources: never Slurm requests of ours, never
# "misspelt". gpu_manufacturer is standard, but Slurm has no way to ask for a maker (spec warns).
SNAKEMAKE_RESOURCES = (
    "_cores", "_nodes", "_job_count", "mem", "mem_mib", "disk", "disk_mb", "disk_mib", "tmpdir",
    "threads", "shell_exec", "gpu_manufacturer",
)
CLUSTER_NAMES = ("clusters", "cluster", "slurm_cluster")

# the official plugin's check of a gres item: name[:type][:count[TGM]]
_GRES_ITEM = re.compile(r"^([a-zA-Z0-9_]+)(?::([a-zA-Z0-9_.]+))?(?::(\d+[TGM]?))?$")


def is_unknown(value: object) -> bool:
    """Snakemake's placeholder for a resource it can only compute once the step's inputs exist
    (a callable of the input, the standard mem_mb/disk_mb of --default-resources)."""
    return type(value).__name__ == "TBDString" or value == "<TBD>"


def known(resources: Mapping[str, Any]) -> dict[str, Any]:
    """The resources whose values are known now; the rest are checked when the step is submitted."""
    return {name: value for name, value in resources.items() if not is_unknown(value)}


def unknown_names(resources: Mapping[str, Any]) -> list[str]:
    return sorted(name for name, value in resources.items() if is_unknown(value))


# names other tools (cluster-generic profiles, Slurm's own flags) use for what slurm-gpu reads as another
ALIASES = {
    "partition": "slurm_partition", "account": "slurm_account", "time": "runtime", "walltime": "runtime",
    "time_min": "runtime", "ntasks": "tasks", "ntasks_per_node": "tasks_per_node", "cpus": "cpus_per_task",
    "gpus_per_node": "gpus", "mem_per_cpu": "mem_mb_per_cpu",
}


def misspelt(name: str) -> str | None:
    """The resource a name not read by anybody was probably meant to be ('slurm_partiton' ->
    'slurm_partition', 'partition' -> 'slurm_partition'); None for names that are plainly the
    user's own (Snakemake schedules on any resource name, e.g. load=1)."""
    if name in SLURM_RESOURCES or name in SNAKEMAKE_RESOURCES or name.startswith("_"):
        return None
    if name in ALIASES:
        return ALIASES[name]
    close = difflib.get_close_matches(name, SLURM_RESOURCES, n=1, cutoff=0.8)
    return close[0] if close else None


@dataclass(frozen=True)
class Gres:
    """A gres resource split into its GPU part (what slurm-gpu lays out as one rank per GPU) and
    the rest (passed on as --gres)."""

    gpus_per_node: int | None = None
    gpu_model: str | None = None
    other: tuple[str, ...] = ()


def parse_gres(text: str) -> Gres:
    """'gpu:a100:2,tmpspace:10G' -> Gres(2, 'a100', ('tmpspace:10G',)). Raises ValueError with the
    offending item."""
    gpus, model, other = None, None, []
    for item in (part.strip() for part in text.split(",")):
        match = _GRES_ITEM.match(item)
        if not match:
            raise ValueError(f"{item!r} is not name[:type][:count]")
        name, kind, count = match.groups()
        if kind is not None and count is None and kind.isdigit():
            kind, count = None, kind  # gpu:2 is a count, not a type
        if name != "gpu":
            other.append(item)
            continue
        if gpus is not None:
            raise ValueError(f"{item!r} names GPUs a second time")
        if count is not None and not count.isdigit():
            raise ValueError(f"{item!r} gives a GPU count with a unit")
        gpus, model = int(count) if count is not None else 1, kind
    return Gres(gpus, model, tuple(other))


def _count_or_none(rule: str, resources: Mapping[str, Any], name: str, fix: str, minimum: int = 1) -> int | None:
    value = resources.get(name)
    return None if value is None else _as_count(rule, name, value, minimum, fix)


def gpu_request(rule: str, resources: Mapping[str, Any], nodes: int) -> tuple[int, str | None, tuple[str, ...]]:
    """(total GPUs of the step, GPU model, other gres items) from gpus / gpu / gpu_model / gres. The
    official plugin's `gres="gpu:a100:2"` asks for 2 GPUs on each node: it becomes 2 x nodes GPUs
    here, laid out like gpus= (one rank per GPU)."""
    fix = "set gpus to the total number of GPUs of the step, e.g. gpus=4 for 2 nodes x 2 GPUs"
    total_gpus = _count_or_none(rule, resources, "gpus", fix, 0)
    total_gpu = _count_or_none(rule, resources, "gpu", fix, 0)  # Snakemake's standard name, same meaning
    if total_gpus is not None and total_gpu is not None and total_gpus != total_gpu:
        raise ResourceError(rule, "gpus", f"is {total_gpus} but 'gpu' is {total_gpu}",
                            "set only one of them (both mean the total GPUs of the step)")
    gpus = total_gpus if total_gpus is not None else total_gpu
    model = _as_text(rule, "gpu_model", resources.get("gpu_model"))
    text = _as_text(rule, "gres", resources.get("gres"))
    if text is None:
        return gpus or 0, model, ()
    try:
        gres = parse_gres(text)
    except ValueError as e:
        raise ResourceError(rule, "gres", f"is {text!r}: {e}",
                            "use Slurm's form name[:type][:count], comma-separated, e.g. gres=\"gpu:a100:2\" "
                            "or gres=\"tmpspace:10G\"") from None
    if gres.gpus_per_node is None:
        return gpus or 0, model, gres.other
    from_gres = gres.gpus_per_node * nodes
    if gpus is not None and gpus != from_gres:
        raise ResourceError(rule, "gres", f"is {text!r}, {gres.gpus_per_node} GPU(s) on each of {nodes} node(s), "
                            f"but gpus is {gpus}", "ask for GPUs once: gpus (the step's total) or gres (per node)")
    if model is not None and gres.gpu_model is not None and model != gres.gpu_model:
        raise ResourceError(rule, "gres", f"is {text!r} but gpu_model is {model!r}",
                            "name the GPU type once: gpu_model or the type in gres")
    return from_gres, model or gres.gpu_model, gres.other


@dataclass(frozen=True)
class Tasks:
    tasks_per_node: int
    ntasks: int | None = None
    pin_nodes: bool = True


def task_request(rule: str, resources: Mapping[str, Any], nodes: int, gpus_per_node: int,
                 launcher: str) -> Tasks:
    """The task layout. GPU steps: one task per GPU (one per node under torchrun), so the official
    plugin's tasks / tasks_per_node / tasks_per_gpu are accepted where they say the same and refused
    where they would start another number of ranks. CPU steps: tasks (Slurm spreads them, over
    `nodes` if given) or tasks_per_node, as the official plugin submits them for MPI rules."""
    fix_count = "set it to a whole number >= 1"
    tasks = _count_or_none(rule, resources, "tasks", fix_count)
    per_node = _count_or_none(rule, resources, "tasks_per_node", fix_count)
    per_gpu = _count_or_none(rule, resources, "tasks_per_gpu", fix_count, 0) or None
    if gpus_per_node:
        expected = 1 if launcher == "torchrun" else gpus_per_node
        one_rank = "slurm-gpu starts one task (rank) per GPU" + (", one per node under torchrun" if expected == 1 else "")
        if per_gpu is not None and per_gpu != 1 and launcher != "torchrun":
            raise ResourceError(rule, "tasks_per_gpu", f"is {per_gpu}", f"drop it: {one_rank}")
        # the official plugin reads tasks on a GPU rule as tasks per GPU (--ntasks-per-gpu)
        if tasks is not None and tasks not in (1, expected * nodes):
            raise ResourceError(rule, "tasks", f"is {tasks}, but the step has {gpus_per_node * nodes} GPU(s)",
                                f"drop tasks: {one_rank}")
        if per_node is not None and per_node != expected:
            raise ResourceError(rule, "tasks_per_node", f"is {per_node}, but the step puts {gpus_per_node} "
                                "GPU(s) on each node", f"drop tasks_per_node: {one_rank}")
        return Tasks(expected)
    if per_gpu is not None:
        raise ResourceError(rule, "tasks_per_gpu", f"is {per_gpu} but the rule asks for no GPUs",
                            "use tasks or tasks_per_node for a CPU rule")
    nodes_given = resources.get("nodes") is not None
    if per_node is not None:
        if tasks is not None and tasks != per_node * nodes:
            raise ResourceError(rule, "tasks", f"is {tasks}, but tasks_per_node={per_node} on {nodes} node(s) "
                                f"makes {per_node * nodes}", "set only one of tasks and tasks_per_node")
        return Tasks(per_node)
    if tasks is None or tasks == 1 and not nodes_given:
        return Tasks(1)
    if nodes_given and tasks % nodes == 0:
        return Tasks(tasks // nodes)
    return Tasks(1, ntasks=tasks, pin_nodes=nodes_given)


def cpus_request(rule: str, resources: Mapping[str, Any], threads: int, gpus_per_node: int) -> int:
    """CPUs per task (per rank for GPU steps); 0 leaves --cpus-per-task out. cpus_per_gpu is the
    same as cpus_per_task here, since every GPU has its own task."""
    value = resources.get("cpus_per_task")
    per_task = None
    if value is not None:
        # the official plugin omits the request for a negative value; 0 is refused by Slurm
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value < 0:
            return 0
        per_task = _as_count(rule, "cpus_per_task", value, 1, "set cpus_per_task to the CPUs each task needs, e.g. 4")
    per_gpu = resources.get("cpus_per_gpu")
    if per_gpu is not None:
        per_gpu = _as_count(rule, "cpus_per_gpu", per_gpu, 0, "set cpus_per_gpu to the CPUs each GPU's rank needs")
        if per_gpu and not gpus_per_node:
            raise ResourceError(rule, "cpus_per_gpu", f"is {per_gpu} but the rule asks for no GPUs",
                                "use cpus_per_task (or threads) for a CPU rule")
        if per_gpu and per_task is not None and per_task != per_gpu:
            raise ResourceError(rule, "cpus_per_gpu", f"is {per_gpu} but cpus_per_task is {per_task}",
                                "set only one: each GPU has its own task in slurm-gpu, so they mean the same")
        per_task = per_task or per_gpu or None
    if per_task is not None:
        return per_task
    return 1 if gpus_per_node else max(int(threads or 1), 1)


def clusters_request(rule: str, resources: Mapping[str, Any]) -> str | None:
    """The official plugin's clusters / cluster / slurm_cluster: Slurm's --clusters."""
    given = [(name, _as_text(rule, name, resources.get(name))) for name in CLUSTER_NAMES]
    given = [(name, value) for name, value in given if value is not None]
    if len({value for _, value in given}) > 1:
        raise ResourceError(rule, given[1][0], f"is {given[1][1]!r} but '{given[0][0]}' is {given[0][1]!r}",
                            "name the cluster(s) once")
    if not given:
        return None
    name, value = given[0]
    if not re.fullmatch(r"[A-Za-z0-9_.-]+(,[A-Za-z0-9_.-]+)*", value):
        raise ResourceError(rule, name, f"is {value!r}", "use cluster names as sacctmgr lists them, comma-separated")
    return value
