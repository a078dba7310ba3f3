"""The hang watchdog: a distributed step whose ranks have not all formed the process group within
`timeout_s` of the job's start is a hang (Lightning would wait 30 minutes at "Initializing
distributed", then fail without saying who was missing). Pure: the executor feeds it the events of
the job's current run and the clock, and acts on the verdict.

Armed only when the step's ranks announce themselves (`rank_started`, written by the runtime's
Resumable callback): a script that does not use the runtime gives no evidence either way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from .rank_ranges import span  # noqa: F401 - also watchdog.span, as before


@dataclass(frozen=True)
class Hang:
    expected: int
    joined: list[int]            # ranks that formed the process group
    missing_ranks: list[int]     # ranks that never did
    missing_nodes: list[str]     # nodes of the missing ranks that announced themselves
    why: str                     # the likely cause, for the user

    def message(self, timeout_s: float) -> str:
        return (f"the distributed step did not start: {len(self.missing_ranks)} of {self.expected} ranks "
                f"({_ranges(self.missing_ranks)}) had not joined the process group after {timeout_s:.0f} s"
                + (f" (nodes: {', '.join(self.missing_nodes)})" if self.missing_nodes else "")
                + f"; slurm-gpu cancelled the job. Likely cause: {self.why}")


def _ranges(ranks: list[int]) -> str:
    """[0, 1, 2, 5] -> 'ranks 0-2, 5'."""
    if not ranks:
        return "none"
    return ("rank " if len(ranks) == 1 else "ranks ") + span(ranks)


def check(run_events: Iterable[Mapping[str, Any]], world_size: int, tasks_per_node: int, started_ts: float,
          now: float, timeout_s: float) -> Hang | None:
    """A Hang if the run that started at `started_ts` has not formed its world of `world_size`
    ranks by `timeout_s` after it; None while there is still time, when the world formed, or when
    no rank announced itself (nothing to judge by)."""
    if timeout_s <= 0 or world_size <= 1 or now - started_ts < timeout_s:
        return None
    started: dict[int, Mapping[str, Any]] = {}
    ready: set[int] = set()
    for event in run_events:
        rank = event.get("rank")
        if not isinstance(rank, int):
            continue
        if event.get("event") == "rank_started":
            started[rank] = event
        elif event.get("event") == "rank_ready":
            ready.add(rank)
    if not started or len(ready) >= world_size:
        return None
    missing = [r for r in range(world_size) if r not in ready]
    never_started = [r for r in missing if r not in started]
    nodes = sorted({str(started[r].get("node")) for r in missing if r in started})
    unresolved = {str(e.get("node")): (e.get("master_addr"), e.get("master_error"))
                  for e in started.values() if e.get("master_error")}
    if unresolved:
        addr, error = unresolved[sorted(unresolved)[0]]
        why = (f"node(s) {', '.join(sorted(unresolved))} cannot resolve the master address {addr!r} ({error}); "
               "check name resolution and the network between the nodes (--slurm-gpu-socket-ifname picks the "
               "interface)")
    elif never_started:
        why = (f"{_ranges(never_started)} never started: srun launched fewer tasks than the {world_size} the step "
               f"was submitted for ({tasks_per_node} per node), or they crashed before training; start the ranks "
               "with a plain `srun python ...` and see the log for errors")
    else:
        why = ("every rank started but the process group never formed: the training script's own world does not "
               "match the allocation (Trainer devices/num_nodes other than slurm-gpu's trainer_kwargs(): devices "
               f"must be {tasks_per_node} per node), or the nodes cannot reach MASTER_ADDR:MASTER_PORT")
    return Hang(world_size, sorted(ready), missing, nodes, why)
