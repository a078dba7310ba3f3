"""What each Slurm job state means for a step, and the batched status query (one squeue per poll,
sacct only for the ids that left the queue)."""

from __future__ import annotations

import pytest

from fake_slurm import FakeSlurm
from snakemake_executor_plugin_slurm_gpu import slurm
from snakemake_executor_plugin_slurm_gpu.slurm import JobRecord, SlurmError
from snakemake_executor_plugin_slurm_gpu.status import STATE_TABLE, Outcome, StatusQuery, Verdict, base_state, classify

A, S, F, I, H = Outcome.ACTIVE, Outcome.SUCCEEDED, Outcome.FAILED, Outcome.INTERRUPTED, Outcome.HELD

# Written out by hand, not derived from STATE_TABLE, so that a changed mapping fails a row here.
EXPECTED: dict[str, Outcome] = {
    "PENDING": A, "CONFIGURING": A, "RUNNING": A, "COMPLETING": A, "SUSPENDED": A, "STOPPED": A,
    "SIGNALING": A, "STAGE_OUT": A, "RESIZING": A, "REQUEUED": A, "REQUEUE_FED": A,
    "COMPLETED": S,
    "FAILED": F, "CANCELLED": F, "OUT_OF_MEMORY": F, "DEADLINE": F, "REVOKED": F,
    "TIMEOUT": I, "NODE_FAIL": I, "PREEMPTED": I, "BOOT_FAIL": I,
    "REQUEUE_HOLD": H, "SPECIAL_EXIT": H, "RESV_DEL_HOLD": H,
}


def test_every_state_has_a_row() -> None:
    assert set(STATE_TABLE) == set(EXPECTED)


@pytest.mark.parametrize(("state", "outcome"), list(EXPECTED.items()))
def test_state(state: str, outcome: Outcome) -> None:
    verdict = classify(JobRecord("1", state))
    assert verdict.outcome is outcome
    assert verdict.state == state


@pytest.mark.parametrize(
    ("raw", "state", "outcome"),
    [
        ("CANCELLED by 1000", "CANCELLED", F),
        ("CANCELLED by 0", "CANCELLED", F),
        ("RUNNING+", "RUNNING", A),
        ("  COMPLETED  ", "COMPLETED", S),
        ("PENDING\t", "PENDING", A),
        ("running", "RUNNING", A),
        ("WEIRD", "WEIRD", Outcome.UNKNOWN),
        ("", "", Outcome.UNKNOWN),
        ("   ", "", Outcome.UNKNOWN),
    ],
)
def test_state_as_printed(raw: str, state: str, outcome: Outcome) -> None:
    assert base_state(raw) == state
    verdict = classify(JobRecord("1", raw))
    assert (verdict.state, verdict.outcome) == (state, outcome)


@pytest.mark.parametrize(
    ("record", "detail"),
    [
        (JobRecord("7", "CANCELLED by 0", "TimeLimit", "0:15", "n1"),
         "CANCELLED by 0, reason TimeLimit, exit code 0:15, nodes n1"),
        (JobRecord("8", "FAILED", "NonZeroExitCode", "1:0", "n[1-2]"),
         "FAILED, reason NonZeroExitCode, exit code 1:0, nodes n[1-2]"),
        (JobRecord("9", "COMPLETED", "", "0:0", "n1"), "COMPLETED, nodes n1"),
        (JobRecord("10", "PENDING", "Resources"), "PENDING, reason Resources"),
        (JobRecord("11", "RUNNING"), "RUNNING"),
    ],
)
def test_classify_detail(record: JobRecord, detail: str) -> None:
    assert classify(record).detail == detail


def test_verdict_is_frozen() -> None:
    verdict = classify(JobRecord("1", "RUNNING"))
    assert isinstance(verdict, Verdict)
    with pytest.raises(AttributeError):
        verdict.outcome = Outcome.FAILED  # type: ignore[misc]


# ---------------------------------------------------------------- StatusQuery

NO_SUCH_JOB = "slurm_load_jobs error: Invalid job id specified\n"
NO_ACCOUNTING = "sacct: error: Slurm accounting storage is disabled\n"


def test_one_squeue_call_for_many_ids(fake_slurm: FakeSlurm) -> None:
    fake_slurm.answer(slurm.squeue_argv(["5", "6", "10"]),
                      stdout="5|RUNNING|None|n1\n6|PENDING|Resources|\n10|COMPLETED|None|n2\n")
    records = StatusQuery(run=fake_slurm.run).records(["10", "6", "5", "6"])
    assert len(fake_slurm.calls) == 1
    assert records == {
        "5": JobRecord("5", "RUNNING", "", "", "n1"),
        "6": JobRecord("6", "PENDING", "Resources", "", ""),
        "10": JobRecord("10", "COMPLETED", "", "", "n2"),
    }


def test_ids_are_asked_in_numeric_order(fake_slurm: FakeSlurm) -> None:
    fake_slurm.answer(slurm.squeue_argv(["9", "10", "100"]), stdout="9|RUNNING|None|n1\n10|RUNNING|None|n1\n"
                      "100|RUNNING|None|n1\n")
    StatusQuery(run=fake_slurm.run).records(iter(["100", "9", "10"]))
    assert fake_slurm.argvs() == [slurm.squeue_argv(["9", "10", "100"])]


def test_ten_thousand_ids_are_one_listing_of_the_users_jobs(fake_slurm: FakeSlurm) -> None:
    # named one by one they would not fit in one argument (the kernel's limit is 128 KiB)
    ids = [str(100000 + i) for i in range(10000)]
    listing = "".join(f"{i}|PENDING|JobHeldUser|\n" for i in ids[:9998]) + "7|RUNNING|None|n1\n"
    fake_slurm.answer(slurm.squeue_mine_argv(), stdout=listing)
    fake_slurm.answer(slurm.sacct_argv(ids[9998:]), stdout=f"{ids[9998]}|COMPLETED|None|0:0|n1\n")
    records = StatusQuery(run=fake_slurm.run).records(ids)
    assert fake_slurm.commands() == ["squeue", "sacct"]
    assert len(records) == 9999 and "7" not in records          # somebody else's job of ours: not asked about
    assert records[ids[0]].reason == "JobHeldUser" and records[ids[9998]].state == "COMPLETED"


def test_sacct_is_asked_in_chunks(fake_slurm: FakeSlurm) -> None:
    ids = [str(i) for i in range(1, 2501)]
    fake_slurm.answer(slurm.squeue_mine_argv(), stdout="")
    for start in (0, 1000, 2000):
        fake_slurm.answer(slurm.sacct_argv(ids[start:start + 1000]), stdout=f"{ids[start]}|COMPLETED|None|0:0|n1\n")
    records = StatusQuery(run=fake_slurm.run).records(ids)
    assert fake_slurm.commands() == ["squeue", "sacct", "sacct", "sacct"]
    assert set(records) == {"1", "1001", "2001"}


def test_no_ids_no_calls(fake_slurm: FakeSlurm) -> None:
    assert StatusQuery(run=fake_slurm.run).records([]) == {}
    assert fake_slurm.calls == []


def test_sacct_only_for_ids_that_left_the_queue(fake_slurm: FakeSlurm) -> None:
    fake_slurm.answer(slurm.squeue_argv(["5", "7", "8"]), stdout="5|RUNNING|None|n1\n")
    fake_slurm.answer(slurm.sacct_argv(["7", "8"]), stdout="7|CANCELLED by 0|None|0:15|n1\n8|COMPLETED|None|0:0|n2\n")
    records = StatusQuery(run=fake_slurm.run).records(["5", "7", "8"])
    assert fake_slurm.commands() == ["squeue", "sacct"]
    assert records == {
        "5": JobRecord("5", "RUNNING", "", "", "n1"),
        "7": JobRecord("7", "CANCELLED by 0", "", "0:15", "n1"),
        "8": JobRecord("8", "COMPLETED", "", "0:0", "n2"),
    }


def test_squeue_invalid_job_id_falls_back_to_one_sacct(fake_slurm: FakeSlurm) -> None:
    # squeue fails outright when it knows none of the ids
    fake_slurm.answer(slurm.squeue_argv(["7", "8"]), stderr=NO_SUCH_JOB, returncode=1)
    fake_slurm.answer(slurm.sacct_argv(["7", "8"]), stdout="7|FAILED|NonZeroExitCode|1:0|n1\n8|TIMEOUT|None|0:0|n1\n")
    records = StatusQuery(run=fake_slurm.run).records(["8", "7"])
    assert fake_slurm.argvs() == [slurm.squeue_argv(["7", "8"]), slurm.sacct_argv(["7", "8"])]
    assert {job_id: r.state for job_id, r in records.items()} == {"7": "FAILED", "8": "TIMEOUT"}


def test_job_nobody_knows_is_absent(fake_slurm: FakeSlurm) -> None:
    fake_slurm.answer(slurm.squeue_argv(["5", "6"]), stdout="5|RUNNING|None|n1\n")
    fake_slurm.answer(slurm.sacct_argv(["6"]), stdout="")
    assert set(StatusQuery(run=fake_slurm.run).records(["5", "6"])) == {"5"}


def test_accounting_disabled_turns_sacct_off_for_good(fake_slurm: FakeSlurm) -> None:
    query = StatusQuery(run=fake_slurm.run)
    fake_slurm.answer(slurm.squeue_argv(["7"]), stderr=NO_SUCH_JOB, returncode=1, times=3)
    fake_slurm.answer(slurm.sacct_argv(["7"]), stderr=NO_ACCOUNTING, returncode=1)
    assert query.records(["7"]) == {}
    assert query.use_sacct is False
    assert query.records(["7"]) == {}
    assert query.records(["7"]) == {}
    assert fake_slurm.commands() == ["squeue", "sacct", "squeue", "squeue"]


def test_use_sacct_false_never_calls_sacct(fake_slurm: FakeSlurm) -> None:
    fake_slurm.answer(slurm.squeue_argv(["5", "6"]), stdout="5|RUNNING|None|n1\n")
    assert set(StatusQuery(run=fake_slurm.run, use_sacct=False).records(["5", "6"])) == {"5"}
    assert fake_slurm.commands() == ["squeue"]


@pytest.mark.parametrize(
    ("stderr", "transient"),
    [
        ("squeue: error: Unable to contact slurm controller (connect failure)\n", True),
        ("squeue: error: Invalid user: nobody\n", False),
    ],
)
def test_other_squeue_errors_propagate(fake_slurm: FakeSlurm, stderr: str, transient: bool) -> None:
    fake_slurm.answer(slurm.squeue_argv(["5"]), stderr=stderr, returncode=1)
    with pytest.raises(SlurmError) as excinfo:
        StatusQuery(run=fake_slurm.run).records(["5"])
    assert excinfo.value.transient is transient
    assert fake_slurm.commands() == ["squeue"]  # no sacct behind a failed squeue


# what sacct 22.05 printed here with slurmdbd stopped (exit 1)
SLURMDBD_DOWN = ("sacct: error: slurm_persist_conn_open_without_init: failed to open persistent connection to "
                 "host:10.250.0.1:6819: Connection refused\nsacct: error: Sending PersistInit msg: Connection refused\n"
                 "sacct: error: Problem talking to the database: Connection refused\n")


def test_with_accounting_away_squeue_records_stand_and_jobs_that_left_the_queue_are_unanswered(
        fake_slurm: FakeSlurm) -> None:
    query = StatusQuery(run=fake_slurm.run)
    fake_slurm.answer(slurm.squeue_argv(["5", "6", "7"]), stdout="5|RUNNING|None|n1\n6|FAILED|NonZeroExitCode|n2\n")
    fake_slurm.answer(slurm.sacct_argv(["6", "7"]), returncode=1, stderr=SLURMDBD_DOWN)
    records = query.records(["5", "6", "7"])
    assert {i: r.state for i, r in records.items()} == {"5": "RUNNING", "6": "FAILED"}
    assert query.unanswered == {"7"}  # not missing: nobody could be asked
    assert query.accounting_error is not None and query.accounting_error.transient
    assert query.use_sacct is True
    # accounting is back: the next poll asks again and clears the outage
    fake_slurm.answer(slurm.squeue_argv(["7"]), stdout="")
    fake_slurm.answer(slurm.sacct_argv(["7"]), stdout="7|COMPLETED|None|0:0|n1\n")
    assert query.records(["7"])["7"].state == "COMPLETED"
    assert query.unanswered == set() and query.accounting_error is None


def test_an_accounting_outage_is_told_once_per_outage(fake_slurm: FakeSlurm) -> None:
    query = StatusQuery(run=fake_slurm.run)
    fake_slurm.answer(slurm.squeue_argv(["7"]), stdout="", times=4)
    fake_slurm.answer(slurm.sacct_argv(["7"]), returncode=1, stderr=SLURMDBD_DOWN, times=2)
    query.records(["7"])
    news = query.outage_news()
    assert news is not None and "1 job(s) that left the queue wait" in news and "Connection refused" in news
    query.records(["7"])
    assert query.outage_news() is None  # the same outage: said already
    fake_slurm.answer(slurm.sacct_argv(["7"]), stdout="7|COMPLETED|None|0:0|n1\n")
    query.records(["7"])
    assert query.outage_news() is None
    fake_slurm.answer(slurm.sacct_argv(["7"]), returncode=1, stderr=SLURMDBD_DOWN)
    query.records(["7"])
    assert query.outage_news() is not None  # a new outage is told again


def test_a_permanent_sacct_error_propagates(fake_slurm: FakeSlurm) -> None:
    query = StatusQuery(run=fake_slurm.run)
    fake_slurm.answer(slurm.squeue_argv(["7"]), stdout="")
    fake_slurm.answer(slurm.sacct_argv(["7"]), returncode=1, stderr="sacct: error: Unknown field 'Bogus'\n")
    with pytest.raises(SlurmError) as excinfo:
        query.records(["7"])
    assert not excinfo.value.transient
    assert query.use_sacct is True
