"""The environment Slurm commands run with: what the batch script says is what the job gets.

Two things in a user's environment would otherwise change a step behind its script's back:
- SBATCH_* input variables take precedence over #SBATCH lines (sbatch(1): command line > environment
  > script). A site module that exports SBATCH_NO_REQUEUE=1 turns a training step's --requeue off.
  Those whose option the script sets itself are left out of sbatch's environment; the others still
  apply where the script is silent (a site's default account or reservation).
- Snakemake started inside a Slurm job (`sbatch --wrap "snakemake ..."`): with --export=ALL that job's
  SLURM_* would reach every step's job, where srun reads them as its own (SLURM_MEM_PER_CPU of the
  outer job next to the step's SLURM_MEM_PER_NODE is fatal to srun). They are left out, as the
  official plugin does. Allocation mode (allocation.py) uses the allocation on purpose and keeps them.
Pure: no I/O.
"""

from __future__ import annotations

import re
from typing import Callable, Mapping, Sequence

# sbatch's input variables (sbatch(1), 22.05 to 26.05) -> the options they stand for
SBATCH_VARIABLES: dict[str, tuple[str, ...]] = {
    "SBATCH_ACCOUNT": ("--account",),
    "SBATCH_CLUSTERS": ("--clusters",),
    "SLURM_CLUSTERS": ("--clusters",),
    "SBATCH_CONSTRAINT": ("--constraint",),
    "SBATCH_CPUS_PER_GPU": ("--cpus-per-task", "--cpus-per-gpu"),
    "SBATCH_ERROR": ("--output", "--error"),
    "SBATCH_EXPORT": ("--export",),
    "SBATCH_GPUS": ("--gpus-per-node", "--gpus"),
    "SBATCH_GPUS_PER_NODE": ("--gpus-per-node",),
    "SBATCH_GPUS_PER_SOCKET": ("--gpus-per-node",),
    "SBATCH_GPUS_PER_TASK": ("--gpus-per-node", "--gpus-per-task"),
    "SBATCH_GRES": ("--gres",),
    "SBATCH_JOB_NAME": ("--job-name",),
    "SBATCH_MEM_PER_CPU": ("--mem", "--mem-per-cpu"),
    "SBATCH_MEM_PER_GPU": ("--mem", "--mem-per-cpu"),
    "SBATCH_MEM_PER_NODE": ("--mem", "--mem-per-cpu"),
    "SBATCH_NO_REQUEUE": ("--requeue", "--no-requeue"),
    "SBATCH_REQUEUE": ("--requeue", "--no-requeue"),
    "SBATCH_OPEN_MODE": ("--open-mode",),
    "SBATCH_OUTPUT": ("--output",),
    "SBATCH_PARTITION": ("--partition",),
    "SBATCH_QOS": ("--qos",),
    "SBATCH_RESERVATION": ("--reservation",),
    "SBATCH_SIGNAL": ("--signal",),
    "SBATCH_TIMELIMIT": ("--time",),
    "SBATCH_ARRAY_INX": ("--array",),
}

# SLURM_* that describe the user's set-up, not a job: kept inside a job too
_KEEP_SLURM = re.compile(r"^SLURM_(CONF|CLUSTERS|TIME_FORMAT|DEBUG_FLAGS|GPU_.*)$")
_DIRECTIVE = re.compile(r"^#SBATCH\s+(--[a-z-]+)")


def script_options(script: str) -> set[str]:
    """The long options a batch script's #SBATCH lines set (ours always use the long form)."""
    options = set()
    for line in script.splitlines():
        if line.startswith("#SBATCH"):
            match = _DIRECTIVE.match(line)
            if match:
                options.add(match.group(1))
        elif line.strip() and not line.startswith("#"):
            break  # sbatch stops reading directives at the first command
    return options


def overriding(environ: Mapping[str, str], script: str) -> list[str]:
    """SBATCH_* variables set in `environ` that would override an #SBATCH line of `script`."""
    options = script_options(script)
    return sorted(name for name, flags in SBATCH_VARIABLES.items()
                  if name in environ and options.intersection(flags))


def outer_job(environ: Mapping[str, str]) -> str | None:
    """The id of the Slurm job this process runs in, if any."""
    return environ.get("SLURM_JOB_ID") or None


def outer_job_variables(environ: Mapping[str, str]) -> list[str]:
    """The SLURM_* variables of the job this process runs in, which must not reach the steps' jobs."""
    if outer_job(environ) is None:
        return []
    return sorted(name for name in environ if name.startswith("SLURM_") and not _KEEP_SLURM.match(name))


def without(environ: Mapping[str, str], names: list[str] | set[str]) -> dict[str, str]:
    drop = set(names)
    return {name: value for name, value in environ.items() if name not in drop}


class SlurmEnvironment:
    """The environment every Slurm command of a run gets: this process's, less an outer job's SLURM_*
    (unless the steps run in that allocation on purpose), and for sbatch less the SBATCH_* that would
    override its script. `say` is told each leaving-out once."""

    def __init__(self, environ: Mapping[str, str], keep_outer_job: bool, say: Callable[[str], None]) -> None:
        self._say, self._said = say, set()
        leaked = [] if keep_outer_job else outer_job_variables(environ)
        if leaked:
            say(f"slurm-gpu: Snakemake runs inside Slurm job {outer_job(environ)}; its {len(leaked)} SLURM_* "
                "variables are not passed on to the steps' jobs (they would take that job's memory, task and CPU "
                "settings for their own)")
        self.base = without(environ, leaked)

    def of(self, argv: Sequence[str], stdin: str | None = None) -> dict[str, str]:
        if stdin is None or not argv or argv[0] != "sbatch":
            return self.base
        names = overriding(self.base, stdin)
        if names and tuple(names) not in self._said:
            self._said.add(tuple(names))
            self._say(f"slurm-gpu: {', '.join(names)} set in the environment would override the batch script's own "
                      "#SBATCH lines (sbatch takes variables over the script); they are not passed to sbatch. "
                      "HINT: use rule resources or slurm_extra instead, or unset them")
        return without(self.base, names)
