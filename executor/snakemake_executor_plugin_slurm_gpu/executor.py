"""The Snakemake-facing executor: wires spec -> batch script -> sbatch, and status -> policy -> report."""

from __future__ import annotations

import asyncio
import os
import shlex
import threading
import time
from collections import deque
from datetime import datetime, timezone
from pathlib import Path
from typing import AsyncGenerator, Iterable, List, Sequence

from snakemake_interface_common.exceptions import WorkflowError
from snakemake_interface_executor_plugins.executors.base import SubmittedJobInfo
from snakemake_interface_executor_plugins.executors.remote import RemoteExecutor
from snakemake_interface_executor_plugins.jobs import JobExecutorInterface
from snakemake_interface_executor_plugins.settings import SharedFSUsage
from snakemake_interface_executor_plugins.utils import encode_target_jobs_cli_args

from . import slurm
from .batch_script import JobOptions, render_batch_script
from .paths import StepPaths
from .policy import Act, JobWatch, Limits
from .settings import ExecutorSettings
from .spec import ClusterInfo, ResourceError, StepSpec, build_spec, check_capacity, check_launch
from .status import StatusQuery, classify

LOG_TAIL_LINES = 20


class Executor(RemoteExecutor):
    def __post_init__(self) -> None:
        self.settings: ExecutorSettings = self.workflow.executor_settings or ExecutorSettings()
        self.root = Path.cwd()
        self.options = JobOptions(socket_ifname=self.settings.socket_ifname)
        self.status = StatusQuery(run=self._slurm)
        self.watch = JobWatch(Limits(missing_s=self.settings.missing_job_timeout_s))
        self._cluster: ClusterInfo | None = None
        self._preflight_done = False
        # every submitted job until its verdict is reported: Snakemake's own active_jobs list is
        # empty while a status check runs, and a Ctrl-C then would cancel nothing
        self._live: set[str] = set()
        self._live_lock = threading.Lock()
        self.next_seconds_between_status_checks = self.settings.status_interval_min_s

    # ------------------------------------------------------------ Slurm
    def _slurm(self, argv: Sequence[str]) -> str:
        return slurm.run(argv, timeout_s=self.settings.slurm_timeout_s)

    def _cluster_info(self) -> ClusterInfo:
        """Partitions and their GPUs per node: asked once per run."""
        if self._cluster is None:
            try:
                gpus, default = slurm.parse_sinfo(self._slurm(slurm.sinfo_argv()))
            except slurm.SlurmError as e:
                raise WorkflowError(f"slurm-gpu could not ask Slurm for its partitions: {e}") from None
            self._cluster = ClusterInfo(gpus, default)
        return self._cluster

    # ------------------------------------------------------------ pre-flight
    def _spec(self, job: JobExecutorInterface) -> StepSpec:
        spec = build_spec(job.name, dict(job.resources.items()), job.threads)
        if not job.is_group():
            check_launch(spec, getattr(job.rule, "shellcmd", None))
        check_capacity(spec, self._cluster_info())
        return spec

    def _preflight(self, jobs: Iterable[JobExecutorInterface]) -> None:
        """Check every step the run will submit, before the first one is: a bad rule found
        halfway through would leave the cluster working on steps whose results go nowhere."""
        dag = getattr(self.workflow, "dag", None)
        needrun = getattr(dag, "needrun_jobs", None)
        all_jobs = list(needrun()) if callable(needrun) else list(jobs)
        errors, seen = [], set()
        for job in all_jobs:
            if job.is_local or job.name in seen:  # resources are per rule: one check per rule
                continue
            seen.add(job.name)
            try:
                self._spec(job)
            except ResourceError as e:
                errors.append(str(e))
        if errors:
            raise WorkflowError("slurm-gpu: nothing was submitted, because:\n" + "\n".join(errors))

    def run_jobs(self, jobs: List[JobExecutorInterface]) -> None:
        if not self._preflight_done:
            self._preflight(jobs)
            self._preflight_done = True
        super().run_jobs(jobs)

    # ------------------------------------------------------------ submission
    def _paths(self, job: JobExecutorInterface) -> StepPaths:
        wildcards = {} if job.is_group() else dict(job.wildcards.items())
        return StepPaths.of(self.root, job.name, wildcards, self.settings.checkpoint_root)

    def _inner_command(self, job: JobExecutorInterface, paths: StepPaths) -> str:
        """The job-side Snakemake call. Built word by word and quoted with shlex: Snakemake's own
        formatting uses repr(), which lets a wildcard like a'$(cmd) reach the shell."""
        words = [self.get_python_executable(), "-m", "snakemake", "--snakefile", str(self.get_snakefile()),
                 "--target-jobs", *encode_target_jobs_cli_args(job.get_target_spec()),
                 "--allowed-rules", *job.rules]
        if job.is_group():
            words += ["--local-groupid", str(job.jobid)]
        else:
            words += ["--force-use-threads"]
        words += ["--cores", str(self.cores), "--attempt", str(job.attempt)]
        temp_files = list(self.workflow.dag.get_unneeded_temp_files(job))
        if temp_files:
            words += ["--unneeded-temp-files", *temp_files]
        if SharedFSUsage.INPUT_OUTPUT in self.workflow.storage_settings.shared_fs_usage:
            wait_for = [self.tmpdir, *job.get_wait_for_files()]
            if len(wait_for) > 20:
                listing = paths.script_dir / f"wait-for-files-{job.jobid}.txt"
                listing.write_text("\n".join(str(f) for f in wait_for) + "\n")
                words += ["--wait-for-files-file", str(listing)]
            else:
                words += ["--wait-for-files", *wait_for]
        factory = self.workflow.spawned_job_args_factory
        general = factory.general_args(executor_common_settings=self.common_settings)
        precommand = factory.precommand(executor_common_settings=self.common_settings)
        command = " ".join([shlex.quote(str(w)) for w in words] + [general, "--mode", "remote"])
        return f"{precommand} && {command}" if precommand else command

    def _write_script(self, paths: StepPaths, job: JobExecutorInterface, text: str) -> Path:
        paths.script_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        paths.log_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
        script = paths.script_dir / f"{stamp}-attempt{job.attempt}.sh"
        fd = os.open(script, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        return script

    def run_job(self, job: JobExecutorInterface) -> None:
        try:
            spec = self._spec(job)
        except ResourceError as e:
            raise WorkflowError(str(e)) from None
        paths = self._paths(job)
        text = render_batch_script(spec, paths, self._inner_command(job, paths), self.options)
        script = self._write_script(paths, job, text)
        try:
            job_id = slurm.parse_sbatch(self._slurm(slurm.sbatch_argv(script)))
        except (slurm.SlurmError, ValueError) as e:
            self.report_job_error(SubmittedJobInfo(job), msg=f"slurm-gpu could not submit {script}: {e}")
            return
        geometry = f"{spec.nodes} node(s) x {spec.tasks_per_node} task(s)"
        if spec.gpus:
            geometry += f", {spec.gpus_per_node} GPU(s) per node"
        self.logger.info(f"slurm-gpu: step {paths.key} is Slurm job {job_id} ({geometry}); "
                         f"script {script}, log {paths.log_file(job_id)}")
        with self._live_lock:
            self._live.add(job_id)
        self.report_job_submission(SubmittedJobInfo(job, external_jobid=job_id, aux={"paths": paths}))

    # ------------------------------------------------------------ status
    async def check_active_jobs(
        self, active_jobs: List[SubmittedJobInfo]
    ) -> AsyncGenerator[SubmittedJobInfo, None]:
        ids = [j.external_jobid for j in active_jobs]
        async with self.status_rate_limiter:
            try:
                records = await asyncio.to_thread(self.status.records, ids)
            except slurm.SlurmError as e:
                # a busy or restarting controller: keep every job and look again later
                self.logger.warning(f"slurm-gpu: status query failed, will retry: {e}")
                self._back_off(changed=False)
                for job_info in active_jobs:
                    yield job_info
                return
        now = time.monotonic()
        changed = False
        for job_info in active_jobs:
            record = records.get(job_info.external_jobid)
            action = self.watch.decide(job_info.external_jobid, classify(record) if record else None, now)
            if action.act is Act.WAIT:
                yield job_info
                continue
            changed = True
            with self._live_lock:
                self._live.discard(job_info.external_jobid)
            if action.act is Act.SUCCEED:
                self.report_job_success(job_info)
                continue
            if action.act is Act.CANCEL_AND_FAIL:
                self._cancel([job_info.external_jobid])
            self.report_job_error(job_info, msg=self._failure_message(job_info, action.reason))
        self._back_off(changed)

    def _back_off(self, changed: bool) -> None:
        """Poll fast while jobs are finishing, slower while nothing happens."""
        low, high = self.settings.status_interval_min_s, self.settings.status_interval_max_s
        current = self.next_seconds_between_status_checks or low
        self.next_seconds_between_status_checks = low if changed else min(high, current * 1.5)

    def _failure_message(self, job_info: SubmittedJobInfo, reason: str) -> str:
        paths: StepPaths = (job_info.aux or {}).get("paths") or self._paths(job_info.job)
        log = paths.log_file(job_info.external_jobid)
        message = f"slurm-gpu: step {paths.key}, Slurm job {job_info.external_jobid}: {reason}.\nLog: {log}\n"
        try:
            with open(log, errors="replace") as f:
                tail = "".join(deque(f, maxlen=LOG_TAIL_LINES))
            message += f"Last {LOG_TAIL_LINES} lines of the log:\n{tail}\n"
        except OSError:
            message += "(the log does not exist: the job may never have started)\n"
        return message

    # ------------------------------------------------------------ cancel
    def _cancel(self, job_ids: Sequence[str]) -> None:
        if not job_ids:
            return
        try:
            self._slurm(slurm.scancel_argv(job_ids))
        except slurm.SlurmError as e:
            self.logger.warning(f"slurm-gpu: could not cancel Slurm jobs {', '.join(job_ids)}: {e}")

    def cancel_jobs(self, active_jobs: List[SubmittedJobInfo]) -> None:
        with self._live_lock:
            ids = self._live | {j.external_jobid for j in active_jobs if j.external_jobid}
        self._cancel(sorted(ids, key=int))
