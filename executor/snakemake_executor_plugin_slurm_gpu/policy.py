"""Pure decisions: what the executor does about a job, given what Slurm says and for how long it has
said it (lifecycle.py keeps that time and the step's history, and feeds them in). Every "no"
carries its reason."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from .status import Outcome, Verdict


class Act(enum.StrEnum):
    WAIT = "wait"
    SUCCEED = "succeed"
    FAIL = "fail"
    CANCEL_AND_FAIL = "cancel_and_fail"  # the job would otherwise sit in Slurm forever
    RESUBMIT = "resubmit"                # a new Slurm job for the same step; it resumes from its checkpoints


class Stop(enum.StrEnum):
    """Why an attempt ended from outside; each kind has its own budget."""

    TIMEOUT = "timeout"
    PREEMPTION = "preemption"  # preempted, node failure, boot failure: the cluster's doing


@dataclass(frozen=True)
class Action:
    act: Act
    reason: str = ""
    stop: Stop | None = None  # with RESUBMIT: which budget it draws on


@dataclass(frozen=True)
class Budgets:
    """Resubmissions allowed per step, per kind of stop (executor settings)."""

    preemptions: int = 10
    timeouts: int = 3


@dataclass
class StepHistory:
    """What happened to one step so far in this run."""

    job_ids: list[str] = field(default_factory=list)
    resubmitted: dict[Stop, int] = field(default_factory=dict)
    stalls: int = 0  # jobs of the step that the stall watchdog cancelled

    def count(self, stop: Stop) -> int:
        return self.resubmitted.get(stop, 0)


_BUDGET_SETTING = {Stop.TIMEOUT: "--slurm-gpu-max-timeouts", Stop.PREEMPTION: "--slurm-gpu-max-preemptions"}


def _resubmit_or_fail(verdict: Verdict, stop: Stop, history: StepHistory, budgets: Budgets,
                      how: str | None = None) -> Action:
    allowed = budgets.timeouts if stop is Stop.TIMEOUT else budgets.preemptions
    used = history.count(stop)
    stopped = f"Slurm job stopped from outside ({verdict.detail}{'; ' + how if how else ''})"
    if used < allowed:
        return Action(Act.RESUBMIT, f"{stopped}; resubmitting ({stop} {used + 1} of {allowed}), training resumes "
                                    "from its last checkpoint", stop)
    return Action(Act.FAIL, f"{stopped} and the {stop} budget is spent "
                            f"({used} resubmissions of {allowed}); raise {_BUDGET_SETTING[stop]} to allow more", stop)


@dataclass(frozen=True)
class Limits:
    # Slurm requeues a preempted or node-failed job within seconds when it will at all (the
    # requeue hold is cred_expire + 1 s); a state that outlives this is final
    settle_s: float = 60.0
    # a job that neither squeue nor sacct knows, or that sits in a state this version does not
    # know, is waited for this long before the step is failed
    missing_s: float = 600.0


def decide(verdict: Verdict | None, held_for_s: float, limits: Limits, history: StepHistory | None = None,
           budgets: Budgets | None = None, resumable: bool = False,
           checkpointed_for_requeue: bool = False, requeueable: bool = True,
           stopped_by_signal: str = "", requeue_off: str | None = None) -> Action:
    """The action for one job whose status has been `verdict` for `held_for_s` seconds.
    `resumable`: the step checkpoints (a GPU step), so a time-out is worth another attempt.
    `requeueable`: Slurm may requeue the job itself (not submitted with --no-requeue), so a
    preemption or node failure is waited on for a moment before the step is resubmitted.
    `checkpointed_for_requeue`: the job's training wrote a checkpoint on Slurm's requeue signal and
    stopped on purpose (its marker names this job), so a FAILED end is an interruption, not an error.
    `stopped_by_signal`: what the job's ranks died of when that was the cluster's doing (ending.py):
    the requeue signal slurm-gpu asked Slurm to send (a time-limit warning or preemption notice the
    script did not take), or SIGTERM to a job nobody cancelled and that did not time out (preemption
    without the requeue signal: its GraceTime ran while the batch script ended on its own).
    `requeue_off`: why the step may not be restarted from outside (resource requeue=0, setting
    no-requeue): every stop from outside then fails it."""
    history = history or StepHistory()
    budgets = budgets or Budgets()
    if verdict is None:
        if held_for_s < limits.missing_s:
            return Action(Act.WAIT)
        return Action(Act.FAIL, f"Slurm has not known this job for {held_for_s:.0f} s (neither squeue nor sacct "
                                "lists it)")
    match verdict.outcome:
        case Outcome.ACTIVE:
            return Action(Act.WAIT)
        case Outcome.SUCCEEDED:
            return Action(Act.SUCCEED)
        case Outcome.FAILED:
            if requeue_off and (checkpointed_for_requeue or stopped_by_signal) and verdict.state != "CANCELLED":
                return requeue_off_failure(verdict.detail, requeue_off)
            if checkpointed_for_requeue and verdict.state != "CANCELLED":
                return _resubmit_or_fail(verdict, Stop.PREEMPTION, history, budgets)
            if stopped_by_signal and verdict.state != "CANCELLED":
                return _resubmit_or_fail(verdict, Stop.PREEMPTION, history, budgets,
                                         f"its ranks died of {stopped_by_signal}")
            return Action(Act.FAIL, f"Slurm job ended {verdict.detail}")
        case Outcome.HELD:
            return Action(Act.CANCEL_AND_FAIL,
                          f"Slurm holds the job ({verdict.detail}) until someone runs `scontrol release`; "
                          "it was cancelled so that it cannot start later beside a new attempt")
        case Outcome.INTERRUPTED:
            if requeue_off:
                return requeue_off_failure(verdict.detail, requeue_off)
            if verdict.state in ("PREEMPTED", "NODE_FAIL") and requeueable and held_for_s < limits.settle_s:
                return Action(Act.WAIT)  # Slurm may still requeue it
            if verdict.state == "TIMEOUT":
                if not resumable:
                    return Action(Act.FAIL, f"Slurm job reached its time limit ({verdict.detail}); the step does "
                                            "not checkpoint, so it is not resubmitted: raise its runtime", Stop.TIMEOUT)
                return _resubmit_or_fail(verdict, Stop.TIMEOUT, history, budgets)
            return _resubmit_or_fail(verdict, Stop.PREEMPTION, history, budgets)
        case _:
            if held_for_s < limits.missing_s:
                return Action(Act.WAIT)
            return Action(Act.FAIL, f"Slurm reports a state slurm-gpu does not know ({verdict.detail}) for "
                                    f"{held_for_s:.0f} s")


def requeue_off_failure(what: str, by: str) -> Action:
    """A stop from outside (`what`: Slurm's state) of a step that may not be restarted."""
    return _requeue_off(f"Slurm job stopped from outside ({what})", by)


def _requeue_off(lead: str, by: str) -> Action:
    return Action(Act.FAIL, f"{lead}; requeue is off for this step ({by}), so neither Slurm nor slurm-gpu "
                            "restarts it. HINT: set the rule's resource requeue=1 (or drop --slurm-gpu-no-requeue) "
                            "to have such a stop requeue or resubmit it, resuming from its checkpoints")


def on_stall(diagnosis: str, history: StepHistory, budgets: Budgets, requeue_off: str | None = None) -> Action:
    """A job whose training stalled (stall.py) was cancelled: the first stall of a step is the
    cluster's doing until shown otherwise, and resumes from the last checkpoint on the preemption
    budget; a second one is the step's own (its data, its code, a collective that never matches) and
    fails it with the diagnosis."""
    if requeue_off:
        return _requeue_off(f"{diagnosis}. slurm-gpu cancelled the job", requeue_off)
    if history.stalls >= 1:
        return Action(Act.FAIL, f"{diagnosis}. The step stalled before in this run, so slurm-gpu failed it "
                                "instead of resubmitting it again", Stop.PREEMPTION)
    used, allowed = history.count(Stop.PREEMPTION), budgets.preemptions
    if used >= allowed:
        return Action(Act.FAIL, f"{diagnosis}. The preemption budget is spent ({used} resubmissions of {allowed}); "
                                f"raise {_BUDGET_SETTING[Stop.PREEMPTION]} to allow more", Stop.PREEMPTION)
    return Action(Act.RESUBMIT, f"{diagnosis}. Cancelled and resubmitted ({Stop.PREEMPTION} {used + 1} of "
                                f"{allowed}); training resumes from its last checkpoint", Stop.PREEMPTION)
