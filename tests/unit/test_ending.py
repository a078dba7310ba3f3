"""How a failed job's ranks ended (ending.py), from srun's own lines as Slurm 22.05 prints them, and
what the executor then decides (a rank killed by the requeue signal is a preemption)."""

from __future__ import annotations

import signal

from snakemake_executor_plugin_slurm_gpu import ending
from snakemake_executor_plugin_slurm_gpu.policy import Act, Budgets, Limits, StepHistory, Stop, decide
from snakemake_executor_plugin_slurm_gpu.slurm import parse_sacct_usage
from snakemake_executor_plugin_slurm_gpu.status import classify
from snakemake_executor_plugin_slurm_gpu.slurm import JobRecord

# a 2 x 2 step whose rank 2 was SIGKILLed, with SLURM_KILL_BAD_EXIT=1 (seen on the local cluster)
KILLED_LOG = """\
[slurm-gpu] job 3062 on n[1-2], restart 0, 2026-12-05T11:25:40+00:00
global_step=50 loss=0.1
srun: error: n2: task 2: Killed
srun: launch/slurm: _step_signal: Terminating StepId=3062.0
slurmstepd-n1: error: *** STEP 3062.0 ON n1 CANCELLED AT 2026-12-05T11:25:42 ***
srun: error: n1: tasks 0-1: Terminated
srun: error: n2: task 3: Terminated
srun: Force Terminated StepId=3062.0
"""


def test_the_first_rank_to_end_is_named_with_its_node_and_cause():
    ends = ending.rank_ends(KILLED_LOG)
    assert [(e.node, e.ranks, e.what) for e in ends] == [("n2", "2", "Killed"), ("n1", "0-1", "Terminated"),
                                                          ("n2", "3", "Terminated")]
    assert ending.describe(ends, []) == ("rank 2 on n2: Killed (the first rank to end); srun then ended the other "
                                         "ranks (kill-on-bad-exit)")


def test_other_causes_after_the_first_are_kept():
    ends = ending.rank_ends("srun: error: n1: task 0: Exited with exit code 1\n"
                            "srun: error: n2: task 3: Segmentation fault\n")
    assert ending.describe(ends, []) == ("rank 0 on n1: Exited with exit code 1 (the first rank to end); then "
                                         "rank 3 on n2: Segmentation fault")


def test_out_of_memory_from_the_accounting_names_the_step_and_the_fix():
    sacct = ("3062|3062|FAILED|30|00:10.000|4|4000M||cpu=4,node=2|2\n"
             "3062.batch|3062.batch|FAILED|30|00:01.000|2|||cpu=2,node=1|1\n"
             "3062.0|3062.0|OUT_OF_MEMORY|29|00:09.000|4||3900M|cpu=4,node=2|2\n")
    oom = ending.out_of_memory(parse_sacct_usage(sacct))
    assert oom == ["0"]
    assert "job step 0 ran out of memory (OUT_OF_MEMORY): raise mem_mb" in ending.describe([], oom)


def test_nothing_said_when_slurm_said_nothing():
    assert ending.describe(ending.rank_ends("Traceback ...\nRuntimeError: boom\n"), []) is None


def test_only_the_latest_run_of_a_requeued_job_counts():
    log = ("[slurm-gpu] job 7 on n1, restart 0, 2026-12-05T10:00:00+00:00\n"
           "srun: error: n1: task 0: User defined signal 1\n"
           "[slurm-gpu] job 7 on n1, restart 1, 2026-12-05T10:05:00+00:00\n"
           "srun: error: n1: task 0: Exited with exit code 1\n")
    ends = ending.rank_ends(ending.last_run(log))
    assert not ending.killed_by(ends, signal.SIGUSR1)
    assert ending.killed_by(ending.rank_ends(log), signal.SIGUSR1)


def test_the_requeue_signal_is_recognised_by_srun_words():
    ends = ending.rank_ends("srun: error: n1: tasks 0-1: User defined signal 1\n")
    assert ending.killed_by(ends, signal.SIGUSR1)
    assert not ending.killed_by(ends, signal.SIGUSR2)


def _failed() -> object:
    return classify(JobRecord(job_id="7", state="FAILED", reason="NonZeroExitCode", exit_code="1:0", nodes="n1"))


def test_a_job_killed_by_the_requeue_signal_is_resubmitted_as_a_preemption():
    action = decide(_failed(), 0, Limits(), StepHistory(), Budgets(), resumable=True,
                    stopped_by_signal="the requeue signal")
    assert action.act is Act.RESUBMIT and action.stop is Stop.PREEMPTION
    assert "died of the requeue signal" in action.reason


def test_without_the_signal_a_failed_job_fails():
    assert decide(_failed(), 0, Limits(), StepHistory(), Budgets(), resumable=True).act is Act.FAIL


def test_a_job_killed_by_the_signal_with_the_budget_spent_fails():
    history = StepHistory(resubmitted={Stop.PREEMPTION: 1})
    action = decide(_failed(), 0, Limits(), history, Budgets(preemptions=1), resumable=True,
                    stopped_by_signal="the requeue signal")
    assert action.act is Act.FAIL and "budget is spent" in action.reason


def test_a_first_rank_ended_by_sigterm_was_stopped_by_the_cluster():
    ends = ending.rank_ends("srun: error: n1: tasks 0-1: Terminated\nsrun: error: n2: tasks 2-3: Terminated\n")
    assert ending.stopped_by_cluster(ends, signal.SIGUSR1).startswith("SIGTERM")


def test_ranks_ended_by_srun_after_another_died_were_not_stopped_by_the_cluster():
    assert ending.stopped_by_cluster(ending.rank_ends(KILLED_LOG), signal.SIGUSR1) == ""


def test_the_requeue_signal_is_named_as_the_cause():
    ends = ending.rank_ends("srun: error: n1: task 0: User defined signal 1\n")
    assert "requeue signal (SIGUSR1)" in ending.stopped_by_cluster(ends, signal.SIGUSR1)
    assert ending.stopped_by_cluster(ends, None) == ""
