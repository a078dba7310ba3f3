"""Rule resources -> StepSpec: what one step asks of Slurm, checked before anything is submitted.

Every check raises ResourceError naming the rule, the resource, the value and the fix. Nothing here
does I/O. The checks that need more than the resources (wildcards, the shell command, the cluster's
partitions) are in preflight.py, and importable from here too.
"""

from __future__ import annotations

import re
import shlex
import signal
from dataclasses import dataclass, field
from typing import Any, Mapping

from . import resources as res
# the checks beyond the resources live in preflight.py; importable from here as they always were
from .preflight import (WildcardError, check_capacity, check_launch, check_target_wildcards,  # noqa: F401
                        launch_warning)
from .resources import _FORBIDDEN_IN_DIRECTIVE, ResourceError, _as_count, _as_text  # noqa: F401 (re-exported)

# Flags that the executor itself sets from resources or needs for its own bookkeeping: a copy in
# slurm_extra would either clash with them or silently break the step geometry.
MANAGED_FLAGS: dict[str, str] = {
    "--job-name": "", "-J": "",
    "--output": "", "-o": "", "--error": "", "-e": "",
    "--open-mode": "", "--parsable": "", "--export": "", "--chdir": "", "-D": "",
    "--comment": "", "--wrap": "",
    "--account": "slurm_account", "-A": "slurm_account",
    "--partition": "slurm_partition", "-p": "slurm_partition",
    "--time": "runtime", "-t": "runtime",
    "--mem": "mem_mb", "--mem-per-cpu": "mem_mb_per_cpu", "--mem-per-gpu": "mem_mb_per_cpu",
    "--nodes": "nodes", "-N": "nodes",
    "--ntasks": "tasks", "-n": "tasks", "--ntasks-per-node": "tasks_per_node",
    "--ntasks-per-gpu": "tasks_per_gpu",
    "--cpus-per-task": "cpus_per_task", "-c": "cpus_per_task", "--cpus-per-gpu": "cpus_per_gpu",
    "--gpus": "gpus", "-G": "gpus", "--gpus-per-node": "gpus", "--gpus-per-task": "gpus",
    "--gres": "gres",
    "--constraint": "constraint", "-C": "constraint", "--qos": "qos", "-q": "qos",
    "--clusters": "clusters", "-M": "clusters",
    "--signal": "", "--requeue": "", "--no-requeue": "",
}

@dataclass(frozen=True)
class ClusterInfo:
    """What the partitions offer, from one `sinfo` per run."""

    gpus_per_node: Mapping[str, int]  # partition -> largest GPU count of one of its nodes
    default_partition: str | None = None
    # partition -> (most CPUs, most memory in MB of one of its nodes); None or absent: not known
    sizes: Mapping[str, tuple[int | None, int | None]] = field(default_factory=dict)


@dataclass(frozen=True)
class StepSpec:
    """One step's Slurm geometry and limits: the single source of the #SBATCH lines and of the
    num_nodes/devices a training script sees."""

    rule: str
    nodes: int = 1
    # an elastic step (resource min_nodes < nodes): Slurm may start any run of it on min_nodes..nodes
    # nodes (--nodes=min-max); `nodes`, and so `gpus`, stay the full size. None: always `nodes`.
    min_nodes: int | None = None
    gpus_per_node: int = 0
    tasks_per_node: int = 1
    cpus_per_task: int = 1  # 0: no --cpus-per-task (a negative cpus_per_task, as the official plugin has it)
    # a CPU rule's `tasks` (MPI and multi-task rules): Slurm spreads them over nodes itself, pinned to
    # `nodes` only when the rule gave a node count
    ntasks: int | None = None
    pin_nodes: bool = True
    gres: tuple[str, ...] = ()  # generic resources other than GPUs (tmpspace:10G), per node
    clusters: str | None = None  # Slurm's --clusters (multi-cluster sites): every Slurm call then names them
    exclude: tuple[str, ...] = ()  # nodes where this step's job failed (executor: reuse-failed-nodes)
    mem_mb: int | None = None
    mem_mb_per_cpu: int | None = None
    time_min: int | None = None
    partition: str | None = None
    account: str | None = None
    constraint: str | None = None
    qos: str | None = None
    gpu_model: str | None = None
    extra: tuple[str, ...] = field(default_factory=tuple)
    # GPU steps are training steps: they checkpoint, so Slurm may requeue them in place and
    # slurm-gpu resubmits them after a time-out; Slurm warns them `signal_lead_s` before the time
    # limit (and at preemption) with `signal`, unless the rule set signal_lead_s=0 or its runtime is
    # too short for the executor-wide lead (build_spec)
    resumable: bool = False
    signal: str | None = None
    signal_lead_s: int | None = None
    # "srun": one task per GPU, each a rank; "torchrun": one task per node, whose torchrun starts
    # one rank per GPU (runtime/torchrun.py)
    launcher: str = "srun"
    # False (resource requeue=0, setting no-requeue): --no-requeue, no requeue signal, and a stop from
    # outside fails the step instead of a requeue or resubmission
    requeue: bool = True
    # "why requeue is off", for the message of a stop that fails the step
    requeue_off_by: str | None = None
    # the site's set-up lines (setting setup, resource slurm_setup), run in the batch script before
    # the step in every job of it
    setup: str | None = None

    @property
    def gpus(self) -> int:
        return self.nodes * self.gpus_per_node

    @property
    def node_range(self) -> str:
        """Slurm's --nodes value: `min-max` for an elastic step."""
        return f"{self.min_nodes}-{self.nodes}" if self.min_nodes is not None else str(self.nodes)

    @property
    def ranks_per_node(self) -> int:
        """Training processes per node: the tasks, or under torchrun the processes it spawns."""
        return self.gpus_per_node if self.launcher == "torchrun" else self.tasks_per_node

    @property
    def distributed(self) -> bool:
        """A step whose ranks need `srun`: several GPUs or several nodes."""
        return self.gpus > 1 or self.nodes > 1

    @property
    def uses_gpus(self) -> bool:
        return self.gpus > 0

    @property
    def cores(self) -> int:
        """CPUs of the batch step's node that the job-side Snakemake may use ({threads} is capped
        there), at least 1: what Slurm gives the job, not the node's hardware count."""
        tasks = self.ntasks if self.ntasks is not None else self.tasks_per_node
        return max(self.cpus_per_task, 1) * max(tasks, 1)

    @property
    def layout(self) -> str:
        """How the step's job is laid out, for the line that names its job."""
        text = f"{self.node_range} node(s) x {self.tasks_per_node} task(s)"
        if self.launcher == "torchrun":
            text += f" with torchrun starting {self.ranks_per_node} rank(s) each"
        if self.gpus:
            text += f", {self.gpus_per_node} GPU(s) per node"
        return text


def _managed_owner(flag: str) -> str | None:
    """The resource that owns `flag`, "" for flags slurm-gpu sets itself, None if unmanaged.
    sbatch parses with getopt_long, which takes any unambiguous prefix of a long option
    (--part=debug is --partition), so prefixes of managed flags are managed too."""
    if flag in MANAGED_FLAGS:
        return MANAGED_FLAGS[flag]
    if re.fullmatch(r"-[A-Za-z].+", flag) and flag[:2] in MANAGED_FLAGS:  # -pdebug, -N2
        return MANAGED_FLAGS[flag[:2]]
    if flag.startswith("--") and len(flag) > 2:
        for managed, owner in MANAGED_FLAGS.items():
            if managed.startswith(flag):
                return owner
    return None


def parse_slurm_extra(rule: str, value: Any) -> tuple[str, ...]:
    """Split slurm_extra into argv words (shell-like quoting, no expansion) and refuse managed flags."""
    if value is None or value == "":
        return ()
    text = str(value)
    try:
        words = tuple(shlex.split(text, comments=False, posix=True))
    except ValueError as e:
        raise ResourceError(rule, "slurm_extra", f"is {text!r}, which cannot be split into words ({e})",
                            "close the quotes in slurm_extra") from None
    for word in words:
        if _FORBIDDEN_IN_DIRECTIVE.search(word):
            raise ResourceError(rule, "slurm_extra", f"contains the word {word!r} with a newline or other control "
                                "character, double quote or backslash", "remove those characters")
        flag = word.split("=", 1)[0]
        if not flag.startswith("-"):
            continue
        owner = _managed_owner(flag)
        if owner is not None:
            shown = flag[:2] if not flag.startswith("--") else flag  # -N2 is -N
            fix = f"use the resource '{owner}' instead" if owner else "remove it: slurm-gpu sets this flag itself"
            raise ResourceError(rule, "slurm_extra", f"contains {shown}, which slurm-gpu manages", fix)
    return words


# Signals a training process can catch and act on. Not TERM: Slurm sends SIGTERM for every kill, so
# it cannot also mean "checkpoint and requeue"; not KILL/STOP: they cannot be caught.
LAUNCHERS = ("srun", "torchrun")

REQUEUE_SIGNALS = ("USR1", "USR2", "HUP", "INT", "QUIT", "ALRM", "URG")

# sbatch(1) on --signal: "the signal may be sent up to 60 seconds earlier than specified"
SIGNAL_SLACK_S = 60
# Training a step must get between its start and the earliest time the warning may come: starting the
# ranks (imports, CUDA and NCCL set-up, loading the checkpoint) alone takes tens of seconds, and a step
# warned before it has trained at all checkpoints, requeues and is warned again at once, for ever.
MIN_TRAIN_S = 60


def max_signal_lead_s(time_min: int) -> int:
    """The longest lead that still leaves a step of `time_min` minutes MIN_TRAIN_S of training, even
    if Slurm sends the warning SIGNAL_SLACK_S early (below 1: no lead fits)."""
    return time_min * 60 - MIN_TRAIN_S - SIGNAL_SLACK_S - 1


def check_signal(name: object) -> str:
    """'SIGUSR1' / 'usr1' / '10' -> 'USR1' (the form sbatch --signal takes)."""
    text = str(name).strip().upper()
    if text.isdigit():
        try:
            text = signal.Signals(int(text)).name
        except ValueError:
            pass
    text = text.removeprefix("SIG")
    if text not in REQUEUE_SIGNALS:
        raise ValueError(f"requeue signal {name!r} cannot be used: a training process must be able to catch it "
                         f"and SIGTERM is what Slurm kills with. HINT: use one of {', '.join(REQUEUE_SIGNALS)} "
                         "(Lightning's SLURMEnvironment listens for USR1)")
    return text


_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def _as_switch(rule: str, name: str, value: object) -> bool | None:
    """A yes/no resource: True/False, 1/0, "true"/"false", "yes"/"no", "on"/"off"; None when unset."""
    if value is None:
        return None
    text = str(value).strip().lower()
    if isinstance(value, bool) or text in _TRUE + _FALSE:
        return bool(value) if isinstance(value, bool) else text in _TRUE
    raise ResourceError(rule, name, f"is {value!r}", f"set {name}=0 or {name}=1")


# the set-up lines go into the batch script as they are: a NUL cannot, and a carriage return would
# hide the rest of its line from whoever reads the script
_BAD_SETUP = re.compile(r"[\x00\r]")


def _setup_lines(rule: str, name: str, value: object) -> str | None:
    if value is None or str(value).strip() == "":
        return None
    if not isinstance(value, str):
        raise ResourceError(rule, name, f"is {value!r}", f"set {name} to the shell lines to run, as a string")
    if _BAD_SETUP.search(value):
        raise ResourceError(rule, name, "contains a NUL or carriage return", "write plain shell lines")
    return value.strip("\n")


def _min_nodes(rule: str, value: Any, nodes: int, tasks: res.Tasks) -> int | None:
    """The fewest nodes an elastic step may run on; None for a step that always runs on `nodes`."""
    if value is None:
        return None
    fewest = _as_count(rule, "min_nodes", value, 1, f"set min_nodes to a whole number from 1 to nodes={nodes}")
    if fewest > nodes:
        raise ResourceError(rule, "min_nodes", f"is {fewest}, more than nodes={nodes}",
                            f"set min_nodes to at most {nodes}: nodes is the step's full size, min_nodes the "
                            "fewest nodes it may run on")
    if tasks.ntasks is not None or not tasks.pin_nodes:
        raise ResourceError(rule, "min_nodes", "is set, but the step's tasks are a total (tasks) that Slurm "
                            "spreads over nodes, not a number per node, so a smaller node count would change "
                            "the task count itself", "give the tasks per node (tasks_per_node, or gpus), or drop "
                            "min_nodes")
    return None if fewest == nodes else fewest


def build_spec(rule: str, resources: Mapping[str, Any], threads: int = 1, requeue_signal: str = "USR1",
               signal_lead_s: int = 90, no_requeue: bool = False, setup: str | None = None) -> StepSpec:
    """Turn a rule's resources into a StepSpec, raising ResourceError on anything unsubmittable.
    `requeue_signal`/`signal_lead_s` are the executor-wide defaults for GPU steps; a rule may set
    its own lead with the resource signal_lead_s. A rule's lead that leaves its runtime less than
    MIN_TRAIN_S of training is refused; the executor-wide lead is dropped (no signal) on such a step."""
    nodes = resources.get("nodes")
    nodes = 1 if nodes is None else _as_count(rule, "nodes", nodes, 1, "set nodes to a whole number >= 1")
    gpus, gpu_model, gres = res.gpu_request(rule, resources, nodes)
    if gpus % nodes:
        lower, upper = (gpus // nodes) * nodes, (gpus // nodes + 1) * nodes
        options = " or ".join(str(g) for g in (lower, upper) if g > 0)
        raise ResourceError(rule, "gpus", f"is {gpus}, which is not divisible by nodes={nodes}",
                            f"use gpus={options} (gpus is the total of the step, split evenly over its nodes)")
    gpus_per_node = gpus // nodes
    launcher = _as_text(rule, "launcher", resources.get("launcher")) or "srun"
    if launcher not in LAUNCHERS:
        raise ResourceError(rule, "launcher", f"is {launcher!r}",
                            "use launcher=\"srun\" (one task per GPU, the default) or launcher=\"torchrun\" "
                            "(one task per node; torchrun starts one process per GPU)")
    if launcher == "torchrun" and not gpus:
        raise ResourceError(rule, "launcher", "is 'torchrun' but the rule asks for no GPUs, so torchrun would "
                            "have no process to start on each node", "set gpus, or drop launcher")
    # one task (rank) per GPU; under torchrun one task per node, which holds all the node's ranks
    tasks = res.task_request(rule, resources, nodes, gpus_per_node, launcher)
    min_nodes = _min_nodes(rule, resources.get("min_nodes"), nodes, tasks)
    cpus_per_task = res.cpus_request(rule, resources, threads, gpus_per_node)
    if launcher == "torchrun":
        cpus_per_task *= gpus_per_node  # cpus_per_task is per rank; torchrun's one task holds them all
    mem_mb = resources.get("mem_mb")
    mem_mb_per_cpu = resources.get("mem_mb_per_cpu")
    # 0 asks for nothing (Snakemake's tests use --default-resources mem_mb=0 so); Slurm's --mem=0 would
    # be the whole node's memory
    if mem_mb_per_cpu is not None:
        mem_mb_per_cpu = _as_count(rule, "mem_mb_per_cpu", mem_mb_per_cpu, 0, "set mem_mb_per_cpu in MB, e.g. 2000") or None
    if mem_mb_per_cpu is not None:
        mem_mb = None  # Slurm refuses both; per-CPU is the more specific wish
    elif mem_mb is not None:
        mem_mb = _as_count(rule, "mem_mb", mem_mb, 0, "set mem_mb in MB per node, e.g. 16000") or None
    runtime = resources.get("runtime")
    time_min = None if runtime is None else _as_count(
        rule, "runtime", runtime, 1, "set runtime in minutes, e.g. runtime=120")
    if gpu_model is not None and not re.fullmatch(r"[A-Za-z0-9_.-]+", gpu_model):
        raise ResourceError(rule, "gpu_model", f"is {gpu_model!r}",
                            "use the GPU type as Slurm's gres.conf names it, e.g. a100")
    if not gpus:
        gpu_model = None  # a default gpu_model (--default-resources) must not make CPU rules unsubmittable
    lead = resources.get("signal_lead_s")
    lead_s = _as_count(rule, "signal_lead_s", signal_lead_s if lead is None else lead, 0,
                       "set signal_lead_s to the seconds a checkpoint needs, e.g. 90, or 0 for no signal") \
        if gpus else 0
    if lead_s > 65535:  # Slurm keeps the lead in 16 bits
        raise ResourceError(rule, "signal_lead_s", f"is {lead_s}, above Slurm's limit of 65535 seconds",
                            "use a lead of at most 65535 seconds")
    if lead_s and time_min is not None and lead_s > max_signal_lead_s(time_min):
        if lead is None:
            # The executor-wide lead (setting signal-lead-s) is one value for every GPU rule, so it
            # cannot fit every runtime: a step too short for it (with the default 90 s, runtime <= 3)
            # gets no signal instead, and stays resumable (requeued by Slurm, resubmitted after a
            # time-out, from its periodic checkpoints). Not refused: the rule never asked for this lead
            # (smoke tests with runtime=1 must run). Not shrunk: a shorter lead than the setting's is
            # less than the checkpoint time the setting promises, and would vary with the runtime.
            lead_s = 0
        else:
            longest = max_signal_lead_s(time_min)
            needed = -(-(lead_s + SIGNAL_SLACK_S + MIN_TRAIN_S + 1) // 60)  # minutes, rounded up
            lower = f"lower signal_lead_s to at most {longest}, " if longest > 0 else ""
            raise ResourceError(
                rule, "signal_lead_s",
                f"is {lead_s}, but runtime is {time_min} minute(s) ({time_min * 60} s) and Slurm may send the "
                f"warning up to {SIGNAL_SLACK_S} s early, which leaves less than {MIN_TRAIN_S} s of training "
                "before the step checkpoints and requeues itself, so it would requeue for ever",
                f"{lower}raise runtime to at least {needed} minutes, or set signal_lead_s=0 for no signal")
    requeue_resource = _as_switch(rule, "requeue", resources.get("requeue"))
    requeue = (not no_requeue) if requeue_resource is None else requeue_resource
    requeue_off_by = None if requeue else ("resource requeue=0" if requeue_resource is False
                                           else "setting --slurm-gpu-no-requeue")
    rule_setup = _setup_lines(rule, "slurm_setup", resources.get("slurm_setup"))
    site_setup = _setup_lines(rule, "setup", setup)
    return StepSpec(
        rule=rule,
        nodes=nodes,
        min_nodes=min_nodes,
        gpus_per_node=gpus_per_node,
        tasks_per_node=tasks.tasks_per_node,
        cpus_per_task=cpus_per_task,
        ntasks=tasks.ntasks,
        pin_nodes=tasks.pin_nodes,
        gres=gres,
        clusters=res.clusters_request(rule, resources),
        mem_mb=mem_mb,
        mem_mb_per_cpu=mem_mb_per_cpu,
        time_min=time_min,
        partition=_partitions(rule, resources.get("slurm_partition")),
        account=_as_text(rule, "slurm_account", resources.get("slurm_account")),
        constraint=_as_text(rule, "constraint", resources.get("constraint")),
        qos=_as_text(rule, "qos", resources.get("qos")),
        gpu_model=gpu_model,
        extra=parse_slurm_extra(rule, resources.get("slurm_extra")),
        resumable=bool(gpus),
        signal=check_signal(requeue_signal) if gpus and lead_s and requeue else None,
        signal_lead_s=(lead_s or None) if requeue else None,
        launcher=launcher,
        requeue=requeue,
        requeue_off_by=requeue_off_by,
        # the executor's lines first (modules, environments), then the rule's own
        setup="\n".join(part for part in (site_setup, rule_setup) if part) or None,
    )


def _partitions(rule: str, value: Any) -> str | None:
    """slurm_partition: one name or a comma-separated list (Slurm starts the job in whichever of them
    can run it first)."""
    text = _as_text(rule, "slurm_partition", value)
    if text is None:
        return None
    names = [name.strip() for name in text.split(",")]
    if not all(names) or any(re.search(r"\s", name) for name in names):
        raise ResourceError(rule, "slurm_partition", f"is {text!r}",
                            "name one partition, or several separated by commas, e.g. gpu,gpu-long")
    return ",".join(names)
