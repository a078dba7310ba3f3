"""What a Slurm job state means for a step (STATE_TABLE), and the batched status query per poll."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

from . import slurm
from .slurm import JobRecord, SlurmError


class Outcome(enum.StrEnum):
    ACTIVE = "active"            # queued, running, or being restarted by Slurm itself
    SUCCEEDED = "succeeded"
    FAILED = "failed"            # the step's own doing, or a cancel: never retried behind the user's back
    INTERRUPTED = "interrupted"  # stopped from outside (time limit, node, preemption): resumable
    HELD = "held"                # parked by Slurm until a person acts; would otherwise wait forever
    UNKNOWN = "unknown"          # a state this table does not know: wait, but not forever


# Every state squeue or sacct prints (Slurm 22.05 job_state_string + flags shown as states).
STATE_TABLE: dict[str, Outcome] = {
    "PENDING": Outcome.ACTIVE,
    "CONFIGURING": Outcome.ACTIVE,
    "RUNNING": Outcome.ACTIVE,
    "COMPLETING": Outcome.ACTIVE,
    "SUSPENDED": Outcome.ACTIVE,
    "STOPPED": Outcome.ACTIVE,
    "SIGNALING": Outcome.ACTIVE,
    "STAGE_OUT": Outcome.ACTIVE,
    "RESIZING": Outcome.ACTIVE,
    # requeued by Slurm (or by Lightning's `scontrol requeue`): same job id, back to PENDING shortly
    "REQUEUED": Outcome.ACTIVE,
    "REQUEUE_FED": Outcome.ACTIVE,
    "COMPLETED": Outcome.SUCCEEDED,
    "FAILED": Outcome.FAILED,
    "CANCELLED": Outcome.FAILED,
    "OUT_OF_MEMORY": Outcome.FAILED,
    "DEADLINE": Outcome.FAILED,
    "REVOKED": Outcome.FAILED,
    "TIMEOUT": Outcome.INTERRUPTED,
    "NODE_FAIL": Outcome.INTERRUPTED,
    "PREEMPTED": Outcome.INTERRUPTED,
    "BOOT_FAIL": Outcome.INTERRUPTED,
    # held after a requeue (requeue-hold or a RequeueExitHold exit code) or after a reservation
    # was deleted: only `scontrol release` moves them on
    "REQUEUE_HOLD": Outcome.HELD,
    "SPECIAL_EXIT": Outcome.HELD,
    "RESV_DEL_HOLD": Outcome.HELD,
}


@dataclass(frozen=True)
class Verdict:
    outcome: Outcome
    state: str      # the state word, e.g. CANCELLED
    detail: str     # everything Slurm said, for messages: "CANCELLED by 0, reason ..., exit 0:15"


def base_state(state: str) -> str:
    """'CANCELLED by 1000' -> 'CANCELLED'; 'RUNNING+' -> 'RUNNING'."""
    word = state.strip().split(" ", 1)[0] if state.strip() else ""
    return word.rstrip("+").upper()


def classify(record: JobRecord) -> Verdict:
    state = base_state(record.state)
    outcome = STATE_TABLE.get(state, Outcome.UNKNOWN)
    parts = [record.state]
    if record.reason:
        parts.append(f"reason {record.reason}")
    if record.exit_code and record.exit_code != "0:0":
        parts.append(f"exit code {record.exit_code}")
    if record.nodes:
        parts.append(f"nodes {record.nodes}")
    return Verdict(outcome, state, ", ".join(parts))


def _ended_badly(record: JobRecord) -> bool:
    return STATE_TABLE.get(base_state(record.state)) in (Outcome.FAILED, Outcome.INTERRUPTED)


Run = Callable[[Sequence[str]], str]

# above this many ids a poll lists all of the user's jobs instead of naming them
SQUEUE_ID_LIST_MAX = 2000
# sacct is asked for at most this many ids per call (only jobs that left the queue are asked about)
SACCT_CHUNK = 1000


@dataclass
class StatusQuery:
    """One batched look at many jobs: squeue for what the controller still holds, then one sacct
    for the ids that left the queue or ended badly (squeue knows no exit code). Never one call
    per job."""

    run: Run
    use_sacct: bool = True
    clusters: str | None = None  # slurm._on: set once any step went to a named cluster
    # after each call: the ids nobody could be asked about (they left the queue and sacct failed
    # transiently: slurmdbd restarting), and that failure. Such a job is not missing, only unheard of.
    unanswered: set[str] = field(default_factory=set)
    accounting_error: SlurmError | None = None
    _outage_said: bool = False

    def outage_news(self) -> str | None:
        """What to say of an accounting outage, once per outage: jobs that left the queue wait while
        sacct cannot answer."""
        if self.accounting_error is None:
            self._outage_said = False
            return None
        if self._outage_said:
            return None
        self._outage_said = True
        return (f"Slurm's accounting (sacct) does not answer; the {len(self.unanswered)} job(s) that left the "
                f"queue wait until it does: {self.accounting_error}")

    def records(self, job_ids: Iterable[str]) -> dict[str, JobRecord]:
        ids = sorted(set(job_ids), key=slurm.id_order)
        self.unanswered, self.accounting_error = set(), None
        if not ids:
            return {}
        if len(ids) > SQUEUE_ID_LIST_MAX:
            listed = slurm.parse_squeue(self.run(slurm.squeue_mine_argv(self.clusters)))
            wanted_ids = set(ids)
            found = {i: r for i, r in listed.items() if i in wanted_ids}
        else:
            try:
                found = slurm.parse_squeue(self.run(slurm.squeue_argv(ids, self.clusters)))
            except SlurmError as e:
                if not slurm.is_no_such_job(e):
                    raise
                found = {}
        wanted = [i for i in ids if i not in found or _ended_badly(found[i])]
        for start in range(0, len(wanted), SACCT_CHUNK):
            if not self.use_sacct:
                break
            try:
                found.update(slurm.parse_sacct(self.run(slurm.sacct_argv(wanted[start:start + SACCT_CHUNK], self.clusters))))
            except SlurmError as e:
                # without accounting, sacct says so and exits 1: squeue is all there is
                if "accounting storage is disabled" in (e.stderr + e.stdout):
                    self.use_sacct = False
                elif e.transient:
                    # squeue's records stand; the rest wait for the accounting daemon to be back
                    self.accounting_error = e
                    self.unanswered.update(i for i in wanted[start:] if i not in found)
                    break
                else:
                    raise
        return found
