"""The Slurm backend: every step is a batch job of its own (sbatch), followed by polls, its event log
and the watchdogs. Each step's state is its StepLife (lifecycle.py); this module feeds observations
in and carries the effects out."""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass
from typing import Any, AsyncGenerator, Callable, Sequence

from snakemake_interface_executor_plugins.executors.base import SubmittedJobInfo
from snakemake_interface_executor_plugins.jobs import JobExecutorInterface

from . import (attach, contract, ending, events, heartbeat, lifecycle, logs, placement, private, slurm, stall,
               step_provenance, watchdog)
from .batch_script import JobOptions, StepCommand
from .lifecycle import Cancel, Effect, Emit, Fail, Resubmit, Say, StepLife, StepRules, Succeed, Widen
from .paths import STATE_DIR, StepPaths
from .policy import Budgets, Limits, Stop
from .settings import ExecutorSettings
from .spec import StepSpec
from .status import Outcome, StatusQuery, classify
from .step_end import after_success, failure_message
from .step_files import Script, ScriptError, StepFiles, make_script
from .poll_clock import PollClock
from .submit import Submitter, account_hint, retrying
from .tracking import StepTracker


class SubmitError(RuntimeError):
    """sbatch refused a step (or printed no job id); the message carries its argv and stderr."""


@dataclass(frozen=True)
class Prepared:
    """A step ready for sbatch: its script written, its submission recorded."""

    job: JobExecutorInterface
    spec: StepSpec
    paths: StepPaths
    script: Script
    record: attach.Submission


class BatchJobs:
    """`host` is the Snakemake-facing executor: its logger and report_job_* callbacks."""

    def __init__(self, host: Any, settings: ExecutorSettings, run: Callable[..., str], files: StepFiles,
                 options: JobOptions, step_command: Callable[[JobExecutorInterface, StepPaths, StepSpec], StepCommand],
                 prepare_direct: Callable[[JobExecutorInterface], None],
                 default_partition: Callable[[str | None], str | None]) -> None:
        self.host, self.settings, self.run, self.files, self.options = host, settings, run, files, options
        self.root = files.root
        self.step_command, self.prepare_direct, self.default_partition = step_command, prepare_direct, default_partition
        self.status = StatusQuery(run=run)
        self.submitter = Submitter(run=run, limit_s=float(settings.slurm_retry_s), on_retry=self.say_retry)
        self.budgets = Budgets(preemptions=settings.max_preemptions, timeouts=settings.max_timeouts)
        self.limits = Limits(missing_s=settings.missing_job_timeout_s)
        self.tracker = StepTracker()
        self.clock = PollClock(float(settings.status_event_interval_s), float(settings.status_interval_min_s),
                               float(settings.status_interval_max_s))
        # each step's life, by step key; Snakemake's active_jobs list is empty while a status check
        # runs, so a Ctrl-C reads the live jobs from here
        self.lives: dict[str, StepLife] = {}
        self._lock = threading.Lock()
        # live jobs of earlier Snakemake runs in this directory, by step key: asked once, only when
        # a submission record was left behind (the Snakemake that wrote it did not see its verdict)
        self.orphans: dict[str, list[slurm.StepJob]] = {}
        self._event_log_warned = False

    @property
    def logger(self) -> Any:
        return self.host.logger

    def say_retry(self, message: str, wait: float) -> None:
        self.logger.warning(f"slurm-gpu: Slurm is busy or unreachable, retrying in {wait:g} s: {message}")

    def rules(self, spec: StepSpec) -> StepRules:
        return StepRules(resumable=spec.resumable, requeue=spec.requeue, requeue_off=spec.requeue_off_by,
                         elastic=spec.min_nodes is not None, budgets=self.budgets, limits=self.limits)

    def advance(self, paths: StepPaths, spec: StepSpec, obs: lifecycle.Observation,
                job_info: SubmittedJobInfo | None = None) -> SubmittedJobInfo | None:
        """Feed the step's life one observation and carry out what it says; the job to follow on
        with when that was a resubmission."""
        with self._lock:
            life = self.lives.get(paths.key) or StepLife(paths.key)
            job_id = life.job_id
            life, effects = lifecycle.advance(life, obs, time.monotonic(), self.rules(spec))
            self.lives[paths.key] = life
        return self.carry_out(paths, spec, job_id, effects, job_info)

    def carry_out(self, paths: StepPaths, spec: StepSpec, job_id: str | None, effects: Sequence[Effect],
                  job_info: SubmittedJobInfo | None) -> SubmittedJobInfo | None:
        for effect in effects:
            match effect:
                case Emit(kind=kind, job_id=about, fields=fields):
                    self.emit(paths, kind, about, **fields)
                case Say(text=text, warn=warn):
                    line = f"slurm-gpu: step {paths.key}, Slurm job {job_id}: {text}"
                    (self.logger.warning if warn else self.logger.info)(line)
                case Cancel(job_ids=ids):
                    self.cancel_ids(list(ids))
                case Widen(job_id=about):
                    assert spec.min_nodes is not None
                    self.ask(slurm.node_range_argv(about, spec.min_nodes, spec.nodes, spec.tasks_per_node,
                                                   self.status.clusters), f"could not widen the node range of {about}")
                case Resubmit(reason=reason, stop=stop, exclude_nodes=nodes):
                    assert job_info is not None
                    return self.resubmit(job_info, reason, stop, nodes)
                case Succeed() | Fail():
                    assert job_info is not None
                    self.tracker.forget(job_info.external_jobid, step_ended=True)
                    attach.clear_record(paths.submission_record)
                    if isinstance(effect, Succeed):
                        after_success(paths, spec.resumable, self.settings, self.logger)
                        self.host.report_job_success(job_info)
                    else:
                        self.host.report_job_error(job_info, msg=failure_message(
                            f"step {paths.key}, Slurm job {job_info.external_jobid}", effect.reason,
                            paths.log_file(job_info.external_jobid), effect.ranks_ended))
        return None

    def emit(self, paths: StepPaths, kind: str, job_id: str | None, **fields: object) -> None:
        """Append to the step's event log; a failure to write it is said once, never fatal."""
        try:
            events.append(paths.event_log, events.record(kind, paths.key, "executor", job_id, **fields))
        except OSError as e:
            if not self._event_log_warned:
                self._event_log_warned = True
                self.logger.warning(f"slurm-gpu: cannot write the event log {paths.event_log}: {e}")

    # ------------------------------------------------------------ start: re-attach or submit
    def find_orphans(self) -> None:
        """Once per run, before the first submission: the live jobs of steps whose verdict an earlier
        Snakemake never saw (one squeue, and only if such a step left its record behind)."""
        argv = slurm.squeue_steps_argv(self.status.clusters)
        try:
            self.orphans, unclaimed = attach.earlier_runs(
                lambda: retrying(self.run, argv, float(self.settings.slurm_retry_s), self.say_retry),
                self.root, self.root / STATE_DIR / "submissions")
        except slurm.SlurmError as e:
            # submitting blind could start a second copy of a step that still runs
            raise SubmitError(f"an earlier run in this directory left steps whose Slurm jobs may still run, and "
                              f"Slurm could not be asked about them: {e}") from None
        if unclaimed:
            self.logger.warning(f"slurm-gpu: cancelling job array task(s) {', '.join(unclaimed)} of an earlier run: "
                                "no step's submission record names them, so nothing could follow them")
            self.cancel_ids(unclaimed)

    def on_all_clusters(self) -> None:
        """A step went to another cluster (multi-cluster sites): every call names them all, since
        job ids are looked up without knowing whose they are."""
        self.status.clusters = "all"

    def start(self, job: JobExecutorInterface, spec: StepSpec, paths: StepPaths, provenance: str) -> None:
        """Submit the step (after reattach() found no live job of it)."""
        try:
            ready = self.prepare(job, spec, paths, provenance)
        except SubmitError as e:
            self.host.refuse(job, f"slurm-gpu: step {paths.key}: {e}")
            return
        self.launch(ready)

    def launch(self, ready: Prepared) -> None:
        """sbatch a prepared step and hand it to Snakemake as submitted, or refuse it with the reason."""
        try:
            job_id = self.send(ready)
        except SubmitError as e:
            self.host.refuse(ready.job, f"slurm-gpu: step {ready.paths.key}: {e}")
            return
        self.report_submitted(ready.job, ready.spec, ready.paths, job_id)

    def report_submitted(self, job: JobExecutorInterface, spec: StepSpec, paths: StepPaths, job_id: str) -> None:
        self.host.report_job_submission(SubmittedJobInfo(job, external_jobid=job_id,
                                                         aux={"paths": paths, "spec": spec}))

    def reattach(self, job: JobExecutorInterface, spec: StepSpec, paths: StepPaths, provenance: str) -> bool:
        """Wait for the step's live job from an earlier run instead of submitting a second one.
        True when re-attached (reported as submitted)."""
        live = self.orphans.pop(paths.key, [])
        if not live:
            return False
        # a group job's inputs, params and code are not recorded: its live job cannot be checked, so
        # it must not run on beside the new one
        record = None if job.is_group() else attach.read_record(paths.submission_record)
        decision = attach.decide(live, record, provenance)
        if decision.cancel:
            self.logger.warning(f"slurm-gpu: step {paths.key}: cancelling Slurm job(s) {', '.join(decision.cancel)} "
                                f"of an earlier run, because {decision.why}")
            self.cancel_ids(list(decision.cancel))
        if decision.job_id is None:
            return False
        self.advance(paths, spec, lifecycle.Reattached(decision.job_id))
        self.logger.info(f"slurm-gpu: step {paths.key} is still Slurm job {decision.job_id}, submitted by an earlier "
                         "run of Snakemake: waiting for it instead of submitting again")
        self.host.report_job_submission(SubmittedJobInfo(job, external_jobid=decision.job_id,
                                                         aux={"paths": paths, "spec": spec}))
        return True

    def submit(self, job: JobExecutorInterface, spec: StepSpec, paths: StepPaths, provenance: str,
               replaces: tuple[str, Stop, str] | None = None) -> str:
        """Write the step's batch script and sbatch it; the Slurm job id. Raises SubmitError.
        `replaces`: (old job id, cause, why) when this is a resubmission."""
        return self.send(self.prepare(job, spec, paths, provenance), replaces)

    def send(self, ready: Prepared, replaces: tuple[str, Stop, str] | None = None) -> str:
        """sbatch a prepared step; its Slurm job id. Raises SubmitError."""
        try:
            job_id = self.submitter.submit(ready.script.text, self.root, ready.paths.key,
                                           known=self.lives[ready.paths.key].job_ids)
        except (slurm.SlurmError, ValueError) as e:
            raise self.not_submitted(ready, e) from None
        self.submitted(ready, job_id, replaces)
        return job_id

    def prepare(self, job: JobExecutorInterface, spec: StepSpec, paths: StepPaths, provenance: str) -> Prepared:
        """Everything before sbatch: the step's script written, its submission recorded. Raises SubmitError."""
        self.advance(paths, spec, lifecycle.Submitting())
        record = attach.Submission(provenance, time.time())
        try:
            script = make_script(self.files, job, spec, paths, self.options, self.step_command, self.prepare_direct)
        except ScriptError as e:
            raise SubmitError(str(e)) from None
        try:
            # before sbatch: a Snakemake killed between the two still leaves the record of the job
            self.files.private_dir(paths.submission_record.parent)
            attach.write_record(paths.submission_record, record)
        except (OSError, private.UntrustedPath) as e:
            raise SubmitError(f"could not write its batch script: {e}") from None
        return Prepared(job, spec, paths, script, record)

    def not_submitted(self, ready: Prepared, error: Exception) -> SubmitError:
        """sbatch failed for the step: its record goes, and the error says why (and how to fix an account)."""
        attach.clear_record(ready.paths.submission_record)
        hint = account_hint(self.run, ready.spec, error) if isinstance(error, slurm.SlurmError) else ""
        return SubmitError(f"could not submit {ready.script.path}: {error}{hint}")

    def submitted(self, ready: Prepared, job_id: str, replaces: tuple[str, Stop, str] | None = None) -> None:
        """sbatch gave the step `job_id`: record it, tell its life, its event log and the console."""
        paths, spec, record = ready.paths, ready.spec, ready.record
        try:
            attach.write_record(paths.submission_record, attach.Submission(record.provenance, record.ts, job_id))
        except OSError as e:
            self.logger.warning(f"slurm-gpu: step {paths.key}: could not record its job id: {e}")
        self.advance(paths, spec, lifecycle.Submitted(job_id, ready.script.direct, replaces[1] if replaces else None))
        if replaces is not None:
            old, cause, why = replaces
            self.emit(paths, "resubmitted", old, new_job_id=job_id, cause=str(cause), why=why)
        self.emit(paths, "submitted", job_id, script=str(ready.script.path), attempt=len(self.lives[paths.key].job_ids),
                  nodes_requested=spec.nodes, tasks_per_node=spec.tasks_per_node, gpus_per_node=spec.gpus_per_node)
        self.logger.info(f"slurm-gpu: step {paths.key} is Slurm job {job_id} ({spec.layout}); "
                         f"script {ready.script.path}, log {paths.log_file(job_id)}")

    def resubmit(self, job_info: SubmittedJobInfo, reason: str, stop: Stop,
                 failed_nodes: str = "") -> SubmittedJobInfo | None:
        """A new Slurm job for a step whose job was stopped from outside; None if that failed.
        `failed_nodes`: where the old job failed (kept out of the new job)."""
        paths, spec = job_info.aux["paths"], job_info.aux["spec"]
        old = job_info.external_jobid
        self.cancel_ids([old])  # final already; cancelling makes sure Slurm cannot restart it beside the new one
        self.tracker.forget(old)
        self.logger.info(f"slurm-gpu: step {paths.key}, Slurm job {old}: {reason}")
        if failed_nodes and not self.settings.reuse_failed_nodes:
            spec = placement.without_failed_nodes(self.run, spec, paths.key, failed_nodes, self.default_partition,
                                                  self.logger)
            job_info.aux["spec"] = spec
        try:
            job_id = self.submit(job_info.job, spec, paths, step_provenance.digest(job_info.job),
                                 replaces=(old, stop, reason))
        except SubmitError as e:
            self.host.report_job_error(job_info, msg=f"slurm-gpu: step {paths.key}: resubmission failed: {e}")
            return None
        try:
            job_info.job.register(external_jobid=job_id)  # Snakemake's incomplete-marker names the live job
        except OSError:
            pass
        return SubmittedJobInfo(job_info.job, external_jobid=job_id, aux=job_info.aux)

    # ------------------------------------------------------------ status
    def follow_events(self, job_info: SubmittedJobInfo) -> None:
        """The job side's new events: a console line per transition (every tick, no Slurm call)."""
        paths, spec, job_id = job_info.aux["paths"], job_info.aux["spec"], job_info.external_jobid
        before = self.tracker.current_run(job_id)
        for line in self.tracker.read(paths.event_log, job_id, spec.nodes, spec.ranks_per_node):
            self.logger.info(f"slurm-gpu: step {paths.key}, Slurm job {job_id}: {line}")
        after = self.tracker.current_run(job_id)
        if after is not None and (before is None or before.started_ts != after.started_ts):
            self.advance(paths, spec, lifecycle.RunStarted(after.restart))

    def ended_at(self, active_jobs: Sequence[SubmittedJobInfo]) -> list[float | None]:
        return [self.tracker.ended_at(j.external_jobid) for j in active_jobs]

    async def check_active(self, active_jobs: Sequence[SubmittedJobInfo],
                           rate_limiter: Any) -> AsyncGenerator[SubmittedJobInfo, None]:
        """Snakemake's status check: the jobs to keep following (a resubmitted step's new job among them)."""
        for job_info in active_jobs:
            self.follow_events(job_info)
        if not self.clock.due(time.monotonic(), self.ended_at(active_jobs), time.time()):
            for job_info in active_jobs:
                yield job_info
            return
        async with rate_limiter:
            self.clock.polled(time.monotonic())
            try:
                records = await asyncio.to_thread(self.status.records, [j.external_jobid for j in active_jobs])
            except slurm.SlurmError as e:
                # a busy or restarting controller: keep every job and look again later
                self.logger.warning(f"slurm-gpu: status query failed, will retry: {e}")
                self.back_off(changed=False)
                for job_info in active_jobs:
                    yield job_info
                return
        news = self.status.outage_news()
        if news:
            self.logger.warning(f"slurm-gpu: {news}")
        changed = False
        for job_info in active_jobs:
            follow, moved = await self.after_poll(job_info, records)
            changed = changed or moved
            if follow is not None:
                yield follow
        self.back_off(changed)

    def back_off(self, changed: bool) -> None:
        self.clock.back_off(changed)
        self.host.next_seconds_between_status_checks = self.clock.between_checks_s

    async def after_poll(self, job_info: SubmittedJobInfo,
                         records: dict[str, slurm.JobRecord]) -> tuple[SubmittedJobInfo | None, bool]:
        """(the job to keep following, or None when the step ended; whether anything changed)."""
        job_id = job_info.external_jobid
        if job_id in self.status.unanswered:
            return job_info, False  # left the queue while accounting is away: not missing, only unheard of
        record = records.get(job_id)
        paths: StepPaths = job_info.aux["paths"]
        spec: StepSpec = job_info.aux["spec"]
        verdict = classify(record) if record else None
        if verdict is not None and verdict.state == "RUNNING" and spec.distributed:
            found = self.hung_or_stalled(job_id, paths, spec)
            if found is not None:
                return await asyncio.to_thread(self.advance, paths, spec, found, job_info), True
        ended, stopped_by = None, ""
        if verdict is not None and verdict.outcome is Outcome.FAILED:
            ended, stopped_by = await asyncio.to_thread(self.how_ranks_ended, job_id, paths, spec)
        checkpointed = (spec.resumable and verdict is not None and verdict.outcome is Outcome.FAILED
                        and contract.interrupted_for_requeue(paths.checkpoint_dir, job_id))
        observed = lifecycle.Polled(verdict, record, checkpointed, stopped_by, ended)
        replacement = await asyncio.to_thread(self.advance, paths, spec, observed, job_info)
        with self._lock:
            waits = self.lives[paths.key].live and self.lives[paths.key].job_id == job_id
        return (job_info, False) if waits else (replacement, True)

    def hung_or_stalled(self, job_id: str, paths: StepPaths,
                        spec: StepSpec) -> lifecycle.Hung | lifecycle.Stalled | None:
        """The watchdogs' findings on the running job's current run: a world that never formed
        (hang), or training that stopped advancing (stall)."""
        run = self.tracker.current_run(job_id)
        if run is None:
            return None
        started_ts, run_events = run.started_ts, run.events
        world = run.world_size(spec.nodes, spec.ranks_per_node)  # the world that started, not the largest
        timeout = self.settings.rendezvous_timeout_s
        hang = watchdog.check(run_events, world, spec.ranks_per_node, started_ts, time.time(), timeout)
        if hang is not None:
            return lifecycle.Hung(hang, timeout)
        if self.settings.stall_timeout_s == 0:
            return None
        found = stall.check(heartbeat.read_all(paths.heartbeat_dir), world, job_id,
                            started_ts, time.time(), heartbeat.interval_s(), self.settings.stall_timeout_s)
        return None if found is None else lifecycle.Stalled(found)

    def how_ranks_ended(self, job_id: str, paths: StepPaths, spec: StepSpec) -> tuple[str | None, str]:
        """(what ended the failed job's ranks, for the message; the cluster's signal they died of, or "")."""
        usage: list[slurm.UsageRecord] = []
        try:
            usage = slurm.parse_sacct_usage(self.run(slurm.sacct_usage_argv([job_id], self.status.clusters)))
        except slurm.SlurmError:
            pass  # no accounting: srun's own lines still say what they say
        return ending.explain(logs.read_tail(paths.log_file(job_id)), spec.signal, spec.resumable, usage)

    # ------------------------------------------------------------ cancel
    def ask(self, argv: list[str], failed: str) -> None:
        """A Slurm call whose failure is said, never fatal."""
        try:
            self.run(argv)
        except slurm.SlurmError as e:
            self.logger.warning(f"slurm-gpu: {failed}: {e}")

    def cancel_ids(self, job_ids: Sequence[str]) -> None:
        if job_ids:
            self.ask(slurm.scancel_argv(job_ids, self.status.clusters), f"could not cancel Slurm jobs {', '.join(job_ids)}")

    def cancel(self, active_jobs: Sequence[SubmittedJobInfo]) -> None:
        with self._lock:
            ids = lifecycle.live_jobs(self.lives.values()) | {j.external_jobid for j in active_jobs if j.external_jobid}
        self.cancel_ids(sorted(ids, key=slurm.id_order))

