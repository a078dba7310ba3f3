"""Finding a step's Slurm job again by its key (comment + working directory): re-attaching after the
Snakemake that submitted it died, and spotting the job an sbatch with a lost reply created."""

from __future__ import annotations

import stat
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace

from backend_host import Host, batch_jobs
from fake_slurm import FakeSlurm
from snakemake_executor_plugin_slurm_gpu import attach, events, lifecycle, slurm
from snakemake_executor_plugin_slurm_gpu.attach import Submission
from snakemake_executor_plugin_slurm_gpu.batch_jobs import BatchJobs
from snakemake_executor_plugin_slurm_gpu.paths import StepPaths
from snakemake_executor_plugin_slurm_gpu.slurm import StepJob
from snakemake_executor_plugin_slurm_gpu.spec import build_spec

ROOT = Path("/work/flow")


def job(job_id: str, state: str = "RUNNING", step: str = "train/lr=0.1", workdir: str = str(ROOT),
        submitted: str = "2026-12-04T01:02:03") -> StepJob:
    return StepJob(job_id, state, submitted, workdir, step)


def test_the_listing_keeps_only_slurm_gpu_jobs_and_splits_a_piped_workdir_from_the_comment() -> None:
    listing = ("41|RUNNING|2026-12-04T01:02:03|/work/flow|slurm-gpu step=train/lr=0.1\n"
               "42|PENDING|2026-12-04T01:02:04|/odd|dir|slurm-gpu step=eval/all\n"
               "43|RUNNING|2026-12-04T01:02:05|/work/flow|someone else's comment | with pipes\n"
               "44|RUNNING|2026-12-04T01:02:05|/work/flow|(null)\n"
               "garbage line\n"
               "4²|RUNNING|2026-12-04T01:02:05|/work/flow|slurm-gpu step=train/all\n")
    assert slurm.parse_step_jobs(listing) == [
        StepJob("41", "RUNNING", "2026-12-04T01:02:03", "/work/flow", "train/lr=0.1"),
        StepJob("42", "PENDING", "2026-12-04T01:02:04", "/odd|dir", "eval/all"),
    ]


def test_live_jobs_are_grouped_by_step_for_this_directory_only() -> None:
    jobs = [job("1"), job("2", "COMPLETED"), job("3", "PENDING", step="eval/all"), job("4", workdir="/elsewhere"),
            job("5", "REQUEUE_HOLD"), job("6", "CANCELLED by 1000")]
    assert attach.live_by_step(jobs, ROOT) == {"train/lr=0.1": [job("1"), job("5", "REQUEUE_HOLD")],
                                               "eval/all": [job("3", "PENDING", step="eval/all")]}


def test_a_live_job_submitted_with_the_same_inputs_params_and_code_is_re_attached() -> None:
    decision = attach.decide([job("12")], Submission("abc", 1.0, "12"), provenance="abc")
    assert decision == attach.Attach("12")


def test_of_two_live_copies_the_newest_is_kept_and_the_older_cancelled() -> None:
    decision = attach.decide([job("31"), job("9")], Submission("abc", 1.0, "31"), provenance="abc")
    assert decision.job_id == "31" and decision.cancel == ("9",)


def test_a_live_job_of_a_changed_step_is_cancelled_and_the_step_submitted_afresh() -> None:
    decision = attach.decide([job("12")], Submission("old", 1.0, "12"), provenance="new")
    assert decision.job_id is None and decision.cancel == ("12",)
    assert "changed" in decision.why


def test_a_live_job_without_a_record_cannot_be_trusted_and_is_cancelled() -> None:
    decision = attach.decide([job("12")], None, provenance="abc")
    assert decision.job_id is None and decision.cancel == ("12",)


def test_nothing_live_means_a_plain_submission() -> None:
    assert attach.decide([], Submission("abc", 1.0, "12"), "abc") == attach.Attach(None)


def test_a_lost_submission_is_the_steps_unknown_job_submitted_since_the_attempt_began() -> None:
    began = datetime.fromisoformat("2026-12-04T01:02:03").timestamp()
    jobs = [job("7", submitted="2026-12-04T01:00:00"),  # an earlier one
            job("8", submitted="2026-12-04T01:02:03"),  # known already
            job("9", submitted="2026-12-04T01:02:04", step="eval/all"),
            job("10", submitted="2026-12-04T01:02:04", workdir="/elsewhere"),
            job("11", submitted="N/A")]
    assert attach.lost_submission(jobs, ROOT, "train/lr=0.1", began, known=["8"]) is None
    jobs.append(job("12", "PENDING", submitted="2026-12-04T01:02:05"))
    assert attach.lost_submission(jobs, ROOT, "train/lr=0.1", began, known=["8"]) == "12"


def test_the_record_is_replaced_whole_and_private(tmp_path: Path) -> None:
    path = tmp_path / "train" / "all.json"
    path.parent.mkdir()
    assert attach.read_record(path) is None and not attach.any_records(tmp_path)
    attach.write_record(path, Submission("abc", 5.0))
    attach.write_record(path, Submission("abc", 5.0, "77"))
    assert attach.read_record(path) == Submission("abc", 5.0, "77")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in path.parent.iterdir()) == ["all.json"]  # no temporary file left
    assert attach.any_records(tmp_path)
    attach.clear_record(path)
    attach.clear_record(path)  # twice is fine
    assert not attach.any_records(tmp_path)


def reattaching(root: Path, fake: FakeSlurm, orphans: dict[str, list[StepJob]]) -> tuple[BatchJobs, Host]:
    host = Host()
    backend = batch_jobs(root, fake, host)
    backend.orphans = orphans
    return backend, host


def test_the_executor_waits_for_a_re_attached_job_and_submits_nothing(tmp_path: Path, fake_slurm: FakeSlurm) -> None:
    paths = StepPaths.of(tmp_path, "train", {"lr": "0.1"})
    paths.submission_record.parent.mkdir(parents=True)
    attach.write_record(paths.submission_record, Submission("abc", 1.0, "12"))
    paths.event_dir.mkdir(parents=True)  # the earlier run's, which submitted the job
    me, host = reattaching(tmp_path, fake_slurm, {"train/lr=0.1": [job("12", workdir=str(tmp_path))]})
    step = SimpleNamespace(is_group=lambda: False)
    assert me.reattach(step, build_spec("train", {"gpus": 2}), paths, "abc") is True
    assert host.submitted == [(step, "12")]
    assert lifecycle.live_jobs(me.lives.values()) == {"12"} and me.lives["train/lr=0.1"].job_ids == ("12",)
    assert [(e["event"], e["job_id"]) for e in events.read(paths.event_log)] == [("reattached", "12")]
    assert fake_slurm.calls == []
    # taken over once: a later run_job of the same step (--retries) submits normally
    assert me.reattach(step, build_spec("train", {"gpus": 2}), paths, "abc") is False


def test_the_executor_cancels_a_live_job_of_a_changed_step_before_submitting(tmp_path: Path,
                                                                            fake_slurm: FakeSlurm) -> None:
    paths = StepPaths.of(tmp_path, "train", {"lr": "0.1"})
    paths.submission_record.parent.mkdir(parents=True)
    attach.write_record(paths.submission_record, Submission("before-the-edit", 1.0, "12"))
    fake_slurm.answer(slurm.scancel_argv(["12"]))
    me, host = reattaching(tmp_path, fake_slurm, {"train/lr=0.1": [job("12", workdir=str(tmp_path))]})
    assert me.reattach(SimpleNamespace(is_group=lambda: False), build_spec("train", {"gpus": 2}), paths,
                       "after-the-edit") is False
    assert fake_slurm.argvs() == [["scancel", "12"]] and host.submitted == []


def test_a_live_group_job_cannot_be_checked_and_is_cancelled_before_the_group_is_submitted(
        tmp_path: Path, fake_slurm: FakeSlurm) -> None:
    paths = StepPaths.of(tmp_path, "bundle", {})
    paths.submission_record.parent.mkdir(parents=True)
    attach.write_record(paths.submission_record, Submission("", 1.0, "12"))
    fake_slurm.answer(slurm.scancel_argv(["12"]))
    me, host = reattaching(tmp_path, fake_slurm, {"bundle/all": [job("12", step="bundle/all", workdir=str(tmp_path))]})
    assert me.reattach(SimpleNamespace(is_group=lambda: True), build_spec("bundle", {}), paths, "") is False
    assert fake_slurm.argvs() == [["scancel", "12"]] and host.submitted == []


def test_records_of_steps_without_a_live_job_are_dropped(tmp_path: Path) -> None:
    for key in ("train/lr=0.1", "train/lr=0.2", "eval/all"):
        rule, wildcards = key.split("/")
        (tmp_path / rule).mkdir(exist_ok=True)
        attach.write_record(tmp_path / rule / f"{wildcards}.json", Submission("abc", 1.0, "1"))
    attach.drop_records_except(tmp_path, {"train/lr=0.2"})
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*.json")) == ["train/lr=0.2.json"]
