"""Each rank's heartbeat: what the job side and the executor's stall watchdog (stall.py) tell each
other about progress in the middle of a run.

One small JSON file per rank, `$SLURM_GPU_HEARTBEAT_DIR/rank-<N>.json`, rewritten in place (write,
rename) every `$SLURM_GPU_HEARTBEAT_S` seconds by a thread of the rank process: not the event log,
which every reader reads whole and which a 256-rank world beating every 10 s would grow by 14 MB an
hour. The thread runs while the rank's main thread is blocked in a collective, so a rank whose file
stops changing is stopped (SIGSTOP, a hung driver call holding the interpreter) or gone with its node,
while a rank whose file changes but whose `progress` does not is waiting for someone.

Fields of a heartbeat:
    ts           float, time.time() of the write
    rank, node, pid, job_id, restart
    progress     batches done in this process (training, validation, test, predict): any advance
    progress_ts  when `progress` last advanced (None before the first batch)
    max_gap_s    the longest wait between two advances so far: the step's own pace, checkpoints included
    global_step  the trainer's step, for the user
    state        "running" | "done" (this rank finished its work: silence after it means nothing)
    stack        the main thread's innermost frames, "file:line in function", innermost last

Torch-free: imported by the executor and, in the job, by runtime code.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .atomic import atomic_write_text

DIR_ENV = "SLURM_GPU_HEARTBEAT_DIR"
# seconds between beats; set in Snakemake's environment, it reaches the ranks (--export=ALL) and the
# executor alike, which judges silence by the same interval
INTERVAL_ENV = "SLURM_GPU_HEARTBEAT_S"
DEFAULT_INTERVAL_S = 10.0


def path(directory: Path, rank: int) -> Path:
    return Path(directory) / f"rank-{rank}.json"


def write(directory: Path, beat: dict[str, Any]) -> None:
    """Replace this rank's file at once: a reader never sees half a heartbeat."""
    # no fsync: every rank rewrites its file every few seconds, and an fsync each time (two with the
    # directory's) would load a shared filesystem for nothing: after a crash of the node the
    # heartbeat is stale anyway, and the next write replaces it
    atomic_write_text(path(directory, int(beat["rank"])), json.dumps(beat), fsync=False)


def read_all(directory: Path) -> list[dict[str, Any]]:
    """Every rank's latest heartbeat in `directory` (unreadable or foreign files skipped)."""
    beats = []
    try:
        files = sorted(Path(directory).glob("rank-*.json"))
    except OSError:
        return []
    for file in files:
        try:
            beat = json.loads(file.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(beat, dict) and isinstance(beat.get("rank"), int):
            beats.append(beat)
    return beats


def clear(directory: Path) -> None:
    """Forget the heartbeats of earlier jobs of a step (before a new one starts)."""
    for file in Path(directory).glob("rank-*.json"):
        file.unlink(missing_ok=True)


def interval_s(environ: dict[str, str] | None = None) -> float:
    value = (environ if environ is not None else os.environ).get(INTERVAL_ENV)
    try:
        return max(float(value), 0.5) if value else DEFAULT_INTERVAL_S
    except ValueError:
        return DEFAULT_INTERVAL_S
