"""The Slurm backend's part of submission and status, without a Snakemake workflow around it: the
script goes to sbatch on standard input and the file kept is the same bytes, private; an unknown
Slurm state is said once per job and state. The backend is built through its constructor, reporting
to a stand-in host."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from types import SimpleNamespace

import pytest

from backend_host import Host, batch_jobs
from fake_slurm import FakeSlurm
from snakemake_executor_plugin_slurm_gpu import attach, lifecycle, slurm
from snakemake_executor_plugin_slurm_gpu.batch_script import StepCommand
from snakemake_executor_plugin_slurm_gpu.executor import SubmitError
from snakemake_executor_plugin_slurm_gpu.paths import StepPaths
from snakemake_executor_plugin_slurm_gpu.poll_clock import PollClock
from snakemake_executor_plugin_slurm_gpu.slurm import JobRecord
from snakemake_executor_plugin_slurm_gpu.spec import build_spec
from snakemake_executor_plugin_slurm_gpu.status import classify

PROVENANCE = "digest-of-inputs-params-code"


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / ".snakemake").mkdir()
    return tmp_path


def test_the_script_goes_to_sbatch_on_stdin_and_the_private_file_is_the_same_bytes(workdir: Path,
                                                                                   fake_slurm: FakeSlurm) -> None:
    fake_slurm.answer(["sbatch", "--parsable"], stdout="sbatch: warning: something odd\n4711\n")
    me = batch_jobs(workdir, fake_slurm)
    paths = StepPaths.of(workdir, "train", {})
    old = os.umask(0)
    try:
        job_id = me.submit(SimpleNamespace(attempt=1), build_spec("train", {"gpus": 2}), paths, PROVENANCE)
    finally:
        os.umask(old)
    assert job_id == "4711" and lifecycle.live_jobs(me.lives.values()) == {"4711"}
    record = attach.read_record(paths.submission_record)
    assert record is not None and record.job_id == "4711" and record.provenance == "digest-of-inputs-params-code"
    assert stat.S_IMODE(paths.submission_record.stat().st_mode) == 0o600
    (script,) = paths.script_dir.glob("*.sh")
    assert fake_slurm.stdins == [script.read_text()]
    assert stat.S_IMODE(script.stat().st_mode) == 0o600
    for directory in (paths.script_dir, paths.log_dir, paths.state_dir):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700


def test_a_group_writable_script_directory_is_not_written_into(workdir: Path, fake_slurm: FakeSlurm) -> None:
    me = batch_jobs(workdir, fake_slurm)
    paths = StepPaths.of(workdir, "train", {})
    paths.script_dir.mkdir(parents=True)
    paths.script_dir.chmod(0o770)
    with pytest.raises(SubmitError, match="could not write its batch script: .* is writable by its group"):
        me.submit(SimpleNamespace(attempt=1), build_spec("train", {"gpus": 2}), paths, PROVENANCE)
    assert fake_slurm.calls == [] and list(paths.script_dir.iterdir()) == []


def test_an_unknown_state_is_said_once_per_job_and_state(workdir: Path, fake_slurm: FakeSlurm) -> None:
    host = Host()
    me = batch_jobs(workdir, fake_slurm, host)
    paths, spec = StepPaths.of(workdir, "train", {}), build_spec("train", {})

    def poll(job_id: str, state: str, reason: str = "") -> None:
        record = JobRecord(job_id, state, reason)
        me.advance(paths, spec, lifecycle.Polled(classify(record), record), SimpleNamespace(external_jobid=job_id))

    me.advance(paths, spec, lifecycle.Submitted("5"))
    for reason in ("a", "b"):  # the reason changing is not news
        poll("5", "WARPING", reason)
    poll("5", "FOLDING")
    me.advance(paths, spec, lifecycle.Submitted("6"))
    poll("6", "WARPING")
    warnings = host.logger.said("warning")
    assert len(warnings) == 3
    assert "Slurm job 5: state 'WARPING, reason a' is unknown to slurm-gpu; waiting up to 600 s" in warnings[0]
    assert "--slurm-gpu-missing-job-timeout-s" in warnings[0]


def test_a_world_writable_dot_snakemake_of_ours_loses_its_write_bits_once(workdir: Path,
                                                                          fake_slurm: FakeSlurm) -> None:
    # Snakemake made it under umask 0: anybody could otherwise swap .snakemake/slurm-gpu for their own
    (workdir / ".snakemake").chmod(0o777)
    fake_slurm.answer(["sbatch", "--parsable"], stdout="12\n", times=2)
    host = Host()
    me = batch_jobs(workdir, fake_slurm, host)
    for model in ("a", "b"):
        me.submit(SimpleNamespace(attempt=1), build_spec("train", {"gpus": 2}),
                  StepPaths.of(workdir, "train", {"model": model}), PROVENANCE)
    assert stat.S_IMODE((workdir / ".snakemake").stat().st_mode) == 0o755
    warnings = host.logger.said("warning")
    assert len(warnings) == 1 and "(mode 0777); removed those write bits" in warnings[0]


# ---------------------------------------------------------------- two clocks: event logs and Slurm polls

def polled_at(clock: PollClock, now: float, changed: bool) -> None:
    clock.polled(now)
    clock.back_off(changed)


def test_slurm_is_asked_on_its_own_interval_which_grows_while_nothing_changes() -> None:
    clock = PollClock(tick_s=0.5, min_s=2.0, max_s=10.0)
    assert clock.due(100.0, [None], 0.0)
    polled_at(clock, 100.0, changed=False)
    assert clock.interval_s == 3.0 and clock.between_checks_s == 0.5
    assert not clock.due(102.9, [None], 0.0) and clock.due(103.0, [None], 0.0)
    for _ in range(10):
        polled_at(clock, 200.0, changed=False)
    assert clock.interval_s == 10
    polled_at(clock, 300.0, changed=True)
    assert clock.interval_s == 2 and not clock.due(301.9, [None], 0.0)


def test_a_batch_script_that_says_it_ended_gets_slurm_asked_within_a_second(tmp_path: Path,
                                                                          fake_slurm: FakeSlurm) -> None:
    import time as clock

    from snakemake_executor_plugin_slurm_gpu import events
    me = batch_jobs(tmp_path, fake_slurm)
    jobs = [SimpleNamespace(external_jobid="9")]

    def due(now: float, active=jobs) -> bool:
        return me.clock.due(now, me.ended_at(active), clock.time())

    for _ in range(4):
        polled_at(me.clock, 100.0, changed=False)      # next regular poll: 10 s away
    log = tmp_path / "train.jsonl"
    events.append(log, events.record("started", "train/all", "job", "9", nodes="n1", restart=0))
    me.tracker.read(log, "9", 1, 1)
    assert not due(101.5)
    events.append(log, events.record("ended", "train/all", "job", "9", exit_code=0))
    me.tracker.read(log, "9", 1, 1)
    assert not due(100.5)   # at most one poll per ENDED_POLL_GAP_S
    assert due(101.0)
    # another job's end, or an end long ago, is no reason to ask
    assert not due(101.0, [SimpleNamespace(external_jobid="10")])
    long_ago = clock.time() - 60
    events.append(log, {**events.record("started", "train/all", "job", "11", nodes="n1", restart=0), "ts": long_ago})
    events.append(log, {**events.record("ended", "train/all", "job", "11", exit_code=0), "ts": long_ago})
    me.tracker.read(log, "11", 1, 1)
    assert not due(101.0, [SimpleNamespace(external_jobid="11")])
    # a requeued job starts again: its earlier end no longer counts
    events.append(log, events.record("ended", "train/all", "job", "9", exit_code=143))
    events.append(log, events.record("started", "train/all", "job", "9", nodes="n2", restart=1))
    me.tracker.read(log, "9", 1, 1)
    assert me.tracker.ended_at("9") is None and not due(101.0)


# ---------------------------------------------------------------- direct steps

DIRECT = StepCommand("/bin/bash -c 'wc -l a > b'", direct=True)


def test_a_direct_step_has_its_outputs_prepared_before_it_is_submitted(workdir: Path, fake_slurm: FakeSlurm) -> None:
    order: list[str] = []
    fake_slurm.answer(["sbatch", "--parsable"], stdout="31\n")
    me = batch_jobs(workdir, fake_slurm, command=DIRECT,
                    prepare_direct=lambda job: order.append(f"prepared, sbatch calls: {len(fake_slurm.calls)}"))
    me.submit(SimpleNamespace(attempt=1), build_spec("count", {}), StepPaths.of(workdir, "count", {}), "")
    assert order == ["prepared, sbatch calls: 0"]
    (script,) = StepPaths.of(workdir, "count", {}).script_dir.glob("*.sh")
    assert "#SBATCH --no-requeue" in script.read_text() and "wc -l a > b" in script.read_text()
    assert me.lives["count/all"].direct  # Slurm will not requeue it: a preemption is final at once


def test_a_direct_step_whose_outputs_cannot_be_prepared_is_not_submitted(workdir: Path, fake_slurm: FakeSlurm) -> None:
    def refuse(job):
        raise RuntimeError("Write-protected output files for rule count: counts/a.txt")
    me = batch_jobs(workdir, fake_slurm, command=DIRECT, prepare_direct=refuse)
    with pytest.raises(SubmitError, match="could not prepare its outputs: Write-protected output files"):
        me.submit(SimpleNamespace(attempt=1), build_spec("count", {}), StepPaths.of(workdir, "count", {}), "")
    assert fake_slurm.calls == []


def test_a_job_refused_for_its_account_names_the_users_accounts(workdir: Path, fake_slurm: FakeSlurm) -> None:
    fake_slurm.answer(["sbatch", "--parsable"], returncode=1,
                      stderr="sbatch: error: Batch job submission failed: Invalid account or account/partition "
                             "combination specified\n")
    fake_slurm.answer(slurm.user_accounts_argv(), stdout="proj-a\nproj-b\n")
    me = batch_jobs(workdir, fake_slurm)
    with pytest.raises(SubmitError) as excinfo:
        me.submit(SimpleNamespace(attempt=1), build_spec("train", {}), StepPaths.of(workdir, "train", {}), "")
    message = str(excinfo.value)
    assert "Invalid account" in message
    assert "HINT: rule 'train': no slurm_account is set" in message and "your accounts: proj-a, proj-b" in message


def test_other_refusals_get_no_account_hint(workdir: Path, fake_slurm: FakeSlurm) -> None:
    fake_slurm.answer(["sbatch", "--parsable"], returncode=1,
                      stderr="sbatch: error: invalid partition specified: nosuch\n")
    me = batch_jobs(workdir, fake_slurm)
    with pytest.raises(SubmitError) as excinfo:
        me.submit(SimpleNamespace(attempt=1), build_spec("train", {}), StepPaths.of(workdir, "train", {}), "")
    assert "HINT" not in str(excinfo.value) and fake_slurm.argvs() == [["sbatch", "--parsable"]]
