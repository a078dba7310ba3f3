"""What a step's checkpoints were made from: its inputs (size, mtime), params, and code (the shell
command and the content of the scripts it names). Checkpoints of anything else must not be resumed."""

from __future__ import annotations

import os
import shlex
from pathlib import Path

from snakemake_interface_executor_plugins.jobs import JobExecutorInterface

from . import checkpoints

# files named in a shell command whose content is code: a change invalidates checkpoints
CODE_SUFFIXES = {".py", ".sh", ".R", ".r", ".jl", ".yaml", ".yml", ".json", ".toml"}


def parts(job: JobExecutorInterface) -> dict[str, object]:
    """The step's provenance, as recorded beside its checkpoints."""
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


def digest(job: JobExecutorInterface) -> str:
    """The provenance's digest ("" for a group job: its members' provenance is not recorded)."""
    return checkpoints.provenance_digest(parts(job)) if not job.is_group() else ""


def check(job: JobExecutorInterface, checkpoint_dir: Path) -> Path | None:
    """Move the step's checkpoints aside if it changed since they were written: where they went, or None."""
    found = parts(job)
    return checkpoints.ensure_provenance(checkpoint_dir, checkpoints.provenance_digest(found), parts=found)
