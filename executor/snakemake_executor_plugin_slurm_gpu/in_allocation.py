"""The allocation backend (`--slurm-gpu-allocation`): each step's script runs as job steps of the
allocation Snakemake itself runs in (allocation.py says how), followed by its exit status alone,
with no Slurm call."""

from __future__ import annotations

import os
from datetime import datetime, timezone
from typing import Any, AsyncGenerator, Callable, Sequence

from snakemake_interface_executor_plugins.executors.base import SubmittedJobInfo
from snakemake_interface_executor_plugins.jobs import JobExecutorInterface

from . import allocation
from .batch_script import JobOptions, StepCommand
from .paths import StepPaths
from .settings import ExecutorSettings
from .spec import StepSpec
from .step_end import after_success, failure_message
from .step_files import ScriptError, StepFiles, make_script


class InAllocation:
    """`host` is the Snakemake-facing executor: its logger and report_job_* callbacks."""

    def __init__(self, host: Any, settings: ExecutorSettings, where: allocation.Allocation, files: StepFiles,
                 options: JobOptions, step_command: Callable[[JobExecutorInterface, StepPaths, StepSpec], StepCommand],
                 prepare_direct: Callable[[JobExecutorInterface], None]) -> None:
        self.host, self.settings, self.where, self.files, self.options = host, settings, where, files, options
        self.step_command, self.prepare_direct = step_command, prepare_direct
        self.steps = allocation.LocalSteps()

    def find_orphans(self) -> None:
        """Steps of an earlier Snakemake ran in its own allocation, which ended with it: none to find."""

    def reattach(self, job: JobExecutorInterface, spec: StepSpec, paths: StepPaths, provenance: str) -> bool:
        return False

    def on_all_clusters(self) -> None:
        """Job steps stay in this allocation's cluster."""

    def start(self, job: JobExecutorInterface, spec: StepSpec, paths: StepPaths, provenance: str) -> None:
        try:
            script = make_script(self.files, job, spec, paths, self.options, self.step_command, self.prepare_direct).path
            log = paths.log_dir / f"allocation-{self.where.job_id}-{datetime.now(timezone.utc):%Y%m%dT%H%M%S.%f}.log"
            step_id = self.steps.start(self.where, allocation.step_command(spec, script),
                                       allocation.step_environment(spec, self.where, os.environ), log, self.files.root)
        except (ScriptError, OSError) as e:
            self.host.report_job_error(SubmittedJobInfo(job), msg=f"slurm-gpu: step {paths.key}: could not start it "
                                       f"in allocation {self.where.job_id}: {e}")
            return
        self.host.logger.info(f"slurm-gpu: step {paths.key} runs in allocation {self.where.job_id} "
                              f"({spec.nodes} node(s) x {spec.tasks_per_node} task(s)); log {log}")
        self.host.report_job_submission(SubmittedJobInfo(job, external_jobid=step_id,
                                                         aux={"paths": paths, "spec": spec, "log": log}))

    async def check_active(self, active_jobs: Sequence[SubmittedJobInfo],
                           rate_limiter: Any) -> AsyncGenerator[SubmittedJobInfo, None]:
        """The steps' own exit status: no Slurm call, so no rate limit."""
        for job_info in active_jobs:
            code = self.steps.poll(job_info.external_jobid)
            if code is None:
                yield job_info
                continue
            paths: StepPaths = job_info.aux["paths"]
            if code == 0:
                after_success(paths, job_info.aux["spec"].resumable, self.settings, self.host.logger)
                self.host.report_job_success(job_info)
                continue
            self.host.report_job_error(job_info, msg=failure_message(
                f"step {paths.key}, in allocation {self.where.job_id}", f"exited {code}", job_info.aux["log"]))

    def cancel(self, active_jobs: Sequence[SubmittedJobInfo]) -> None:
        self.steps.cancel()
