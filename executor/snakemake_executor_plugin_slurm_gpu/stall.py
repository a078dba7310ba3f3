"""The stall watchdog: a distributed step whose ranks stopped making progress in the middle of a run.

A rank that stops (SIGSTOP, a hung GPU, a stuck file-system read, a half-dead node) leaves every
other rank waiting in the next collective: the job stays RUNNING and prints nothing until the
process group's timeout (30 minutes in Lightning), then fails. Pure: the executor feeds it the
ranks' heartbeats (heartbeat.py) of the job's current run and the clock, and acts on the verdict.

The limit comes from the step's own pace: the longest wait between two advances any rank has seen
so far (validation, checkpoint writes and epoch ends included), times a factor, above a floor. A
rank that has gone silent while the others still beat is strong evidence and gets the shorter limit;
every rank alive but none advancing (a hung collective, a slow file system) the longer one. Armed
only after the first batch: a slow start is the rendezvous watchdog's and the data loader's business.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from .watchdog import span

# silent rank(s): max(floor, factor x pace); everyone alive and waiting: the same, longer
SILENT_FLOOR_S, SILENT_FACTOR = 60.0, 5.0
WAITING_FLOOR_S, WAITING_FACTOR = 300.0, 10.0
# a heartbeat older than this many intervals (plus slack for a slow shared file system) is silence
SILENT_INTERVALS, SILENT_SLACK_S = 3.0, 10.0


@dataclass(frozen=True)
class Stall:
    idle_s: float                 # since the last advance of any rank
    limit_s: float
    derived: bool                 # the limit came from the pace, not the setting
    global_step: int | None
    silent: list[dict[str, Any]]  # ranks whose heartbeat stopped: {"rank", "node", "silent_s", "stack"}
    waiting: list[dict[str, Any]]  # ranks alive but not advancing: {"rank", "node", "stack"}
    missing: list[int]            # ranks that never beat while others did

    @property
    def nodes(self) -> list[str]:
        """Where the trouble is: the silent ranks' nodes (never the nodes of ranks that only wait)."""
        return sorted({str(r["node"]) for r in self.silent if r.get("node")})

    def message(self) -> str:
        limit = (f"{self.limit_s:.0f} s, from the step's pace" if self.derived
                 else f"{self.limit_s:.0f} s, --slurm-gpu-stall-timeout-s")
        at = f" at step {self.global_step:,}" if isinstance(self.global_step, int) else ""
        parts = [f"training stalled{at}: no rank advanced for {self.idle_s:.0f} s (limit {limit})"]
        for rank in self.silent:
            # a stopped process gives no stack: its last heartbeat's is where it was last seen
            seen = f", last seen in {rank['stack'][-1]}" if rank.get("stack") else ""
            parts.append(f"rank {rank['rank']} on {rank['node']} stopped answering (no heartbeat for "
                         f"{rank['silent_s']:.0f} s{seen}: the process is stopped or hung in a call that holds "
                         "the interpreter, or its node is unreachable)")
        if self.missing:
            parts.append(f"{'rank' if len(self.missing) == 1 else 'ranks'} {span(self.missing)} never reported")
        if self.waiting:
            by_place: dict[str, list[int]] = {}
            for rank in self.waiting:
                place = rank["stack"][-1] if rank.get("stack") else "an unknown place"
                by_place.setdefault(place, []).append(int(rank["rank"]))
            for place, ranks in sorted(by_place.items(), key=lambda item: min(item[1])):
                parts.append(f"{'rank' if len(ranks) == 1 else 'ranks'} {span(ranks)} "
                             f"{'waits' if len(ranks) == 1 else 'wait'} in {place}")
        return "; ".join(parts)


def limit_for(pace_s: float, silent: bool, setting_s: float | None) -> tuple[float, bool]:
    """(limit, derived): the setting when given, else from the pace."""
    if setting_s is not None and setting_s > 0:
        return float(setting_s), False
    if silent:
        return max(SILENT_FLOOR_S, SILENT_FACTOR * pace_s), True
    return max(WAITING_FLOOR_S, WAITING_FACTOR * pace_s), True


def check(beats: Iterable[Mapping[str, Any]], world_size: int, job_id: str, started_ts: float, now: float,
          interval_s: float, setting_s: float | None = None) -> Stall | None:
    """A Stall if the ranks of the run of `job_id` that started at `started_ts` stopped advancing for
    longer than the limit; None while they advance, before the first batch, once any rank finished
    (the end of a run is not a stall), or with the watchdog off (setting 0)."""
    if setting_s == 0 or world_size <= 1:
        return None
    current = [b for b in beats if str(b.get("job_id")) == str(job_id) and float(b.get("ts") or 0) >= started_ts]
    if not current or any(b.get("state") == "done" for b in current):
        return None
    advanced = [float(b["progress_ts"]) for b in current if isinstance(b.get("progress_ts"), (int, float))]
    if not advanced:
        return None
    last_advance = max(advanced)
    idle = now - last_advance
    pace = max(float(b.get("max_gap_s") or 0) for b in current)
    silent_after = SILENT_INTERVALS * interval_s + SILENT_SLACK_S
    silent = [{"rank": int(b["rank"]), "node": b.get("node"), "silent_s": now - float(b.get("ts") or 0),
               "stack": list(b.get("stack") or [])}
              for b in current if now - float(b.get("ts") or 0) > silent_after]
    seen = {int(b["rank"]) for b in current}
    missing = [r for r in range(world_size) if r not in seen]
    limit, derived = limit_for(pace, bool(silent or missing), setting_s)
    if idle < limit:
        return None
    silent_ranks = {r["rank"] for r in silent}
    waiting = [{"rank": int(b["rank"]), "node": b.get("node"), "stack": list(b.get("stack") or [])}
               for b in current if int(b["rank"]) not in silent_ranks]
    steps = [b.get("global_step") for b in current if isinstance(b.get("global_step"), int)]
    return Stall(idle, limit, derived, max(steps) if steps else None, sorted(silent, key=lambda r: r["rank"]),
                 sorted(waiting, key=lambda r: r["rank"]), missing)
