"""Putting a sharded (directory) checkpoint in place under its final name in one rename, and taking
checkpoints and the leftovers of killed saves away again, so that no scan ever sees half of one."""

from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path

from ..atomic import MAX_TEMP_STEM, _fsync_dir, _fsync_file
from .manifest import DIRECTORY_HASH_LIMIT_BYTES, _is_plain_directory, write_manifest
from .names import TEMP_PREFIX, manifest_path


def make_private_tree(directory: str | Path) -> None:
    """Modes 0700 for `directory` and every directory below it, 0600 for every file, as
    atomic_output gives a file checkpoint whatever the umask (a pickle: nobody else may read it, or
    with a lax umask write it), and each file's data flushed to disk (fsync) before a rename
    publishes it. Links are left alone and never followed."""
    root = Path(directory)
    if not _is_plain_directory(root):
        raise ValueError(f"make_private_tree: {root} is not a directory (a link is not followed)")
    os.chmod(root, 0o700)
    pending = [root]
    while pending:
        current = pending.pop()
        with os.scandir(current) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    os.chmod(entry.path, 0o700)
                    pending.append(Path(entry.path))
                elif entry.is_file(follow_symlinks=False):
                    os.chmod(entry.path, 0o600)
                    _fsync_file(Path(entry.path))
        _fsync_dir(current)


def _rmtree(path: Path) -> None:
    # Python's rmtree works through directory descriptors on Linux (rmtree.avoids_symlink_attacks):
    # a link inside is unlinked, never followed; on a link itself it refuses (we never pass one)
    shutil.rmtree(path)


def remove_checkpoint(path: str | Path) -> None:
    """Removes one checkpoint, file or directory, and its manifest; a link is unlinked, never followed.

    A directory first leaves every scan in one rename (to '.tmp-<name>.removing-<random>'), then is
    deleted: a crash half way leaves only a '.tmp-*' directory, never a checkpoint with shards missing.
    """
    path = Path(path)
    if _is_plain_directory(path):
        doomed = path.with_name(f"{TEMP_PREFIX}{path.name[:MAX_TEMP_STEM]}.removing-{secrets.token_hex(4)}")
        os.rename(path, doomed)
        manifest_path(path).unlink(missing_ok=True)
        _rmtree(doomed)
        return
    path.unlink(missing_ok=True)
    manifest_path(path).unlink(missing_ok=True)


def remove_leftovers(directory: str | Path, prefix: str = f"{TEMP_PREFIX}step-") -> list[Path]:
    """Removes the temporaries ('.tmp-step-*': files, or directories of a sharded save) that killed or
    failed saves left in `directory`; returns what it removed. Call it only while no save runs."""
    removed: list[Path] = []
    directory = Path(directory)
    if not directory.is_dir():
        return removed
    for entry in sorted(os.scandir(directory), key=lambda e: e.name):
        if not entry.name.startswith(prefix):
            continue
        if entry.is_dir(follow_symlinks=False):
            _rmtree(Path(entry.path))
        else:
            Path(entry.path).unlink(missing_ok=True)
        removed.append(Path(entry.path))
    return removed


def temporary_name(final: str | Path) -> str:
    """A fresh temporary name for a checkpoint written as `final`: '.tmp-<name>.<random>', in the same
    directory (see atomic_output). A sharded save needs the same one on every rank: make it on rank 0
    and broadcast it."""
    return f"{TEMP_PREFIX}{Path(final).name[:MAX_TEMP_STEM]}.{secrets.token_hex(6)}"


def publish_directory(temporary: str | Path, final: str | Path, global_step: int, *,
                      hash_limit_bytes: int = DIRECTORY_HASH_LIMIT_BYTES) -> Path:
    """Makes the finished sharded checkpoint in directory `temporary` the checkpoint `final`.

    Order: modes tightened and data flushed (make_private_tree); a previous checkpoint of that name
    removed (remove_checkpoint: a directory cannot be renamed onto a non-empty one, and a new save of
    the same step means the old one was not resumed from); the manifest written for `final` from
    the contents; then one rename onto the then non-existing `final`. So `final` never exists
    without its manifest; a crash before the rename leaves a '.tmp-*' directory (ignored by every
    scan, removed by remove_leftovers and cleanup) and an orphan manifest (ignored).

    Call it on one rank (rank 0), after every rank finished writing. Returns the manifest's path.
    """
    temporary, final = Path(temporary), Path(final)
    if not _is_plain_directory(temporary):
        raise ValueError(f"publish_directory: {temporary} is not a directory")
    if temporary.parent != final.parent:
        raise ValueError(f"publish_directory: {temporary} and {final} are in different directories; "
                         "the rename must stay inside the checkpoint directory")
    make_private_tree(temporary)
    if os.path.lexists(final):
        remove_checkpoint(final)
    written = write_manifest(final, global_step, content=temporary, hash_limit_bytes=hash_limit_bytes)
    os.replace(temporary, final)
    _fsync_dir(final.parent)
    return written
