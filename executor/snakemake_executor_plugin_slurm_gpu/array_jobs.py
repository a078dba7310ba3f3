"""Submitting ready steps as job arrays (setting array-jobs) through the batch backend: each step is
prepared as for a submission of its own (its life, its script, its submission record), the steps that
share their Slurm resources go in one `sbatch --array` (arrays.py), and every task is then followed
as the step's own job, `<array id>_<task id>`. What happens to a task later (its verdict, a requeue
in place, a resubmission as a job of its own) is the step's life's, as for any job."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from snakemake_interface_executor_plugins.jobs import JobExecutorInterface

from . import arrays, private, slurm
from .batch_jobs import BatchJobs, Prepared, SubmitError
from .paths import StepPaths
from .spec import StepSpec


@dataclass(frozen=True)
class ReadyStep:
    """A step Snakemake handed over that no live job of an earlier run stands for."""

    job: JobExecutorInterface
    spec: StepSpec
    paths: StepPaths
    provenance: str


class ArraySubmitter:
    def __init__(self, backend: BatchJobs, concurrency: int | None) -> None:
        self.backend = backend
        self.concurrency = concurrency
        self._max_tasks: int | None = None

    def max_tasks(self) -> int:
        """Tasks per array: the cluster's MaxArraySize (task ids run from 0 to MaxArraySize - 1),
        at most arrays.DEFAULT_MAX_TASKS; asked once, on the first array."""
        if self._max_tasks is None:
            limit = arrays.DEFAULT_MAX_TASKS
            try:
                value = slurm.parse_config_value(self.backend.run(slurm.config_argv()), "MaxArraySize")
                if value is not None and value.isdigit():
                    limit = min(limit, int(value))
            except slurm.SlurmError as e:
                self.backend.logger.warning(f"slurm-gpu: could not read the cluster's MaxArraySize ({e}); "
                                            f"job arrays hold at most {limit} steps")
            self._max_tasks = limit
        return self._max_tasks

    def start(self, steps: Sequence[ReadyStep]) -> None:
        """Submit the steps: those that share their resources with another in job arrays, the rest
        each as a job of its own."""
        backend = self.backend
        prepared: list[Prepared] = []
        for step in steps:
            try:
                prepared.append(backend.prepare(step.job, step.spec, step.paths, step.provenance))
            except SubmitError as e:
                backend.host.refuse(step.job, f"slurm-gpu: step {step.paths.key}: {e}")
        groups, alone = arrays.arrays_of(prepared, [p.script.text for p in prepared],
                                         self.max_tasks() if len(prepared) > 1 else 1)
        for ready in alone:
            self.backend.launch(ready)
        for members in groups:
            self.submit_array(members)

    def submit_array(self, members: Sequence[Prepared]) -> None:
        backend = self.backend
        first = members[0]
        array_log_dir = first.paths.log_dir.parent / ".arrays"
        try:
            if backend.settings.logdir is None:
                backend.files.private_dir(array_log_dir)
            else:
                private.make_private_dir(array_log_dir, first.paths.logs_base)
            text = arrays.render_array_script(
                first.spec.rule, [arrays.Task(m.paths.key, m.script.text, m.paths.log_dir) for m in members],
                array_log_dir, self.concurrency)
            array_id = backend.submitter.submit(text, backend.root, first.paths.key)
        except (slurm.SlurmError, ValueError, OSError, private.UntrustedPath) as e:
            for ready in members:
                backend.host.refuse(ready.job, f"slurm-gpu: step {ready.paths.key} (in a job array of "
                                               f"{len(members)} steps): {backend.not_submitted(ready, e)}")
            return
        backend.logger.info(f"slurm-gpu: {len(members)} steps of rule {first.spec.rule} are Slurm job array "
                            f"{array_id} (tasks 0-{len(members) - 1}"
                            + (f", at most {self.concurrency} at a time" if self.concurrency else "") + ")")
        for index, ready in enumerate(members):
            job_id = f"{array_id}_{index}"
            backend.submitted(ready, job_id)
            backend.report_submitted(ready.job, ready.spec, ready.paths, job_id)
