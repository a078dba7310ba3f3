"""What is left of a step's checkpoint directory once the step succeeded (the cleanup policy)."""

from __future__ import annotations

import enum
import logging
import os
import shutil
from pathlib import Path

from .names import CHECKPOINT_SUFFIX, MANIFEST_SUFFIX, PROVENANCE_FILE, TEMP_PREFIX, manifest_path
from .publish import _rmtree
from .resume import newest_valid_checkpoint

# the package's name, as when this was one module: logging configured for it keeps working
logger = logging.getLogger(__package__)


class CleanupPolicy(enum.StrEnum):
    KEEP = "keep"            # leave every checkpoint
    KEEP_LAST = "keep-last"  # the newest valid checkpoint and its manifest only
    DELETE = "delete"        # the whole directory


def _parse_policy(policy: CleanupPolicy | str) -> CleanupPolicy:
    try:
        return CleanupPolicy(policy)
    except ValueError:
        valid = ", ".join(repr(p.value) for p in CleanupPolicy)
        raise ValueError(f"checkpoint cleanup policy {policy!r} is unknown. HINT: use one of {valid}") from None


def _is_checkpoint_artifact(name: str) -> bool:
    return (name.endswith(CHECKPOINT_SUFFIX) or name.endswith(CHECKPOINT_SUFFIX + MANIFEST_SUFFIX)
            or name.startswith(TEMP_PREFIX))


def cleanup_after_success(directory: str | Path, policy: CleanupPolicy | str) -> list[Path]:
    """Applies `policy` to a finished step's checkpoint directory; returns the paths removed.

    keep-last removes checkpoints ('*.ckpt': files, links, and directories of sharded checkpoints),
    manifests ('*.ckpt.json', orphans included) and leftover '.tmp-*' files and directories, except
    the newest valid checkpoint and its manifest. It never removes provenance.json, other
    subdirectories or other files, and never follows a link. When no checkpoint verifies it
    removes nothing: the evidence is left for a human.
    """
    directory = Path(directory)
    chosen = _parse_policy(policy)
    if chosen is CleanupPolicy.KEEP or not directory.is_dir():
        return []
    if chosen is CleanupPolicy.DELETE:
        shutil.rmtree(directory)
        return [directory]
    newest = newest_valid_checkpoint(directory)
    if newest is None:
        logger.warning("keep-last: no valid checkpoint in %s; removed nothing", directory)
        return []
    keep = {newest.path.name, manifest_path(newest.path).name, PROVENANCE_FILE}
    removed: list[Path] = []
    for entry in sorted(os.scandir(directory), key=lambda e: e.name):
        if entry.name in keep or not _is_checkpoint_artifact(entry.name):
            continue
        if entry.is_dir(follow_symlinks=False):
            _rmtree(Path(entry.path))  # a sharded checkpoint, or the temporary of a killed sharded save
        else:
            Path(entry.path).unlink(missing_ok=True)
        removed.append(Path(entry.path))
    return removed
