"""Job arrays (setting array-jobs): ready steps of one rule that ask Slurm for the same thing go in
one `sbatch --array`, one task per step. Pure: which rules, which steps share an array, and the
array's batch script.

Each task runs exactly its own step's batch script, the text a single submission would have sent,
so everything a step's script does (events, the run-once guard, the checkpoint directory, the
environment) holds per task. The array's script carries all of them: Slurm keeps it, a requeued task
runs the same text again, and no file on the shared file system can be swapped in between. A task
is known everywhere by `<array id>_<task id>` (contract.job_id), as squeue, sacct, scancel and
scontrol name it; its log is the step's own log file under that name.
"""

from __future__ import annotations

import secrets
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence, TypeVar

from .batch_script import _directive
from .slurm_output import ARRAY_COMMENT

# the array's own script holds every task's: well below Slurm's max_script_size (4 MB by default)
MAX_ARRAY_SCRIPT_BYTES = 1 << 20
# a task's script reaches `bash -c` as one argument: Linux takes at most 128 KiB in one
MAX_TASK_SCRIPT_BYTES = 100_000
# tasks per array when Slurm's MaxArraySize is not known (its default is 1001: ids 0 to 1000)
DEFAULT_MAX_TASKS = 1000

# the lines of a step's script that are the step's own, not the array's
_OWN_DIRECTIVES = ("#SBATCH --output=", "#SBATCH --comment=")


class ArraySettingError(ValueError):
    """The array-jobs setting names something that is not a rule of the workflow."""


def selection(setting: str | None, rules: Sequence[str] | None = None) -> frozenset[str]:
    """The rules whose steps go in arrays: `all`, or a list separated by commas (or semicolons,
    as the official plugin takes it); empty when the setting is off. `rules`, when given, are the
    workflow's: a name that is none of them is refused rather than silently never matching."""
    if not setting:
        return frozenset()
    names = frozenset(n.strip() for n in setting.replace(";", ",").split(",") if n.strip())
    if rules is not None and "all" not in names:
        unknown = sorted(names - set(rules))
        if unknown:
            raise ArraySettingError(
                f"array-jobs names {', '.join(repr(n) for n in unknown)}, which {'is' if len(unknown) == 1 else 'are'} "
                f"not a rule of this workflow. Fix: --slurm-gpu-array-jobs=all, or a comma-separated list of "
                f"rule names (the workflow's rules: {', '.join(sorted(rules)) or 'none'})")
    return names


def wanted(selected: frozenset[str], rule: str, is_group: bool) -> bool:
    """Does a step of `rule` go in an array? Group jobs never do: each is a job of its own."""
    return not is_group and ("all" in selected or rule in selected)


def shared_directives(script: str) -> tuple[str, ...]:
    """The #SBATCH lines of a step's batch script that the array takes: all but the step's own log
    and comment. Steps whose lines are equal ask Slurm for the same thing."""
    return tuple(line for line in script.splitlines()
                 if line.startswith("#SBATCH ") and not line.startswith(_OWN_DIRECTIVES))


@dataclass(frozen=True)
class Task:
    key: str          # the step (StepPaths.key)
    script: str       # its batch script, as a single submission would send it
    log_dir: Path     # where its log goes: <log_dir>/<array id>_<task id>.log


T = TypeVar("T")


def arrays_of(items: Sequence[T], scripts: Sequence[str], max_tasks: int,
              max_bytes: int = MAX_ARRAY_SCRIPT_BYTES) -> tuple[list[list[T]], list[T]]:
    """(arrays, alone): `items` (with their scripts) cut into arrays of steps with equal shared
    directives, in their order, each at most `max_tasks` tasks and `max_bytes` of script; an item
    whose script is too big for an array, or left alone in its group, goes alone."""
    groups: dict[tuple[str, ...], list[tuple[T, str]]] = {}
    alone: list[T] = []
    for item, script in zip(items, scripts):
        if len(script.encode()) > MAX_TASK_SCRIPT_BYTES:
            alone.append(item)
        else:
            groups.setdefault(shared_directives(script), []).append((item, script))
    arrays: list[list[T]] = []
    for members in groups.values():
        current: list[T] = []
        size = 0
        for item, script in members:
            if current and (len(current) >= max_tasks or size + len(script.encode()) > max_bytes):
                arrays.append(current)
                current, size = [], 0
            current.append(item)
            size += len(script.encode())
        arrays.append(current)
    singles = [a[0] for a in arrays if len(a) == 1]
    return [a for a in arrays if len(a) > 1], alone + singles


def render_array_script(rule: str, tasks: Sequence[Task], array_log_dir: Path, concurrency: int | None = None,
                        token: str | None = None) -> str:
    """The batch script of one job array: the tasks' shared #SBATCH lines, the array's own, then a
    branch per task that sends the task's output to its step's log and runs the step's script."""
    if len(tasks) < 2:
        raise ValueError("an array holds at least two steps")
    directives = shared_directives(tasks[0].script)
    if any(shared_directives(t.script) != directives for t in tasks[1:]):
        raise ValueError("the steps of one array must share their #SBATCH lines")
    token = token or secrets.token_hex(8)
    end = f"SLURM_GPU_TASK_{token}"
    if any(end in t.script for t in tasks):
        raise ValueError("a step's script holds the here-document's end marker")
    limit = f"%{concurrency}" if concurrency else ""
    lines = [
        "#!/bin/bash",
        f"# slurm-gpu: job array of {len(tasks)} steps of rule {rule}; task i runs step i's own batch script",
        *directives,
        f"#SBATCH --array=0-{len(tasks) - 1}{limit}",
        # Slurm's own notes about a task (time limit, cancel) land here; the task's output goes to its step's log
        _directive("--output", str(array_log_dir).replace("%", "%%") + "/%A_%a.log"),
        _directive("--comment", f"{ARRAY_COMMENT}{tasks[0].key}"),
        "",
        'case "$SLURM_ARRAY_TASK_ID" in',
    ]
    for index, task in enumerate(tasks):
        lines += [
            f"{index})  # step {task.key}",
            f"  slurm_gpu_log={shlex.quote(str(task.log_dir))}",
            f"  IFS= read -r -d '' slurm_gpu_script <<'{end}'",
            task.script.rstrip("\n"),
            end,
            "  ;;",
        ]
    lines += [
        '*) echo "[slurm-gpu] array task $SLURM_ARRAY_TASK_ID has no step" >&2; exit 1 ;;',
        "esac",
        'exec >>"$slurm_gpu_log/${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}.log" 2>&1',
        'exec /bin/bash -c "$slurm_gpu_script" slurm-gpu-step',
        "",
    ]
    return "\n".join(lines)
