"""Direct steps: a plain shell rule's command runs in the batch script itself, without a job-side
Snakemake.

A job-side `python -m snakemake` re-parses the Snakefile and rebuilds the DAG to run one command:
about a second of CPU per job before the command starts, which for short jobs is most of their cost
(benchmarks/controller_load.py). For a rule that is nothing but a shell command, everything that
process does is done here instead: the main Snakemake prepares the outputs before submission
(Job.prepare(): stale outputs removed, directories made, inputs waited for), the batch script exports
the thread variables and runs the command formatted as Snakemake formats it with Snakemake's shell,
prefix and suffix, and the main Snakemake checks the outputs after the job, as it does for every
remote job. Rules that need more of the job-side Snakemake (conda, containers, scripts, run blocks,
shadow, benchmark, storage, groups) keep it, and so do resumable (GPU) steps, whose batch script
Slurm itself reruns after a requeue. Pure: reads the job, no I/O."""

from __future__ import annotations

import re
import shlex
import string
import tempfile
from dataclasses import dataclass
from typing import Any, Iterable

# one argument of execve may be at most 32 pages (MAX_ARG_STRLEN); Snakemake writes longer
# commands to a script file, which the job-side Snakemake is left to do
MAX_COMMAND_BYTES = 128 * 1024 - 1
THREAD_VARIABLES = ("OMP_NUM_THREADS", "GOTO_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                    "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")
TMPDIR_VARIABLES = ("TMPDIR", "TMP", "TEMPDIR", "TEMP")


@dataclass(frozen=True)
class DirectShell:
    """A plain shell rule's command, as the job-side Snakemake's shell() would run it."""

    executable: str          # the shell (Snakemake's shell.executable(), bash by default)
    command: str             # prefix + formatted command + suffix
    threads: int
    tmpdir: str | None       # the rule's own tmpdir resource; None leaves the node's TMPDIR alone
    wait_for: tuple[str, ...]
    latency_wait_s: int


def _flagged(files: Iterable[Any], *flags: str) -> bool:
    return any(getattr(f, "flags", {}).get(flag) for f in files for flag in flags)


# what the job-side Snakemake's shell() formats a command with besides the Snakefile's own globals (the
# arguments of the rule's run function); Job.shellcmd, formatted here, adds `name` and `rulename`,
# which there are the Snakefile's globals of those names
_RUN_NAMES = {"input", "output", "params", "wildcards", "threads", "resources", "log", "rule", "jobid",
              "bench_iteration", "bench_record", "basedir", "conda_env", "container_img", "env_modules", "shadow_dir"}
_JOB_ONLY_NAMES = {"name", "rulename"}


def _field_roots(template: str) -> set[str]:
    """The names a format string looks up: {input.a[0]} -> input."""
    try:
        fields = [field for _, field, _, _ in string.Formatter().parse(template) if field]
    except ValueError:
        return {"?"}
    return {re.split(r"[.\[]", field, maxsplit=1)[0] for field in fields}


def why_not_direct(job: Any) -> str | None:
    """None when the step can run its shell command directly, else why it needs a job-side Snakemake."""
    if job.is_group():
        return "a group job"
    rule = job.rule
    if not getattr(rule, "shellcmd", None):
        return "not a shell rule (run, script, notebook, wrapper or cwl)"
    module_globals = getattr(rule, "module_globals", None)
    if module_globals is not None and module_globals is not rule.workflow.globals:
        return "a rule of a module (its command is formatted with the module's names)"
    if _field_roots(rule.shellcmd) & (_JOB_ONLY_NAMES - _RUN_NAMES):
        return "its command names {name} or {rulename}, which the job side formats from the Snakefile's globals"
    for attr in ("script", "notebook", "wrapper", "cwl", "template_engine"):
        if getattr(rule, attr, None):
            return f"a {attr} rule"
    if getattr(rule, "norun", False) or getattr(rule, "is_handover", False):
        return "a norun or handover rule"
    if job.conda_env_spec or job.container_img_url or job.env_modules:
        return "it uses conda, a container or environment modules"
    if job.is_shadow:
        return "it runs in a shadow directory"
    if job.benchmark:
        return "it is benchmarked"
    files = [*job.input, *job.output, *job.log]
    if any(getattr(f, "is_storage", False) for f in files):
        return "it reads or writes storage"
    if _flagged(files, "pipe", "service", "update"):
        return "it has pipe, service or update files"
    if job.resources.get("shell_exec") is not None:
        return "it sets its own shell (shell_exec)"
    return None


def direct_shell(job: Any, shell: Any, latency_wait_s: int, system_tmpdir: str | None = None) -> DirectShell | None:
    """The command of a step that can run directly (see why_not_direct), or None. `shell` is
    Snakemake's shell class, holding the executable, prefix and suffix the Snakefile chose."""
    if why_not_direct(job) is not None:
        return None
    try:
        command = job.shellcmd  # Snakemake's own formatting
    except Exception:  # noqa: BLE001 - RuleException and whatever a params function raises
        return None  # the job-side Snakemake formats it again and reports the error in the job
    executable = shell.get_executable() or "/bin/sh"
    full = " ".join((shell._get_process_prefix(executable), command, shell._process_suffix)).strip()
    if len(full.encode()) > MAX_COMMAND_BYTES:
        return None
    tmpdir = job.resources.get("tmpdir")
    # Snakemake's default tmpdir is the submitting host's temporary directory; on the node the
    # job-side Snakemake would have taken the node's own, so only a rule's explicit choice is passed
    if tmpdir is not None and str(tmpdir) == (system_tmpdir or tempfile.gettempdir()):
        tmpdir = None
    return DirectShell(executable=str(executable), command=full, threads=max(int(job.threads or 1), 1),
                       tmpdir=None if tmpdir is None else str(tmpdir),
                       wait_for=tuple(str(f) for f in job.get_wait_for_files()),
                       latency_wait_s=max(int(latency_wait_s), 0))


def render(direct: DirectShell) -> str:
    """The batch-script lines that run the command; the last line's exit status is the step's."""
    q = shlex.quote
    lines = [
        "# a plain shell rule: its command runs here as Snakemake's shell() runs it (the main Snakemake",
        "# prepared the outputs before submission and checks them when the job has ended)",
        "export " + " ".join(f"{name}={direct.threads}" for name in THREAD_VARIABLES),
    ]
    if direct.tmpdir is not None:
        lines.append("export " + " ".join(f"{name}={q(direct.tmpdir)}" for name in TMPDIR_VARIABLES))
    run = f"{q(direct.executable)} -c {q(direct.command)}"
    if not direct.wait_for:
        return "\n".join(lines + [run])
    lines += [
        "# a file another node wrote may show up here late (Snakemake's --latency-wait)",
        "slurm_gpu_inputs_ready() {",
        "  local f waited=0",
        '  for f in "$@"; do',
        '    while [ ! -e "$f" ]; do',
        f'      if [ "$waited" -ge {direct.latency_wait_s} ]; then',
        f'        echo "[slurm-gpu] input $f not found after {direct.latency_wait_s} s (--latency-wait)" >&2',
        "        return 1",
        "      fi",
        "      sleep 1",
        "      waited=$((waited + 1))",
        "    done",
        "  done",
        "}",
        f"slurm_gpu_inputs_ready {' '.join(q(f) for f in direct.wait_for)} && {run}",
    ]
    return "\n".join(lines)
