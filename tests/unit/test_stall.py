"""The stall watchdog's verdicts (stall.py) and what the executor does about them (policy.on_stall)."""

from __future__ import annotations

from snakemake_executor_plugin_slurm_gpu import stall
from snakemake_executor_plugin_slurm_gpu.policy import Act, Budgets, StepHistory, Stop, on_stall

T0 = 1_000_000.0  # the run's start
JOB = "42"


def beat(rank: int, ts: float, progress_ts: float | None, *, node: str | None = None, gap: float = 1.0,
         step: int = 120, state: str = "running", stack: list[str] | None = None, job: str = JOB) -> dict:
    return {"rank": rank, "node": node or f"n{rank // 2 + 1}", "ts": ts, "job_id": job, "progress": 500,
            "progress_ts": progress_ts, "max_gap_s": gap, "global_step": step, "state": state,
            "stack": stack if stack is not None else ["torch/distributed_c10d.py:2501 in all_reduce"]}


def world(now: float, last_advance: float, silent_rank: int | None = None, **kwargs) -> list[dict]:
    """Four ranks that all advanced last at `last_advance`; `silent_rank` stopped beating then too."""
    return [beat(r, last_advance if r == silent_rank else now - 2, last_advance, **kwargs) for r in range(4)]


def check(beats, now, setting=None, world_size=4):
    return stall.check(beats, world_size, JOB, T0, now, interval_s=10.0, setting_s=setting)


def test_ranks_that_advance_are_not_stalled():
    now = T0 + 600
    assert check(world(now, now - 5), now) is None


def test_a_silent_rank_with_the_others_waiting_is_a_stall_after_the_short_limit():
    now = T0 + 600
    found = check(world(now, now - 61, silent_rank=3), now)
    assert found is not None and found.derived and found.limit_s == 60
    assert [(r["rank"], r["node"]) for r in found.silent] == [(3, "n2")]
    assert found.nodes == ["n2"]
    assert [r["rank"] for r in found.waiting] == [0, 1, 2]
    message = found.message()
    assert "no rank advanced for 61 s (limit 60 s, from the step's pace)" in message
    assert "rank 3 on n2 stopped answering (no heartbeat for 61 s, last seen in torch/distributed_c10d.py" in message
    assert "ranks 0-2 wait in torch/distributed_c10d.py:2501 in all_reduce" in message


def test_before_the_limit_a_silent_rank_is_not_yet_a_stall():
    now = T0 + 600
    assert check(world(now, now - 50, silent_rank=3), now) is None


def test_the_limit_follows_the_steps_own_pace():
    now = T0 + 600
    # checkpoints of this step take 30 s: 5 x 30 s pass before a silent rank counts
    assert check(world(now, now - 100, silent_rank=3, gap=30.0), now) is None
    found = check(world(now, now - 151, silent_rank=3, gap=30.0), now)
    assert found is not None and found.limit_s == 150


def test_every_rank_alive_but_none_advancing_gets_the_long_limit():
    now = T0 + 1000
    assert check(world(now, now - 200), now) is None
    found = check(world(now, now - 301), now)
    assert found is not None and found.limit_s == 300 and not found.silent and found.nodes == []


def test_the_setting_fixes_the_limit_and_zero_turns_the_watchdog_off():
    now = T0 + 600
    found = check(world(now, now - 31), now, setting=30)
    assert found is not None and not found.derived and "--slurm-gpu-stall-timeout-s" in found.message()
    assert check(world(now, now - 10_000, silent_rank=3), now, setting=0) is None


def test_not_armed_before_the_first_batch():
    now = T0 + 3000
    assert check([beat(r, now - 1, None) for r in range(4)], now) is None


def test_the_end_of_a_run_is_not_a_stall():
    now = T0 + 3000
    beats = world(now, now - 1000)
    beats[0]["state"] = "done"
    assert check(beats, now) is None


def test_heartbeats_of_an_earlier_job_or_run_are_ignored():
    now = T0 + 600
    stale = [beat(r, T0 - 100, T0 - 2000) for r in range(4)]  # before this run started
    assert check(stale, now) is None
    other_job = [beat(r, now - 500, now - 500, job="41") for r in range(4)]
    assert check(other_job, now) is None


def test_a_rank_that_never_beat_while_the_others_did_is_named():
    now = T0 + 600
    found = check(world(now, now - 61)[:3], now)
    assert found is not None and found.missing == [3] and "rank 3 never reported" in found.message()


def test_a_single_rank_step_is_never_judged():
    now = T0 + 6000
    assert check([beat(0, now - 5000, now - 5000)], now, world_size=1) is None


def test_first_stall_resubmits_on_the_preemption_budget_and_a_second_fails():
    history = StepHistory()
    first = on_stall("training stalled", history, Budgets(preemptions=10))
    assert first.act is Act.RESUBMIT and first.stop is Stop.PREEMPTION and "preemption 1 of 10" in first.reason
    history.stalls = 1
    second = on_stall("training stalled", history, Budgets(preemptions=10))
    assert second.act is Act.FAIL and "stalled before" in second.reason


def test_a_stall_with_the_preemption_budget_spent_fails():
    history = StepHistory(resubmitted={Stop.PREEMPTION: 2})
    action = on_stall("training stalled", history, Budgets(preemptions=2))
    assert action.act is Act.FAIL and "--slurm-gpu-max-preemptions" in action.reason
