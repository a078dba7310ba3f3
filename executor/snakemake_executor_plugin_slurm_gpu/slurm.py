"""The one door to Slurm: `run` and the argv of every command it runs. What the commands print is
parsed by the pure functions of slurm_output.py, importable from here too.

No shell anywhere: every call is an argv list with a timeout, and a failure carries the argv, the
exit code and stderr. No policy lives here: what a state means is status.py's business.
"""

from __future__ import annotations

import getpass
import re
import subprocess
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping, Sequence

# the parsers and records, importable from here as they always were
from .slurm_output import (SACCT_FIELDS, SACCT_USAGE_FIELDS, SINFO_FORMAT, SQUEUE_FORMAT,  # noqa: F401
                           ARRAY_COMMENT, STEP_COMMENT, STEP_JOBS_FORMAT, JobRecord, StepJob, UsageRecord,
                           id_order, parse_config_value, parse_duration_s,
                           parse_names, parse_sacct, parse_sacct_usage, parse_sbatch, parse_sinfo,
                           parse_sinfo_sizes, parse_size_mb, parse_squeue, parse_step_jobs, req_mem_per_node_mb,
                           tres_gpus)

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


def _on(clusters: str | None) -> list[str]:
    """--clusters for every call once a step was sent to another cluster (multi-cluster sites):
    'all', since job ids are looked up without knowing whose they are."""
    return [f"--clusters={clusters}"] if clusters else []


# ---------------------------------------------------------------- sbatch

def sbatch_argv() -> list[str]:
    # the script goes to sbatch's standard input: a file could be swapped between being written
    # and sbatch reading it, the bytes in a pipe cannot
    return ["sbatch", "--parsable"]


# ---------------------------------------------------------------- job states

def squeue_argv(job_ids: Iterable[str], clusters: str | None = None) -> list[str]:
    # --states=all: finished jobs stay visible until MinJobAge, which spares most sacct calls
    # --array: one line per array task, pending ones too (else '123_[4-999]' stands for many)
    return ["squeue", "--noheader", "--states=all", "--array", *_on(clusters), f"--jobs={','.join(job_ids)}",
            f"--format={SQUEUE_FORMAT}"]


def squeue_mine_argv(clusters: str | None = None) -> list[str]:
    # every job of this user: one listing whatever the number of ids (an id list of 10,000s of jobs
    # would pass the kernel's limit on one argument; squeue loads all jobs and filters anyway)
    return ["squeue", "--noheader", "--states=all", "--array", "--me", *_on(clusters), f"--format={SQUEUE_FORMAT}"]


def is_no_such_job(error: SlurmError) -> bool:
    """squeue fails outright when none of the asked ids is still known to the controller."""
    return "Invalid job id specified" in error.stderr


def sacct_argv(job_ids: Iterable[str], clusters: str | None = None) -> list[str]:
    # -X: the allocation's line only; without --duplicates sacct gives the newest run of a
    # requeued job, which is the one that matters
    return ["sacct", "--noheader", "--parsable2", "-X", *_on(clusters), f"--jobs={','.join(job_ids)}",
            f"--format={SACCT_FIELDS}"]


# ---------------------------------------------------------------- a step's jobs, found by its key

def squeue_steps_argv(clusters: str | None = None) -> list[str]:
    # one listing of all the user's jobs (see STEP_JOBS_FORMAT for the order of the fields)
    return ["squeue", "--noheader", "--states=all", "--array", "--me", *_on(clusters),
            f"--format={STEP_JOBS_FORMAT}"]


def config_argv() -> list[str]:
    return ["scontrol", "show", "config"]


def scancel_argv(job_ids: Iterable[str], clusters: str | None = None) -> list[str]:
    return ["scancel", *_on(clusters), *job_ids]


def node_range_argv(job_id: str, min_nodes: int, max_nodes: int, tasks_per_node: int,
                    clusters: str | None = None) -> list[str]:
    """A pending job's node range set again (an elastic step's requeued job keeps its last run's node
    and task count); the task count goes with it, or it alone would hold the job to the old node count.
    Once started, Slurm counts the tasks again from the nodes it got (--ntasks-per-node)."""
    return ["scontrol", *_on(clusters), "update", f"JobId={job_id}", f"NumNodes={min_nodes}-{max_nodes}",
            f"NumTasks={min_nodes * tasks_per_node}"]


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


# ---------------------------------------------------------------- partitions

def sinfo_argv(clusters: str | None = None) -> list[str]:
    # with --clusters, sinfo puts a "CLUSTER: name" line before each cluster's rows (parse_sinfo skips it)
    return ["sinfo", "--noheader", *_on(clusters), f"--format={SINFO_FORMAT}"]


# ---------------------------------------------------------------- usage of finished jobs (efficiency.py)

SACCT_USAGE_CHUNK = 1000  # job ids per sacct call: one argument stays far below the kernel's limit


def sacct_usage_argv(job_ids: Iterable[str], clusters: str | None = None) -> list[str]:
    # --duplicates: every run of a requeued job (same id), each followed by its job steps;
    # --units=M: sizes in MB (MaxRSS '214.45M'; ReqMem keeps a 'c'/'n' suffix before 21.08)
    return ["sacct", "--noheader", "--parsable2", "--duplicates", "--units=M", *_on(clusters),
            f"--jobs={','.join(job_ids)}", f"--format={','.join(SACCT_USAGE_FIELDS)}"]
