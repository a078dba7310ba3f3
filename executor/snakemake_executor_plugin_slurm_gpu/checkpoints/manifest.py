"""Sidecar manifests ('X.ckpt.json'): what a finished checkpoint's bytes were when it was written,
and reading that claim back. Also the walk over a directory (sharded) checkpoint's files that both
writing and checking a manifest need."""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
import re
import stat
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from ..atomic import atomic_write_bytes
from .names import manifest_path

_MANIFEST_FORMAT = 1
_CHUNK_BYTES = 1 << 20

# How much of a directory (sharded) checkpoint its manifest hashes. Every file's relative path and size
# are always recorded; sha256 too for every file while they total at most DIRECTORY_HASH_LIMIT_BYTES,
# beyond that only for files of at most SMALL_FILE_BYTES (DCP's .metadata, Lightning's meta.pt,
# DeepSpeed's 'latest'). Why: sharded checkpoints are the ones of models too big for one GPU, easily
# hundreds of GB. Rank 0 alone hashes (~0.5-1 GB/s from a shared filesystem) while every other rank
# waits in a barrier whose timeout may be 10 minutes, and every resume would read it all once more.
# Sizes alone still catch what really happens to a checkpoint: a shard cut short by a kill or a full
# disk, a shard missing, a file left over from another save.
DIRECTORY_HASH_LIMIT_BYTES = 8 << 30
SMALL_FILE_BYTES = 64 << 20
_HASH_THREADS = 8                  # hashlib releases the GIL: shards hash in parallel


def _sha256_and_size(path: Path) -> tuple[str, int]:
    # size from the bytes hashed, not from a stat taken at another moment
    digest, size = hashlib.sha256(), 0
    with path.open("rb") as stream:
        while chunk := stream.read(_CHUNK_BYTES):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def _sha256_and_size_in(root: Path, relative: str) -> tuple[str, int]:
    """_sha256_and_size of a file inside a directory checkpoint, never through a link."""
    fd = os.open(root / relative, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    digest, size = hashlib.sha256(), 0
    with os.fdopen(fd, "rb") as stream:
        while chunk := stream.read(_CHUNK_BYTES):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def _hash_all(root: Path, relatives: list[str]) -> dict[str, tuple[str, int]]:
    if len(relatives) <= 1:
        return {relative: _sha256_and_size_in(root, relative) for relative in relatives}
    workers = min(_HASH_THREADS, len(relatives), os.cpu_count() or 1)
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        return dict(zip(relatives, pool.map(lambda relative: _sha256_and_size_in(root, relative), relatives)))


class _NotPlain(Exception):
    """A directory checkpoint holds a symbolic link or a special file: refused, loading would follow it."""


def _tree(directory: Path) -> dict[str, int]:
    """Relative POSIX path -> size of every regular file below `directory`, found without following
    links. Raises _NotPlain on a link or special file, OSError when something cannot be read."""
    files: dict[str, int] = {}
    pending = [(directory, "")]
    while pending:
        current, prefix = pending.pop()
        with os.scandir(current) as entries:
            for entry in entries:
                relative = prefix + entry.name
                mode = entry.stat(follow_symlinks=False).st_mode
                if stat.S_ISDIR(mode):
                    pending.append((Path(entry.path), relative + "/"))
                elif stat.S_ISREG(mode):
                    files[relative] = entry.stat(follow_symlinks=False).st_size
                else:
                    what = "a symbolic link" if stat.S_ISLNK(mode) else "neither a file nor a directory"
                    raise _NotPlain(f"{relative} is {what}")
    return files


def _is_plain_directory(path: Path) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def _utc_now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _directory_manifest(content: Path, hash_limit_bytes: int) -> dict[str, object]:
    try:
        sizes = _tree(content)
    except _NotPlain as error:
        raise ValueError(f"sharded checkpoint {content}: {error}; a checkpoint holds plain files only") from None
    if not sizes:
        raise ValueError(f"sharded checkpoint {content} holds no file: nothing was saved into it")
    hash_every_file = sum(sizes.values()) <= hash_limit_bytes
    hashed = _hash_all(content, sorted(r for r, size in sizes.items() if hash_every_file or size <= SMALL_FILE_BYTES))
    files: dict[str, dict[str, object]] = {}
    for relative in sorted(sizes):
        sha256, size = hashed.get(relative, (None, sizes[relative]))  # hashed: the size of the bytes hashed
        files[relative] = {"size_bytes": size, "sha256": sha256}
    return {
        "kind": "directory",
        "size_bytes": sum(int(entry["size_bytes"]) for entry in files.values()),  # type: ignore[call-overload]
        "hashed": "every file" if hash_every_file else f"files of at most {SMALL_FILE_BYTES} bytes; others by size",
        "files": files,
    }


def write_manifest(checkpoint: str | Path, global_step: int, *, content: str | Path | None = None,
                   hash_limit_bytes: int = DIRECTORY_HASH_LIMIT_BYTES) -> Path:
    """Records size, sha256 and global step of a finished checkpoint in 'X.ckpt.json'; returns that path.

    A directory (sharded) checkpoint gets every file's relative path, size and sha256 (size only for
    big files of a big checkpoint: see DIRECTORY_HASH_LIMIT_BYTES). `content` is where the bytes are
    now when that is not yet `checkpoint`: a directory still under its temporary name, whose manifest
    publish_directory writes before the rename, so that it never appears without one. Raises
    ValueError for a directory holding a link, a special file, or nothing.

    Note: call it only after the checkpoint is complete. For a file, a crash between its rename and
    this call leaves a checkpoint without a manifest, which still verifies by its zip CRCs (step unknown).
    """
    checkpoint = Path(checkpoint)
    source = Path(content) if content is not None else checkpoint
    if isinstance(global_step, bool) or not isinstance(global_step, int) or global_step < 0:
        raise ValueError(f"write_manifest({str(checkpoint)!r}): global_step={global_step!r} must be an int >= 0")
    manifest: dict[str, object] = {"format": _MANIFEST_FORMAT, "file": checkpoint.name}
    if _is_plain_directory(source):
        manifest.update(_directory_manifest(source, hash_limit_bytes))
    else:
        sha256, size_bytes = _sha256_and_size(source)
        manifest.update(size_bytes=size_bytes, sha256=sha256)
    manifest.update(global_step=global_step, written_at=_utc_now_iso())
    target = manifest_path(checkpoint)
    atomic_write_bytes(target, (json.dumps(manifest, indent=2) + "\n").encode())
    return target


@dataclass(frozen=True)
class _Manifest:
    size_bytes: int
    sha256: str | None                                  # None for a directory
    global_step: int | None
    files: dict[str, tuple[int, str | None]] | None = None  # a directory's: relative path -> (size, sha256)


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_sha256(value: object) -> bool:
    return isinstance(value, str) and re.fullmatch(r"[0-9a-f]{64}", value) is not None


def _is_relative_path(name: object) -> bool:
    # what _tree produces: 'a/b', never absolute, never '.', '..' or an empty part
    return isinstance(name, str) and bool(name) and "\0" not in name and \
        all(part not in ("", ".", "..") for part in name.split("/"))


def _read_directory_files(data: dict[str, object]) -> dict[str, tuple[int, str | None]]:
    listed = data.get("files")
    if not isinstance(listed, dict) or not listed:
        raise ValueError("a directory manifest without its list of files")
    files: dict[str, tuple[int, str | None]] = {}
    for name, entry in listed.items():
        if not _is_relative_path(name) or not isinstance(entry, dict):
            raise ValueError(f"malformed entry {name!r}")
        size, sha256 = entry.get("size_bytes"), entry.get("sha256")
        if not _is_count(size) or not (sha256 is None or _is_sha256(sha256)):
            raise ValueError(f"size_bytes or sha256 of {name!r} malformed")
        files[name] = (size, sha256)
    return files


def _read_manifest(path: Path) -> _Manifest:
    """Raises ValueError (or OSError) when the manifest cannot be trusted as a claim."""
    data = json.loads(path.read_text())
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    size, sha256, step = data.get("size_bytes"), data.get("sha256"), data.get("global_step")
    if step is not None and (isinstance(step, bool) or not isinstance(step, int)):
        raise ValueError(f"global_step={step!r} is not an int")
    if data.get("kind") == "directory":
        files = _read_directory_files(data)
        return _Manifest(sum(s for s, _ in files.values()), None, step, files)
    if isinstance(size, bool) or not isinstance(size, int) or not _is_sha256(sha256):
        raise ValueError("size_bytes or sha256 missing or malformed")
    return _Manifest(size, sha256, step)
