"""The Snakemake-facing executor: wires spec -> batch script -> sbatch, and status -> policy -> report."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import os
import re
import shlex
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import AsyncGenerator, Iterable, List, Sequence

from snakemake_interface_common.exceptions import WorkflowError
from snakemake_interface_executor_plugins.executors.base import SubmittedJobInfo
from snakemake_interface_executor_plugins.executors.remote import RemoteExecutor
from snakemake_interface_executor_plugins.jobs import JobExecutorInterface
from snakemake_interface_executor_plugins.settings import SharedFSUsage
from snakemake_interface_executor_plugins.utils import encode_target_jobs_cli_args

from . import (allocation, attach, checkpoints, direct, ending, events, heartbeat, housekeeping, logs, private, resources, slurm,
               stall, submit_env, watchdog)
from .batch_script import JobOptions, StepCommand, inner_command_line, render_batch_script
from .paths import STATE_DIR, StepPaths, logs_base
from .policy import Act, Budgets, JobWatch, Limits, StepHistory, Stop, on_stall
from .settings import ExecutorSettings
from .spec import (ClusterInfo, ResourceError, StepSpec, WildcardError, build_spec, check_capacity, check_launch,
                   check_signal, check_target_wildcards, launch_warning)
from .status import Outcome, StatusQuery, Verdict, classify
from .submit import Submitter, delays
from .tracking import StepTracker

LOG_TAIL_LINES = 20
# a job that ended so: its nodes are kept out of the step's resubmission (unless reuse-failed-nodes)
NODE_FAILURES = ("NODE_FAIL", "BOOT_FAIL")
# after a step's batch script says it ended: ask Slurm at most this often, for at most this long
# (the job may sit in COMPLETING while an epilog runs), then fall back to the normal poll interval
ENDED_POLL_GAP_S = 1.0
ENDED_POLL_WINDOW_S = 30.0
EXPLAIN_MARK = "# ===== slurm-gpu explain:"
# files named in a shell command whose content is code: a change invalidates checkpoints
CODE_SUFFIXES = {".py", ".sh", ".R", ".r", ".jl", ".yaml", ".yml", ".json", ".toml"}


class SubmitError(RuntimeError):
    """sbatch refused a step (or printed no job id); the message carries its argv and stderr."""


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
        self.local_steps = allocation.LocalSteps()
        self.options = self._job_options()
        self.status = StatusQuery(run=self._slurm)
        self.watch = JobWatch(Limits(missing_s=self.settings.missing_job_timeout_s))
        self.budgets = Budgets(preemptions=self.settings.max_preemptions, timeouts=self.settings.max_timeouts)
        self._history: dict[str, StepHistory] = {}
        self._preflight_done = False
        # every submitted job until its verdict is reported: Snakemake's own active_jobs list is
        # empty while a status check runs, and a Ctrl-C then would cancel nothing
        self._live: set[str] = set()
        self._live_lock = threading.Lock()
        # two clocks: event logs (files) are read every tick; Slurm is asked on its own, adaptive
        # interval, or at once when a batch script says it ended
        self._tick_s = float(self.settings.status_event_interval_s)
        self._poll_interval_s = float(self.settings.status_interval_min_s)
        self._next_poll = 0.0
        self._last_poll = float("-inf")
        self.next_seconds_between_status_checks = min(self._tick_s, self._poll_interval_s)
        try:
            check_signal(self.settings.requeue_signal)
        except ValueError as e:
            raise WorkflowError(f"slurm-gpu: setting requeue-signal: {e}") from None
        self._warned_rules: set[str] = set()
        self._unknown_states: set[tuple[str, str]] = set()
        self._state_base_checked = False
        self.tracker = StepTracker()
        self._event_log_warned = False
        self.submitter = Submitter(run=self._slurm, limit_s=float(self.settings.slurm_retry_s),
                                   on_retry=self._say_retry)
        # live jobs of earlier Snakemake runs in this directory, by step key: asked once, only when
        # a submission record was left behind (the Snakemake that wrote it did not see its verdict)
        self._orphans: dict[str, list[slurm.StepJob]] = {}
        self._accounting_warned = False
        # steps whose last submission was direct (--no-requeue): Slurm will not requeue those itself
        self._direct_steps: set[str] = set()
        self._clusters: dict[str | None, ClusterInfo] = {}
        self._said: set[str] = set()  # warnings given once per run
        self._environment = submit_env.SlurmEnvironment(os.environ, keep_outer_job=self.allocation is not None,
                                                        say=self.logger.warning)

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

    def _slurm_retrying(self, argv: Sequence[str]) -> str:
        """A read-only Slurm command, retried with backoff while it fails transiently."""
        waits = delays(float(self.settings.slurm_retry_s))
        while True:
            try:
                return self._slurm(argv)
            except slurm.SlurmError as e:
                wait = next(waits, None) if e.transient else None
                if wait is None:
                    raise
                self._say_retry(str(e), wait)
                time.sleep(wait)

    def _cluster_info(self, clusters: str | None = None) -> ClusterInfo:
        """Partitions and their GPUs per node: asked once per run (and per named cluster)."""
        if clusters not in self._clusters:
            try:
                listing = self._slurm_retrying(slurm.sinfo_argv(clusters))
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
            self.status.clusters = "all"
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
            print(f"{EXPLAIN_MARK} step {paths.key} (rule {job.name}) {'=' * 20}\n{text}", end="", flush=True)
        raise WorkflowError(f"slurm-gpu: explain: printed the batch scripts of {len(jobs)} step(s) above; "
                            "nothing was submitted")

    def run_jobs(self, jobs: List[JobExecutorInterface]) -> None:
        if not self._preflight_done:
            self._preflight(jobs)
            self._preflight_done = True
            if self.allocation is None:
                self._find_orphans()
        super().run_jobs(jobs)

    # ------------------------------------------------------------ re-attach
    def _find_orphans(self) -> None:
        """Once per run, before the first submission: the live jobs of steps whose verdict an earlier
        Snakemake never saw. Costs one squeue, and only if such a step left its record behind."""
        records = self.root / STATE_DIR / "submissions"
        if not attach.any_records(records):
            return
        try:
            listing = slurm.parse_step_jobs(self._slurm_retrying(slurm.squeue_steps_argv(self.status.clusters)))
        except slurm.SlurmError as e:
            # submitting blind could start a second copy of a step that still runs
            raise WorkflowError(f"slurm-gpu: an earlier run in this directory left steps whose Slurm jobs may "
                                f"still run, and Slurm could not be asked about them: {e}") from None
        self._orphans = attach.live_by_step(listing, self.root)
        # a record without a live job is over (the job ended while nobody watched): drop it, so the
        # next run need not ask Slurm again
        attach.drop_records_except(records, set(self._orphans))

    def _reattach(self, job: JobExecutorInterface, spec: StepSpec, paths: StepPaths, provenance: str) -> bool:
        """Wait for the step's live job from an earlier run instead of submitting a second one.
        True when re-attached (reported as submitted)."""
        live = self._orphans.pop(paths.key, [])
        if not live:
            return False
        # a group job's inputs, params and code are not recorded: its live job cannot be checked, so
        # it must not run on beside the new one
        record = None if job.is_group() else attach.read_record(paths.submission_record)
        decision = attach.decide(live, record, provenance)
        if decision.cancel:
            self.logger.warning(f"slurm-gpu: step {paths.key}: cancelling Slurm job(s) {', '.join(decision.cancel)} "
                                f"of an earlier run, because {decision.why}")
            self._cancel(list(decision.cancel))
        if decision.job_id is None:
            return False
        job_id = decision.job_id
        self._history.setdefault(paths.key, StepHistory()).job_ids.append(job_id)
        with self._live_lock:
            self._live.add(job_id)
        self._event(paths, "reattached", job_id)
        self.logger.info(f"slurm-gpu: step {paths.key} is still Slurm job {job_id}, submitted by an earlier run "
                         "of Snakemake: waiting for it instead of submitting again")
        self.report_job_submission(SubmittedJobInfo(job, external_jobid=job_id, aux={"paths": paths, "spec": spec}))
        return True

    # ------------------------------------------------------------ submission
    def _paths(self, job: JobExecutorInterface) -> StepPaths:
        if job.is_group():
            # each group job is its own step: the jobs of one group over a wildcard share its name
            members = [(t.rulename, dict(t.wildcards_dict)) for t in job.get_target_spec()]
            return StepPaths.of_group(self.root, job.name, members, self.settings.checkpoint_root,
                                      self.settings.logdir)
        return StepPaths.of(self.root, job.name, dict(job.wildcards.items()), self.settings.checkpoint_root,
                            self.settings.logdir)

    def _step_command(self, job: JobExecutorInterface, paths: StepPaths, spec: StepSpec) -> StepCommand:
        """What the step's batch script runs: a plain shell rule's own command (direct.py), unless the
        step is resumable, asks for more threads than CPUs (the job-side Snakemake caps {threads} at
        the CPUs Slurm gives), or the user asked for the job-side Snakemake everywhere."""
        if not (spec.resumable or self.settings.job_side_snakemake or job.threads > spec.cores):
            from snakemake.shell import shell  # Snakemake itself: loaded already when a run gets here

            command = direct.direct_shell(job, shell, self.workflow.execution_settings.latency_wait)
            if command is not None:
                return StepCommand(direct.render(command), direct=True)
        return StepCommand(self._inner_command(job, paths, spec))

    def _prepare_direct(self, job: JobExecutorInterface) -> None:
        """What the job-side Snakemake would do before a direct step's command: remove stale outputs,
        make the output and log directories, wait for the inputs (Snakemake's own Job.prepare())."""
        self.workflow.async_run(job.prepare())

    def _inner_command(self, job: JobExecutorInterface, paths: StepPaths, spec: StepSpec) -> str:
        """The job-side Snakemake call. Built word by word and quoted with shlex: Snakemake's own
        formatting uses repr(), which lets a wildcard like a'$(cmd) reach the shell."""
        words = [self.get_python_executable(), "-m", "snakemake", "--snakefile", str(self.get_snakefile()),
                 "--target-jobs", *encode_target_jobs_cli_args(job.get_target_spec()),
                 "--allowed-rules", *job.rules]
        if job.is_group():
            words += ["--local-groupid", str(job.jobid)]
        else:
            words += ["--force-use-threads"]
        # the CPUs Slurm gives the job, not "all" (the node's hardware count, which is not ours)
        words += ["--cores", str(spec.cores), "--attempt", str(job.attempt)]
        temp_files = list(self.workflow.dag.get_unneeded_temp_files(job))
        if temp_files:
            words += ["--unneeded-temp-files", *temp_files]
        if SharedFSUsage.INPUT_OUTPUT in self.workflow.storage_settings.shared_fs_usage:
            wait_for = [self.tmpdir, *job.get_wait_for_files()]
            if len(wait_for) > 20:
                self._private_dir(paths.script_dir)
                stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
                listing = private.write_private(paths.script_dir / f"{stamp}-wait-for-files-{job.jobid}.txt",
                                                "\n".join(str(f) for f in wait_for) + "\n")
                words += ["--wait-for-files-file", str(listing)]
            else:
                words += ["--wait-for-files", *wait_for]
        factory = self.workflow.spawned_job_args_factory
        general = factory.general_args(executor_common_settings=self.common_settings)
        precommand = factory.precommand(executor_common_settings=self.common_settings)
        return inner_command_line(words, general, precommand)

    def _state_base(self) -> Path:
        """Snakemake's .snakemake, which holds ours: made under the user's umask, so with a lax one
        anybody could rename .snakemake/slurm-gpu and put their own in its place. It is the user's
        own directory: it loses its group/other write bits (once, said in the log)."""
        base = self.root / ".snakemake"
        if not self._state_base_checked:
            self._state_base_checked = True
            base.mkdir(exist_ok=True)
            loosened = private.tighten_own_dir(base)
            if loosened is not None:
                self.logger.warning(f"slurm-gpu: {base} was writable by group or others (mode {loosened:04o}); "
                                    "removed those write bits, since slurm-gpu's scripts and checkpoints live in it")
        return base

    def _private_dir(self, path: Path) -> Path:
        """Create one of the executor's directories, 0700 from .snakemake/slurm-gpu down."""
        return private.make_private_dir(path, self._state_base())

    def _checkpoint_base(self) -> Path:
        """The directory the step checkpoint directories live in: taken as it is (a scratch area
        may be shared); everything below it is the executor's and private."""
        root = self.settings.checkpoint_root
        if root is None:
            return self._state_base()
        root = Path(root) if Path(root).is_absolute() else self.root / root
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        return root

    def _write_script(self, paths: StepPaths, job: JobExecutorInterface, text: str) -> Path:
        """The record of what was submitted: the same bytes go to sbatch's standard input."""
        self._private_dir(paths.script_dir)
        if self.settings.logdir is None:
            self._private_dir(paths.log_dir)
        else:  # the user's directory, taken as it is (like checkpoint-root); everything below is ours
            paths.logs_base.mkdir(parents=True, exist_ok=True, mode=0o700)
            private.make_private_dir(paths.log_dir, paths.logs_base)
        self._private_dir(paths.event_dir)
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
        return private.write_private(paths.script_dir / f"{stamp}-attempt{job.attempt}.sh", text)

    def _submit(self, job: JobExecutorInterface, spec: StepSpec, paths: StepPaths,
                replaces: tuple[str, Stop, str] | None = None, provenance: str | None = None) -> str:
        """Write the step's batch script and sbatch it; the Slurm job id. Raises SubmitError.
        `replaces`: (old job id, cause, why) when this is a resubmission, for the event log."""
        history = self._history.setdefault(paths.key, StepHistory())
        # one live Slurm job per step, whatever asks for another one (a resubmission, --retries)
        with self._live_lock:
            stale = [j for j in history.job_ids if j in self._live]
        if stale:
            self.logger.warning(f"slurm-gpu: step {paths.key} still has Slurm job(s) {', '.join(stale)}; "
                                "cancelling them before submitting again")
            self._cancel(stale)
            with self._live_lock:
                self._live.difference_update(stale)
        record = attach.Submission(self._provenance_digest(job) if provenance is None else provenance, time.time())
        command = self._step_command(job, paths, spec)
        if command.direct:
            self._direct_steps.add(paths.key)
            try:
                self._prepare_direct(job)
            except Exception as e:  # noqa: BLE001 - Snakemake's WorkflowError, ProtectedOutputException, OSError
                raise SubmitError(f"could not prepare its outputs: {e}") from None
        try:
            text = render_batch_script(spec, paths, command, self.options)
            script = self._write_script(paths, job, text)
            # before sbatch: a Snakemake killed between the two still leaves the record of the job
            self._private_dir(paths.submission_record.parent)
            attach.write_record(paths.submission_record, record)
        except (OSError, private.UntrustedPath) as e:
            raise SubmitError(f"could not write its batch script: {e}") from None
        try:
            job_id = self.submitter.submit(text, self.root, paths.key, known=history.job_ids)
        except (slurm.SlurmError, ValueError) as e:
            attach.clear_record(paths.submission_record)
            hint = self._account_hint(spec, e) if isinstance(e, slurm.SlurmError) else ""
            raise SubmitError(f"could not submit {script}: {e}{hint}") from None
        try:
            attach.write_record(paths.submission_record, attach.Submission(record.provenance, record.ts, job_id))
        except OSError as e:
            self.logger.warning(f"slurm-gpu: step {paths.key}: could not record its job id: {e}")
        history.job_ids.append(job_id)
        with self._live_lock:
            self._live.add(job_id)
        if replaces is not None:
            old, cause, why = replaces
            self._event(paths, "resubmitted", old, new_job_id=job_id, cause=str(cause), why=why)
        self._event(paths, "submitted", job_id, script=str(script), attempt=len(history.job_ids),
                    nodes_requested=spec.nodes, tasks_per_node=spec.tasks_per_node, gpus_per_node=spec.gpus_per_node)
        geometry = f"{spec.nodes} node(s) x {spec.tasks_per_node} task(s)"
        if spec.launcher == "torchrun":
            geometry += f" with torchrun starting {spec.ranks_per_node} rank(s) each"
        if spec.gpus:
            geometry += f", {spec.gpus_per_node} GPU(s) per node"
        self.logger.info(f"slurm-gpu: step {paths.key} is Slurm job {job_id} ({geometry}); "
                         f"script {script}, log {paths.log_file(job_id)}")
        return job_id

    def _account_hint(self, spec: StepSpec, error: slurm.SlurmError) -> str:
        """When Slurm refused the job for its account: the accounts the user has (sacctmgr), asked
        only then."""
        if not slurm.is_account_error(error):
            return ""
        try:
            accounts = slurm.parse_names(self._slurm(slurm.user_accounts_argv()))
        except slurm.SlurmError:
            accounts = []
        given = f"slurm_account is {spec.account!r}" if spec.account else "no slurm_account is set"
        mine = f"your accounts: {', '.join(sorted(set(accounts)))}" if accounts else "sacctmgr lists no account of yours"
        return (f"\nHINT: rule '{spec.rule}': {given}, and this cluster needs a valid one ({mine}); set the resource "
                "slurm_account, e.g. in the profile's default-resources")

    def _provenance(self, job: JobExecutorInterface) -> dict[str, object]:
        """What a step's checkpoints were made from: inputs (size, mtime), params, and code (the
        shell command and the content of the scripts it names). Checkpoints of anything else must
        not be resumed."""
        inputs = {}
        for name in job.input:
            try:
                st = os.stat(name)
                inputs[str(name)] = [st.st_size, st.st_mtime_ns]
            except OSError:
                inputs[str(name)] = None
        params = getattr(job, "params", None)
        try:
            shell = job.shellcmd or ""
        except Exception:  # noqa: BLE001 - Snakemake raises RuleException for unformattable commands
            shell = ""
        try:
            words = shlex.split(shell, posix=True)
        except ValueError:  # unbalanced quotes in a heredoc or similar: words are only hints here
            words = shell.split()
        code_files = [w for w in words if Path(w).suffix in CODE_SUFFIXES and Path(w).is_file()]
        script = getattr(job.rule, "script", None)
        if script and Path(str(script)).is_file():
            code_files.append(str(script))
        return {
            "rule": job.name,
            "wildcards": {k: str(v) for k, v in job.wildcards.items()},
            "params": {k: repr(v) for k, v in params.items()} if params is not None else {},
            "inputs": inputs,
            "shell": getattr(job.rule, "shellcmd", None),
            "code": checkpoints.file_digests(code_files),
        }

    def _provenance_digest(self, job: JobExecutorInterface) -> str:
        return checkpoints.provenance_digest(self._provenance(job)) if not job.is_group() else ""

    def _prepare_checkpoint_dir(self, job: JobExecutorInterface, paths: StepPaths) -> None:
        """Before a resumable step is submitted: refuse a checkpoint directory someone else could
        have written (UntrustedPath; nothing in it is touched, it is evidence), create it private,
        and move it aside if the step changed since its checkpoints were written."""
        base = self._checkpoint_base()
        private.check_checkpoint_dir(paths.checkpoint_dir, base=base)
        private.make_private_dir(paths.checkpoint_dir, base)
        self._check_provenance(job, paths)

    def _check_provenance(self, job: JobExecutorInterface, paths: StepPaths) -> None:
        parts = self._provenance(job)
        moved = checkpoints.ensure_provenance(paths.checkpoint_dir, checkpoints.provenance_digest(parts),
                                              parts=parts)
        if moved is not None:
            self.logger.warning(f"slurm-gpu: step {paths.key}: its inputs, params or code changed since its "
                                f"checkpoints were written; they were moved to {moved} and training starts afresh")

    def run_job(self, job: JobExecutorInterface) -> None:
        try:
            spec = self._spec(job)
        except ResourceError as e:
            # resources known only now (functions of the inputs) are checked only now
            self._refuse(job, f"slurm-gpu: not submitted: {e}")
            return
        try:
            self._check_targets(job)
        except WildcardError as e:
            self._refuse(job, f"slurm-gpu: not submitted: {e}")
            return
        paths = self._paths(job)
        provenance = self._provenance_digest(job)
        if self._reattach(job, spec, paths, provenance):
            return
        if spec.resumable and not job.is_group():
            try:
                self._prepare_checkpoint_dir(job, paths)
            except private.UntrustedPath as e:
                self.report_job_error(SubmittedJobInfo(job), msg=(
                    f"slurm-gpu: step {paths.key} was not submitted: it would resume from {paths.checkpoint_dir}, "
                    f"but {e}\n(A checkpoint is a pickle: loading it runs the code inside it, so slurm-gpu resumes "
                    "only from files that no one else can have written. It does not start the step afresh "
                    "either, which would overwrite the evidence.)"))
                return
            except (OSError, ValueError) as e:
                raise WorkflowError(f"slurm-gpu: step {paths.key}: cannot check its checkpoint directory "
                                    f"{paths.checkpoint_dir}: {e}") from None
        if self.allocation is not None:
            self._start_in_allocation(job, spec, paths)
            return
        try:
            job_id = self._submit(job, spec, paths, provenance=provenance)
        except SubmitError as e:
            self._refuse(job, f"slurm-gpu: step {paths.key}: {e}")
            return
        self.report_job_submission(SubmittedJobInfo(job, external_jobid=job_id, aux={"paths": paths, "spec": spec}))

    def _refuse(self, job: JobExecutorInterface, message: str) -> None:
        """A step that could not be submitted fails with `message`. Snakemake prints a group job's
        error without it ("message: None"), so for those it is said here."""
        if job.is_group():
            self.logger.error(message)
        self.report_job_error(SubmittedJobInfo(job), msg=message)

    def _start_in_allocation(self, job: JobExecutorInterface, spec: StepSpec, paths: StepPaths) -> None:
        """Allocation mode: the step's script as job steps of Snakemake's own allocation."""
        assert self.allocation is not None
        try:
            command = self._step_command(job, paths, spec)
            if command.direct:
                try:
                    self._prepare_direct(job)
                except Exception as e:  # noqa: BLE001 - as in _submit
                    raise OSError(f"could not prepare its outputs: {e}") from None
            text = render_batch_script(spec, paths, command, self.options)
            script = self._write_script(paths, job, text)
            log = paths.log_dir / f"allocation-{self.allocation.job_id}-{datetime.now(timezone.utc):%Y%m%dT%H%M%S.%f}.log"
            step_id = self.local_steps.start(self.allocation, allocation.step_command(spec, script),
                                             allocation.step_environment(spec, self.allocation, os.environ),
                                             log, self.root)
        except (OSError, private.UntrustedPath) as e:
            self.report_job_error(SubmittedJobInfo(job), msg=f"slurm-gpu: step {paths.key}: could not start it in "
                                  f"allocation {self.allocation.job_id}: {e}")
            return
        self.logger.info(f"slurm-gpu: step {paths.key} runs in allocation {self.allocation.job_id} "
                         f"({spec.nodes} node(s) x {spec.tasks_per_node} task(s)); log {log}")
        self.report_job_submission(SubmittedJobInfo(job, external_jobid=step_id,
                                                    aux={"paths": paths, "spec": spec, "log": log}))

    def _check_in_allocation(self, active_jobs: List[SubmittedJobInfo]) -> Iterable[SubmittedJobInfo]:
        """Allocation mode's status check: the steps' own exit status, no Slurm call."""
        for job_info in active_jobs:
            code = self.local_steps.poll(job_info.external_jobid)
            if code is None:
                yield job_info
                continue
            paths: StepPaths = job_info.aux["paths"]
            if code == 0:
                if job_info.aux["spec"].resumable:
                    self._clean_checkpoints(paths)
                self._forget_success(paths)
                self.report_job_success(job_info)
                continue
            log = job_info.aux["log"]
            shown = logs.read_excerpt(log, LOG_TAIL_LINES)
            self.report_job_error(job_info, msg=(f"slurm-gpu: step {paths.key} (in allocation) exited {code}.\n"
                                                 f"Log: {log}\n" + (f"End of the log:\n{shown}\n" if shown else "")))

    def _resubmit(self, job_info: SubmittedJobInfo, reason: str, stop: Stop,
                  failed_nodes: str = "") -> SubmittedJobInfo | None:
        """A new Slurm job for a step whose job was stopped from outside; None if that failed.
        `failed_nodes`: the nodes of a job that ended NODE_FAIL or BOOT_FAIL (kept out of the new job)."""
        paths, spec = job_info.aux["paths"], job_info.aux["spec"]
        old = job_info.external_jobid
        self._cancel([old])  # final already; cancelling makes sure Slurm cannot restart it beside the new one
        self.logger.info(f"slurm-gpu: step {paths.key}, Slurm job {old}: {reason}")
        if failed_nodes and not self.settings.reuse_failed_nodes:
            spec = self._exclude(spec, paths, failed_nodes)
            job_info.aux["spec"] = spec
        try:
            job_id = self._submit(job_info.job, spec, paths, replaces=(old, stop, reason))
        except SubmitError as e:
            self.report_job_error(job_info, msg=f"slurm-gpu: step {paths.key}: resubmission failed: {e}")
            return None
        history = self._history[paths.key]
        history.resubmitted[stop] = history.count(stop) + 1
        try:
            job_info.job.register(external_jobid=job_id)  # Snakemake's incomplete-marker names the live job
        except OSError:
            pass
        return SubmittedJobInfo(job_info.job, external_jobid=job_id, aux=job_info.aux)

    # ------------------------------------------------------------ status
    async def check_active_jobs(
        self, active_jobs: List[SubmittedJobInfo]
    ) -> AsyncGenerator[SubmittedJobInfo, None]:
        if self.allocation is not None:
            for job_info in self._check_in_allocation(active_jobs):
                yield job_info
            return
        for job_info in active_jobs:
            paths, spec = job_info.aux["paths"], job_info.aux["spec"]
            self._follow_events(job_info.external_jobid, paths, spec)
        if not self._poll_due(active_jobs, time.monotonic()):
            for job_info in active_jobs:
                yield job_info
            return
        ids = [j.external_jobid for j in active_jobs]
        async with self.status_rate_limiter:
            self._last_poll = time.monotonic()
            try:
                records = await asyncio.to_thread(self.status.records, ids)
            except slurm.SlurmError as e:
                # a busy or restarting controller: keep every job and look again later
                self.logger.warning(f"slurm-gpu: status query failed, will retry: {e}")
                self._back_off(changed=False)
                for job_info in active_jobs:
                    yield job_info
                return
        self._note_accounting()
        now = time.monotonic()
        changed = False
        for job_info in active_jobs:
            if job_info.external_jobid in self.status.unanswered:
                yield job_info  # left the queue while accounting is away: not missing, only unheard of
                continue
            record = records.get(job_info.external_jobid)
            paths: StepPaths = job_info.aux["paths"]
            spec: StepSpec = job_info.aux["spec"]
            verdict = classify(record) if record else None
            if verdict is not None and verdict.outcome is Outcome.UNKNOWN:
                self._note_unknown_state(job_info.external_jobid, paths, verdict)
            self._follow_queue(job_info.external_jobid, paths, record, verdict)
            if verdict is not None and verdict.state == "RUNNING" and spec.distributed:
                if self._stop_if_hung(job_info, paths, spec):
                    changed = True
                    continue
                stalled = self._stalled(job_info.external_jobid, paths, spec)
                if stalled is not None:
                    changed = True
                    replacement = await asyncio.to_thread(self._act_on_stall, job_info, stalled)
                    if replacement is not None:
                        yield replacement
                    continue
            ended = None
            if verdict is not None and verdict.outcome is Outcome.FAILED:
                ended = await asyncio.to_thread(self._how_ranks_ended, job_info.external_jobid, paths, spec)
            action = self.watch.decide(job_info.external_jobid, verdict, now,
                                       self._history.setdefault(paths.key, StepHistory()), self.budgets,
                                       resumable=spec.resumable,
                                       checkpointed_for_requeue=spec.resumable and verdict is not None
                                       and verdict.outcome is Outcome.FAILED
                                       and self._checkpointed_for_requeue(paths, job_info.external_jobid),
                                       requeueable=paths.key not in self._direct_steps and spec.requeue,
                                       requeue_off=spec.requeue_off_by,
                                       stopped_by_signal=ended[1] if ended is not None else "")
            if action.act is Act.WAIT:
                yield job_info
                continue
            changed = True
            with self._live_lock:
                self._live.discard(job_info.external_jobid)
            if action.act is Act.RESUBMIT:
                failed_nodes = record.nodes if record is not None and verdict is not None \
                    and verdict.state in NODE_FAILURES else ""
                replacement = await asyncio.to_thread(self._resubmit, job_info, action.reason, action.stop,
                                                      failed_nodes)
                if replacement is not None:
                    yield replacement
                continue
            self.tracker.forget(job_info.external_jobid)
            attach.clear_record(paths.submission_record)
            if action.act is Act.SUCCEED:
                self._event(paths, "completed", job_info.external_jobid, state=verdict.state if verdict else "",
                            exit_code=record.exit_code if record else "")
                if spec.resumable:
                    await asyncio.to_thread(self._clean_checkpoints, paths)
                self._forget_success(paths)
                self.report_job_success(job_info)
                continue
            if action.act is Act.CANCEL_AND_FAIL:
                self._cancel([job_info.external_jobid])
            self._event(paths, "failed", job_info.external_jobid, state=verdict.state if verdict else "UNKNOWN",
                        reason=record.reason if record else "", exit_code=record.exit_code if record else "",
                        message=action.reason)
            self.report_job_error(job_info, msg=self._failure_message(job_info, action.reason,
                                                                      ended[0] if ended else None))
        self._back_off(changed)

    # ------------------------------------------------------------ events, console, watchdog
    def _event(self, paths: StepPaths, event: str, job_id: str | None, **fields: object) -> None:
        """Append to the step's event log; a failure to write it is said once, never fatal."""
        try:
            events.append(paths.event_log, events.record(event, paths.key, "executor", job_id, **fields))
        except OSError as e:
            if not self._event_log_warned:
                self._event_log_warned = True
                self.logger.warning(f"slurm-gpu: cannot write the event log {paths.event_log}: {e}")

    def _say(self, paths: StepPaths, job_id: str, text: str) -> None:
        self.logger.info(f"slurm-gpu: step {paths.key}, Slurm job {job_id}: {text}")

    def _follow_events(self, job_id: str, paths: StepPaths, spec: StepSpec) -> None:
        """The job side's new events: a console line per transition (every tick, no Slurm call)."""
        for line in self.tracker.read(paths.event_log, job_id, spec.nodes * spec.ranks_per_node):
            self._say(paths, job_id, line)

    def _poll_due(self, active_jobs: Sequence[SubmittedJobInfo], now: float) -> bool:
        """Ask Slurm now? When its interval is up, or when a batch script said it ended (then at
        most once per ENDED_POLL_GAP_S, for ENDED_POLL_WINDOW_S after that)."""
        if now >= self._next_poll:
            return True
        if now - self._last_poll < ENDED_POLL_GAP_S:
            return False
        wall = time.time()
        for job_info in active_jobs:
            ended = self.tracker.ended_at(job_info.external_jobid)
            if ended is not None and wall - ended < ENDED_POLL_WINDOW_S:
                return True
        return False

    def _follow_queue(self, job_id: str, paths: StepPaths, record: slurm.JobRecord | None,
                      verdict: Verdict | None) -> None:
        """What the queue says: a requeue, a pending reason that changed (an event and a line each)."""
        if record is not None and verdict is not None:
            if self.tracker.requeued(job_id, verdict.state):
                self._event(paths, "requeued", job_id, state=verdict.state)
                self._say(paths, job_id, "requeued by Slurm, same job id; it restarts when scheduled")
            reason = self.tracker.pending_reason(job_id, verdict.state, record.reason)
            if reason:
                self._event(paths, "pending", job_id, reason=reason)
                self._say(paths, job_id, f"pending ({reason})")

    def _stop_if_hung(self, job_info: SubmittedJobInfo, paths: StepPaths, spec: StepSpec) -> bool:
        """The hang watchdog: cancel and fail a distributed step whose world never formed."""
        job_id = job_info.external_jobid
        run = self.tracker.current_run(job_id)
        if run is None:
            return False
        started_ts, run_events = run
        timeout = self.settings.rendezvous_timeout_s
        hang = watchdog.check(run_events, spec.nodes * spec.ranks_per_node, spec.ranks_per_node, started_ts,
                              time.time(), timeout)
        if hang is None:
            return False
        self._cancel([job_id])
        with self._live_lock:
            self._live.discard(job_id)
        self.tracker.forget(job_id)
        attach.clear_record(paths.submission_record)
        self._event(paths, "watchdog", job_id, missing_ranks=hang.missing_ranks, missing_nodes=hang.missing_nodes,
                    joined=hang.joined, expected=hang.expected, why=hang.why)
        message = (f"slurm-gpu: step {paths.key}, Slurm job {job_id}: {hang.message(timeout)}. (The watchdog's "
                   f"limit is --slurm-gpu-rendezvous-timeout-s.)\nLog: {paths.log_file(job_id)}\n")
        shown = logs.read_excerpt(paths.log_file(job_id), LOG_TAIL_LINES)
        self.report_job_error(job_info, msg=message + (f"End of the log:\n{shown}\n" if shown else ""))
        return True

    def _stalled(self, job_id: str, paths: StepPaths, spec: StepSpec) -> stall.Stall | None:
        """The stall watchdog's verdict on the running job's current run (its ranks' heartbeats)."""
        run = self.tracker.current_run(job_id)
        if run is None or self.settings.stall_timeout_s == 0:
            return None
        return stall.check(heartbeat.read_all(paths.heartbeat_dir), spec.nodes * spec.ranks_per_node, job_id,
                           run[0], time.time(), heartbeat.interval_s(), self.settings.stall_timeout_s)

    def _act_on_stall(self, job_info: SubmittedJobInfo, found: stall.Stall) -> SubmittedJobInfo | None:
        """Cancel a stalled job; resubmit its step without the stalled nodes, or fail it (policy.on_stall)."""
        paths: StepPaths = job_info.aux["paths"]
        job_id = job_info.external_jobid
        history = self._history.setdefault(paths.key, StepHistory())
        action = on_stall(found.message(), history, self.budgets, job_info.aux["spec"].requeue_off_by)
        history.stalls += 1
        self._event(paths, "stalled", job_id, idle_s=round(found.idle_s, 1), limit_s=round(found.limit_s, 1),
                    global_step=found.global_step, silent=found.silent, missing=found.missing,
                    waiting=[{"rank": r["rank"], "node": r["node"], "where": (r["stack"] or ["?"])[-1]}
                             for r in found.waiting],
                    action=str(action.act))
        with self._live_lock:
            self._live.discard(job_id)
        self.tracker.forget(job_id)
        self.watch.forget(job_id)
        if action.act is Act.RESUBMIT:
            return self._resubmit(job_info, action.reason, Stop.PREEMPTION, ",".join(found.nodes))
        self._cancel([job_id])
        attach.clear_record(paths.submission_record)
        self._event(paths, "failed", job_id, state="STALLED", reason="", exit_code="", message=action.reason)
        self.report_job_error(job_info, msg=self._failure_message(job_info, action.reason))
        return None

    def _note_accounting(self) -> None:
        """Said once per outage: jobs that left the queue wait while sacct cannot answer."""
        error = self.status.accounting_error
        if error is None:
            self._accounting_warned = False
        elif not self._accounting_warned:
            self._accounting_warned = True
            self.logger.warning(f"slurm-gpu: Slurm's accounting (sacct) does not answer; the {len(self.status.unanswered)} "
                                f"job(s) that left the queue wait until it does: {error}")

    def _note_unknown_state(self, job_id: str, paths: StepPaths, verdict: Verdict) -> None:
        """A state this version does not know (a newer Slurm, a garbled line): said once per job and
        state, and treated as still running for at most missing-job-timeout-s."""
        if (job_id, verdict.state) in self._unknown_states:
            return
        self._unknown_states.add((job_id, verdict.state))
        self.logger.warning(f"slurm-gpu: step {paths.key}, Slurm job {job_id}: state '{verdict.detail}' is unknown to "
                            f"slurm-gpu; waiting up to {self.settings.missing_job_timeout_s} s "
                            "(--slurm-gpu-missing-job-timeout-s) for a state it knows")

    def _checkpointed_for_requeue(self, paths: StepPaths, job_id: str) -> bool:
        """Did this job's training checkpoint on the requeue signal and stop for a restart?"""
        try:
            marker = json.loads((paths.checkpoint_dir / checkpoints.INTERRUPTED_MARKER).read_text())
        except (OSError, ValueError):
            return False
        # a marker of a requeue that Slurm carried out belongs to an earlier run of the same job id
        return isinstance(marker, dict) and str(marker.get("job_id")) == job_id and not marker.get("requeued")

    def _exclude(self, spec: StepSpec, paths: StepPaths, failed_nodes: str) -> StepSpec:
        """The step's spec with the nodes of its failed job excluded, unless that would leave its
        partition too few nodes to run it (it would then pend forever)."""
        try:
            failed = set(slurm.parse_names(self._slurm(slurm.hostnames_argv(failed_nodes))))
            partition = spec.partition or self._cluster_info(spec.clusters).default_partition
            nodes = set(slurm.parse_names(self._slurm(slurm.partition_nodes_argv(partition, spec.clusters))))
        except slurm.SlurmError as e:
            self.logger.warning(f"slurm-gpu: step {paths.key}: not excluding nodes {failed_nodes}: {e}")
            return spec
        excluded = tuple(sorted(set(spec.exclude) | failed))
        left = len(nodes - set(excluded))
        if left < spec.nodes:
            self.logger.warning(f"slurm-gpu: step {paths.key}: not excluding {', '.join(sorted(failed))}: the "
                                f"partition would have {left} node(s) left for a step of {spec.nodes}")
            return spec
        self.logger.info(f"slurm-gpu: step {paths.key}: its new job excludes {', '.join(excluded)}, where an "
                         "earlier job of it failed (--slurm-gpu-reuse-failed-nodes turns this off)")
        return dataclasses.replace(spec, exclude=excluded)

    def _clean_checkpoints(self, paths: StepPaths) -> None:
        try:
            removed = checkpoints.cleanup_after_success(paths.checkpoint_dir, self.settings.checkpoint_cleanup)
        except OSError as e:
            self.logger.warning(f"slurm-gpu: step {paths.key}: could not clean {paths.checkpoint_dir}: {e}")
            return
        if removed:
            self.logger.info(f"slurm-gpu: step {paths.key} done; checkpoint cleanup "
                             f"'{self.settings.checkpoint_cleanup}' removed {len(removed)} file(s)")

    def _forget_success(self, paths: StepPaths) -> None:
        """A step that succeeded leaves its event log only (keep-successful-logs keeps the rest)."""
        if not self.settings.keep_successful_logs:
            housekeeping.remove_step_files(paths)

    def shutdown(self) -> None:
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

    def _back_off(self, changed: bool) -> None:
        """Poll Slurm fast while jobs are finishing, slower while nothing happens."""
        low, high = self.settings.status_interval_min_s, self.settings.status_interval_max_s
        self._poll_interval_s = low if changed else min(high, self._poll_interval_s * 1.5)
        self._next_poll = self._last_poll + self._poll_interval_s
        self.next_seconds_between_status_checks = min(self._tick_s, self._poll_interval_s)

    def _how_ranks_ended(self, job_id: str, paths: StepPaths, spec: StepSpec) -> tuple[str | None, str]:
        """(what ended the failed job's ranks, for the message; the cluster's signal they died of, or "")."""
        ends = ending.rank_ends(ending.last_run(logs.read_tail(paths.log_file(job_id))))
        requeue_signal = None
        if spec.signal:
            from .runtime.signals import requeue_signal as named  # torch-free

            try:
                requeue_signal = named({"SLURM_GPU_REQUEUE_SIGNAL": spec.signal})
            except (KeyError, ValueError):
                pass
        killed = ending.stopped_by_cluster(ends, requeue_signal) if spec.resumable else ""
        oom: list[str] = []
        try:
            oom = ending.out_of_memory(slurm.parse_sacct_usage(self._slurm(
                slurm.sacct_usage_argv([job_id], self.status.clusters))))
        except slurm.SlurmError:
            pass  # no accounting: srun's own lines still say what they say
        return ending.describe(ends, oom), killed

    def _failure_message(self, job_info: SubmittedJobInfo, reason: str, ranks_ended: str | None = None) -> str:
        paths: StepPaths = job_info.aux["paths"]
        log = paths.log_file(job_info.external_jobid)
        message = f"slurm-gpu: step {paths.key}, Slurm job {job_info.external_jobid}: {reason}.\n"
        if ranks_ended:
            message += f"How the ranks ended: {ranks_ended}.\n"
        message += f"Log: {log}\n"
        shown = logs.read_excerpt(log, LOG_TAIL_LINES)
        if shown is None:
            return message + "(the log does not exist: the job may never have started)\n"
        return message + f"End of the log:\n{shown}\n"

    # ------------------------------------------------------------ cancel
    def _cancel(self, job_ids: Sequence[str]) -> None:
        if not job_ids:
            return
        try:
            self._slurm(slurm.scancel_argv(job_ids, self.status.clusters))
        except slurm.SlurmError as e:
            self.logger.warning(f"slurm-gpu: could not cancel Slurm jobs {', '.join(job_ids)}: {e}")

    def cancel_jobs(self, active_jobs: List[SubmittedJobInfo]) -> None:
        if self.allocation is not None:
            self.local_steps.cancel()
            return
        with self._live_lock:
            ids = self._live | {j.external_jobid for j in active_jobs if j.external_jobid}
        self._cancel(sorted(ids, key=int))
