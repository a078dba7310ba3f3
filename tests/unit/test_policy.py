"""What the executor does about a job, given Slurm's verdict and how long it has held. The clock is
a number passed in, so nothing here sleeps."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from snakemake_executor_plugin_slurm_gpu.policy import Act, Action, JobWatch, Limits, decide
from snakemake_executor_plugin_slurm_gpu.slurm import JobRecord
from snakemake_executor_plugin_slurm_gpu.status import Verdict, classify

LIMITS = Limits(settle_s=60.0, missing_s=600.0)


def verdict(state: str, reason: str = "", exit_code: str = "", nodes: str = "") -> Verdict:
    return classify(JobRecord("42", state, reason, exit_code, nodes))


@pytest.mark.parametrize(
    ("seen", "held_for_s", "act", "in_reason"),
    [
        pytest.param(verdict("PENDING", "Resources"), 0, Act.WAIT, [], id="pending"),
        pytest.param(verdict("RUNNING"), 1e9, Act.WAIT, [], id="running-forever"),
        pytest.param(verdict("REQUEUED"), 1e9, Act.WAIT, [], id="requeued"),
        pytest.param(verdict("COMPLETED", exit_code="0:0"), 0, Act.SUCCEED, [], id="completed"),
        pytest.param(verdict("FAILED", "NonZeroExitCode", "1:0", "n1"), 0, Act.FAIL,
                     ["Slurm job ended", "FAILED, reason NonZeroExitCode, exit code 1:0, nodes n1"], id="failed"),
        pytest.param(verdict("CANCELLED by 1000", exit_code="0:15"), 0, Act.FAIL,
                     ["CANCELLED by 1000", "exit code 0:15"], id="cancelled-by-user"),
        pytest.param(verdict("OUT_OF_MEMORY", "OutOfMemory", "0:125"), 0, Act.FAIL, ["OUT_OF_MEMORY"], id="oom"),
        pytest.param(verdict("REQUEUE_HOLD", "JobHeldAdmin"), 0, Act.CANCEL_AND_FAIL,
                     ["scontrol release", "REQUEUE_HOLD, reason JobHeldAdmin"], id="requeue-hold"),
        pytest.param(verdict("SPECIAL_EXIT"), 0, Act.CANCEL_AND_FAIL, ["scontrol release"], id="special-exit"),
        pytest.param(verdict("RESV_DEL_HOLD"), 0, Act.CANCEL_AND_FAIL, ["scontrol release"], id="resv-del-hold"),
        pytest.param(verdict("TIMEOUT", "TimeLimit"), 0, Act.FAIL,
                     ["stopped from outside", "TIMEOUT, reason TimeLimit"], id="timeout-at-once"),
        pytest.param(verdict("BOOT_FAIL"), 0, Act.FAIL, ["BOOT_FAIL"], id="boot-fail-at-once"),
        pytest.param(verdict("PREEMPTED"), 0, Act.WAIT, [], id="preempted-fresh"),
        pytest.param(verdict("PREEMPTED"), 59.9, Act.WAIT, [], id="preempted-settling"),
        pytest.param(verdict("PREEMPTED", nodes="n2"), 60, Act.FAIL, ["stopped from outside", "PREEMPTED, nodes n2"],
                     id="preempted-settled"),
        pytest.param(verdict("NODE_FAIL", "NodeDown"), 0, Act.WAIT, [], id="node-fail-fresh"),
        pytest.param(verdict("NODE_FAIL", "NodeDown"), 59.9, Act.WAIT, [], id="node-fail-settling"),
        pytest.param(verdict("NODE_FAIL", "NodeDown"), 61, Act.FAIL, ["NODE_FAIL, reason NodeDown"],
                     id="node-fail-settled"),
        pytest.param(None, 0, Act.WAIT, [], id="missing-fresh"),
        pytest.param(None, 599.9, Act.WAIT, [], id="missing-waiting"),
        pytest.param(None, 600, Act.FAIL, ["neither squeue nor sacct", "600 s"], id="missing-too-long"),
        pytest.param(verdict("WEIRD"), 0, Act.WAIT, [], id="unknown-fresh"),
        pytest.param(verdict("WEIRD"), 599.9, Act.WAIT, [], id="unknown-waiting"),
        pytest.param(verdict("WEIRD", "Odd"), 600, Act.FAIL, ["does not know", "WEIRD, reason Odd", "600 s"],
                     id="unknown-too-long"),
    ],
)
def test_decide(seen: Verdict | None, held_for_s: float, act: Act, in_reason: list[str]) -> None:
    action = decide(seen, held_for_s, LIMITS)
    assert action.act is act
    for fragment in in_reason:
        assert fragment in action.reason
    if act is Act.WAIT or act is Act.SUCCEED:
        assert action.reason == ""
    else:
        assert action.reason, "every 'no' carries its reason"


@pytest.mark.parametrize(
    ("seen", "held_for_s", "act"),
    [
        (verdict("PREEMPTED"), 4.9, Act.WAIT),
        (verdict("PREEMPTED"), 5, Act.FAIL),
        (None, 9.9, Act.WAIT),
        (None, 10, Act.FAIL),
        (verdict("WEIRD"), 10, Act.FAIL),
    ],
)
def test_decide_uses_the_limits_given(seen: Verdict | None, held_for_s: float, act: Act) -> None:
    assert decide(seen, held_for_s, Limits(settle_s=5, missing_s=10)).act is act


def test_default_limits() -> None:
    assert Limits() == Limits(settle_s=60.0, missing_s=600.0)


# ---------------------------------------------------------------- JobWatch with a fake clock

@dataclass
class Clock:
    now: float = 1000.0

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


def test_watch_waits_out_the_settle_time() -> None:
    watch, clock = JobWatch(LIMITS), Clock()
    assert watch.decide("1", verdict("PREEMPTED"), clock.now).act is Act.WAIT
    assert watch.decide("1", verdict("PREEMPTED"), clock.advance(59)).act is Act.WAIT
    assert watch.decide("1", verdict("PREEMPTED"), clock.advance(1)).act is Act.FAIL


def test_watch_restarts_the_timer_when_the_outcome_changes() -> None:
    watch, clock = JobWatch(LIMITS), Clock()
    assert watch.decide("1", verdict("PREEMPTED"), clock.now).act is Act.WAIT
    assert watch.decide("1", verdict("PREEMPTED"), clock.advance(50)).act is Act.WAIT
    # Slurm requeued it: pending, then preempted again
    assert watch.decide("1", verdict("PENDING"), clock.advance(5)).act is Act.WAIT
    assert watch.decide("1", verdict("PREEMPTED"), clock.advance(5)).act is Act.WAIT
    assert watch.decide("1", verdict("PREEMPTED"), clock.advance(59)).act is Act.WAIT  # 119 s after the first
    assert watch.decide("1", verdict("PREEMPTED"), clock.advance(1)).act is Act.FAIL


def test_watch_keeps_the_timer_while_the_outcome_stays() -> None:
    # PREEMPTED and NODE_FAIL are one outcome (interrupted): the state word changing is no fresh start
    watch, clock = JobWatch(LIMITS), Clock()
    assert watch.decide("1", verdict("PREEMPTED"), clock.now).act is Act.WAIT
    assert watch.decide("1", verdict("NODE_FAIL"), clock.advance(30)).act is Act.WAIT
    assert watch.decide("1", verdict("NODE_FAIL"), clock.advance(30)).act is Act.FAIL


def test_watch_missing_job_then_found() -> None:
    watch, clock = JobWatch(LIMITS), Clock()
    assert watch.decide("1", None, clock.now).act is Act.WAIT
    assert watch.decide("1", None, clock.advance(599)).act is Act.WAIT
    assert watch.decide("1", verdict("RUNNING"), clock.advance(1)).act is Act.WAIT
    # gone again: a fresh missing_s
    assert watch.decide("1", None, clock.advance(1)).act is Act.WAIT
    assert watch.decide("1", None, clock.advance(599)).act is Act.WAIT
    action = watch.decide("1", None, clock.advance(1))
    assert action.act is Act.FAIL
    assert "600 s" in action.reason


def test_watch_tracks_jobs_separately() -> None:
    watch, clock = JobWatch(LIMITS), Clock()
    assert watch.decide("1", None, clock.now).act is Act.WAIT
    assert watch.decide("2", None, clock.advance(300)).act is Act.WAIT
    assert watch.decide("1", None, clock.advance(300)).act is Act.FAIL
    assert watch.decide("2", None, clock.now).act is Act.WAIT


def test_watch_forget() -> None:
    watch, clock = JobWatch(LIMITS), Clock()
    assert watch.decide("1", None, clock.now).act is Act.WAIT
    watch.forget("1")
    assert watch.decide("1", None, clock.advance(599)).act is Act.WAIT  # the count starts again here
    assert watch.decide("1", None, clock.advance(599)).act is Act.WAIT
    assert watch.decide("1", None, clock.advance(1)).act is Act.FAIL
    watch.forget("never-seen")  # no error


def test_watch_forgets_a_job_once_decided() -> None:
    watch, clock = JobWatch(LIMITS), Clock()
    assert watch.decide("1", verdict("PREEMPTED"), clock.now).act is Act.WAIT
    assert watch.decide("1", verdict("PREEMPTED"), clock.advance(60)).act is Act.FAIL
    # a job id seen again after its verdict starts from scratch
    assert watch.decide("1", verdict("PREEMPTED"), clock.advance(1)).act is Act.WAIT


@pytest.mark.parametrize(
    ("state", "act"),
    [("COMPLETED", Act.SUCCEED), ("FAILED", Act.FAIL), ("TIMEOUT", Act.FAIL), ("REQUEUE_HOLD", Act.CANCEL_AND_FAIL)],
)
def test_watch_final_states_act_at_once(state: str, act: Act) -> None:
    assert JobWatch(LIMITS).decide("1", verdict(state), 0.0).act is act


def test_action_is_frozen() -> None:
    with pytest.raises(AttributeError):
        Action(Act.WAIT).act = Act.FAIL  # type: ignore[misc]
