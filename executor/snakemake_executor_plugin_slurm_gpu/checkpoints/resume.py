"""Choosing the checkpoint to resume from: the newest one in a directory that verifies."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from .. import private
from .names import CHECKPOINT_SUFFIX, TEMP_PREFIX
from .verify import CheckpointInfo, _verify

# the package's name, as when this was one module: logging configured for it keeps working
logger = logging.getLogger(__package__)


def _natural_key(name: str) -> tuple[object, ...]:
    # 'hpc_ckpt_10' after 'hpc_ckpt_9'
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name))


def _candidates(directory: Path) -> list[Path]:
    """Checkpoint files in `directory`, newest first.

    Rule: order by modification time (ns), ties broken by the name in natural order, so
    'hpc_ckpt_10.ckpt' beats 'hpc_ckpt_9.ckpt' on filesystems with coarse timestamps. mtime is the
    one order every file has (Lightning's hpc_ckpt_N, last.ckpt, ours with a manifest); a global
    step exists only for files with a manifest, and mixing the two orders is ill-defined. An atomic
    rename keeps the temp file's mtime, i.e. the moment the checkpoint was finished.

    A directory (sharded checkpoint) is a candidate too; its mtime is when its last entry was made,
    i.e. when its writer finished it (DCP's .metadata, Lightning's meta.pt, DeepSpeed's 'latest').

    Skipped: '.tmp-*' entries (writes in progress or killed), symbolic links (a link such as
    Lightning's 'last.ckpt' names a file that is itself a candidate; keep-last must never keep a
    link and delete what it points at), and anything neither a file nor a directory.
    """
    if not directory.is_dir():
        return []
    found: list[tuple[int, tuple[object, ...], Path]] = []
    for entry in os.scandir(directory):
        if not entry.name.endswith(CHECKPOINT_SUFFIX) or entry.name.startswith(TEMP_PREFIX):
            continue
        if entry.is_symlink() or not (entry.is_file(follow_symlinks=False) or entry.is_dir(follow_symlinks=False)):
            continue
        try:
            mtime_ns = entry.stat(follow_symlinks=False).st_mtime_ns
        except FileNotFoundError:  # removed while scanning
            continue
        found.append((mtime_ns, _natural_key(entry.name), Path(entry.path)))
    found.sort(key=lambda item: (item[0], item[1]), reverse=True)
    return [path for _, _, path in found]


def newest_valid_checkpoint(directory: str | Path) -> CheckpointInfo | None:
    """The newest checkpoint in `directory` that verifies (order: see _candidates), or None.
    Each newer file skipped as invalid is logged with the reason."""
    for path in _candidates(Path(directory)):
        result = _verify(path)
        if isinstance(result, CheckpointInfo):
            return result
        logger.warning("skipping checkpoint %s: %s; falling back to an older one", path, result)
    return None


def find_resumable(directory: str | Path) -> Path | None:
    """The checkpoint to resume from: the newest valid one in `directory`, or None to start afresh.

    Raises private.UntrustedPath when the directory or a checkpoint in it could have been written by
    someone else (see private.check_checkpoint_dir): loading a checkpoint runs the code it carries,
    and starting afresh instead would write over the evidence."""
    try:
        private.check_checkpoint_dir(directory)
    except private.UntrustedPath as e:
        raise private.UntrustedPath(e.path, f"{e.problem}; slurm-gpu refuses to resume from it (loading a "
                                            "checkpoint runs the code inside it)", e.fix) from None
    info = newest_valid_checkpoint(directory)
    return info.path if info is not None else None
