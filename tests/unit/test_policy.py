"""What the executor does about a job, given Slurm's verdict, how long it has held, what happened to
the step so far and the resubmission budgets. The clock is a number passed in, so nothing here
sleeps."""

from __future__ import annotations

import dataclasses

import pytest

from snakemake_executor_plugin_slurm_gpu.policy import (
    Act,
    Action,
    Budgets,
    Limits,
    StepHistory,
    Stop,
    decide,
)
from snakemake_executor_plugin_slurm_gpu.settings import ExecutorSettings
from snakemake_executor_plugin_slurm_gpu.slurm import JobRecord
from snakemake_executor_plugin_slurm_gpu.status import Verdict, classify

LIMITS = Limits(settle_s=60.0, missing_s=600.0)
BUDGETS = Budgets(preemptions=2, timeouts=1)
FRESH = StepHistory()
TIMEOUT_FLAG = "--slurm-gpu-max-timeouts"
PREEMPTION_FLAG = "--slurm-gpu-max-preemptions"


def verdict(state: str, reason: str = "", exit_code: str = "", nodes: str = "") -> Verdict:
    return classify(JobRecord("42", state, reason, exit_code, nodes))


def history(timeouts: int = 0, preemptions: int = 0, job_ids: tuple[str, ...] = ()) -> StepHistory:
    resubmitted = {stop: n for stop, n in ((Stop.TIMEOUT, timeouts), (Stop.PREEMPTION, preemptions)) if n}
    return StepHistory(job_ids=list(job_ids), resubmitted=resubmitted)


SPENT = history(timeouts=1, preemptions=2)  # both budgets of BUDGETS used up


# ---------------------------------------------------------------- one row per policy case

@pytest.mark.parametrize(
    ("seen", "held_for_s", "seen_before", "resumable", "checkpointed", "act", "stop", "in_reason"),
    [
        # --- still going
        pytest.param(verdict("PENDING", "Resources"), 0, FRESH, True, False, Act.WAIT, None, [], id="pending"),
        pytest.param(verdict("RUNNING"), 1e9, FRESH, True, False, Act.WAIT, None, [], id="running-forever"),
        # Slurm (or the training's own scontrol requeue) restarts it under the same id: not ours to act on
        pytest.param(verdict("REQUEUED"), 1e9, FRESH, True, False, Act.WAIT, None, [], id="requeued"),
        pytest.param(verdict("REQUEUED"), 1e9, SPENT, True, True, Act.WAIT, None, [], id="requeued-budget-spent"),
        # --- done
        pytest.param(verdict("COMPLETED", exit_code="0:0"), 0, FRESH, False, False, Act.SUCCEED, None, [],
                     id="completed"),
        pytest.param(verdict("COMPLETED", exit_code="0:0"), 0, SPENT, True, True, Act.SUCCEED, None, [],
                     id="completed-with-stale-marker"),
        # --- the step's own failure: never retried behind the user's back
        pytest.param(verdict("FAILED", "NonZeroExitCode", "1:0", "n1"), 0, FRESH, True, False, Act.FAIL, None,
                     ["Slurm job ended", "FAILED, reason NonZeroExitCode, exit code 1:0, nodes n1"], id="failed"),
        pytest.param(verdict("FAILED", exit_code="1:0"), 0, FRESH, False, False, Act.FAIL, None,
                     ["Slurm job ended"], id="failed-not-resumable"),
        pytest.param(verdict("CANCELLED by 1000", exit_code="0:15"), 0, FRESH, True, False, Act.FAIL, None,
                     ["CANCELLED by 1000", "exit code 0:15"], id="cancelled-by-user"),
        pytest.param(verdict("OUT_OF_MEMORY", "OutOfMemory", "0:125"), 0, FRESH, True, False, Act.FAIL, None,
                     ["OUT_OF_MEMORY"], id="oom"),
        # --- FAILED after the training checkpointed on the requeue signal (its marker names this job)
        pytest.param(verdict("FAILED", exit_code="143:0"), 0, FRESH, True, True, Act.RESUBMIT, Stop.PREEMPTION,
                     ["FAILED, exit code 143:0", "resubmitting", "preemption 1 of 2", "last checkpoint"],
                     id="failed-checkpointed-for-requeue"),
        pytest.param(verdict("FAILED", exit_code="143:0"), 0, history(preemptions=1), True, True, Act.RESUBMIT,
                     Stop.PREEMPTION, ["preemption 2 of 2"], id="failed-checkpointed-last-preemption"),
        pytest.param(verdict("FAILED", exit_code="143:0"), 0, history(preemptions=2), True, True, Act.FAIL,
                     Stop.PREEMPTION, ["preemption budget is spent", "2 resubmissions of 2", PREEMPTION_FLAG],
                     id="failed-checkpointed-budget-spent"),
        # the time-out budget is another budget: spending it does not stop a preemption resubmission
        pytest.param(verdict("FAILED", exit_code="143:0"), 0, history(timeouts=1), True, True, Act.RESUBMIT,
                     Stop.PREEMPTION, ["preemption 1 of 2"], id="failed-checkpointed-timeouts-spent"),
        # a cancel is the user's word, whatever the marker says
        pytest.param(verdict("CANCELLED by 1000", exit_code="0:15"), 0, FRESH, True, True, Act.FAIL, None,
                     ["Slurm job ended", "CANCELLED by 1000"], id="cancelled-despite-checkpoint"),
        pytest.param(verdict("CANCELLED"), 0, FRESH, True, True, Act.FAIL, None, ["CANCELLED"],
                     id="cancelled-plain-despite-checkpoint"),
        # --- parked by Slurm
        pytest.param(verdict("REQUEUE_HOLD", "JobHeldAdmin"), 0, FRESH, True, False, Act.CANCEL_AND_FAIL, None,
                     ["scontrol release", "REQUEUE_HOLD, reason JobHeldAdmin"], id="requeue-hold"),
        pytest.param(verdict("SPECIAL_EXIT"), 0, FRESH, True, False, Act.CANCEL_AND_FAIL, None,
                     ["scontrol release"], id="special-exit"),
        pytest.param(verdict("RESV_DEL_HOLD"), 0, FRESH, True, True, Act.CANCEL_AND_FAIL, None,
                     ["scontrol release"], id="resv-del-hold"),
        # --- time limit
        pytest.param(verdict("TIMEOUT", "TimeLimit"), 0, FRESH, True, False, Act.RESUBMIT, Stop.TIMEOUT,
                     ["stopped from outside", "TIMEOUT, reason TimeLimit", "timeout 1 of 1", "last checkpoint"],
                     id="timeout-resumable-at-once"),
        pytest.param(verdict("TIMEOUT", "TimeLimit"), 0, history(timeouts=1), True, False, Act.FAIL, Stop.TIMEOUT,
                     ["TIMEOUT, reason TimeLimit", "timeout budget is spent", "1 resubmissions of 1", TIMEOUT_FLAG],
                     id="timeout-budget-spent"),
        pytest.param(verdict("TIMEOUT"), 0, history(preemptions=2), True, False, Act.RESUBMIT, Stop.TIMEOUT,
                     ["timeout 1 of 1"], id="timeout-preemptions-spent"),
        pytest.param(verdict("TIMEOUT", "TimeLimit"), 0, FRESH, False, False, Act.FAIL, Stop.TIMEOUT,
                     ["time limit", "TIMEOUT, reason TimeLimit", "does not checkpoint", "raise its runtime"],
                     id="timeout-not-resumable"),
        # --- the cluster's doing: preempted and node failures settle first, boot failures do not
        pytest.param(verdict("BOOT_FAIL"), 0, FRESH, True, False, Act.RESUBMIT, Stop.PREEMPTION,
                     ["BOOT_FAIL", "preemption 1 of 2"], id="boot-fail-at-once"),
        pytest.param(verdict("BOOT_FAIL"), 0, FRESH, False, False, Act.RESUBMIT, Stop.PREEMPTION,
                     ["BOOT_FAIL"], id="boot-fail-not-resumable"),
        pytest.param(verdict("BOOT_FAIL"), 0, history(preemptions=2), True, False, Act.FAIL, Stop.PREEMPTION,
                     ["BOOT_FAIL", PREEMPTION_FLAG], id="boot-fail-budget-spent"),
        pytest.param(verdict("PREEMPTED"), 0, FRESH, True, False, Act.WAIT, None, [], id="preempted-fresh"),
        pytest.param(verdict("PREEMPTED"), 59.9, SPENT, True, False, Act.WAIT, None, [], id="preempted-settling"),
        pytest.param(verdict("PREEMPTED", nodes="n2"), 60, FRESH, True, False, Act.RESUBMIT, Stop.PREEMPTION,
                     ["stopped from outside", "PREEMPTED, nodes n2", "preemption 1 of 2"], id="preempted-settled"),
        pytest.param(verdict("PREEMPTED"), 60, FRESH, False, False, Act.RESUBMIT, Stop.PREEMPTION, ["PREEMPTED"],
                     id="preempted-settled-not-resumable"),
        pytest.param(verdict("PREEMPTED", nodes="n2"), 60, history(preemptions=2), True, False, Act.FAIL,
                     Stop.PREEMPTION, ["PREEMPTED, nodes n2", "preemption budget is spent", PREEMPTION_FLAG],
                     id="preempted-budget-spent"),
        pytest.param(verdict("NODE_FAIL", "NodeDown"), 0, FRESH, True, False, Act.WAIT, None, [],
                     id="node-fail-fresh"),
        pytest.param(verdict("NODE_FAIL", "NodeDown"), 59.9, FRESH, True, False, Act.WAIT, None, [],
                     id="node-fail-settling"),
        pytest.param(verdict("NODE_FAIL", "NodeDown"), 61, FRESH, True, False, Act.RESUBMIT, Stop.PREEMPTION,
                     ["NODE_FAIL, reason NodeDown", "preemption 1 of 2"], id="node-fail-settled"),
        pytest.param(verdict("NODE_FAIL", "NodeDown"), 61, history(preemptions=2), True, False, Act.FAIL,
                     Stop.PREEMPTION, ["NODE_FAIL, reason NodeDown", PREEMPTION_FLAG], id="node-fail-budget-spent"),
        # --- not known to Slurm, or a state this version does not know
        pytest.param(None, 0, FRESH, True, False, Act.WAIT, None, [], id="missing-fresh"),
        pytest.param(None, 599.9, FRESH, True, False, Act.WAIT, None, [], id="missing-waiting"),
        pytest.param(None, 600, FRESH, True, True, Act.FAIL, None, ["neither squeue nor sacct", "600 s"],
                     id="missing-too-long"),
        pytest.param(verdict("WEIRD"), 0, FRESH, True, False, Act.WAIT, None, [], id="unknown-fresh"),
        pytest.param(verdict("WEIRD"), 599.9, FRESH, True, False, Act.WAIT, None, [], id="unknown-waiting"),
        pytest.param(verdict("WEIRD", "Odd"), 600, FRESH, True, True, Act.FAIL, None,
                     ["does not know", "WEIRD, reason Odd", "600 s"], id="unknown-too-long"),
    ],
)
def test_decide(seen: Verdict | None, held_for_s: float, seen_before: StepHistory, resumable: bool,
                checkpointed: bool, act: Act, stop: Stop | None, in_reason: list[str]) -> None:
    before = dataclasses.replace(seen_before, job_ids=list(seen_before.job_ids),
                                 resubmitted=dict(seen_before.resubmitted))
    action = decide(seen, held_for_s, LIMITS, seen_before, BUDGETS, resumable=resumable,
                    checkpointed_for_requeue=checkpointed)
    assert action.act is act, action.reason
    assert action.stop is stop
    for fragment in in_reason:
        assert fragment in action.reason
    if act is Act.WAIT or act is Act.SUCCEED:
        assert action.reason == ""
    else:
        assert action.reason, "every 'no' carries its reason"
    assert seen_before == before, "decide is pure: the executor counts resubmissions, not the policy"


# ---------------------------------------------------------------- budgets at the boundary

@pytest.mark.parametrize("allowed", [1, 3, 10])
@pytest.mark.parametrize(
    ("stop", "seen", "held_for_s", "resumable", "checkpointed", "flag"),
    [
        pytest.param(Stop.TIMEOUT, verdict("TIMEOUT"), 0, True, False, TIMEOUT_FLAG, id="timeout"),
        pytest.param(Stop.PREEMPTION, verdict("PREEMPTED"), 60, True, False, PREEMPTION_FLAG, id="preempted"),
        pytest.param(Stop.PREEMPTION, verdict("NODE_FAIL"), 60, False, False, PREEMPTION_FLAG, id="node-fail"),
        pytest.param(Stop.PREEMPTION, verdict("BOOT_FAIL"), 0, True, False, PREEMPTION_FLAG, id="boot-fail"),
        pytest.param(Stop.PREEMPTION, verdict("FAILED", exit_code="143:0"), 0, True, True, PREEMPTION_FLAG,
                     id="checkpointed-for-requeue"),
    ],
)
def test_budget_boundary(allowed: int, stop: Stop, seen: Verdict, held_for_s: float, resumable: bool,
                         checkpointed: bool, flag: str) -> None:
    budgets = Budgets(**{"timeouts" if stop is Stop.TIMEOUT else "preemptions": allowed})

    def after(used: int) -> Action:
        return decide(seen, held_for_s, LIMITS, StepHistory(resubmitted={stop: used}), budgets,
                      resumable=resumable, checkpointed_for_requeue=checkpointed)

    last = after(allowed - 1)
    assert (last.act, last.stop) == (Act.RESUBMIT, stop)
    assert f"{stop} {allowed} of {allowed}" in last.reason
    spent = after(allowed)
    assert (spent.act, spent.stop) == (Act.FAIL, stop)
    assert f"{stop} budget is spent ({allowed} resubmissions of {allowed})" in spent.reason
    assert f"raise {flag}" in spent.reason
    assert after(allowed + 5).act is Act.FAIL  # over the budget (a setting lowered mid-run) fails too


@pytest.mark.parametrize(
    ("seen", "held_for_s", "stop"),
    [(verdict("TIMEOUT"), 0, Stop.TIMEOUT), (verdict("PREEMPTED"), 60, Stop.PREEMPTION),
     (verdict("BOOT_FAIL"), 0, Stop.PREEMPTION)],
    ids=["timeout", "preempted", "boot-fail"],
)
def test_zero_budget_never_resubmits(seen: Verdict, held_for_s: float, stop: Stop) -> None:
    action = decide(seen, held_for_s, LIMITS, StepHistory(), Budgets(preemptions=0, timeouts=0), resumable=True)
    assert (action.act, action.stop) == (Act.FAIL, stop)
    assert "(0 resubmissions of 0)" in action.reason


def test_budgets_count_per_stop_not_per_job_id() -> None:
    # job ids of earlier attempts do not count: only resubmissions recorded per kind of stop
    seen_before = history(job_ids=("1", "2", "3", "4"))
    assert decide(verdict("TIMEOUT"), 0, LIMITS, seen_before, Budgets(timeouts=1), resumable=True).act \
        is Act.RESUBMIT


def test_defaults() -> None:
    assert Limits() == Limits(settle_s=60.0, missing_s=600.0)
    assert Budgets() == Budgets(preemptions=10, timeouts=3)
    assert StepHistory().count(Stop.TIMEOUT) == StepHistory().count(Stop.PREEMPTION) == 0
    # called the old way, decide uses the default budgets and a fresh history, and a step that
    # says nothing about checkpoints is not resumable
    assert decide(verdict("PREEMPTED"), 60, LIMITS).reason.endswith(
        "resubmitting (preemption 1 of 10), training resumes from its last checkpoint")
    assert decide(verdict("TIMEOUT"), 0, LIMITS).act is Act.FAIL
    assert decide(verdict("TIMEOUT"), 0, LIMITS, resumable=True).reason.count("timeout 1 of 3") == 1
    assert decide(verdict("FAILED"), 0, LIMITS).act is Act.FAIL


def test_budget_settings_named_in_reasons_exist() -> None:
    # the FAIL reason tells the user which flag to raise: it must be a real setting with the
    # default the policy uses (Snakemake names plugin settings --<plugin>-<field with dashes>)
    defaults = {f.name: f.default for f in dataclasses.fields(ExecutorSettings)}
    for flag, field_name, budget in [(TIMEOUT_FLAG, "max_timeouts", Budgets().timeouts),
                                     (PREEMPTION_FLAG, "max_preemptions", Budgets().preemptions)]:
        assert flag == "--slurm-gpu-" + field_name.replace("_", "-")
        assert defaults[field_name] == budget


def test_step_history_count() -> None:
    seen_before = history(timeouts=2, preemptions=5)
    assert seen_before.count(Stop.TIMEOUT) == 2
    assert seen_before.count(Stop.PREEMPTION) == 5


@pytest.mark.parametrize(
    ("seen", "held_for_s", "act"),
    [
        (verdict("PREEMPTED"), 4.9, Act.WAIT),
        (verdict("PREEMPTED"), 5, Act.RESUBMIT),
        (None, 9.9, Act.WAIT),
        (None, 10, Act.FAIL),
        (verdict("WEIRD"), 10, Act.FAIL),
    ],
)
def test_decide_uses_the_limits_given(seen: Verdict | None, held_for_s: float, act: Act) -> None:
    assert decide(seen, held_for_s, Limits(settle_s=5, missing_s=10)).act is act


def test_action_is_frozen() -> None:
    with pytest.raises(AttributeError):
        Action(Act.WAIT).act = Act.FAIL  # type: ignore[misc]
    with pytest.raises(AttributeError):
        Budgets().timeouts = 5  # type: ignore[misc]


@pytest.mark.parametrize("state", ["PREEMPTED", "NODE_FAIL"])
def test_a_job_slurm_may_not_requeue_is_resubmitted_without_waiting_for_slurm(state: str) -> None:
    # a direct step goes in with --no-requeue: its preempted or node-failed job is final at once
    waited = decide(verdict(state), 0, LIMITS, StepHistory(), BUDGETS, resumable=False)
    assert waited.act is Act.WAIT
    now = decide(verdict(state), 0, LIMITS, StepHistory(), BUDGETS, resumable=False, requeueable=False)
    assert (now.act, now.stop) == (Act.RESUBMIT, Stop.PREEMPTION)


# ---------------------------------------------------------------- requeue off

@pytest.mark.parametrize("state", ["PREEMPTED", "NODE_FAIL", "TIMEOUT", "BOOT_FAIL"])
def test_with_requeue_off_a_stop_from_outside_fails_at_once_saying_so(state):
    verdict = classify(JobRecord("1", state))
    action = decide(verdict, 0.0, Limits(), StepHistory(), Budgets(), resumable=True, requeueable=False,
                    requeue_off="resource requeue=0")
    assert action.act is Act.FAIL
    assert "requeue is off for this step (resource requeue=0)" in action.reason and "requeue=1" in action.reason


def test_with_requeue_off_a_job_stopped_by_the_signal_fails_too():
    verdict = classify(JobRecord("1", "FAILED", exit_code="1:0"))
    action = decide(verdict, 0.0, Limits(), StepHistory(), Budgets(), resumable=True,
                    stopped_by_signal="SIGTERM", requeue_off="setting --slurm-gpu-no-requeue")
    assert action.act is Act.FAIL and "--slurm-gpu-no-requeue" in action.reason


def test_with_requeue_off_a_stall_fails_the_step():
    from snakemake_executor_plugin_slurm_gpu.policy import on_stall

    action = on_stall("training stalled", StepHistory(), Budgets(), requeue_off="resource requeue=0")
    assert action.act is Act.FAIL and "slurm-gpu cancelled the job" in action.reason
