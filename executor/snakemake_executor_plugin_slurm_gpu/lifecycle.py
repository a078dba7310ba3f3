"""A step's life between its first submission and its verdict, owned in one place.

`advance(life, observation, now, rules) -> (life, effects)` is pure: the executor turns what it
sees (a submission it made, Slurm's answer to a poll, a run that started, the hang and stall
watchdogs' findings) into observations, and carries out the effects in order (emit an event, say a
line, cancel, resubmit, report). "How does a preemption become a resubmission?" is answered here and
in policy.py, which maps one Slurm verdict to an action; nowhere else.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Union

from .policy import Act, Budgets, Limits, StepHistory, Stop, decide, on_stall
from .slurm import JobRecord
from .stall import Stall
from .status import Outcome, Verdict
from .watchdog import Hang

# a job that ended so: its nodes are kept out of the step's resubmission (unless reuse-failed-nodes)
NODE_FAILURES = ("NODE_FAIL", "BOOT_FAIL")
# a job that was running and is back in one of these under the same id was requeued by Slurm
_RAN = ("RUNNING", "COMPLETING")
_BACK_IN_QUEUE = ("PENDING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD")


@dataclass(frozen=True)
class StepRules:
    """What the step's spec and the executor's settings fix for its whole life."""

    resumable: bool = False        # it checkpoints: a time-out or preemption is worth another job
    requeue: bool = True           # submitted with --requeue (unless its job runs the command directly)
    requeue_off: str | None = None  # why no stop from outside may restart it (requeue=0, no-requeue)
    elastic: bool = False          # submitted with a node range (min_nodes)
    budgets: Budgets = field(default_factory=Budgets)
    limits: Limits = field(default_factory=Limits)


@dataclass(frozen=True)
class StepLife:
    """One step's state. `job_id` is its current Slurm job; `live` while that job may still run."""

    key: str
    job_id: str | None = None
    job_ids: tuple[str, ...] = ()
    live: bool = False
    direct: bool = False           # the current job runs the command itself (--no-requeue)
    timeouts: int = 0              # resubmissions after a time-out
    preemptions: int = 0           # ... after a preemption, node failure or stall
    stalls: int = 0                # jobs the stall watchdog cancelled
    seen: tuple[Outcome | None, float] | None = None  # the current job's outcome, and since when
    queue_state: str = ""          # the current job's last state word ("RUNNING" once a run of it started)
    run_restart: int | None = None  # the restart count of the current job's newest run that started
    pending_reason: str = ""       # the current run's last pending reason said
    unknown_said: frozenset[str] = frozenset()  # unknown states said for the current job

    def history(self) -> StepHistory:
        """The view policy.py takes."""
        return StepHistory(list(self.job_ids), {Stop.TIMEOUT: self.timeouts, Stop.PREEMPTION: self.preemptions},
                           self.stalls)


# ---------------------------------------------------------------- observations
@dataclass(frozen=True)
class Submitting:
    """The executor is about to submit a job for the step (first time, --retries, resubmission)."""


@dataclass(frozen=True)
class Submitted:
    job_id: str
    direct: bool = False
    stop: Stop | None = None       # set when it replaces a job stopped from outside (the budget drawn on)


@dataclass(frozen=True)
class Reattached:
    """The step's job of an earlier Snakemake still runs: it is followed instead of a new one."""

    job_id: str


@dataclass(frozen=True)
class RunStarted:
    """The current job's batch script started (again, after a requeue): its `started` record. The
    job is running, whatever the last poll said: once Slurm lists it queued again, that run ended."""

    restart: int | None = None


@dataclass(frozen=True)
class Polled:
    """Slurm's answer for the current job (None: neither squeue nor sacct knows it)."""

    verdict: Verdict | None
    record: JobRecord | None = None
    checkpointed_for_requeue: bool = False  # its training saved on the requeue signal and stopped
    stopped_by_signal: str = ""             # its ranks died of the cluster's signal (ending.py)
    ranks_ended: str | None = None          # how the ranks ended, for a failure's message


@dataclass(frozen=True)
class Hung:
    hang: Hang
    timeout_s: float


@dataclass(frozen=True)
class Stalled:
    stall: Stall


Observation = Union[Submitting, Submitted, Reattached, RunStarted, Polled, Hung, Stalled]


# ---------------------------------------------------------------- effects
@dataclass(frozen=True)
class Emit:
    """An executor event in the step's event log."""

    kind: str
    job_id: str | None
    fields: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Say:
    text: str
    warn: bool = False


@dataclass(frozen=True)
class Cancel:
    job_ids: tuple[str, ...]


@dataclass(frozen=True)
class Widen:
    """Ask Slurm again for an elastic step's node range: a requeued job keeps the node and task count of
    the run it had, and would wait for that many nodes instead of starting on the ones that are free."""

    job_id: str


@dataclass(frozen=True)
class Resubmit:
    """A new job for the step; it resumes from its checkpoints. `exclude_nodes`: where the old one failed."""

    reason: str
    stop: Stop
    exclude_nodes: str = ""


@dataclass(frozen=True)
class Succeed:
    pass


@dataclass(frozen=True)
class Fail:
    reason: str
    ranks_ended: str | None = None


Effect = Union[Emit, Say, Cancel, Widen, Resubmit, Succeed, Fail]


def _ended(life: StepLife, **changes: Any) -> StepLife:
    return dataclasses.replace(life, live=False, seen=None, **changes)


def advance(life: StepLife, obs: Observation, now: float,
            rules: StepRules = StepRules()) -> tuple[StepLife, list[Effect]]:
    """The step's next state and what to do about `obs`."""
    match obs:
        case Submitting():
            if not life.live or life.job_id is None:
                return life, []
            # one live Slurm job per step, whatever asks for another one (a resubmission, --retries)
            return _ended(life), [Say("still queued or running; cancelling it before submitting the step again",
                                      warn=True), Cancel((life.job_id,))]
        case Submitted(job_id=job_id, direct=direct, stop=stop):
            counts = {}
            if stop is Stop.TIMEOUT:
                counts["timeouts"] = life.timeouts + 1
            elif stop is Stop.PREEMPTION:
                counts["preemptions"] = life.preemptions + 1
            return _fresh_job(life, job_id, direct, **counts), []
        case Reattached(job_id=job_id):
            return _fresh_job(life, job_id, False), [Emit("reattached", job_id)]
        case RunStarted(restart=restart):
            return dataclasses.replace(life, queue_state="RUNNING", pending_reason="", run_restart=restart), []
        case Polled():
            return _polled(life, obs, now, rules)
        case Hung(hang=hang, timeout_s=timeout_s):
            job = _current(life)
            return _ended(life), [
                Cancel((job,)),
                Emit("watchdog", job, {"missing_ranks": hang.missing_ranks, "missing_nodes": hang.missing_nodes,
                                       "joined": hang.joined, "expected": hang.expected, "why": hang.why}),
                Fail(f"{hang.message(timeout_s)} (the watchdog's limit is --slurm-gpu-rendezvous-timeout-s)")]
        case Stalled(stall=found):
            return _stalled(life, found, rules)
    raise TypeError(f"not an observation: {obs!r}")


def _current(life: StepLife) -> str:
    if life.job_id is None:
        raise ValueError(f"step {life.key} has no job")
    return life.job_id


def _fresh_job(life: StepLife, job_id: str, direct: bool, **changes: Any) -> StepLife:
    return dataclasses.replace(life, job_id=job_id, job_ids=(*life.job_ids, job_id), live=True, direct=direct,
                               seen=None, queue_state="", pending_reason="", unknown_said=frozenset(),
                               run_restart=None, **changes)


def _queue(life: StepLife, verdict: Verdict, record: JobRecord,
           rules: StepRules) -> tuple[StepLife, list[Effect]]:
    """What the queue says besides the verdict: a requeue, a new pending reason, a state unknown here."""
    job = _current(life)
    effects: list[Effect] = []
    if verdict.outcome is Outcome.UNKNOWN and verdict.state not in life.unknown_said:
        life = dataclasses.replace(life, unknown_said=life.unknown_said | {verdict.state})
        effects.append(Say(f"state '{verdict.detail}' is unknown to slurm-gpu; waiting up to {rules.limits.missing_s:g} s "
                           "(--slurm-gpu-missing-job-timeout-s) for a state it knows", warn=True))
    if life.queue_state in _RAN and verdict.state in _BACK_IN_QUEUE:
        # the explicit end of the run that last started (the timeline closes exactly that one)
        ended = {"restart": life.run_restart} if life.run_restart is not None else {}
        effects += [Emit("requeued", job, {"state": verdict.state, **ended}),
                    Say("requeued by Slurm, same job id; it restarts when scheduled"),
                    *([Widen(job)] if rules.elastic else [])]
    life = dataclasses.replace(life, queue_state=verdict.state)
    if verdict.state == "PENDING" and record.reason and record.reason != life.pending_reason:
        life = dataclasses.replace(life, pending_reason=record.reason)
        effects += [Emit("pending", job, {"reason": record.reason}), Say(f"pending ({record.reason})")]
    return life, effects


def _polled(life: StepLife, obs: Polled, now: float, rules: StepRules) -> tuple[StepLife, list[Effect]]:
    job = _current(life)
    verdict, record = obs.verdict, obs.record
    effects: list[Effect] = []
    if verdict is not None and record is not None:
        life, effects = _queue(life, verdict, record, rules)
    outcome = verdict.outcome if verdict is not None else None
    if life.seen is None or life.seen[0] != outcome:
        life = dataclasses.replace(life, seen=(outcome, now))
    assert life.seen is not None
    action = decide(verdict, now - life.seen[1], rules.limits, life.history(), rules.budgets, rules.resumable,
                    obs.checkpointed_for_requeue, requeueable=rules.requeue and not life.direct,
                    stopped_by_signal=obs.stopped_by_signal, requeue_off=rules.requeue_off)
    if action.act is Act.WAIT:
        return life, effects
    life = _ended(life)
    if action.act is Act.RESUBMIT:
        assert action.stop is not None
        failed = record.nodes if record is not None and verdict is not None and verdict.state in NODE_FAILURES else ""
        return life, [*effects, Resubmit(action.reason, action.stop, failed)]
    if action.act is Act.SUCCEED:
        return life, [*effects, Emit("completed", job, {"state": verdict.state if verdict else "",
                                                        "exit_code": record.exit_code if record else ""}), Succeed()]
    if action.act is Act.CANCEL_AND_FAIL:
        effects.append(Cancel((job,)))
    return life, [*effects,
                  Emit("failed", job, {"state": verdict.state if verdict else "UNKNOWN",
                                       "reason": record.reason if record else "",
                                       "exit_code": record.exit_code if record else "", "message": action.reason}),
                  Fail(action.reason, obs.ranks_ended)]


def _stalled(life: StepLife, found: Stall, rules: StepRules) -> tuple[StepLife, list[Effect]]:
    """A stalled job is cancelled; its step resubmitted without the stalled nodes, or failed (policy.on_stall)."""
    job = _current(life)
    action = on_stall(found.message(), life.history(), rules.budgets, rules.requeue_off)
    life = _ended(life, stalls=life.stalls + 1)
    stalled = Emit("stalled", job, {
        "idle_s": round(found.idle_s, 1), "limit_s": round(found.limit_s, 1), "global_step": found.global_step,
        "silent": found.silent, "missing": found.missing,
        "waiting": [{"rank": r["rank"], "node": r["node"], "where": (r["stack"] or ["?"])[-1]} for r in found.waiting],
        "action": str(action.act)})
    if action.act is Act.RESUBMIT:
        return life, [stalled, Resubmit(action.reason, Stop.PREEMPTION, ",".join(found.nodes))]
    return life, [stalled, Cancel((job,)),
                  Emit("failed", job, {"state": "STALLED", "reason": "", "exit_code": "", "message": action.reason}),
                  Fail(action.reason)]


def live_jobs(lives: Any) -> set[str]:
    """The job ids that may still run, of an iterable of StepLife: what a Ctrl-C must cancel."""
    return {life.job_id for life in lives if life.live and life.job_id is not None}
