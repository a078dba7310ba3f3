"""StepSpec + paths + command -> the text of a step's batch script. Pure: no I/O, so the same text
serves submission, previews and golden-file tests."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from typing import Sequence

from .contract import Env, EventKind
from .paths import StepPaths
from .slurm import STEP_COMMENT
from .spec import StepSpec

# sbatch splits #SBATCH lines itself: whitespace separates words, an unquoted '#' starts a
# comment and "'" opens a quote, so such values go in double quotes; inside those a backslash is
# still an escape and a double quote would end the value, so those cannot be written at all
_NEEDS_QUOTES = re.compile(r"[\s#']")
_UNRENDERABLE = re.compile(r'[\x00-\x08\x0a-\x1f\x7f\x85\u2028\u2029"\\]')


def _job_event(event: EventKind, fields: list[tuple[str, str, str]]) -> str:
    """A shell line that appends one events.py record from the batch shell itself: (key, printf
    format, shell value) per field after the common ones. Every value is digits, a safe step name or
    a Slurm node list, so printf makes valid JSON."""
    keys = "".join(f', "{key}": {fmt}' for key, fmt, _ in fields)
    values = "".join(f" {value}" for _, _, value in fields)
    head = '{"ts": %s, "event": "' + event + '", "step": "%s", "source": "job", "job_id": "%s"'
    return (f"printf '{head}{keys}}}\\n' \"$(date +%s.%N | cut -c1-14)\" \"$SLURM_GPU_STEP\" \"$SLURM_GPU_JOB_ID\""
            f'{values} >> "$SLURM_GPU_EVENT_LOG" || true')


# the "started" record, at every start of the job (also after each requeue)
_STARTED_EVENT = _job_event(EventKind.STARTED, [("nodes", '"%s"', '"$SLURM_JOB_NODELIST"'),
                                        ("num_nodes", "%d", '"${SLURM_JOB_NUM_NODES:-0}"'),
                                        ("restart", "%d", '"${SLURM_RESTART_COUNT:-0}"')])
# after the inner Snakemake: the executor reads this within a second and asks Slurm for the verdict
# at once instead of at its next poll (Slurm's word stays the verdict)
_ENDED_EVENT = _job_event(EventKind.ENDED, [("exit_code", "%d", '"$rc"')])
_ALREADY_FINISHED_EVENT = _job_event(EventKind.ALREADY_FINISHED, [("restart", "%d", '"${SLURM_RESTART_COUNT:-0}"')])


@dataclass(frozen=True)
class JobOptions:
    """Executor-wide choices that shape every batch script."""

    socket_ifname: str | None = None  # NCCL_SOCKET_IFNAME / GLOO_SOCKET_IFNAME
    job_name_prefix: str = "sg"
    qos: str | None = None          # executor-wide; a rule's qos wins
    reservation: str | None = None
    allocation: bool = False  # allocation mode (allocation.py): steps run inside Snakemake's salloc
    checkpoint_on_sigterm: bool = False  # resumable steps save on SIGTERM too (runtime/signals.py)
    debug: bool = False  # NCCL/torch.distributed debugging output and each rank's view of its world


def _directive(flag: str, value: object | None = None) -> str:
    """One #SBATCH line. sbatch reads these itself (no shell): whitespace needs double quotes,
    and a double quote or newline could not be represented at all."""
    if value is None:
        return f"#SBATCH {flag}"
    text = str(value)
    if _UNRENDERABLE.search(text):
        raise ValueError(f"cannot put {text!r} into an #SBATCH line for {flag}: it contains a newline or other "
                         "control character, double quote or backslash")
    if _NEEDS_QUOTES.search(text):
        text = f'"{text}"'
    return f"#SBATCH {flag}={text}"


def _extra_directive(word: str) -> str:
    if _UNRENDERABLE.search(word):
        raise ValueError(f"cannot put slurm_extra word {word!r} into an #SBATCH line")
    if _NEEDS_QUOTES.search(word):
        if word.startswith("-") and "=" in word:
            flag, value = word.split("=", 1)
            return f'#SBATCH {flag}="{value}"'
        return f'#SBATCH "{word}"'
    return f"#SBATCH {word}"


@dataclass(frozen=True)
class StepCommand:
    """What the batch script runs, already shell-quoted: the job-side Snakemake call, or (direct) a
    plain shell rule's own command (direct.py)."""

    text: str
    direct: bool = False


def render_directives(spec: StepSpec, paths: StepPaths, options: JobOptions, direct: bool = False) -> list[str]:
    """The #SBATCH lines, in a fixed order so that golden files stay stable."""
    # Slurm expands %-patterns in --output; only our own %j may be one
    log_dir = str(paths.log_dir).replace("%", "%%")
    lines = [
        _directive("--job-name", f"{options.job_name_prefix}-{spec.rule}"),
        _directive("--output", f"{log_dir}/%j.log"),
        # a requeued job restarts its batch script: append, so the first run's log survives
        _directive("--open-mode", "append"),
        _directive("--chdir", paths.root),
        _directive("--export", "ALL"),
    ]
    if spec.pin_nodes:
        lines.append(_directive("--nodes", spec.node_range))
    if spec.ntasks is not None:
        lines.append(_directive("--ntasks", spec.ntasks))
    else:
        lines.append(_directive("--ntasks-per-node", spec.tasks_per_node))
    if spec.gpus_per_node:
        # per node, not per task: with --gpus-per-task every rank sees one device and Lightning
        # miscounts the devices of the node
        gpus = f"{spec.gpu_model}:{spec.gpus_per_node}" if spec.gpu_model else spec.gpus_per_node
        lines.append(_directive("--gpus-per-node", gpus))
    if spec.gres:
        # one flag: sbatch keeps only the last --gres it reads
        lines.append(_directive("--gres", ",".join(spec.gres)))
    if spec.cpus_per_task:
        lines.append(_directive("--cpus-per-task", spec.cpus_per_task))
    if spec.mem_mb_per_cpu is not None:
        lines.append(_directive("--mem-per-cpu", spec.mem_mb_per_cpu))
    elif spec.mem_mb is not None:
        lines.append(_directive("--mem", spec.mem_mb))
    for flag, value in (("--time", spec.time_min), ("--partition", spec.partition),
                        ("--account", spec.account), ("--constraint", spec.constraint),
                        ("--qos", spec.qos or options.qos), ("--clusters", spec.clusters),
                        ("--reservation", options.reservation), ("--exclude", ",".join(spec.exclude) or None)):
        if value is not None:
            lines.append(_directive(flag, value))
    if spec.signal:
        # no B: prefix: the signal goes to the ranks (srun's tasks), not to the batch shell
        lines.append(_directive("--signal", f"{spec.signal}@{spec.signal_lead_s}"))
    if not spec.requeue:
        # requeue off: neither Slurm (preemption, node failure, scontrol requeue) nor slurm-gpu restarts it
        lines.append(_directive("--no-requeue"))
    elif spec.resumable:
        lines.append(_directive("--requeue"))
    elif direct:
        # Slurm would rerun the script over the outputs of the interrupted run: the executor
        # resubmits instead, after Snakemake has removed them
        lines.append(_directive("--no-requeue"))
    lines.append(_directive("--comment", f"{STEP_COMMENT}{paths.key}"))
    lines.extend(_extra_directive(word) for word in spec.extra)
    return lines


def _job_id_lines(allocation: bool) -> list[str]:
    if allocation:  # a job step of Snakemake's own allocation, whatever that allocation was
        return [f'export {Env.JOB_ID}="$SLURM_JOB_ID"']
    return [
        "# the id the executor follows this job by (contract.job_id): an array task's is <array id>_<task id>",
        f'if [ -n "${{SLURM_ARRAY_TASK_ID:-}}" ]; then {Env.JOB_ID}="${{SLURM_ARRAY_JOB_ID}}_${{SLURM_ARRAY_TASK_ID}}"; '
        f'else {Env.JOB_ID}="$SLURM_JOB_ID"; fi',
        f"export {Env.JOB_ID}",
    ]


def render_environment(spec: StepSpec, paths: StepPaths, options: JobOptions) -> list[str]:
    """Exports every rank inherits through srun: the geometry the executor asked for (the runtime
    helper cross-checks it against the allocation), the checkpoint directory, and the DDP rendezvous."""
    q = shlex.quote
    lines = [
        "export PYTHONFAULTHANDLER=1",
        f"export {Env.STEP}={q(paths.key)}",
        *_job_id_lines(options.allocation),
        f"export {Env.NODES}={spec.nodes}",
        *([f"export {Env.MIN_NODES}={spec.min_nodes}"] if spec.min_nodes is not None else []),
        f"export {Env.GPUS_PER_NODE}={spec.gpus_per_node}",
        f"export {Env.TASKS_PER_NODE}={spec.tasks_per_node}",
        f"export {Env.CHECKPOINT_DIR}={q(str(paths.checkpoint_dir))}",
        *([f"export {Env.REQUEUE_SIGNAL}={spec.signal}"] if spec.signal else []),
        *([f"export {Env.CHECKPOINT_ON_TERM}=1"] if spec.resumable and options.checkpoint_on_sigterm else []),
        # (no variable for the launcher: a process knows torchrun started it from torchrun's own variables)
        f"export {Env.EVENT_LOG}={q(str(paths.event_log))}",
        # private whatever the job's umask; the subshell keeps the rule's own files under its umask
        f'(umask 077 && mkdir -p "${Env.CHECKPOINT_DIR}")',
    ]
    if spec.cpus_per_task:
        # srun of Slurm 22.05 to 23.02 does not inherit the job's --cpus-per-task: every rank would
        # be bound to one CPU where the site uses task/affinity
        lines.append(f"export SRUN_CPUS_PER_TASK={spec.cpus_per_task}")
    if spec.distributed:
        lines += [
            "# one rank that dies ends the step at once: the others would wait in their next collective",
            "# until the process group's timeout (30 minutes in Lightning)",
            "export SLURM_KILL_BAD_EXIT=1",
            f"export {Env.HEARTBEAT_DIR}={q(str(paths.heartbeat_dir))}",
            f'(umask 077 && mkdir -p "${Env.HEARTBEAT_DIR}")',
        ]
    if options.debug and (spec.distributed or spec.uses_gpus):
        lines += [
            "# --slurm-gpu-debug: NCCL's and torch.distributed's own diagnostics, and every rank prints its",
            "# view of the world at start (slurm-gpu's runtime: the Lightning observer, Session)",
            f"export NCCL_DEBUG=INFO TORCH_DISTRIBUTED_DEBUG=DETAIL TORCH_CPP_LOG_LEVEL=INFO {Env.DEBUG}=1",
        ]
    if (spec.distributed or spec.uses_gpus) and options.allocation:
        lines += [
            "# allocation mode: Slurm picks this step's nodes when srun starts; the runtime takes rank 0's",
            "# host from the step's node list and a port from its step id",
            f"export {Env.ALLOCATION}=1",
        ]
    elif spec.distributed or spec.uses_gpus:
        lines += [
            "# rank 0 runs on the first host of the allocation",
            'MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)',
            "export MASTER_ADDR",
            "# Lightning's own formula (15000 + last 4 digits of the job id): the same port whichever side",
            "# computes it, and the same again after a requeue",
            "export MASTER_PORT=$(( 15000 + 10#$(printf '%s' \"$SLURM_JOB_ID\" | tail -c 4) ))",
        ]
        if options.socket_ifname:
            ifname = q(options.socket_ifname)
            lines.append(f"export NCCL_SOCKET_IFNAME={ifname} GLOO_SOCKET_IFNAME={ifname}")
    return lines


def inner_command_line(words: Sequence[object], general_args: str = "", precommand: str = "") -> str:
    """The job-side Snakemake call as one shell line: every word of ours quoted with shlex (wildcards
    and paths are user data), then Snakemake's own pre-formatted general arguments."""
    command = " ".join([shlex.quote(str(w)) for w in words] + ([general_args] if general_args else [])
                       + ["--mode", "remote"])
    return f"{precommand} && {command}" if precommand else command


def render_batch_script(spec: StepSpec, paths: StepPaths, command: StepCommand | str, options: JobOptions) -> str:
    """The whole batch script. `command`: what runs in it (a plain string is a job-side Snakemake call)."""
    if isinstance(command, str):
        command = StepCommand(command)
    lines = [
        "#!/bin/bash",
        f"# slurm-gpu: step {paths.key} (rule {spec.rule}); submitted on the standard input of sbatch --parsable",
        *render_directives(spec, paths, options, direct=command.direct),
        "",
        *render_environment(spec, paths, options),
        "",
        'echo "[slurm-gpu] job $SLURM_JOB_ID on $SLURM_JOB_NODELIST, restart ${SLURM_RESTART_COUNT:-0}, $(date -Is)"',
        "# one event per start, also after each requeue (every value here is digits, a safe step name or a",
        "# Slurm node list, so printf makes valid JSON)",
        _STARTED_EVENT,
        *(["# the site's set-up (setting setup, resource slurm_setup), in every job of the step", spec.setup]
          if spec.setup else []),
        "# the step runs in the batch step itself, with the SLURM_* environment intact, so the rule's",
        "# own srun gets the whole allocation",
        *(_run_once(command.text, paths) if spec.requeue and spec.resumable and not options.allocation
          else [command.text, "rc=$?"]),
        _ENDED_EVENT,
        "exit $rc",
        "",
    ]
    return "\n".join(lines)


def _run_once(command: str, paths: StepPaths) -> list[str]:
    """The command of a job Slurm may requeue, run at most once to a successful end. Slurm 24.05 and
    later record a job that ends within a preemption's GraceTime as PREEMPTED and requeue it, and a
    job once preempted and requeued (by its own requeue request too) counts so at its next end, even
    a successful one: the finished step would run again over its outputs."""
    finished = shlex.quote(str(paths.finished_dir))
    return [
        f'finished={finished}/"$SLURM_JOB_ID"',
        'if [ -e "$finished" ]; then',
        '  echo "[slurm-gpu] the step finished in an earlier run of job $SLURM_JOB_ID; Slurm requeued the job after that: not run again"',
        f"  {_ALREADY_FINISHED_EVENT}",
        "  rc=0",
        "else",
        f"  {command}",
        "  rc=$?",
        f'  if [ "$rc" = 0 ]; then (umask 077 && mkdir -p {finished} && : > "$finished"); fi',
        "fi",
    ]
