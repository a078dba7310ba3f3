"""What each step's Slurm jobs used of what they were given: `slurm-gpu efficiency` and the report the
executor writes at shutdown with --slurm-gpu-efficiency-report.

Per step (not per Slurm job): every job id the step ever had (its first submission and each
resubmission, from the event log) is looked up in Slurm's accounting with one batched `sacct
--duplicates` (slurm.sacct_usage_argv; 1000 ids per call), which lists every run of a requeued job
and each run's job steps (`123.batch`, `123.0`, ...). Then:

    jobs             runs: Slurm jobs plus the runs again of requeued ones (runs that never started,
                     e.g. a requeued job still pending or a job cancelled while queued, do not count)
    elapsed_s        wall seconds, summed over the runs
    cpus             CPUs of the newest run (all nodes)
    cpu_efficiency   total CPU time (user + system, TotalCPU) / sum over runs of elapsed x CPUs
    mem_requested_mb the newest run's request per node (ReqMem, whether asked per node or per CPU)
    mem_peak_mb      the largest MaxRSS of any job step: the peak of one task, sampled every
                     JobAcctGatherFrequency seconds (a step shorter than that may show none, or
                     a MaxRSS of 0: '-')
    mem_efficiency   mem_peak_mb / mem_requested_mb
    gpus             GPUs of the step (Slurm's allocation, else the executor's request)
    gpu_hours        sum over runs of elapsed x GPUs of the run, in hours
    gpu_hours_lost   the step's GPUs x the seconds `slurm-gpu status` counts as lost to preemption
                     (timeline.StepSummary.seconds_lost: the wait in the queue after every preemption
                     plus each preempted run's work since its last checkpoint), in hours

A step whose jobs sacct does not know (accounting off, records purged, a job too new) keeps '-' in
the sacct columns and gets a note; a failing sacct does the same for every step. Never an exception
for missing data.

Pure apart from the injected `run(argv) -> stdout` (slurm.run by default) and write_report()'s files.
"""

from __future__ import annotations

import csv
import io
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from . import events, slurm, timeline
from .paths import STATE_DIR

# argv -> stdout; raises slurm.SlurmError (or OSError) when the command fails
RunSlurm = Callable[[Sequence[str]], str]

CSV_COLUMNS = ("step", "jobs", "state", "elapsed_s", "cpus", "cpu_efficiency", "mem_requested_mb", "mem_peak_mb",
               "mem_efficiency", "gpus", "gpu_hours", "gpu_hours_lost")
TABLE_COLUMNS = ("STEP", "JOBS", "STATE", "ELAPSED", "CPUS", "CPU EFF", "MEM REQ", "MEM PEAK", "MEM EFF", "GPUS",
                 "GPU-H", "GPU-H LOST")
_LEFT_ALIGNED = {"STEP", "STATE"}

LOST_MEANING = ("GPU-H LOST: the step's GPUs x the time lost to preemption (as in `slurm-gpu status`): "
                "waiting in the queue\nafter each preemption plus each preempted run's work since its last "
                "checkpoint.")
PEAK_MEANING = ("MEM PEAK: the largest MaxRSS of one task, sampled every JobAcctGatherFrequency seconds; "
                "MEM REQ: per node.")


def default_run(argv: Sequence[str]) -> str:
    return slurm.run(argv, timeout_s=60.0)


@dataclass
class StepEfficiency:
    """One step's use of its allocations. None: not known (no accounting record, nothing measured)."""

    step: str                           # "rule/wildcards"
    job_ids: list[str]                  # every Slurm job of the step, oldest first (event log)
    jobs: int | None                    # runs: Slurm jobs plus requeued runs; None without accounting
    state: str                          # Slurm's state of the newest run, else the event log's
    elapsed_s: int | None
    cpus: int | None
    cpu_efficiency: float | None
    mem_requested_mb: float | None      # per node
    mem_peak_mb: float | None
    mem_efficiency: float | None
    gpus: int
    gpu_hours: float | None
    gpu_hours_lost: float
    seconds_lost: float                 # timeline.StepSummary.seconds_lost
    notes: list[str] = field(default_factory=list)

    @property
    def accounted(self) -> bool:
        return self.jobs is not None


@dataclass
class _Run:
    record: slurm.UsageRecord
    steps: list[slurm.UsageRecord] = field(default_factory=list)

    @property
    def started(self) -> bool:
        return self.record.elapsed_s > 0

    @property
    def cpu_seconds(self) -> float:
        # the allocation's line is the sum over its steps; the steps' sum when it says nothing
        return self.record.total_cpu_s or sum(s.total_cpu_s for s in self.steps)


# ------------------------------------------------------------------ Slurm accounting
def fetch_usage(job_ids: Iterable[str], run: RunSlurm = default_run,
                chunk: int = slurm.SACCT_USAGE_CHUNK) -> dict[str, list[_Run]]:
    """{job id: its runs in sacct's order, each with its job steps} for the ids sacct knows. Raises
    what `run` raises (slurm.SlurmError: accounting off or away)."""
    ids = list(dict.fromkeys(job_ids))
    runs: dict[str, list[_Run]] = {}
    for start in range(0, len(ids), chunk):
        for record in slurm.parse_sacct_usage(run(slurm.sacct_usage_argv(ids[start:start + chunk]))):
            if not record.step:
                runs.setdefault(record.job_id, []).append(_Run(record))
            elif runs.get(record.job_id):
                # a step follows the line of its own run (requeued runs share the job id)
                runs[record.job_id][-1].steps.append(record)
    return runs


# ------------------------------------------------------------------ per step
def _requested_gpus(step_events: Iterable[Mapping[str, Any]]) -> int:
    """GPUs the executor asked for in the step's newest submission: nodes x GPUs per node."""
    gpus = 0
    for e in step_events:
        if e.get("event") == "submitted":
            nodes, per_node = e.get("nodes_requested"), e.get("gpus_per_node")
            if isinstance(nodes, int) and isinstance(per_node, int) and not isinstance(per_node, bool):
                gpus = max(nodes, 1) * per_node
    return gpus


def step_efficiency(summary: timeline.StepSummary, step_events: Sequence[Mapping[str, Any]],
                    usage: Mapping[str, list[_Run]] | None, why_none: str = "") -> StepEfficiency:
    """One step's figures from its summary, its events and the accounting records (None: sacct
    could not be asked, `why_none` says why)."""
    runs = [r for job in summary.job_ids for r in (usage or {}).get(job, [])]
    gpus = _requested_gpus(step_events)
    out = StepEfficiency(step=summary.step, job_ids=list(summary.job_ids), jobs=None, state=summary.state,
                         elapsed_s=None, cpus=None, cpu_efficiency=None, mem_requested_mb=None, mem_peak_mb=None,
                         mem_efficiency=None, gpus=gpus, gpu_hours=None, gpu_hours_lost=0.0,
                         seconds_lost=summary.seconds_lost)
    if usage is None:
        out.notes.append(why_none or "Slurm accounting could not be asked")
    elif not summary.job_ids:
        out.notes.append("no Slurm job yet")
    elif not runs:
        out.notes.append(f"no accounting record for job {', '.join(summary.job_ids)} "
                         "(accounting off or purged?)")
    else:
        known = [job for job in summary.job_ids if usage.get(job)]
        missing = [job for job in summary.job_ids if job not in known]
        if missing:
            out.notes.append(f"no accounting record for job {', '.join(missing)}: its use is not counted")
        started = [r for r in runs if r.started]
        newest = usage[known[-1]][-1].record
        out.state = newest.state.split()[0].rstrip("+")
        out.jobs = len(started)
        out.elapsed_s = sum(r.record.elapsed_s for r in started)
        allocated = [r for r in runs if r.record.alloc_tres]
        if allocated:
            out.gpus = slurm.tres_gpus(allocated[-1].record.alloc_tres)
        out.cpus = newest.alloc_cpus or (allocated[-1].record.alloc_cpus if allocated else None)
        core_seconds = sum(r.record.elapsed_s * r.record.alloc_cpus for r in started)
        if core_seconds > 0:
            out.cpu_efficiency = sum(r.cpu_seconds for r in started) / core_seconds
        out.mem_requested_mb = slurm.req_mem_per_node_mb(newest.req_mem, newest.alloc_cpus, newest.nodes)
        # a MaxRSS of 0 is a step never sampled (no running task has an empty resident set), not a peak
        peaks = [s.max_rss_mb for r in runs for s in r.steps if s.max_rss_mb]
        out.mem_peak_mb = max(peaks) if peaks else None
        if out.mem_peak_mb is not None and out.mem_requested_mb:
            out.mem_efficiency = out.mem_peak_mb / out.mem_requested_mb
        out.gpu_hours = sum(r.record.elapsed_s * slurm.tres_gpus(r.record.alloc_tres) for r in started) / 3600.0
    out.gpu_hours_lost = summary.seconds_lost * out.gpus / 3600.0
    return out


def compute(steps: Mapping[str, Sequence[Mapping[str, Any]]], run: RunSlurm = default_run,
            now: float | None = None) -> list[StepEfficiency]:
    """The figures of every step of {"rule/wildcards": its events} (cli.load_steps), in the order of
    `slurm-gpu status`. One sacct call per 1000 job ids, whatever the number of steps."""
    clock = now if now is not None else time.time()
    summaries = timeline.summaries(steps, clock)
    usage: dict[str, list[_Run]] | None
    why = ""
    try:
        usage = fetch_usage([job for s in summaries for job in s.job_ids], run)
    except slurm.SlurmError as e:  # accounting off ("Slurm accounting storage is disabled"), slurmdbd away
        usage, why = None, f"Slurm accounting not available: {_first_line(e.stderr) or _first_line(str(e))}"
    except OSError as e:
        usage, why = None, f"Slurm accounting not available: {e}"
    return [step_efficiency(s, steps[s.step], usage, why) for s in summaries]


def _first_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[0].strip() if lines else ""


def load_steps(directory: Path) -> dict[str, list[dict[str, Any]]]:
    """{"rule/wildcards": its events} for every readable step log under the workflow `directory`
    (an unreadable one is left out; none at all: {})."""
    return events.read_steps(Path(directory) / STATE_DIR)


# ------------------------------------------------------------------ output
def _fmt(value: float | int | None, pattern: str) -> str:
    return "-" if value is None else pattern.format(value)


def _hours(value: float | None) -> str:
    if value is None:
        return "-"
    return "<0.01" if 0 < value < 0.005 else f"{value:,.2f}"


def table_row(s: StepEfficiency) -> tuple[str, ...]:
    return (s.step, _fmt(s.jobs, "{}"), s.state,
            timeline.format_duration(s.elapsed_s) if s.elapsed_s is not None else "-",
            _fmt(s.cpus, "{}"), _fmt(None if s.cpu_efficiency is None else 100 * s.cpu_efficiency, "{:.0f}%"),
            _fmt(s.mem_requested_mb, "{:,.0f} MB"), _fmt(s.mem_peak_mb, "{:,.0f} MB"),
            _fmt(None if s.mem_efficiency is None else 100 * s.mem_efficiency, "{:.0f}%"),
            str(s.gpus), _hours(s.gpu_hours), _hours(s.gpu_hours_lost))


def totals(found: Sequence[StepEfficiency]) -> tuple[float, float]:
    """(GPU-hours used, GPU-hours lost to preemption) over every step."""
    return (sum(s.gpu_hours or 0.0 for s in found), sum(s.gpu_hours_lost for s in found))


def total_line(found: Sequence[StepEfficiency]) -> str:
    used, lost = totals(found)
    unknown = sum(1 for s in found if s.gpu_hours is None)
    tail = f" ({unknown} step{'s' if unknown != 1 else ''} without accounting not counted)" if unknown else ""
    return f"total: {_hours(used)} GPU-hours used, {_hours(lost)} GPU-hours lost to preemption{tail}"


def format_table(found: Sequence[StepEfficiency]) -> str:
    """The table, the total line and the notes: what `slurm-gpu efficiency` prints."""
    rows = [table_row(s) for s in found]
    widths = [max(len(row[i]) for row in [TABLE_COLUMNS, *rows]) for i in range(len(TABLE_COLUMNS))]

    def line(row: Sequence[str]) -> str:
        return "  ".join(cell.ljust(width) if name in _LEFT_ALIGNED else cell.rjust(width)
                         for cell, width, name in zip(row, widths, TABLE_COLUMNS)).rstrip()

    parts = ["\n".join([line(TABLE_COLUMNS)] + [line(row) for row in rows]), total_line(found)]
    notes = [f"{s.step}: {note}" for s in found for note in s.notes]
    parts.append("\n".join([PEAK_MEANING, LOST_MEANING, *notes]))
    return "\n\n".join(parts) + "\n"


def _csv_value(value: float | int | str | None, digits: int | None = None) -> str:
    if value is None:
        return ""  # not known: an empty cell
    if digits is not None:
        return f"{value:.{digits}f}"
    return str(value)


def csv_row(s: StepEfficiency) -> list[str]:
    return [s.step, _csv_value(s.jobs), s.state, _csv_value(s.elapsed_s), _csv_value(s.cpus),
            _csv_value(s.cpu_efficiency, 4), _csv_value(s.mem_requested_mb, 1), _csv_value(s.mem_peak_mb, 1),
            _csv_value(s.mem_efficiency, 4), _csv_value(s.gpus), _csv_value(s.gpu_hours, 4),
            _csv_value(s.gpu_hours_lost, 4)]


def format_csv(found: Sequence[StepEfficiency]) -> str:
    """CSV_COLUMNS, one row per step; unknown figures are empty cells, ratios are fractions (0-1)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    writer.writerows(csv_row(s) for s in found)
    return buffer.getvalue()


def write_csv(found: Sequence[StepEfficiency], path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(format_csv(found))
    return path


def write_report(directory: Path, path: Path, run: RunSlurm = default_run, now: float | None = None) -> Path:
    """The efficiency report of the workflow in `directory`, written to `path`: CSV when it ends in
    .csv, else the table as `slurm-gpu efficiency` prints it. Returns `path`. Missing accounting
    gives '-' / empty cells and notes, a workflow without event logs a report without rows; only
    an unwritable `path` raises (OSError)."""
    found = compute(load_steps(Path(directory)), run, now)
    path = Path(path)
    if path.suffix.lower() == ".csv":
        return write_csv(found, path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(format_table(found))
    return path
