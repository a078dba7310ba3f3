"""What the benchmark scripts share: running a Slurm command, reading RPC counters, counting the Slurm
commands a workflow runs (a PATH shim), and printing a plain table."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Iterable, Sequence


def slurm(*argv: str, timeout_s: float = 300) -> str:
    """stdout of a Slurm command; raises on failure."""
    return subprocess.run(list(argv), capture_output=True, text=True, check=True, timeout=timeout_s).stdout


_DAEMON = Path(__file__).resolve().parents[1] / "cluster" / "daemon.sh"


def release_root() -> Path:
    """Where the running Slurm release's daemons see "/" (cluster/up.sh SLURM=...; "/" for 22.05)."""
    return Path(subprocess.run(["bash", str(_DAEMON), "root"], capture_output=True, text=True, check=True).stdout.strip())


def daemon_pid(name: str) -> int:
    """The pid of slurmctld, slurmdbd or slurmd-nI, whichever release runs."""
    return int(subprocess.run(["bash", str(_DAEMON), "pid", name], capture_output=True, text=True, check=True).stdout)


def slurm_release() -> str:
    """The running release as its own sinfo names it, e.g. "slurm-wlm 24.11.5"."""
    return slurm("sinfo", "-V").strip()


def rpc_counts(text: str) -> dict[str, int]:
    """RPC counts by message type from `sdiag` or `sacctmgr show stats`."""
    section = text.split("Remote Procedure Call statistics by message type", 1)[-1]
    section = section.split("Remote Procedure Call statistics by user", 1)[0]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^\s*(\w+)\s+\(\s*\d+\)\s+count:(\d+)", section, re.M)}


def shim_dir(bin_dir: Path, calls: Path, names: Iterable[str]) -> Path:
    """Wrappers in `bin_dir` that append "name time [job]" to `calls` and exec the real command; put it
    first on PATH (jobs inherit it, so their calls count too; theirs end in "job")."""
    bin_dir.mkdir(parents=True)
    for name in names:
        real = shutil.which(name)
        if real is None:
            continue
        (bin_dir / name).write_text(f'#!/bin/sh\necho "{name} $(date +%s.%N)${{SLURM_JOB_ID:+ job}}" >> "{calls}"\nexec {real} "$@"\n')
        (bin_dir / name).chmod(0o755)
    return bin_dir


def table(rows: Sequence[Sequence[object]]) -> str:
    """Rows (the first one the heading) as left-aligned columns."""
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(str(v).ljust(w) for v, w in zip(row, widths)) for row in rows)
