"""The Slurm backend's status path, built through its constructor with a scripted Slurm: a poll's
answer goes through the step's life and its effects are carried out (a success reported, a
preempted step resubmitted as a new job and followed on, a failure reported with the log's end,
a Ctrl-C cancelling every live job)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace

import pytest
from snakemake_interface_executor_plugins.executors.base import SubmittedJobInfo

from backend_host import Host, batch_jobs
from fake_slurm import FakeSlurm
from snakemake_executor_plugin_slurm_gpu import events, slurm
from snakemake_executor_plugin_slurm_gpu.batch_jobs import BatchJobs
from snakemake_executor_plugin_slurm_gpu.paths import StepPaths
from snakemake_executor_plugin_slurm_gpu.settings import ExecutorSettings
from snakemake_executor_plugin_slurm_gpu.spec import build_spec


class NoLimit:
    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, *exc: object) -> None:
        return None


def job(attempt: int = 1) -> SimpleNamespace:
    registered: list[str] = []
    return SimpleNamespace(attempt=attempt, registered=registered, is_group=lambda: False, input=[], params=None,
                           shellcmd="python train.py", rule=SimpleNamespace(shellcmd="python train.py", script=None),
                           name="train", wildcards={}, register=lambda external_jobid: registered.append(external_jobid))


def check(backend: BatchJobs, active: list[SubmittedJobInfo]) -> list[SubmittedJobInfo]:
    async def run() -> list[SubmittedJobInfo]:
        return [info async for info in backend.check_active(active, NoLimit())]
    backend.clock.next_poll = 0.0  # a poll is due
    return asyncio.run(run())


def squeue(fake: FakeSlurm, ids: list[str], lines: str) -> None:
    fake.answer(slurm.squeue_argv(ids), stdout=lines)


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / ".snakemake").mkdir()
    return tmp_path


def submitted(backend: BatchJobs, fake: FakeSlurm, workdir: Path, job_id: str, resources: dict) -> SubmittedJobInfo:
    fake.answer(["sbatch", "--parsable"], stdout=f"{job_id}\n")
    spec, paths, step = build_spec("train", resources), StepPaths.of(workdir, "train", {}), job()
    backend.submit(step, spec, paths, "digest")
    return SubmittedJobInfo(step, external_jobid=job_id, aux={"paths": paths, "spec": spec})


def test_a_completed_job_is_reported_done_and_its_record_cleared(workdir: Path, fake_slurm: FakeSlurm) -> None:
    host = Host()
    backend = batch_jobs(workdir, fake_slurm, host)
    info = submitted(backend, fake_slurm, workdir, "40", {})
    squeue(fake_slurm, ["40"], "40|RUNNING||n1\n")
    assert check(backend, [info]) == [info]
    squeue(fake_slurm, ["40"], "40|COMPLETED||n1\n")
    assert check(backend, [info]) == [] and host.succeeded == ["40"]
    paths = info.aux["paths"]
    assert not paths.submission_record.exists()
    assert [e["event"] for e in events.read(paths.event_log)] == ["submitted", "completed"]


def test_a_timed_out_resumable_step_is_resubmitted_and_its_new_job_followed(workdir: Path,
                                                                           fake_slurm: FakeSlurm) -> None:
    host = Host()
    backend = batch_jobs(workdir, fake_slurm, host)
    info = submitted(backend, fake_slurm, workdir, "50", {"gpus": 2, "runtime": 10})
    squeue(fake_slurm, ["50"], "50|TIMEOUT||n1\n")
    fake_slurm.answer(slurm.sacct_argv(["50"]), stdout="50|TIMEOUT|None|0:0|n1\n")
    fake_slurm.answer(slurm.scancel_argv(["50"]))
    fake_slurm.answer(["sbatch", "--parsable"], stdout="51\n")
    (follow,) = check(backend, [info])
    assert follow.external_jobid == "51" and follow.job is info.job and info.job.registered == ["51"]
    assert host.errors == [] and host.succeeded == []
    life = backend.lives["train/all"]
    assert life.job_ids == ("50", "51") and life.timeouts == 1 and life.live
    kinds = [(e["event"], e.get("job_id")) for e in events.read(info.aux["paths"].event_log)]
    assert kinds[-2:] == [("resubmitted", "50"), ("submitted", "51")]


def test_a_failed_job_is_reported_with_the_end_of_its_log(workdir: Path, fake_slurm: FakeSlurm) -> None:
    host = Host()
    backend = batch_jobs(workdir, fake_slurm, host)
    info = submitted(backend, fake_slurm, workdir, "60", {})
    paths = info.aux["paths"]
    paths.log_file("60").write_text("Traceback (most recent call last):\nValueError: bad input\n")
    squeue(fake_slurm, ["60"], "60|FAILED|NonZeroExitCode|n1\n")
    fake_slurm.answer(slurm.sacct_argv(["60"]), stdout="60|FAILED|NonZeroExitCode|1:0|n1\n")
    fake_slurm.answer(slurm.sacct_usage_argv(["60"]), stdout="")
    assert check(backend, [info]) == []
    ((job_id, message),) = host.errors
    assert job_id == "60" and "Slurm job ended FAILED" in message and "ValueError: bad input" in message
    assert f"Log: {paths.log_file('60')}" in message


def test_a_ctrl_c_cancels_every_live_job_even_while_snakemake_lists_none(workdir: Path,
                                                                        fake_slurm: FakeSlurm) -> None:
    backend = batch_jobs(workdir, fake_slurm)
    submitted(backend, fake_slurm, workdir, "70", {})
    fake_slurm.answer(slurm.scancel_argv(["70"]))
    backend.cancel([])
    assert fake_slurm.argvs()[-1] == ["scancel", "70"]


def test_slurm_is_not_asked_before_its_interval_is_up(workdir: Path, fake_slurm: FakeSlurm) -> None:
    backend = batch_jobs(workdir, fake_slurm, settings=ExecutorSettings())
    info = submitted(backend, fake_slurm, workdir, "80", {})
    squeue(fake_slurm, ["80"], "80|RUNNING||n1\n")
    check(backend, [info])
    calls = len(fake_slurm.calls)

    async def run() -> list[SubmittedJobInfo]:
        return [i async for i in backend.check_active([info], NoLimit())]
    assert asyncio.run(run()) == [info] and len(fake_slurm.calls) == calls  # no poll: none was scripted
