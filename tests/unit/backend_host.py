"""A Snakemake stand-in for the backends (batch_jobs.BatchJobs, in_allocation.InAllocation): they are
built through their constructors and report to this host, which records what they said and reported."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from fake_slurm import FakeSlurm
from snakemake_executor_plugin_slurm_gpu import slurm
from snakemake_executor_plugin_slurm_gpu.batch_jobs import BatchJobs
from snakemake_executor_plugin_slurm_gpu.batch_script import JobOptions, StepCommand
from snakemake_executor_plugin_slurm_gpu.settings import ExecutorSettings
from snakemake_executor_plugin_slurm_gpu.step_files import StepFiles

INNER = StepCommand("python -m snakemake --target-jobs 'train:' --mode remote")


class Logger:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def info(self, text: str) -> None:
        self.lines.append(("info", text))

    def warning(self, text: str) -> None:
        self.lines.append(("warning", text))

    def error(self, text: str) -> None:
        self.lines.append(("error", text))

    def said(self, level: str) -> list[str]:
        return [text for at, text in self.lines if at == level]


class Host:
    def __init__(self) -> None:
        self.logger = Logger()
        self.submitted: list[tuple[Any, str]] = []
        self.succeeded: list[str] = []
        self.errors: list[tuple[Any, str]] = []
        self.next_seconds_between_status_checks = 0.0

    def report_job_submission(self, info: Any) -> None:
        self.submitted.append((info.job, info.external_jobid))

    def report_job_success(self, info: Any) -> None:
        self.succeeded.append(info.external_jobid)

    def report_job_error(self, info: Any, msg: str | None = None) -> None:
        self.errors.append((info.external_jobid, msg or ""))

    def refuse(self, job: Any, message: str) -> None:
        self.errors.append((None, message))


def batch_jobs(root: Path, fake: FakeSlurm, host: Host | None = None, command: StepCommand = INNER,
               prepare_direct: Callable[[Any], None] = lambda job: None,
               settings: ExecutorSettings | None = None) -> BatchJobs:
    settings = settings or ExecutorSettings()
    host = host or Host()
    backend = BatchJobs(host, settings, lambda argv, stdin=None: slurm.run(argv, timeout_s=30, runner=fake, stdin=stdin),
                        StepFiles(root, settings.logdir, settings.checkpoint_root, host.logger.warning), JobOptions(),
                        lambda job, paths, spec: command, prepare_direct, lambda clusters: None)
    backend.submitter.sleep = lambda s: None
    return backend
