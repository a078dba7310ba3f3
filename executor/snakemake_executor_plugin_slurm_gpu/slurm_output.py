"""What Slurm's commands print, read back: the output formats slurm.py asks for and pure parsers of
them. No I/O, no policy (what a state means is status.py's business).

Parsers read Slurm's delimited output (--parsable2 / --format), never columns, and skip a truncated or
foreign line instead of failing on it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable

# ---------------------------------------------------------------- sbatch

_JOB_ID_LINE = re.compile(r"^([0-9]+)(?:;\S+)?$")


def parse_sbatch(stdout: str) -> str:
    """The job id from `sbatch --parsable` ("123" or "123;cluster"), after any warning lines."""
    for line in reversed(stdout.strip().splitlines()):
        match = _JOB_ID_LINE.match(line.strip())
        if match:
            return match.group(1)
    raise ValueError(f"sbatch printed no job id: {stdout.strip()!r}")


# ---------------------------------------------------------------- job states

@dataclass(frozen=True)
class JobRecord:
    job_id: str
    state: str  # verbatim, e.g. "CANCELLED by 0"
    reason: str = ""
    exit_code: str = ""
    nodes: str = ""


SQUEUE_FORMAT = "%i|%T|%r|%N"  # squeue --format; parse_squeue reads it
# JobID, not JobIDRaw: an array task is <array id>_<task id> there, as squeue and scontrol name it
SACCT_FIELDS = "JobID,State,Reason,ExitCode,NodeList"  # sacct --format; parse_sacct reads it

# a state as squeue/sacct print it: 'RUNNING', 'CANCELLED by 1000', 'COMPLETED+'
_STATE_WORD = re.compile(r"^[A-Z_]+\+?( |$)")
_NUMBER = re.compile(r"^[0-9]+$")  # ASCII only: str.isdigit() and \d also accept '²' and '٣'
# a job, or one task of a job array (squeue --array lists each task so, pending ones too)
_JOB_ID = re.compile(r"^[0-9]+(?:_[0-9]+)?$")


def id_order(job_id: str) -> tuple[int, ...]:
    """Sort key of job ids as Slurm gives them out: 9 before 10, array 12's tasks after job 11 and in
    task order (12_2 before 12_10)."""
    return tuple(int(part) if part.isdigit() else -1 for part in job_id.split("_"))


def _fields(line: str, count: int, free: int) -> list[str] | None:
    """Split one delimited line into `count` fields, where field `free` (a reason) is the only one
    that may itself hold the delimiter; None for a truncated or foreign line."""
    parts = line.strip().split("|")
    if len(parts) < count:
        return None
    extra = len(parts) - count
    parts[free:free + extra + 1] = ["|".join(parts[free:free + extra + 1])]
    if not _JOB_ID.match(parts[0]) or not _STATE_WORD.match(parts[1]):
        return None
    return parts


def parse_squeue(stdout: str) -> dict[str, JobRecord]:
    """Records of the jobs squeue listed. A truncated or foreign line is skipped: its job stays
    unknown for this poll (the policy waits a bounded time for it), never a crash."""
    records: dict[str, JobRecord] = {}
    for line in stdout.splitlines():
        parts = _fields(line, 4, free=2)
        if parts is None:
            continue
        job_id, state, reason, nodes = parts
        records[job_id] = JobRecord(job_id, state, "" if reason == "None" else reason, "", nodes)
    return records


def parse_sacct(stdout: str) -> dict[str, JobRecord]:
    """Records of the jobs sacct listed; a line that does not parse is skipped (see parse_squeue)."""
    records: dict[str, JobRecord] = {}
    for line in stdout.splitlines():
        parts = _fields(line, 5, free=2)
        if parts is None:
            continue
        job_id, state, reason, exit_code, nodes = parts
        records[job_id] = JobRecord(job_id, state, "" if reason == "None" else reason, exit_code, nodes)
    return records


# ---------------------------------------------------------------- a step's jobs, found by its key

STEP_COMMENT = "slurm-gpu step="  # every batch script's --comment: the step key follows
# a job array's --comment: its first task's step key follows (each task's own step is in the step's
# submission record, attach.py)
ARRAY_COMMENT = "slurm-gpu array="


@dataclass(frozen=True)
class StepJob:
    """A job of this user that a slurm-gpu batch script made: found again by (workdir, step key)."""

    job_id: str
    state: str
    submitted: str  # Slurm's SubmitTime, e.g. 2026-12-04T01:02:03 (local time)
    workdir: str
    step: str
    array: bool = False  # a task of a job array (job_id <array id>_<task id>; step: the array's first)

    @property
    def array_id(self) -> str:
        """The id sbatch printed for the job (for an array task, the whole array's)."""
        return self.job_id.partition("_")[0]


# the comment goes last, because another tool's comment may hold the delimiter, and ours starts with
# STEP_COMMENT or ARRAY_COMMENT and holds no '|' (step keys are safe names)
STEP_JOBS_FORMAT = "%i|%T|%V|%Z|%k"


def parse_step_jobs(stdout: str) -> list[StepJob]:
    """The slurm-gpu jobs in a squeue_steps_argv() listing; every other line is skipped."""
    jobs = []
    for line in stdout.splitlines():
        parts = line.strip().split("|", 3)
        if len(parts) < 4 or not _JOB_ID.match(parts[0]) or not _STATE_WORD.match(parts[1]):
            continue
        for comment, array in ((STEP_COMMENT, False), (ARRAY_COMMENT, True)):
            workdir, marker, step = parts[3].rpartition("|" + comment)
            if marker and step and "|" not in step:
                jobs.append(StepJob(parts[0], parts[1], parts[2], workdir, step.strip(), array))
                break
    return jobs


# ---------------------------------------------------------------- the cluster's configuration

def parse_config_value(stdout: str, name: str) -> str | None:
    """One value of `scontrol show config` ("MaxArraySize           = 1001"); None if not listed."""
    for line in stdout.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() == name:
            return value.strip()
    return None


# ---------------------------------------------------------------- nodes

def parse_names(stdout: str) -> list[str]:
    return [line.strip() for line in stdout.splitlines() if line.strip() and not line.startswith("CLUSTER")]


# ---------------------------------------------------------------- partitions

SINFO_FORMAT = "%P|%G|%c|%m"  # sinfo --format; parse_sinfo and parse_sinfo_sizes read it
_GPU_GRES = re.compile(r"(?:^|,)gpu(?::[A-Za-z0-9_.-]+)?:(\d+)")


def _sinfo_rows(stdout: str) -> Iterable[tuple[str, bool, list[str]]]:
    """(partition, is the default, the other fields) of each partition line."""
    for line in stdout.splitlines():
        parts = line.strip().split("|")
        if len(parts) not in (2, 4) or not parts[0]:
            continue
        name = parts[0]
        yield name.rstrip("*"), name.endswith("*"), parts[1:]


def parse_sinfo(stdout: str) -> tuple[dict[str, int], str | None]:
    """(partition -> most GPUs on one of its nodes, default partition)."""
    gpus: dict[str, int] = {}
    default = None
    for name, is_default, (gres, *_) in _sinfo_rows(stdout):
        if is_default:
            default = name
        count = max((int(m) for m in _GPU_GRES.findall(re.sub(r"\([^)]*\)", "", gres))), default=0)
        gpus[name] = max(gpus.get(name, 0), count)
    return gpus, default


def parse_sinfo_sizes(stdout: str) -> dict[str, tuple[int | None, int | None]]:
    """partition -> (most CPUs, most memory in MB of one of its nodes); None where sinfo printed no
    plain number ('4+': nodes differ within the line, so the largest is not known)."""
    sizes: dict[str, tuple[int | None, int | None]] = {}
    for name, _, fields in _sinfo_rows(stdout):
        if len(fields) != 3:
            continue
        cpus, mem = (int(v) if v.isdigit() else None for v in fields[1:])
        old_cpus, old_mem = sizes.get(name, (0, 0))
        sizes[name] = (None if cpus is None or old_cpus is None else max(cpus, old_cpus),
                       None if mem is None or old_mem is None else max(mem, old_mem))
    return sizes


# ---------------------------------------------------------------- usage of finished jobs (efficiency.py)

SACCT_USAGE_FIELDS = ("JobIDRaw", "JobID", "State", "ElapsedRaw", "TotalCPU", "AllocCPUS", "ReqMem", "MaxRSS",
                      "AllocTRES", "NNodes")


@dataclass(frozen=True)
class UsageRecord:
    """One line of sacct_usage_argv(): a run of a job (step == "") or one of its job steps."""

    job_id: str                 # "123"
    step: str                   # "" for the allocation, else "batch", "extern", "0", ...
    state: str                  # verbatim, e.g. "CANCELLED by 0"
    elapsed_s: int
    total_cpu_s: float          # user + system CPU of the job's (or step's) processes
    alloc_cpus: int
    req_mem: str                # verbatim: '500M' (21.08+: the whole job's), '500Mn' / '100Mc' before
    max_rss_mb: float | None    # None: accounting gathered nothing (steps only)
    alloc_tres: str             # 'billing=4,cpu=4,gres/gpu=4,node=2'
    nodes: int


_USAGE_ID = re.compile(r"^([0-9]+(?:_[0-9]+)?)(?:\.([A-Za-z0-9_+-]+))?$")
_SIZE = re.compile(r"^([0-9]+(?:\.[0-9]*)?)([KMGTP]?)$")
_SIZE_MB = {"K": 1 / 1024, "": 1.0, "M": 1.0, "G": 1024.0, "T": 1024.0 ** 2, "P": 1024.0 ** 3}
_REQ_MEM = re.compile(r"^([0-9]+(?:\.[0-9]*)?)([KMGTP]?)([nc]?)$")
_DURATION = re.compile(r"^(?:([0-9]+)-)?(?:([0-9]+):)?([0-9]+):([0-9]+(?:\.[0-9]*)?)$")


def parse_size_mb(text: str, default_unit: str = "M") -> float | None:
    """'214.45M', '219600K', '2G' -> MB (1024-based, as Slurm counts); None for '' or a foreign value.
    A bare number is in `default_unit` (with --units=M: MB)."""
    match = _SIZE.match(text.strip())
    if not match:
        return None
    return float(match.group(1)) * _SIZE_MB[match.group(2) or default_unit]


def parse_duration_s(text: str) -> float | None:
    """sacct's TotalCPU / Elapsed: 'MM:SS.mmm', 'HH:MM:SS', 'D-HH:MM:SS' -> seconds; None otherwise."""
    match = _DURATION.match(text.strip())
    if not match:
        return None
    days, hours, minutes, seconds = match.groups()
    return int(days or 0) * 86400 + int(hours or 0) * 3600 + int(minutes) * 60 + float(seconds)


def req_mem_per_node_mb(req_mem: str, alloc_cpus: int, nodes: int) -> float | None:
    """The memory a job asked for on each node, in MB, from sacct's ReqMem: '500Mn' (per node) and
    '100Mc' (per CPU) before Slurm 21.08; from 21.08 on a bare '400M', the whole job's (per node or
    per CPU times the nodes or CPUs). None for '' or 0 (no request: the node's memory)."""
    match = _REQ_MEM.match(req_mem.strip())
    if not match:
        return None
    amount = float(match.group(1)) * _SIZE_MB[match.group(2) or "M"]
    if amount <= 0:
        return None
    per = match.group(3)
    if per == "n":
        return amount
    if per == "c":
        return amount * max(alloc_cpus, 1) / max(nodes, 1)
    return amount / max(nodes, 1)


_TRES_GPU = re.compile(r"^gres/gpu(:[^=]+)?=([0-9]+)$")


def tres_gpus(tres: str) -> int:
    """GPUs in a TRES list ('cpu=4,gres/gpu=4,node=2'); typed counts ('gres/gpu:a100=4') only when the
    untyped one is missing (newer releases list both)."""
    untyped, typed = None, 0
    for item in tres.split(","):
        match = _TRES_GPU.match(item.strip())
        if match and match.group(1) is None:
            untyped = int(match.group(2))
        elif match:
            typed += int(match.group(2))
    return untyped if untyped is not None else typed


def parse_sacct_usage(stdout: str) -> list[UsageRecord]:
    """The lines of sacct_usage_argv() in sacct's order (a job's steps follow its run's line); a
    truncated or foreign line is skipped."""
    records = []
    for line in stdout.splitlines():
        parts = line.strip().split("|")
        if len(parts) != len(SACCT_USAGE_FIELDS):
            continue
        # JobID names an array task as squeue does (<array id>_<task id>); JobIDRaw its own number
        _, job_id, state, elapsed, total_cpu, cpus, req_mem, max_rss, tres, nodes = parts
        match = _USAGE_ID.match(job_id)
        if not match or not _STATE_WORD.match(state) or not _NUMBER.match(elapsed or "x"):
            continue
        records.append(UsageRecord(
            job_id=match.group(1), step=match.group(2) or "", state=state, elapsed_s=int(elapsed),
            total_cpu_s=parse_duration_s(total_cpu) or 0.0,
            alloc_cpus=int(cpus) if _NUMBER.match(cpus) else 0, req_mem=req_mem,
            max_rss_mb=parse_size_mb(max_rss), alloc_tres=tres,
            nodes=int(nodes) if _NUMBER.match(nodes) else 0))
    return records
