"""The executor's own part of submission and status, without a Snakemake workflow around it: the
script goes to sbatch on standard input and the file kept is the same bytes, private; an unknown
Slurm state is said once per job and state. The methods are called on a stand-in `self` holding
just what they use."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

from fake_slurm import FakeSlurm
from snakemake_executor_plugin_slurm_gpu import attach, slurm
from snakemake_executor_plugin_slurm_gpu.batch_script import JobOptions, StepCommand
from snakemake_executor_plugin_slurm_gpu.executor import Executor, SubmitError
from snakemake_executor_plugin_slurm_gpu.paths import StepPaths
from snakemake_executor_plugin_slurm_gpu.settings import ExecutorSettings
from snakemake_executor_plugin_slurm_gpu.slurm import JobRecord
from snakemake_executor_plugin_slurm_gpu.spec import build_spec
from snakemake_executor_plugin_slurm_gpu.status import classify
from snakemake_executor_plugin_slurm_gpu.submit import Submitter


class Logger:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def info(self, text: str) -> None:
        self.lines.append(("info", text))

    def warning(self, text: str) -> None:
        self.lines.append(("warning", text))


def stand_in(root: Path, fake: FakeSlurm) -> SimpleNamespace:
    me = SimpleNamespace(root=root, _history={}, _live=set(), _live_lock=threading.Lock(), logger=Logger(),
                         options=JobOptions(), settings=ExecutorSettings(), _unknown_states=set(),
                         _state_base_checked=False, _direct_steps=set())
    me._slurm = lambda argv, stdin=None: slurm.run(argv, timeout_s=30, runner=fake, stdin=stdin)
    me._step_command = lambda job, paths, spec: StepCommand("python -m snakemake --target-jobs 'train:' --mode remote")
    me._state_base = lambda: Executor._state_base(me)
    me._private_dir = lambda path: Executor._private_dir(me, path)
    me._write_script = lambda paths, job, text: Executor._write_script(me, paths, job, text)
    me._cancel = lambda ids: None
    me._event = lambda paths, event, job_id, **fields: Executor._event(me, paths, event, job_id, **fields)
    me._event_log_warned = False
    me.submitter = Submitter(run=me._slurm, sleep=lambda s: None)
    me._provenance_digest = lambda job: "digest-of-inputs-params-code"
    return me


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / ".snakemake").mkdir()
    return tmp_path


def test_the_script_goes_to_sbatch_on_stdin_and_the_private_file_is_the_same_bytes(workdir: Path,
                                                                                   fake_slurm: FakeSlurm) -> None:
    fake_slurm.answer(["sbatch", "--parsable"], stdout="sbatch: warning: something odd\n4711\n")
    me = stand_in(workdir, fake_slurm)
    paths = StepPaths.of(workdir, "train", {})
    old = os.umask(0)
    try:
        job_id = Executor._submit(me, SimpleNamespace(attempt=1), build_spec("train", {"gpus": 2}), paths)
    finally:
        os.umask(old)
    assert job_id == "4711" and me._live == {"4711"}
    record = attach.read_record(paths.submission_record)
    assert record is not None and record.job_id == "4711" and record.provenance == "digest-of-inputs-params-code"
    assert stat.S_IMODE(paths.submission_record.stat().st_mode) == 0o600
    (script,) = paths.script_dir.glob("*.sh")
    assert fake_slurm.stdins == [script.read_text()]
    assert stat.S_IMODE(script.stat().st_mode) == 0o600
    for directory in (paths.script_dir, paths.log_dir, paths.state_dir):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700


def test_a_group_writable_script_directory_is_not_written_into(workdir: Path, fake_slurm: FakeSlurm) -> None:
    me = stand_in(workdir, fake_slurm)
    paths = StepPaths.of(workdir, "train", {})
    paths.script_dir.mkdir(parents=True)
    paths.script_dir.chmod(0o770)
    with pytest.raises(SubmitError, match="could not write its batch script: .* is writable by its group"):
        Executor._submit(me, SimpleNamespace(attempt=1), build_spec("train", {"gpus": 2}), paths)
    assert fake_slurm.calls == [] and list(paths.script_dir.iterdir()) == []


def test_an_unknown_state_is_said_once_per_job_and_state(workdir: Path, fake_slurm: FakeSlurm) -> None:
    me = stand_in(workdir, fake_slurm)
    paths = StepPaths.of(workdir, "train", {})
    for reason in ("a", "b"):  # the reason changing is not news
        Executor._note_unknown_state(me, "5", paths, classify(JobRecord("5", "WARPING", reason)))
    Executor._note_unknown_state(me, "5", paths, classify(JobRecord("5", "FOLDING")))
    Executor._note_unknown_state(me, "6", paths, classify(JobRecord("6", "WARPING")))
    warnings = [text for level, text in me.logger.lines if level == "warning"]
    assert len(warnings) == 3
    assert "Slurm job 5: state 'WARPING, reason a' is unknown to slurm-gpu; waiting up to 600 s" in warnings[0]
    assert "--slurm-gpu-missing-job-timeout-s" in warnings[0]


def test_a_world_writable_dot_snakemake_of_ours_loses_its_write_bits_once(workdir: Path,
                                                                          fake_slurm: FakeSlurm) -> None:
    # Snakemake made it under umask 0: anybody could otherwise swap .snakemake/slurm-gpu for their own
    (workdir / ".snakemake").chmod(0o777)
    fake_slurm.answer(["sbatch", "--parsable"], stdout="12\n", times=2)
    me = stand_in(workdir, fake_slurm)
    for model in ("a", "b"):
        Executor._submit(me, SimpleNamespace(attempt=1), build_spec("train", {"gpus": 2}),
                         StepPaths.of(workdir, "train", {"model": model}))
    assert stat.S_IMODE((workdir / ".snakemake").stat().st_mode) == 0o755
    warnings = [text for level, text in me.logger.lines if level == "warning"]
    assert len(warnings) == 1 and "(mode 0777); removed those write bits" in warnings[0]


# ---------------------------------------------------------------- two clocks: event logs and Slurm polls

def poller(root: Path) -> SimpleNamespace:
    from snakemake_executor_plugin_slurm_gpu.tracking import StepTracker
    me = SimpleNamespace(settings=ExecutorSettings(), tracker=StepTracker(), _tick_s=0.5, _poll_interval_s=2.0,
                         _next_poll=0.0, _last_poll=float("-inf"), next_seconds_between_status_checks=0.5)
    return me


def polled_at(me: SimpleNamespace, now: float, changed: bool) -> None:
    me._last_poll = now
    Executor._back_off(me, changed)


def test_slurm_is_asked_on_its_own_interval_which_grows_while_nothing_changes(tmp_path: Path) -> None:
    me, jobs = poller(tmp_path), [SimpleNamespace(external_jobid="9")]
    assert Executor._poll_due(me, jobs, 100.0)
    polled_at(me, 100.0, changed=False)
    assert me._poll_interval_s == 3.0 and me.next_seconds_between_status_checks == 0.5
    assert not Executor._poll_due(me, jobs, 102.9) and Executor._poll_due(me, jobs, 103.0)
    for _ in range(10):
        polled_at(me, 200.0, changed=False)
    assert me._poll_interval_s == me.settings.status_interval_max_s == 10
    polled_at(me, 300.0, changed=True)
    assert me._poll_interval_s == 2 and not Executor._poll_due(me, jobs, 301.9)


def test_a_batch_script_that_says_it_ended_gets_slurm_asked_within_a_second(tmp_path: Path) -> None:
    import time as clock

    from snakemake_executor_plugin_slurm_gpu import events
    me, jobs = poller(tmp_path), [SimpleNamespace(external_jobid="9")]
    for _ in range(4):
        polled_at(me, 100.0, changed=False)      # next regular poll: 10 s away
    log = tmp_path / "train.jsonl"
    events.append(log, events.record("started", "train/all", "job", "9", nodes="n1", restart=0))
    me.tracker.read(log, "9", 1)
    assert not Executor._poll_due(me, jobs, 101.5)
    events.append(log, events.record("ended", "train/all", "job", "9", exit_code=0))
    me.tracker.read(log, "9", 1)
    assert not Executor._poll_due(me, jobs, 100.5)   # at most one poll per ENDED_POLL_GAP_S
    assert Executor._poll_due(me, jobs, 101.0)
    # another job's end, or an end long ago, is no reason to ask
    assert not Executor._poll_due(me, [SimpleNamespace(external_jobid="10")], 101.0)
    me.tracker._ended["9"] = clock.time() - 60
    assert not Executor._poll_due(me, jobs, 101.0)
    # a requeued job starts again: its earlier end no longer counts
    events.append(log, events.record("ended", "train/all", "job", "9", exit_code=143))
    events.append(log, events.record("started", "train/all", "job", "9", nodes="n2", restart=1))
    me.tracker.read(log, "9", 1)
    assert me.tracker.ended_at("9") is None and not Executor._poll_due(me, jobs, 101.0)


# ---------------------------------------------------------------- direct steps

def direct_stand_in(root: Path, fake: FakeSlurm, prepare) -> SimpleNamespace:
    me = stand_in(root, fake)
    me._step_command = lambda job, paths, spec: StepCommand("/bin/bash -c 'wc -l a > b'", direct=True)
    me._prepare_direct = prepare
    return me


def test_a_direct_step_has_its_outputs_prepared_before_it_is_submitted(workdir: Path, fake_slurm: FakeSlurm) -> None:
    order: list[str] = []
    fake_slurm.answer(["sbatch", "--parsable"], stdout="31\n")
    me = direct_stand_in(workdir, fake_slurm, lambda job: order.append(f"prepared, sbatch calls: {len(fake_slurm.calls)}"))
    Executor._submit(me, SimpleNamespace(attempt=1), build_spec("count", {}), StepPaths.of(workdir, "count", {}))
    assert order == ["prepared, sbatch calls: 0"]
    (script,) = StepPaths.of(workdir, "count", {}).script_dir.glob("*.sh")
    assert "#SBATCH --no-requeue" in script.read_text() and "wc -l a > b" in script.read_text()
    assert me._direct_steps == {"count/all"}  # Slurm will not requeue it: a preemption is final at once


def test_a_direct_step_whose_outputs_cannot_be_prepared_is_not_submitted(workdir: Path, fake_slurm: FakeSlurm) -> None:
    def refuse(job):
        raise RuntimeError("Write-protected output files for rule count: counts/a.txt")
    me = direct_stand_in(workdir, fake_slurm, refuse)
    with pytest.raises(SubmitError, match="could not prepare its outputs: Write-protected output files"):
        Executor._submit(me, SimpleNamespace(attempt=1), build_spec("count", {}), StepPaths.of(workdir, "count", {}))
    assert fake_slurm.calls == []


def test_a_job_refused_for_its_account_names_the_users_accounts(workdir: Path, fake_slurm: FakeSlurm) -> None:
    fake_slurm.answer(["sbatch", "--parsable"], returncode=1,
                      stderr="sbatch: error: Batch job submission failed: Invalid account or account/partition "
                             "combination specified\n")
    fake_slurm.answer(slurm.user_accounts_argv(), stdout="proj-a\nproj-b\n")
    me = stand_in(workdir, fake_slurm)
    me._account_hint = lambda spec, error: Executor._account_hint(me, spec, error)
    with pytest.raises(SubmitError) as excinfo:
        Executor._submit(me, SimpleNamespace(attempt=1), build_spec("train", {}), StepPaths.of(workdir, "train", {}))
    message = str(excinfo.value)
    assert "Invalid account" in message
    assert "HINT: rule 'train': no slurm_account is set" in message and "your accounts: proj-a, proj-b" in message


def test_other_refusals_get_no_account_hint(workdir: Path, fake_slurm: FakeSlurm) -> None:
    fake_slurm.answer(["sbatch", "--parsable"], returncode=1,
                      stderr="sbatch: error: invalid partition specified: nosuch\n")
    me = stand_in(workdir, fake_slurm)
    me._account_hint = lambda spec, error: Executor._account_hint(me, spec, error)
    with pytest.raises(SubmitError) as excinfo:
        Executor._submit(me, SimpleNamespace(attempt=1), build_spec("train", {}), StepPaths.of(workdir, "train", {}))
    assert "HINT" not in str(excinfo.value) and fake_slurm.argvs() == [["sbatch", "--parsable"]]
