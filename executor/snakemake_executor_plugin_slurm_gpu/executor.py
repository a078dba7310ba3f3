"""The Snakemake-facing executor, an adapter: Snakemake's calls become a checked StepSpec and the
step's paths, handed to a backend (batch_jobs.py: a Slurm job per step; in_allocation.py: job steps
of the allocation Snakemake runs in), which reports back through Snakemake's callbacks."""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path
from typing import AsyncGenerator, Iterable, List, Sequence

from snakemake_interface_common.exceptions import WorkflowError
from snakemake_interface_executor_plugins.executors.base import SubmittedJobInfo
from snakemake_interface_executor_plugins.executors.remote import RemoteExecutor
from snakemake_interface_executor_plugins.jobs import JobExecutorInterface

from . import allocation, arrays, engine_waits, housekeeping, job_command, private, resources, slurm, step_provenance, submit_env
from .array_jobs import ArraySubmitter, ReadyStep
from .batch_jobs import BatchJobs, SubmitError
from .batch_script import JobOptions, render_batch_script
from .in_allocation import InAllocation
from .paths import STATE_DIR, StepPaths, logs_base
from .settings import ExecutorSettings
from .spec import (ClusterInfo, ResourceError, StepSpec, WildcardError, build_spec, check_capacity, check_launch,
                   check_signal, check_target_wildcards, launch_warning)
from .step_files import StepFiles
from .submit import retrying

EXPLAIN_MARK = "# ===== slurm-gpu explain:"

__all__ = ["Executor", "SubmitError"]


class Executor(RemoteExecutor):
    def __post_init__(self) -> None:
        self.settings: ExecutorSettings = self.workflow.executor_settings or ExecutorSettings()
        self.root = Path.cwd()
        # allocation mode: steps run as job steps of the allocation Snakemake itself runs in
        self.allocation: allocation.Allocation | None = None
        if self.settings.allocation:
            self.allocation = allocation.detect(os.environ)
            if self.allocation is None:
                raise WorkflowError("slurm-gpu: --slurm-gpu-allocation runs the steps inside the Slurm allocation "
                                    "Snakemake runs in, but SLURM_JOB_ID is not set. HINT: start Snakemake inside "
                                    "one, e.g. salloc --nodes=2 --gpus-per-node=2 snakemake ...")
        self.options = self._job_options()
        try:
            check_signal(self.settings.requeue_signal)
        except ValueError as e:
            raise WorkflowError(f"slurm-gpu: setting requeue-signal: {e}") from None
        self._preflight_done = False
        self._warned_rules: set[str] = set()
        self._clusters: dict[str | None, ClusterInfo] = {}
        self._said: set[str] = set()  # warnings given once per run
        self._environment = submit_env.SlurmEnvironment(os.environ, keep_outer_job=self.allocation is not None,
                                                        say=self.logger.warning)
        self.files = StepFiles(self.root, self.settings.logdir, self.settings.checkpoint_root, self.logger.warning)
        prepare_direct = functools.partial(job_command.prepare_direct, self)
        # the one choice of backend; nothing else asks which it is
        if self.allocation is not None:
            self.backend: BatchJobs | InAllocation = InAllocation(
                self, self.settings, self.allocation, self.files, self.options, self._step_command, prepare_direct)
        else:
            self.backend = BatchJobs(self, self.settings, self._slurm, self.files, self.options, self._step_command,
                                     prepare_direct, lambda clusters: self._cluster_info(clusters).default_partition)
        self._array_rules, self._arrays = self._array_setting()
        self.next_seconds_between_status_checks = min(float(self.settings.status_event_interval_s),
                                                      float(self.settings.status_interval_min_s))
        self._poll_sleep = engine_waits.PollSleep()

    def _array_setting(self) -> tuple[frozenset[str], ArraySubmitter | None]:
        """The rules whose steps go in job arrays, and the submitter that puts them there (None: off,
        and in allocation mode, where steps are job steps, not jobs)."""
        rules = [rule.name for rule in getattr(self.workflow, "rules", [])] or None
        try:
            chosen = arrays.selection(self.settings.array_jobs, rules)
        except arrays.ArraySettingError as e:
            raise WorkflowError(f"slurm-gpu: {e}") from None
        concurrency = self.settings.array_concurrency
        if concurrency is not None and concurrency < 1:
            raise WorkflowError(f"slurm-gpu: array-concurrency is {concurrency}: it must be at least 1 "
                                "(or left unset for no limit)")
        if not chosen:
            return chosen, None
        if not isinstance(self.backend, BatchJobs):
            self._say_once("arrays-in-allocation", "slurm-gpu: array-jobs has no effect with --slurm-gpu-allocation: "
                           "the steps run as job steps of Snakemake's own allocation, not as jobs")
            return frozenset(), None
        return chosen, ArraySubmitter(self.backend, concurrency)

    def _job_options(self) -> JobOptions:
        """The executor-wide parts of every batch script, checked before anything is submitted."""
        prefix = self.settings.jobname_prefix
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,50}", prefix or ""):
            raise WorkflowError(f"slurm-gpu: setting jobname-prefix is {prefix!r}. HINT: use letters, digits, '_' "
                                "and '-', at most 50")
        for name in ("qos", "reservation"):
            value = getattr(self.settings, name)
            if value is not None and not re.fullmatch(r"[A-Za-z0-9_.,:+-]+", str(value)):
                raise WorkflowError(f"slurm-gpu: setting {name} is {value!r}. HINT: use the name as Slurm lists it")
        return JobOptions(socket_ifname=self.settings.socket_ifname, allocation=self.allocation is not None,
                          job_name_prefix=prefix, qos=self.settings.qos, reservation=self.settings.reservation,
                          checkpoint_on_sigterm=self.settings.checkpoint_on_sigterm, debug=self.settings.debug)

    # ------------------------------------------------------------ Slurm
    def _slurm(self, argv: Sequence[str], stdin: str | None = None) -> str:
        return slurm.run(argv, timeout_s=self.settings.slurm_timeout_s, stdin=stdin,
                         runner=functools.partial(slurm.run_subprocess, env=self._environment.of(argv, stdin)))

    def _say_once(self, key: str, message: str) -> None:
        if key not in self._said:
            self._said.add(key)
            self.logger.warning(message)

    def _say_retry(self, message: str, wait: float) -> None:
        self.logger.warning(f"slurm-gpu: Slurm is busy or unreachable, retrying in {wait:g} s: {message}")

    def _cluster_info(self, clusters: str | None = None) -> ClusterInfo:
        """Partitions and their GPUs per node: asked once per run (and per named cluster)."""
        if clusters not in self._clusters:
            try:
                listing = retrying(self._slurm, slurm.sinfo_argv(clusters), float(self.settings.slurm_retry_s),
                                   self._say_retry)
            except slurm.SlurmError as e:
                raise WorkflowError(f"slurm-gpu could not ask Slurm for its partitions: {e}") from None
            gpus, default = slurm.parse_sinfo(listing)
            self._clusters[clusters] = ClusterInfo(gpus, default, slurm.parse_sinfo_sizes(listing))
        return self._clusters[clusters]

    # ------------------------------------------------------------ pre-flight
    def _spec(self, job: JobExecutorInterface, known_only: bool = False) -> StepSpec:
        """The step's StepSpec. `known_only` (pre-flight): resources Snakemake can only compute once
        the step's inputs exist are left for the check at submission."""
        given = dict(job.resources.items())
        # Snakemake's own (tmpdir) stay unknown on this side for good: the job-side Snakemake has them
        unknown = [name for name in resources.unknown_names(given) if name in resources.SLURM_RESOURCES]
        if unknown and not known_only:
            raise ResourceError(job.name, unknown[0], "is still unknown ('<TBD>') at submission",
                                "make it a value or a function of the step's inputs that Snakemake can evaluate")
        given = resources.known(given)
        spec = build_spec(job.name, given, job.threads,
                          requeue_signal=self.settings.requeue_signal, signal_lead_s=self.settings.signal_lead_s,
                          no_requeue=self.settings.no_requeue, setup=self.settings.setup)
        self._note_resources(job.name, given, spec)
        if not job.is_group():
            shell = self._shell_command(job)
            check_launch(spec, shell)
            warning = launch_warning(spec, shell)
            if warning and job.name not in self._warned_rules:
                self._warned_rules.add(job.name)
                self.logger.warning(f"slurm-gpu: {warning}")
        cluster = self._cluster_info(spec.clusters)
        check_capacity(spec, cluster)
        if spec.partition is None and cluster.default_partition is None:
            self._say_once("no-partition", "slurm-gpu: the cluster has no default partition and some rules name none "
                           "(slurm_partition): they are submitted without --partition, for the site's routing to place")
        if spec.clusters:
            self.backend.on_all_clusters()
        if self.allocation is not None:
            allocation.check_fits(spec, self.allocation)
        return spec

    @staticmethod
    def _shell_command(job: JobExecutorInterface) -> str | None:
        """The rule's command as the job will run it ({resources.mpi} filled in), else its template."""
        try:
            command = job.shellcmd
        except Exception:  # noqa: BLE001 - inputs not there yet, a params function failing
            command = None
        return command or getattr(job.rule, "shellcmd", None)

    def _note_resources(self, rule: str, given: dict[str, object], spec: StepSpec) -> None:
        """Resource names that look misspelt, and what Slurm has no request for: said once per rule."""
        for name in given:
            meant = resources.misspelt(name)
            if meant is not None:
                self._say_once(f"misspelt:{rule}:{name}", f"slurm-gpu: rule '{rule}': resource '{name}' is not read by "
                               f"slurm-gpu; did you mean '{meant}'? (It is passed to nobody as it stands.)")
        if given.get("gpu_model") and not spec.gpus:
            self._say_once(f"model:{rule}", f"slurm-gpu: rule '{rule}': resource 'gpu_model' is set but the rule asks "
                           "for no GPUs, so no GPU is requested for it (set gpus to get one)")
        if spec.resumable and spec.requeue and not spec.signal and given.get("signal_lead_s") is None \
                and self.settings.signal_lead_s > 0:
            self._say_once(f"lead:{rule}", f"slurm-gpu: rule '{rule}': its runtime of {spec.time_min} minute(s) is too "
                           f"short for the {self.settings.signal_lead_s} s signal lead (--slurm-gpu-signal-lead-s; Slurm "
                           "may signal up to 60 s early), so its jobs get no requeue signal before the time limit: "
                           "they resume from their periodic checkpoints after it. HINT: set the rule's signal_lead_s "
                           "to a lead that fits, or raise runtime")
        if given.get("gpu_manufacturer"):
            self._say_once(f"maker:{rule}", f"slurm-gpu: rule '{rule}': Slurm cannot be asked for a GPU maker, so "
                           "resource 'gpu_manufacturer' is not submitted. HINT: use gpu_model (the type in gres.conf) "
                           "or a constraint")

    @staticmethod
    def _check_targets(job: JobExecutorInterface) -> None:
        for target in job.get_target_spec():
            check_target_wildcards(target.rulename, target.wildcards_dict)

    def _preflight(self, jobs: Iterable[JobExecutorInterface]) -> None:
        """Check every step the run will submit, before the first one is: a bad rule found
        halfway through would leave the cluster working on steps whose results go nowhere."""
        dag = getattr(self.workflow, "dag", None)
        needrun = getattr(dag, "needrun_jobs", None)
        all_jobs = list(needrun()) if callable(needrun) else list(jobs)
        errors, seen = [], set()
        for job in all_jobs:
            if job.is_local:
                continue
            try:
                self._check_targets(job)  # wildcards are per job
            except WildcardError as e:
                errors.append(str(e))
            # one check per rule and resource set (resources may depend on wildcards)
            try:
                key = (job.name, tuple(sorted((str(k), str(v)) for k, v in job.resources.items())))
            except Exception:  # noqa: BLE001 - a resource function that only works once the inputs exist
                continue  # Snakemake itself evaluates it just before the job runs: it is checked then
            if key in seen:
                continue
            seen.add(key)
            try:
                self._spec(job, known_only=True)
            except ResourceError as e:
                errors.append(str(e))
        if errors:
            raise WorkflowError("slurm-gpu: nothing was submitted, because:\n" + "\n".join(errors))
        if self.settings.explain:
            self._explain([job for job in all_jobs if not job.is_local])

    def _explain(self, jobs: Sequence[JobExecutorInterface]) -> None:
        """--slurm-gpu-explain: print each step's batch script, exactly as it would be submitted (only
        Snakemake's per-run temporary directories differ from run to run), and stop before submitting
        anything."""
        for job in jobs:
            paths, spec = self._paths(job), self._spec(job, known_only=True)
            text = render_batch_script(spec, paths, self._step_command(job, paths, spec), self.options)
            in_array = " (array-jobs: a task of a job array when ready with others of its rule)" if arrays.wanted(
                self._array_rules, job.name, job.is_group()) else ""
            print(f"{EXPLAIN_MARK} step {paths.key} (rule {job.name}){in_array} {'=' * 20}\n{text}", end="", flush=True)
        raise WorkflowError(f"slurm-gpu: explain: printed the batch scripts of {len(jobs)} step(s) above; "
                            "nothing was submitted")

    def run_jobs(self, jobs: List[JobExecutorInterface]) -> None:
        if not self._preflight_done:
            self._preflight(jobs)
            self._preflight_done = True
            try:
                self.backend.find_orphans()
            except SubmitError as e:
                raise WorkflowError(f"slurm-gpu: {e}") from None
        if self._arrays is None:
            super().run_jobs(jobs)
            return
        # array-jobs: the ready steps of the chosen rules go to the array submitter together
        together = []
        for job in jobs:
            self.run_job_pre(job)
            if not arrays.wanted(self._array_rules, job.name, job.is_group()):
                self.run_job(job)
            elif (ready := self._ready(job)) is not None:
                together.append(ready)
        self._arrays.start(together)

    # ------------------------------------------------------------ submission
    def _paths(self, job: JobExecutorInterface) -> StepPaths:
        if job.is_group():
            # each group job is its own step: the jobs of one group over a wildcard share its name
            members = [(t.rulename, dict(t.wildcards_dict)) for t in job.get_target_spec()]
            return StepPaths.of_group(self.root, job.name, members, self.settings.checkpoint_root,
                                      self.settings.logdir)
        return StepPaths.of(self.root, job.name, dict(job.wildcards.items()), self.settings.checkpoint_root,
                            self.settings.logdir)

    def _step_command(self, job: JobExecutorInterface, paths: StepPaths, spec: StepSpec) -> job_command.StepCommand:
        return job_command.step_command(self, self.files, job, paths, spec, self.settings.job_side_snakemake)

    def run_job(self, job: JobExecutorInterface) -> None:
        ready = self._ready(job)
        if ready is not None:
            self.backend.start(ready.job, ready.spec, ready.paths, ready.provenance)

    def _ready(self, job: JobExecutorInterface) -> ReadyStep | None:
        """The step, checked and ready to submit; None when it was refused, or re-attached to its live
        job of an earlier run."""
        try:
            spec = self._spec(job)
            self._check_targets(job)
        except (ResourceError, WildcardError) as e:
            # resources known only now (functions of the inputs) are checked only now
            self.refuse(job, f"slurm-gpu: not submitted: {e}")
            return None
        paths = self._paths(job)
        provenance = step_provenance.digest(job)
        if self.backend.reattach(job, spec, paths, provenance):
            return None
        if spec.resumable and not job.is_group() and not self._prepare_checkpoint_dir(job, paths):
            return None
        return ReadyStep(job, spec, paths, provenance)

    def _prepare_checkpoint_dir(self, job: JobExecutorInterface, paths: StepPaths) -> bool:
        """Before a resumable step is submitted: its checkpoint directory private, and moved aside if
        the step changed since its checkpoints were written. False when the step must not be submitted."""
        try:
            self.files.prepare_checkpoint_dir(paths)
            moved = step_provenance.check(job, paths.checkpoint_dir)
        except private.UntrustedPath as e:
            self.report_job_error(SubmittedJobInfo(job), msg=(
                f"slurm-gpu: step {paths.key} was not submitted: it would resume from {paths.checkpoint_dir}, "
                f"but {e}\n(A checkpoint is a pickle: loading it runs the code inside it, so slurm-gpu resumes "
                "only from files that no one else can have written. It does not start the step afresh "
                "either, which would overwrite the evidence.)"))
            return False
        except (OSError, ValueError) as e:
            raise WorkflowError(f"slurm-gpu: step {paths.key}: cannot check its checkpoint directory "
                                f"{paths.checkpoint_dir}: {e}") from None
        if moved is not None:
            self.logger.warning(f"slurm-gpu: step {paths.key}: its inputs, params or code changed since its "
                                f"checkpoints were written; they were moved to {moved} and training starts afresh")
        return True

    def refuse(self, job: JobExecutorInterface, message: str) -> None:
        """A step that could not be submitted fails with `message`. Snakemake prints a group job's
        error without it ("message: None"), so for those it is said here."""
        if job.is_group():
            self.logger.error(message)
        self.report_job_error(SubmittedJobInfo(job), msg=message)

    async def check_active_jobs(
        self, active_jobs: List[SubmittedJobInfo]
    ) -> AsyncGenerator[SubmittedJobInfo, None]:
        async for job_info in self.backend.check_active(active_jobs, self.status_rate_limiter):
            yield job_info

    def cancel_jobs(self, active_jobs: List[SubmittedJobInfo]) -> None:
        self.backend.cancel(active_jobs)

    async def sleep(self) -> None:
        poll_sleep = getattr(self, "_poll_sleep", None)  # the status thread starts before __post_init__
        if poll_sleep is None:
            await super().sleep()
        else:
            await poll_sleep(self.next_seconds_between_status_checks)

    def shutdown(self) -> None:
        # the run is over: neither the status thread's sleep nor the scheduler's rate-limit timer has
        # anything left to wait for (engine_waits)
        with self.lock:
            self.wait = False
        self._poll_sleep.wake()
        engine_waits.cancel_scheduler_timers(getattr(self.workflow, "scheduler", None))
        super().shutdown()
        days = self.settings.delete_logs_older_than
        if days and days > 0:
            state = self.root / STATE_DIR
            removed = housekeeping.remove_older_than(
                [logs_base(self.root, self.settings.logdir), state / "scripts", state / "events"], days * 86400.0)
            if removed:
                self.logger.info(f"slurm-gpu: removed {removed} log, script and event file(s) older than {days} "
                                 "day(s) (--slurm-gpu-delete-logs-older-than)")
        if self.settings.efficiency_report is not None and self.allocation is None:
            target = Path(self.settings.efficiency_report)
            target = target if target.is_absolute() else self.root / target
            from . import efficiency  # sacct and the timeline's analysis: only when asked for

            try:
                written = efficiency.write_report(self.root, target, run=self._slurm)
                self.logger.info(f"slurm-gpu: efficiency report written to {written}")
            except OSError as e:
                self.logger.warning(f"slurm-gpu: could not write the efficiency report {target}: {e}")
