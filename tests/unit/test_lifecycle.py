"""A step's life as table tests of lifecycle.advance: what each observation (a submission, Slurm's
answer to a poll, a run that started, the watchdogs' findings) does to the step's state, and which
effects the backend must carry out. The clock is a number passed in; nothing here sleeps or runs Slurm."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from snakemake_executor_plugin_slurm_gpu.lifecycle import (Cancel, Emit, Fail, Hung, Polled, Reattached, Resubmit,
                                                            RunStarted, Say, Stalled, StepLife, StepRules, Submitted,
                                                            Submitting, Succeed, Widen, advance, live_jobs)
from snakemake_executor_plugin_slurm_gpu.policy import Act, Budgets, Limits, Stop
from snakemake_executor_plugin_slurm_gpu.slurm import JobRecord, node_range_argv
from snakemake_executor_plugin_slurm_gpu.stall import Stall
from snakemake_executor_plugin_slurm_gpu.status import classify
from snakemake_executor_plugin_slurm_gpu.watchdog import Hang

LIMITS = Limits(settle_s=60.0, missing_s=600.0)
RULES = StepRules(resumable=False, limits=LIMITS)
RESUMABLE = StepRules(resumable=True, limits=LIMITS)
TIMEOUT_FLAG = "--slurm-gpu-max-timeouts"
PREEMPTION_FLAG = "--slurm-gpu-max-preemptions"


def record(state: str, reason: str = "", exit_code: str = "", nodes: str = "", job_id: str = "1") -> JobRecord:
    return JobRecord(job_id, state, reason, exit_code, nodes)


@dataclass(frozen=True)
class Decision:
    act: Act
    stop: Stop | None = None
    reason: str = ""


def decision(effects: list) -> Decision:
    """What the effects amount to, in policy's words."""
    for effect in effects:
        if isinstance(effect, Resubmit):
            return Decision(Act.RESUBMIT, effect.stop, effect.reason)
        if isinstance(effect, Succeed):
            return Decision(Act.SUCCEED)
        if isinstance(effect, Fail):
            cancelled = any(isinstance(e, Cancel) for e in effects)
            return Decision(Act.CANCEL_AND_FAIL if cancelled else Act.FAIL, None, effect.reason)
    return Decision(Act.WAIT)


class Step:
    """One step followed through advance(), as the Slurm backend feeds it."""

    def __init__(self, rules: StepRules = RULES, job_id: str = "1", **state: object) -> None:
        self.rules = rules
        self.life, _ = advance(StepLife("train/all", **state), Submitted(job_id), 0.0, rules)  # type: ignore[arg-type]
        self.effects: list = []

    def see(self, observation, now: float = 0.0) -> list:
        self.life, self.effects = advance(self.life, observation, now, self.rules)
        return self.effects

    def poll(self, state: str | None, now: float = 0.0, **facts: object) -> Decision:
        rec = None if state is None else record(state, job_id=self.life.job_id or "1")
        return decision(self.see(Polled(None if rec is None else classify(rec), rec, **facts), now))  # type: ignore[arg-type]

    def resubmitted(self, job_id: str, stop: Stop) -> None:
        self.see(Submitted(job_id, stop=stop))


# ---------------------------------------------------------------- the clock of one job

def test_waits_out_the_settle_time() -> None:
    step = Step()
    assert step.poll("PREEMPTED", 1000).act is Act.WAIT
    assert step.poll("PREEMPTED", 1059).act is Act.WAIT
    assert step.poll("PREEMPTED", 1060) == Decision(Act.RESUBMIT, Stop.PREEMPTION, step.effects[-1].reason)


def test_waits_out_the_settle_time_even_with_the_budget_spent() -> None:
    # Slurm may still requeue it itself: no verdict, not even a failure, before settle_s
    step = Step(rules=StepRules(budgets=Budgets(preemptions=2, timeouts=1), limits=LIMITS), preemptions=2)
    assert step.poll("NODE_FAIL", 1000).act is Act.WAIT
    assert step.poll("NODE_FAIL", 1059.9).act is Act.WAIT
    action = step.poll("NODE_FAIL", 1060)
    assert action.act is Act.FAIL and PREEMPTION_FLAG in action.reason


def test_the_timer_restarts_when_the_outcome_changes() -> None:
    step = Step()
    assert step.poll("PREEMPTED", 1000).act is Act.WAIT
    assert step.poll("PREEMPTED", 1050).act is Act.WAIT
    # Slurm requeued it: pending, then preempted again
    assert step.poll("PENDING", 1055).act is Act.WAIT
    assert step.poll("PREEMPTED", 1060).act is Act.WAIT
    assert step.poll("PREEMPTED", 1119).act is Act.WAIT  # 119 s after the first
    assert step.poll("PREEMPTED", 1120).act is Act.RESUBMIT


def test_the_timer_runs_on_while_the_outcome_stays() -> None:
    # PREEMPTED and NODE_FAIL are one outcome (interrupted): the state word changing is no fresh start
    step = Step()
    assert step.poll("PREEMPTED", 1000).act is Act.WAIT
    assert step.poll("NODE_FAIL", 1030).act is Act.WAIT
    action = step.poll("NODE_FAIL", 1060)
    assert (action.act, action.stop) == (Act.RESUBMIT, Stop.PREEMPTION) and "NODE_FAIL" in action.reason


def test_a_missing_job_then_found_then_missing_again() -> None:
    step = Step()
    assert step.poll(None, 1000).act is Act.WAIT
    assert step.poll(None, 1599).act is Act.WAIT
    assert step.poll("RUNNING", 1600).act is Act.WAIT
    # gone again: a fresh missing_s
    assert step.poll(None, 1601).act is Act.WAIT
    assert step.poll(None, 2200).act is Act.WAIT
    action = step.poll(None, 2201)
    assert action.act is Act.FAIL and "600 s" in action.reason and "neither squeue nor sacct" in action.reason


def test_steps_are_timed_separately() -> None:
    one, two = Step(job_id="1"), Step(job_id="2")
    assert one.poll(None, 1000).act is Act.WAIT
    assert two.poll(None, 1300).act is Act.WAIT
    assert one.poll(None, 1600).act is Act.FAIL
    assert two.poll(None, 1600).act is Act.WAIT


def test_a_new_job_of_the_step_starts_its_own_clock() -> None:
    step = Step()
    assert step.poll("PREEMPTED", 1000).act is Act.WAIT
    assert step.poll("PREEMPTED", 1060).act is Act.RESUBMIT
    assert not step.life.live and live_jobs([step.life]) == set()
    step.resubmitted("2", Stop.PREEMPTION)
    assert step.poll("PREEMPTED", 1061).act is Act.WAIT
    assert step.life.live and live_jobs([step.life]) == {"2"}


def test_budgets_and_facts_reach_the_policy() -> None:
    budgets = Budgets(preemptions=5, timeouts=2)
    rules = StepRules(resumable=True, budgets=budgets, limits=LIMITS)
    action = Step(rules, timeouts=1).poll("TIMEOUT")
    assert (action.act, action.stop) == (Act.RESUBMIT, Stop.TIMEOUT) and "timeout 2 of 2" in action.reason
    action = Step(rules, timeouts=2).poll("TIMEOUT")
    assert action.act is Act.FAIL and TIMEOUT_FLAG in action.reason
    assert Step(StepRules(resumable=False, budgets=budgets, limits=LIMITS)).poll("TIMEOUT").act is Act.FAIL
    action = Step(rules, preemptions=4).poll("FAILED", checkpointed_for_requeue=True)
    assert (action.act, action.stop) == (Act.RESUBMIT, Stop.PREEMPTION) and "preemption 5 of 5" in action.reason
    assert Step(rules).poll("FAILED").act is Act.FAIL
    action = Step(rules).poll("FAILED", stopped_by_signal="SIGTERM")
    assert action.act is Act.RESUBMIT and "its ranks died of SIGTERM" in action.reason


def test_a_step_resubmitted_over_several_jobs_until_its_budget_is_spent() -> None:
    step = Step(StepRules(resumable=True, budgets=Budgets(preemptions=2, timeouts=1), limits=LIMITS), job_id="100")
    acts, now = [], 0.0
    for attempt in range(4):
        now += 10
        assert step.poll("RUNNING", now).act is Act.WAIT
        stopped = "TIMEOUT" if attempt == 0 else "PREEMPTED"
        now += 10
        action = step.poll(stopped, now)
        if action.act is Act.WAIT:
            now += 60
            action = step.poll(stopped, now)
        acts.append((action.act, action.stop))
        if action.act is not Act.RESUBMIT:
            break
        assert action.stop is not None
        step.resubmitted(str(int(step.life.job_id or 0) + 1), action.stop)
    assert acts == [(Act.RESUBMIT, Stop.TIMEOUT), (Act.RESUBMIT, Stop.PREEMPTION), (Act.RESUBMIT, Stop.PREEMPTION),
                    (Act.FAIL, None)]
    assert step.life.job_ids == ("100", "101", "102", "103")
    assert (step.life.timeouts, step.life.preemptions) == (1, 2)


@pytest.mark.parametrize(
    ("state", "resumable", "act"),
    [("COMPLETED", True, Act.SUCCEED), ("FAILED", True, Act.FAIL), ("TIMEOUT", False, Act.FAIL),
     ("TIMEOUT", True, Act.RESUBMIT), ("BOOT_FAIL", False, Act.RESUBMIT),
     ("REQUEUE_HOLD", True, Act.CANCEL_AND_FAIL)],
)
def test_final_states_act_at_once(state: str, resumable: bool, act: Act) -> None:
    assert Step(StepRules(resumable=resumable, limits=LIMITS)).poll(state).act is act


@pytest.mark.parametrize("state", ["PREEMPTED", "NODE_FAIL"])
def test_a_job_slurm_may_not_requeue_is_resubmitted_without_waiting_for_slurm(state: str) -> None:
    # a direct step goes in with --no-requeue: its preempted or node-failed job is final at once
    assert Step().poll(state, 100).act is Act.WAIT
    step = Step()
    step.see(Submitted("2", direct=True))
    assert step.poll(state, 100).act is Act.RESUBMIT
    assert Step(StepRules(requeue=False, limits=LIMITS)).poll(state, 100).act is Act.RESUBMIT


# ---------------------------------------------------------------- what each verdict emits

def test_success_emits_completed_and_reports() -> None:
    step = Step()
    rec = record("COMPLETED", exit_code="0:0")
    effects = step.see(Polled(classify(rec), rec))
    assert effects == [Emit("completed", "1", {"state": "COMPLETED", "exit_code": "0:0"}), Succeed()]
    assert not step.life.live


def test_a_failure_emits_failed_with_slurms_words_and_how_the_ranks_ended() -> None:
    step = Step()
    rec = record("FAILED", reason="NonZeroExitCode", exit_code="1:0")
    effects = step.see(Polled(classify(rec), rec, ranks_ended="rank 3 on n2: Killed"))
    (emitted, failed) = effects
    assert emitted.kind == "failed" and emitted.fields["reason"] == "NonZeroExitCode"
    assert failed == Fail("Slurm job ended FAILED, reason NonZeroExitCode, exit code 1:0", "rank 3 on n2: Killed")


def test_a_held_job_is_cancelled_before_the_step_fails() -> None:
    effects = Step().see(Polled(classify(record("REQUEUE_HOLD")), record("REQUEUE_HOLD")))
    assert [type(e) for e in effects] == [Cancel, Emit, Fail] and effects[0] == Cancel(("1",))


def test_node_failures_name_the_nodes_to_keep_out() -> None:
    def resubmission(state: str) -> Resubmit:
        step, rec = Step(RESUMABLE), record(state, nodes="n[1-2]")
        assert step.see(Polled(classify(rec), rec), 0.0) == []  # Slurm may requeue it itself: settle first
        (resubmit,) = [e for e in step.see(Polled(classify(rec), rec), 60.0) if isinstance(e, Resubmit)]
        return resubmit

    assert resubmission("NODE_FAIL").exclude_nodes == "n[1-2]"
    assert resubmission("PREEMPTED").exclude_nodes == ""


# ---------------------------------------------------------------- what the queue says besides

def queue_says(step: Step, state: str, reason: str = "") -> list:
    rec = record(state, reason)
    return [e for e in step.see(Polled(classify(rec), rec)) if isinstance(e, (Emit, Say))]


def test_a_requeue_is_news_once_when_a_running_job_is_back_in_the_queue() -> None:
    step = Step()
    assert queue_says(step, "PENDING") == []        # first sight: queued, not requeued
    assert queue_says(step, "RUNNING") == []
    assert queue_says(step, "REQUEUED")[0] == Emit("requeued", "1", {"state": "REQUEUED"})
    assert queue_says(step, "PENDING") == []        # the same requeue, seen again
    assert queue_says(step, "RUNNING") == []
    said = queue_says(step, "PENDING")              # a poll that missed REQUEUED still sees it
    assert said == [Emit("requeued", "1", {"state": "PENDING"}),
                    Say("requeued by Slurm, same job id; it restarts when scheduled")]


def test_an_elastic_steps_requeued_job_asks_again_for_its_node_range() -> None:
    # Slurm keeps a requeued job's last node count: at full size it would wait for all its nodes again
    elastic, rigid = Step(StepRules(resumable=True, elastic=True, limits=LIMITS)), Step(RESUMABLE)
    for step in (elastic, rigid):
        step.see(Polled(classify(record("RUNNING")), record("RUNNING")))
    assert Widen("1") in elastic.see(Polled(classify(record("PENDING", "BeginTime")), record("PENDING", "BeginTime")))
    assert not any(isinstance(e, Widen) for e in rigid.see(Polled(classify(record("PENDING")), record("PENDING"))))
    # pending on: asked once per requeue
    assert not any(isinstance(e, Widen) for e in elastic.see(Polled(classify(record("PENDING")), record("PENDING"))))


def test_the_node_range_is_asked_for_with_the_task_count_of_its_smallest_run() -> None:
    assert node_range_argv("7_3", 2, 4, 8) == ["scontrol", "update", "JobId=7_3", "NumNodes=2-4", "NumTasks=16"]
    assert node_range_argv("7", 1, 2, 1, clusters="all")[:2] == ["scontrol", "--clusters=all"]


def test_a_run_that_started_and_is_queued_again_ended_even_when_no_poll_saw_it_running() -> None:
    step = Step()
    assert queue_says(step, "PENDING") == []
    step.see(RunStarted(restart=0))  # its `started` record, read between two polls
    said = queue_says(step, "PENDING", "BeginTime")
    assert said[0] == Emit("requeued", "1", {"state": "PENDING", "restart": 0})  # names the run that ended
    assert queue_says(step, "PENDING", "BeginTime") == []
    step.see(RunStarted(restart=1))
    assert queue_says(step, "RUNNING") == []
    assert queue_says(step, "REQUEUED")[0] == Emit("requeued", "1", {"state": "REQUEUED", "restart": 1})


def test_a_pending_reason_is_news_only_when_it_changes_and_again_after_a_restart() -> None:
    step = Step()
    assert queue_says(step, "PENDING", "Priority") == [Emit("pending", "1", {"reason": "Priority"}),
                                                       Say("pending (Priority)")]
    assert queue_says(step, "PENDING", "Priority") == []
    assert queue_says(step, "PENDING", "Resources")[0].fields == {"reason": "Resources"}
    assert queue_says(step, "RUNNING") == []
    step.see(RunStarted())
    assert Say("pending (Resources)") in queue_says(step, "PENDING", "Resources")


def test_an_unknown_state_is_said_once_per_job_and_state() -> None:
    step = Step()
    said = [queue_says(step, "WARPING", reason) for reason in ("a", "b")]  # the reason changing is not news
    assert len(said[0]) == 1 and said[1] == []
    assert said[0][0].warn and "state 'WARPING, reason a' is unknown to slurm-gpu; waiting up to 600 s" in said[0][0].text
    assert len(queue_says(step, "FOLDING")) == 1
    step.resubmitted("2", Stop.PREEMPTION)
    assert len(queue_says(step, "WARPING")) == 1


# ---------------------------------------------------------------- one live job per step; re-attach

def test_submitting_again_while_the_steps_job_lives_cancels_it_first() -> None:
    step = Step()
    effects = step.see(Submitting())
    assert effects[1] == Cancel(("1",)) and effects[0].warn and not step.life.live
    assert step.see(Submitting()) == []  # nothing left to cancel
    step.see(Submitted("2"))
    assert step.life.job_ids == ("1", "2") and step.life.live


def test_a_reattached_job_is_followed_like_a_submitted_one() -> None:
    life, effects = advance(StepLife("train/all"), Reattached("12"), 0.0, RULES)
    assert effects == [Emit("reattached", "12")] and live_jobs([life]) == {"12"} and life.job_ids == ("12",)


# ---------------------------------------------------------------- the watchdogs

def test_a_hang_cancels_and_fails_the_step_naming_the_watchdogs_limit() -> None:
    hang = Hang(expected=4, joined=[0, 1], missing_ranks=[2, 3], missing_nodes=["n2"], why="node n2 is slow")
    step = Step()
    cancel, emitted, failed = step.see(Hung(hang, 30))
    assert cancel == Cancel(("1",)) and emitted.kind == "watchdog" and emitted.fields["missing_ranks"] == [2, 3]
    assert "had not joined the process group after 30 s" in failed.reason
    assert "--slurm-gpu-rendezvous-timeout-s" in failed.reason and not step.life.live


def stall(nodes: tuple[str, ...] = ("n2",)) -> Stall:
    silent = [{"rank": 3, "node": node, "silent_s": 90.0, "stack": ["train.py:10 in step"]} for node in nodes]
    return Stall(idle_s=95.0, limit_s=60.0, derived=True, global_step=42, silent=silent,
                 waiting=[{"rank": 0, "node": "n1", "stack": ["autograd/graph.py:979 in _engine_run_backward"]}],
                 missing=[])


def test_a_first_stall_resubmits_without_the_stalled_nodes_and_a_second_fails() -> None:
    step = Step(RESUMABLE)
    emitted, resubmit = step.see(Stalled(stall()))
    assert emitted.kind == "stalled" and emitted.fields["action"] == "resubmit"
    assert emitted.fields["waiting"] == [{"rank": 0, "node": "n1", "where": "autograd/graph.py:979 in _engine_run_backward"}]
    assert (resubmit.stop, resubmit.exclude_nodes) == (Stop.PREEMPTION, "n2") and step.life.stalls == 1
    step.resubmitted("2", Stop.PREEMPTION)
    emitted, cancel, failed_event, failed = step.see(Stalled(stall()))
    assert cancel == Cancel(("2",)) and failed_event.fields["state"] == "STALLED"
    assert "stalled before" in failed.reason


def test_with_requeue_off_a_stall_fails_the_step() -> None:
    step = Step(StepRules(requeue_off="resource requeue=0", limits=LIMITS))
    failed = decision(step.see(Stalled(stall())))
    assert failed.act is Act.CANCEL_AND_FAIL and "requeue is off for this step (resource requeue=0)" in failed.reason
