"""How a job's ranks ended, read from what Slurm wrote: srun's own lines in the job's log ("srun: error:
n2: task 3: Killed") and the states of the job's steps in Slurm's accounting (OUT_OF_MEMORY).

With kill-on-bad-exit (the batch script sets it for distributed steps) the first rank to die is the
cause and srun ends the others ("Terminated"): the failure message names that rank, its node and
what killed it. A rank that died of the requeue signal slurm-gpu asked Slurm to send was stopped by
the cluster (a time-limit warning or preemption notice the script did not handle), not by a bug:
policy.decide treats that job as preempted. Pure: text in, facts out.
"""

from __future__ import annotations

import re
import signal
from dataclasses import dataclass
from typing import Iterable

from .contract import Env
from .slurm import UsageRecord

# Slurm 22.05 to 26.05: "srun: error: n2: task 3: Killed", "srun: error: n1: tasks 0-1: Terminated"
_SRUN_ERROR = re.compile(r"^srun: error: (?P<node>[^\s:]+): tasks? (?P<tasks>[0-9][0-9,\- ]*): (?P<what>.+?)\s*$")
# the batch script's first line at every start of the job (batch_script.render_batch_script)
_RUN_START = re.compile(r"^\[slurm-gpu\] job \S+ on \S+, restart \d+")
# srun's word for the ranks it ended itself after the first one died
_COLLATERAL = {"Terminated", "Killed"}


@dataclass(frozen=True)
class RankEnd:
    node: str
    ranks: str   # srun's task ids, which are the global ranks: "3", "0-1"
    what: str    # "Killed", "Exited with exit code 1", "Out Of Memory", "User defined signal 1", ...

    def text(self) -> str:
        several = any(c in self.ranks for c in ",-")
        return f"{'ranks' if several else 'rank'} {self.ranks} on {self.node}: {self.what}"


def last_run(log_text: str) -> str:
    """The part of a job's log written by its latest start (a requeued job appends to the same log)."""
    lines = log_text.splitlines()
    for i in range(len(lines) - 1, -1, -1):
        if _RUN_START.match(lines[i]):
            return "\n".join(lines[i:])
    return log_text


def rank_ends(log_text: str) -> list[RankEnd]:
    """srun's lines about ranks that did not exit 0, in the order srun printed them."""
    ends = []
    for line in log_text.splitlines():
        match = _SRUN_ERROR.match(line.strip())
        if match:
            ends.append(RankEnd(match["node"], match["tasks"].replace(" ", ""), match["what"]))
    return ends


def signal_words(signum: int) -> str:
    """How srun (strsignal) names a signal: SIGUSR1 -> 'User defined signal 1'."""
    return signal.strsignal(signum) or signal.Signals(signum).name


def killed_by(ends: Iterable[RankEnd], signum: int) -> bool:
    """Did a rank die of `signum`?"""
    words = signal_words(signum)
    return any(end.what == words for end in ends)


def stopped_by_cluster(ends: list[RankEnd], requeue_signal: int | None) -> str:
    """What the cluster stopped these ranks with, or "" when it was not the cluster: a rank that died
    of the requeue signal (`requeue_signal`, which slurm-gpu asked Slurm to send), or a first rank
    to end of SIGTERM (preemption without the requeue signal; scancel and the time limit end in
    CANCELLED and TIMEOUT, which the caller tells apart). srun's own SIGTERM to the others after a
    rank died (kill-on-bad-exit) comes after that rank's line, never first."""
    if requeue_signal is not None and killed_by(ends, requeue_signal):
        return f"the requeue signal ({signal.Signals(requeue_signal).name}) that Slurm sends before the time limit and at preemption"
    if ends and ends[0].what == signal_words(signal.SIGTERM):
        return "SIGTERM (preemption without the requeue signal, or the node shutting down)"
    return ""


def out_of_memory(steps: Iterable[UsageRecord]) -> list[str]:
    """Job steps that Slurm's accounting says ran out of memory ("0", "batch")."""
    return [record.step or "job" for record in steps if record.state.startswith("OUT_OF_MEMORY")]


def describe(ends: list[RankEnd], oom_steps: list[str]) -> str | None:
    """One sentence for a failure message, or None when Slurm said nothing of the ranks."""
    parts = []
    if ends:
        first = ends[0]
        parts.append(f"{first.text()} (the first rank to end)")
        rest = [end for end in ends[1:] if end.what not in _COLLATERAL]
        if rest:
            parts.append("then " + "; ".join(end.text() for end in rest))
        if any(end.what in _COLLATERAL for end in ends[1:]):
            parts.append("srun then ended the other ranks (kill-on-bad-exit)")
    if oom_steps:
        parts.append(f"Slurm's accounting: job step {', '.join(oom_steps)} ran out of memory (OUT_OF_MEMORY): "
                     "raise mem_mb or mem_mb_per_cpu")
    return "; ".join(parts) or None


def explain(log_text: str, signal_name: str | None, resumable: bool,
            usage: Iterable[UsageRecord]) -> tuple[str | None, str]:
    """(what ended a failed job's ranks, for its message; the cluster's signal they died of, or "")
    from the job's log, the requeue signal the step asked Slurm for and its steps' accounting."""
    ends = rank_ends(last_run(log_text))
    requeue_signal = None
    if signal_name:
        from .runtime.signals import requeue_signal as named  # torch-free

        try:
            requeue_signal = named({Env.REQUEUE_SIGNAL: signal_name})
        except (KeyError, ValueError):
            pass
    killed = stopped_by_cluster(ends, requeue_signal) if resumable else ""
    return describe(ends, out_of_memory(usage)), killed
