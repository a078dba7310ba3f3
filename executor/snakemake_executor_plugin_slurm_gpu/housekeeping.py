"""What slurm-gpu removes of its own files, so that a workflow of 50,000 steps does not leave three
files per step behind for ever: a successful step's Slurm log and batch scripts (its event log stays,
for `slurm-gpu status`), and every log, script and event log older than delete-logs-older-than days.
Checkpoints are not touched here (checkpoints/ owns them). Only files under the executor's own
directories are removed, never through a symbolic link."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Iterable

from .paths import StepPaths


def remove_step_files(paths: StepPaths) -> None:
    """A successful step's Slurm logs, batch scripts and heartbeats (every attempt's), and their
    directories."""
    for directory in (paths.log_dir, paths.script_dir, paths.heartbeat_dir):
        if directory.is_dir() and not directory.is_symlink():
            shutil.rmtree(directory, ignore_errors=True)
        _prune_empty(directory.parent, stop=directory.parents[1])


def remove_older_than(bases: Iterable[Path], age_s: float, now: float | None = None) -> int:
    """Remove files under `bases` last modified more than `age_s` ago, then the directories that
    left empty; the number of files removed."""
    limit = (time.time() if now is None else now) - age_s
    removed = 0
    for base in bases:
        if not base.is_dir() or base.is_symlink():
            continue
        for dirpath, dirnames, filenames in os.walk(base, topdown=False):
            for name in filenames:
                path = Path(dirpath) / name
                try:
                    if path.lstat().st_mtime < limit:
                        path.unlink()
                        removed += 1
                except OSError:
                    continue
            if Path(dirpath) != base:
                try:
                    os.rmdir(dirpath)  # only if empty
                except OSError:
                    pass
    return removed


def _prune_empty(directory: Path, stop: Path) -> None:
    """Remove `directory` if empty, and its parents up to (not including) `stop`."""
    while directory != stop and stop in directory.parents:
        try:
            directory.rmdir()
        except OSError:
            return
        directory = directory.parent
