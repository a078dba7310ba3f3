"""All-or-nothing file writes: a reader sees the old file or the new one, never half of either.

One implementation for every file slurm-gpu replaces in place: checkpoints and their manifests,
provenance records, the requeue marker, submission records, heartbeats. Stdlib only (and contract.py),
so that the executor on the submit host and training code in the job can both import it without torch.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from pathlib import Path
from typing import Iterator

# the prefix every scan of a checkpoint directory skips; contract.py is stdlib only, as this module is
from .contract import TEMP_PREFIX

MAX_TEMP_STEM = 100      # keeps '.tmp-<name>.<random>' under NAME_MAX for long names


def _fsync_file(path: Path) -> None:
    # fsync through a read-only descriptor still flushes the file's data on Linux
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(directory: Path) -> None:
    """Makes a rename or create inside `directory` survive a crash of the node."""
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    except OSError as error:
        # some network filesystems refuse fsync on a directory; the rename itself is still atomic
        if error.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


def replace_durably(temporary: str | Path, final: str | Path) -> None:
    """Rename a complete file written elsewhere in the same directory onto `final`, durable like
    atomic_output's: its data on disk before the new name, the name before whatever comes next."""
    temporary, final = Path(temporary), Path(final)
    _fsync_file(temporary)
    os.replace(temporary, final)
    _fsync_dir(final.parent)


@contextlib.contextmanager
def atomic_output(path: str | Path, *, fsync: bool = True) -> Iterator[Path]:
    """Yields a temporary path next to `path`; when the block ends without error, the file there
    becomes `path` in one rename, or not at all.

    Note: the temporary file lives in the same directory, never under $TMPDIR, which on a compute
    node is usually another (node-local) filesystem where the final move is a copy a SIGKILL can cut
    short (Lightning's own save path has exactly that flaw). A process killed mid-write leaves only a
    '.tmp-*' file, which scans ignore and cleanup removes. The file is created with mode 0o600.

    fsync=False gives up surviving a crash of the node (the data and the rename may not have reached
    the disk yet) for speed: for files that are rewritten often and are worthless after a reboot.
    """
    final = Path(path)
    fd, name = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}{final.name[:MAX_TEMP_STEM]}.", dir=final.parent)
    os.close(fd)
    temporary = Path(name)
    try:
        yield temporary
        if fsync:
            _fsync_file(temporary)
        os.replace(temporary, final)
    except BaseException:
        # BaseException: a KeyboardInterrupt or SystemExit mid-write must not leave a temp file either
        temporary.unlink(missing_ok=True)
        raise
    if fsync:
        _fsync_dir(final.parent)


def atomic_write_bytes(path: str | Path, data: bytes, *, fsync: bool = True) -> None:
    """Writes `data` to `path` all-or-nothing (see atomic_output)."""
    with atomic_output(path, fsync=fsync) as temporary:
        temporary.write_bytes(data)


def atomic_write_text(path: str | Path, text: str, *, fsync: bool = True) -> None:
    """Writes `text` (UTF-8) to `path` all-or-nothing (see atomic_output)."""
    atomic_write_bytes(path, text.encode(), fsync=fsync)
