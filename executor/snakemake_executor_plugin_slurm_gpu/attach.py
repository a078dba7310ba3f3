"""Finding a step's Slurm job again, by the stable key every batch script carries (its --comment,
`slurm-gpu step=<rule>/<wildcards>`, and its --chdir, the workflow directory):

- re-attach: the Snakemake that submitted a step died (ssh dropped, SIGKILL, node reboot) while the
  job ran on. A new Snakemake would submit a second copy beside it; instead it takes the live job
  over, if the step is still what that job was submitted for;
- a lost reply: sbatch timed out or the controller went away mid-submission, so a job may exist
  although no id came back. A retry first looks for it.

The submission record (`.snakemake/slurm-gpu/submissions/<rule>/<wildcards>.json`) says what a step
was submitted with; it is written before sbatch and removed once the step's verdict is reported, so
its presence means "this step may have a job that nobody is watching".
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Callable, Iterable, Sequence

from . import private
from .atomic import atomic_output
from .slurm import StepJob, id_order, parse_step_jobs
from .status import STATE_TABLE, Outcome, base_state

# a job in these is still the step's: running, queued, being requeued, or held for a person
_LIVE = {Outcome.ACTIVE, Outcome.HELD}


@dataclass(frozen=True)
class Submission:
    provenance: str   # checkpoints.provenance_digest of the step's inputs, params and code
    ts: float         # when the submission began (time.time())
    job_id: str | None = None


def read_record(path: Path) -> Submission | None:
    try:
        data = json.loads(path.read_text())
        return Submission(str(data["provenance"]), float(data["ts"]),
                          None if data.get("job_id") is None else str(data["job_id"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_record(path: Path, record: Submission) -> None:
    """Replace the record atomically (a reader sees the old one or the new one), mode 0600."""
    # no fsync, as before: one per submission would slow a large workflow's submissions on a network
    # filesystem, and a record lost to a crash of the submit host only costs a cancel-and-resubmit
    with atomic_output(path, fsync=False) as tmp:
        # recreated by write_private: never through a link, and mode exactly 0600 whatever the umask
        tmp.unlink()
        private.write_private(tmp, json.dumps({"provenance": record.provenance, "ts": record.ts,
                                               "job_id": record.job_id}) + "\n")


def clear_record(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


def any_records(directory: Path) -> bool:
    """Is any step's submission record left over (cheap: stops at the first)?"""
    try:
        return next(directory.rglob("*.json"), None) is not None
    except OSError:
        return False


def drop_records_except(directory: Path, keep: set[str]) -> None:
    """Remove the records (<directory>/<rule>/<wildcards>.json) of every step not in `keep`."""
    for path in list(directory.glob("*/*.json")):
        if f"{path.parent.name}/{path.stem}" not in keep:
            clear_record(path)


def is_live(job: StepJob) -> bool:
    return STATE_TABLE.get(base_state(job.state)) in _LIVE


def live_by_step(jobs: Iterable[StepJob], root: Path, records: Path | None = None) -> dict[str, list[StepJob]]:
    """The live jobs of this workflow directory, by step key. An array task's comment names only the
    array's first step: its own is the step whose submission record (under `records`) holds its id."""
    found: dict[str, list[StepJob]] = {}
    tasks: dict[str, StepJob] = {}
    for job in jobs:
        if job.workdir == str(root) and is_live(job):
            if job.array:
                tasks[job.job_id] = job
            else:
                found.setdefault(job.step, []).append(job)
    if tasks and records is not None:
        for key, record in read_records(records):
            if record.job_id in tasks:
                found.setdefault(key, []).append(replace(tasks[record.job_id], step=key))
    return found


def unclaimed_tasks(jobs: Iterable[StepJob], root: Path, found: dict[str, list[StepJob]]) -> list[str]:
    """Live array tasks of this directory that no step's record names (Snakemake died between sbatch
    and writing the ids down): nobody can follow them, so they must not run on beside new jobs."""
    claimed = {j.job_id for live in found.values() for j in live}
    return sorted((j.job_id for j in jobs if j.array and j.workdir == str(root) and is_live(j)
                   and j.job_id not in claimed), key=id_order)


def earlier_runs(list_jobs: Callable[[], str], root: Path,
                 records: Path) -> tuple[dict[str, list[StepJob]], list[str]]:
    """The live jobs, by step key, of the steps whose submission record an earlier Snakemake left in
    `records`, and the live array tasks of this directory that no record names. A record without a live
    job is over (the job ended while nobody watched): it goes, so the next run need not ask Slurm again.
    `list_jobs` (squeue_steps_argv's listing) is called only if a record was left. Raises SlurmError."""
    if not any_records(records):
        return {}, []
    listing = parse_step_jobs(list_jobs())
    found = live_by_step(listing, root, records)
    unclaimed = unclaimed_tasks(listing, root, found)
    drop_records_except(records, set(found))
    return found, unclaimed


def read_records(directory: Path) -> Iterable[tuple[str, Submission]]:
    """(step key, record) of every submission record under `directory`."""
    for path in sorted(directory.glob("*/*.json")):
        record = read_record(path)
        if record is not None:
            yield f"{path.parent.name}/{path.stem}", record


@dataclass(frozen=True)
class Attach:
    job_id: str | None           # the live job to wait for instead of submitting; None: submit
    cancel: tuple[str, ...] = ()  # live jobs of the step that must not run on
    why: str = ""                # why they are cancelled


def decide(live: Sequence[StepJob], record: Submission | None, provenance: str) -> Attach:
    """Re-attach to a step's live job, or cancel it and submit afresh."""
    if not live:
        return Attach(None)
    ids = sorted((j.job_id for j in live), key=id_order)
    if record is None:
        return Attach(None, tuple(ids), "there is no record of what it was submitted with")
    if record.provenance != provenance:
        return Attach(None, tuple(ids), "the step's inputs, params or code changed since it was submitted")
    # the newest one is the latest submission; an older one beside it is a copy that must go
    return Attach(ids[-1], tuple(ids[:-1]), "a newer job of the same step is live" if len(ids) > 1 else "")


def _submitted_at(job: StepJob) -> float | None:
    try:
        return datetime.fromisoformat(job.submitted).timestamp()  # Slurm prints local time
    except ValueError:
        return None


def lost_submission(jobs: Iterable[StepJob], root: Path, step: str, since: float,
                    known: Iterable[str]) -> str | None:
    """After an sbatch that failed without saying whether it submitted: the job it created anyway
    (this step, this directory, submitted since the attempt began, not one we know), or None."""
    known = set(known)
    found = [j for j in jobs if j.workdir == str(root) and j.step == step and j.job_id not in known
             and (_submitted_at(j) or 0.0) >= since - 2.0]  # SubmitTime has whole seconds
    # an array's tasks stand for the one sbatch that made them: its id
    return max((j.array_id for j in found), key=id_order) if found else None
