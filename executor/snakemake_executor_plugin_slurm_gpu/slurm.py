"""The one door to Slurm: argv builders, `run`, and parsers of what the commands print.

No shell anywhere: every call is an argv list with a timeout, and a failure carries the argv, the
exit code and stderr. Parsers are pure and read Slurm's delimited output (--parsable2 / --format),
never columns. No policy lives here: what a state means is status.py's business.
"""

from __future__ import annotations

import getpass
import re
import subprocess
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping, Sequence

# Messages that mean "try again later": the controller or the accounting daemon is busy or away.
_TRANSIENT = re.compile(
    r"Socket timed out|Unable to contact slurm controller|Connection refused|Connection timed out|"
    r"temporarily unavailable|Resource temporarily|try again|Zero Bytes were transmitted|"
    r"slurmdbd.*(down|not responding)|Slurm backup controller in standby|Transaction.*pending",
    re.IGNORECASE,
)


class SlurmError(RuntimeError):
    """A Slurm command failed. `transient` says whether retrying later may help."""

    def __init__(self, argv: Sequence[str], returncode: int | None, stdout: str, stderr: str,
                 transient: bool) -> None:
        self.argv, self.returncode, self.stdout, self.stderr = list(argv), returncode, stdout, stderr
        self.transient = transient
        what = "timed out" if returncode is None else f"exited {returncode}"
        super().__init__(f"{' '.join(self.argv)} {what}: {stderr.strip() or stdout.strip() or '(no output)'}")


# (argv, timeout_s) -> Completed; called with a third argument, stdin, only when there is input
Runner = Callable[..., "Completed"]


@dataclass(frozen=True)
class Completed:
    returncode: int
    stdout: str
    stderr: str


def run_subprocess(argv: Sequence[str], timeout_s: float, stdin: str | None = None,
                   env: Mapping[str, str] | None = None) -> Completed:
    """Run argv (never through a shell) and return what it printed. Bytes that are not UTF-8 (a
    node name or reason in another encoding) are replaced, never an exception. `env`: the whole
    environment (submit_env.py), else this process's."""
    proc = subprocess.run(list(argv), capture_output=True, timeout=timeout_s, check=False,
                          input=stdin.encode() if stdin is not None else None,
                          stdin=subprocess.DEVNULL if stdin is None else None,
                          env=dict(env) if env is not None else None)
    return Completed(proc.returncode, _text(proc.stdout), _text(proc.stderr))


def _text(value: str | bytes | None) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return value or ""


def run(argv: Sequence[str], timeout_s: float = 60.0, runner: Runner = run_subprocess,
        stdin: str | None = None) -> str:
    """Run a Slurm command (with `stdin` as its standard input, if given), returning stdout or
    raising SlurmError."""
    try:
        done = runner(argv, timeout_s) if stdin is None else runner(argv, timeout_s, stdin)
    except subprocess.TimeoutExpired as e:
        # TimeoutExpired carries bytes even when the call asked for text
        raise SlurmError(argv, None, _text(e.stdout), _text(e.stderr), transient=True) from None
    except FileNotFoundError as e:
        raise SlurmError(argv, 127, "", f"{argv[0]} not found on PATH ({e})", transient=False) from None
    if done.returncode != 0:
        raise SlurmError(argv, done.returncode, done.stdout, done.stderr,
                         transient=bool(_TRANSIENT.search(done.stderr + done.stdout)))
    return done.stdout


# ---------------------------------------------------------------- sbatch

def sbatch_argv() -> list[str]:
    # the script goes to sbatch's standard input: a file could be swapped between being written
    # and sbatch reading it, the bytes in a pipe cannot
    return ["sbatch", "--parsable"]


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


_SQUEUE_FIELDS = "%i|%T|%r|%N"


def _on(clusters: str | None) -> list[str]:
    """--clusters for every call once a step was sent to another cluster (multi-cluster sites):
    'all', since job ids are looked up without knowing whose they are."""
    return [f"--clusters={clusters}"] if clusters else []


def squeue_argv(job_ids: Iterable[str], clusters: str | None = None) -> list[str]:
    # --states=all: finished jobs stay visible until MinJobAge, which spares most sacct calls
    return ["squeue", "--noheader", "--states=all", *_on(clusters), f"--jobs={','.join(job_ids)}",
            f"--format={_SQUEUE_FIELDS}"]


def squeue_mine_argv(clusters: str | None = None) -> list[str]:
    # every job of this user: one listing whatever the number of ids (an id list of 10,000s of jobs
    # would pass the kernel's limit on one argument; squeue loads all jobs and filters anyway)
    return ["squeue", "--noheader", "--states=all", "--me", *_on(clusters), f"--format={_SQUEUE_FIELDS}"]


def is_no_such_job(error: SlurmError) -> bool:
    """squeue fails outright when none of the asked ids is still known to the controller."""
    return "Invalid job id specified" in error.stderr


# a state as squeue/sacct print it: 'RUNNING', 'CANCELLED by 1000', 'COMPLETED+'
_STATE_WORD = re.compile(r"^[A-Z_]+\+?( |$)")
_JOB_ID = re.compile(r"^[0-9]+$")  # ASCII only: str.isdigit() and \d also accept '²' and '٣'


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


_SACCT_FIELDS = "JobIDRaw,State,Reason,ExitCode,NodeList"


def sacct_argv(job_ids: Iterable[str], clusters: str | None = None) -> list[str]:
    # -X: the allocation's line only; without --duplicates sacct gives the newest run of a
    # requeued job, which is the one that matters
    return ["sacct", "--noheader", "--parsable2", "-X", *_on(clusters), f"--jobs={','.join(job_ids)}",
            f"--format={_SACCT_FIELDS}"]


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


@dataclass(frozen=True)
class StepJob:
    """A job of this user that a slurm-gpu batch script made: found again by (workdir, step key)."""

    job_id: str
    state: str
    submitted: str  # Slurm's SubmitTime, e.g. 2026-12-04T01:02:03 (local time)
    workdir: str
    step: str


def squeue_steps_argv(clusters: str | None = None) -> list[str]:
    # one listing of all the user's jobs; the comment goes last, because another tool's comment may
    # hold the delimiter, and ours starts with STEP_COMMENT and holds no '|' (step keys are safe names)
    return ["squeue", "--noheader", "--states=all", "--me", *_on(clusters), "--format=%i|%T|%V|%Z|%k"]


def parse_step_jobs(stdout: str) -> list[StepJob]:
    """The slurm-gpu jobs in a squeue_steps_argv() listing; every other line is skipped."""
    jobs = []
    for line in stdout.splitlines():
        parts = line.strip().split("|", 3)
        if len(parts) < 4 or not _JOB_ID.match(parts[0]) or not _STATE_WORD.match(parts[1]):
            continue
        workdir, marker, step = parts[3].rpartition("|" + STEP_COMMENT)
        if not marker or not step or "|" in step:
            continue
        jobs.append(StepJob(parts[0], parts[1], parts[2], workdir, step.strip()))
    return jobs


def scancel_argv(job_ids: Iterable[str], clusters: str | None = None) -> list[str]:
    return ["scancel", *_on(clusters), *job_ids]


# ---------------------------------------------------------------- nodes

def hostnames_argv(nodelist: str) -> list[str]:
    """A Slurm node list ('n[1-3],gpu7') expanded, one name a line."""
    return ["scontrol", "show", "hostnames", nodelist]


def partition_nodes_argv(partition: str | None, clusters: str | None = None) -> list[str]:
    """Every node of a partition (of all partitions if None), one a line; duplicates possible."""
    return ["sinfo", "--noheader", "--Node", *_on(clusters), *([f"--partition={partition}"] if partition else []),
            "--format=%N"]


def user_accounts_argv() -> list[str]:
    """The accounts the user may submit with."""
    return ["sacctmgr", "--noheader", "--parsable2", "show", "associations", "where", f"user={getpass.getuser()}",
            "format=account"]


def is_account_error(error: SlurmError) -> bool:
    """sbatch refused the job for its account (none given where one is required, or a wrong one)."""
    return bool(re.search(r"account", error.stderr, re.IGNORECASE))


def parse_names(stdout: str) -> list[str]:
    return [line.strip() for line in stdout.splitlines() if line.strip() and not line.startswith("CLUSTER")]


# ---------------------------------------------------------------- partitions

def sinfo_argv(clusters: str | None = None) -> list[str]:
    # with --clusters, sinfo puts a "CLUSTER: name" line before each cluster's rows (parse_sinfo skips it)
    return ["sinfo", "--noheader", *_on(clusters), "--format=%P|%G|%c|%m"]


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
SACCT_USAGE_CHUNK = 1000  # job ids per sacct call: one argument stays far below the kernel's limit


def sacct_usage_argv(job_ids: Iterable[str], clusters: str | None = None) -> list[str]:
    # --duplicates: every run of a requeued job (same id), each followed by its job steps;
    # --units=M: sizes in MB (MaxRSS '214.45M'; ReqMem keeps a 'c'/'n' suffix before 21.08)
    return ["sacct", "--noheader", "--parsable2", "--duplicates", "--units=M", *_on(clusters),
            f"--jobs={','.join(job_ids)}", f"--format={','.join(SACCT_USAGE_FIELDS)}"]


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


_USAGE_ID = re.compile(r"^([0-9]+)(?:\.([A-Za-z0-9_+-]+))?$")
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
        raw_id, _, state, elapsed, total_cpu, cpus, req_mem, max_rss, tres, nodes = parts
        match = _USAGE_ID.match(raw_id)
        if not match or not _STATE_WORD.match(state) or not _JOB_ID.match(elapsed or "x"):
            continue
        records.append(UsageRecord(
            job_id=match.group(1), step=match.group(2) or "", state=state, elapsed_s=int(elapsed),
            total_cpu_s=parse_duration_s(total_cpu) or 0.0,
            alloc_cpus=int(cpus) if _JOB_ID.match(cpus) else 0, req_mem=req_mem,
            max_rss_mb=parse_size_mb(max_rss), alloc_tres=tres,
            nodes=int(nodes) if _JOB_ID.match(nodes) else 0))
    return records
