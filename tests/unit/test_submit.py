"""sbatch through a busy or restarting controller: transient failures are retried with backoff, a
permanent one is not, and a retry never submits a second copy of a job that did reach Slurm."""

from __future__ import annotations

from pathlib import Path

import subprocess
from datetime import datetime

import pytest

from fake_slurm import FakeSlurm
from snakemake_executor_plugin_slurm_gpu import slurm
from snakemake_executor_plugin_slurm_gpu.submit import Submitter, delays

ROOT = Path("/work/flow")
SBATCH = ["sbatch", "--parsable"]
DOWN = "sbatch: error: Batch job submission failed: Unable to contact slurm controller (connect failure)\n"
LISTING_DOWN = "slurm_load_jobs error: Unable to contact slurm controller (connect failure)\n"


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0
        self.slept: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def submitter(fake: FakeSlurm, clock: Clock, limit_s: float = 600.0) -> tuple[Submitter, list[str]]:
    told: list[str] = []
    run = lambda argv, stdin=None: slurm.run(argv, timeout_s=30, runner=fake, stdin=stdin)  # noqa: E731
    return Submitter(run=run, limit_s=limit_s, sleep=clock.sleep, clock=lambda: clock.now,
                     on_retry=lambda message, wait: told.append(message)), told


def test_backoff_grows_to_thirty_seconds_and_stops_at_the_limit() -> None:
    assert list(delays(100)) == [1, 2, 4, 8, 15, 30, 30]
    assert sum(delays(600)) <= 600
    assert list(delays(0)) == []


def test_a_controller_that_comes_back_gets_the_job_after_looking_for_a_lost_one(fake_slurm: FakeSlurm) -> None:
    clock = Clock()
    fake_slurm.answer(SBATCH, stderr=DOWN, returncode=1)
    fake_slurm.answer(slurm.squeue_steps_argv(), stderr=LISTING_DOWN, returncode=1)  # still down
    fake_slurm.answer(slurm.squeue_steps_argv(), stdout="")  # back, and nothing of ours was queued
    fake_slurm.answer(SBATCH, stdout="321\n")
    sub, told = submitter(fake_slurm, clock)
    assert sub.submit("#!/bin/bash\n", ROOT, "train/all") == "321"
    assert [argv[0] for argv in fake_slurm.argvs()] == ["sbatch", "squeue", "squeue", "sbatch"]
    assert clock.slept == [1, 2] and len(told) == 2


def test_a_submission_whose_reply_was_lost_is_found_and_not_made_twice(fake_slurm: FakeSlurm) -> None:
    clock = Clock()
    fake_slurm.fail_with(SBATCH, subprocess.TimeoutExpired(SBATCH, 60))
    stamp = datetime.fromtimestamp(clock.now + 0.5).strftime("%Y-%m-%dT%H:%M:%S")
    fake_slurm.answer(slurm.squeue_steps_argv(),
                      stdout=f"555|PENDING|{stamp}|{ROOT}|slurm-gpu step=train/all\n"
                             f"554|RUNNING|{stamp}|{ROOT}|slurm-gpu step=eval/all\n")
    sub, _ = submitter(fake_slurm, clock)
    assert sub.submit("#!/bin/bash\n", ROOT, "train/all", known=["500"]) == "555"
    assert [argv[0] for argv in fake_slurm.argvs()] == ["sbatch", "squeue"]  # one sbatch only


def test_a_permanent_error_is_not_retried(fake_slurm: FakeSlurm) -> None:
    fake_slurm.answer(SBATCH, returncode=1,
                      stderr="sbatch: error: invalid partition specified: nope\n"
                             "sbatch: error: Batch job submission failed: Invalid partition name specified\n")
    sub, told = submitter(fake_slurm, Clock())
    with pytest.raises(slurm.SlurmError, match="Invalid partition"):
        sub.submit("#!/bin/bash\n", ROOT, "train/all")
    assert fake_slurm.commands() == ["sbatch"] and told == []


def test_transient_failures_give_up_after_the_limit_with_the_last_error(fake_slurm: FakeSlurm) -> None:
    clock = Clock()
    fake_slurm.answer(SBATCH, stderr=DOWN, returncode=1, times=1)
    fake_slurm.answer(slurm.squeue_steps_argv(), stderr=LISTING_DOWN, returncode=1, times=5)
    sub, _ = submitter(fake_slurm, clock, limit_s=30)
    with pytest.raises(slurm.SlurmError, match="Unable to contact") as excinfo:
        sub.submit("#!/bin/bash\n", ROOT, "train/all")
    assert excinfo.value.transient
    assert clock.slept == [1, 2, 4, 8, 15] and sum(clock.slept) <= 30
    # while nobody could look whether the first sbatch got through, it was never repeated
    assert fake_slurm.commands().count("sbatch") == 1
