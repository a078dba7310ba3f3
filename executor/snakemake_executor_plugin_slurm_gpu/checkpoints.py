"""The lifecycle of a step's checkpoint directory, without torch: atomic writes, a sidecar manifest
per checkpoint, the newest checkpoint that can be trusted, provenance (moving a directory aside when
the step it belongs to has changed) and cleanup after success.

A checkpoint is one file (torch.save, Lightning's DDP strategies) or one directory (a sharded
checkpoint: torch.distributed.checkpoint (DCP), Lightning's FSDP with state_dict_type="sharded",
DeepSpeed), written by every rank under a temporary name and published by rank 0 in one rename
(publish_directory). Both kinds have the same sidecar manifest 'X.ckpt.json', and are verified,
resumed, pruned and cleaned up alike.

Imported by the executor on the submit host, which must never import torch, and by training code in
the job. Writing a checkpoint from training code:

    with atomic_output(directory / "step-1200.ckpt") as tmp:
        torch.save(state, tmp)
    write_manifest(directory / "step-1200.ckpt", global_step=1200)

Nothing here unpickles a checkpoint: verification reads bytes only, so a hostile file runs no code.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import enum
import errno
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import stat
import tempfile
import zipfile
import zlib
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Iterator, Mapping

from . import private

logger = logging.getLogger(__name__)

CHECKPOINT_SUFFIX = ".ckpt"
MANIFEST_SUFFIX = ".json"          # X.ckpt -> X.ckpt.json
PROVENANCE_FILE = "provenance.json"
# written by the training side when it stopped on purpose for a requeue; read by the executor
INTERRUPTED_MARKER = "interrupted.json"
TEMP_PREFIX = ".tmp-"              # half-written files; every scan skips them
_MANIFEST_FORMAT = 1
_CHUNK_BYTES = 1 << 20
_MAX_TEMP_STEM = 100               # keeps '.tmp-<name>.<random>' under NAME_MAX for long names
DCP_METADATA = ".metadata"         # torch.distributed.checkpoint's index; its coordinator writes it last

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


# ---------------------------------------------------------------- atomic writes

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


@contextlib.contextmanager
def atomic_output(path: str | Path) -> Iterator[Path]:
    """Yields a temporary path next to `path`; when the block ends without error, the file there
    becomes `path` in one rename, or not at all.

    Note: the temporary file lives in the same directory, never under $TMPDIR, which on a compute
    node is usually another (node-local) filesystem where the final move is a copy a SIGKILL can cut
    short (Lightning's own save path has exactly that flaw). A process killed mid-write leaves only a
    '.tmp-*' file, which scans ignore and cleanup removes. The file is created with mode 0o600.
    """
    final = Path(path)
    fd, name = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}{final.name[:_MAX_TEMP_STEM]}.", dir=final.parent)
    os.close(fd)
    temporary = Path(name)
    try:
        yield temporary
        _fsync_file(temporary)
        os.replace(temporary, final)
    except BaseException:
        # BaseException: a KeyboardInterrupt or SystemExit mid-write must not leave a temp file either
        temporary.unlink(missing_ok=True)
        raise
    _fsync_dir(final.parent)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Writes `data` to `path` all-or-nothing (see atomic_output)."""
    with atomic_output(path) as temporary:
        temporary.write_bytes(data)


# ---------------------------------------------------------------- manifests and verification

class VerifiedBy(enum.StrEnum):
    MANIFEST = "manifest"  # size and sha256 match what the writer recorded (a directory: every file's)
    ZIP = "zip"            # no manifest; every member's CRC-32 in torch.save's zip archive checks
    DCP_METADATA = "dcp-metadata"  # a directory without manifest: DCP's .metadata (written last) is there,
                                   # and every torch.save file in it ('*.pt') passes its CRCs


@dataclass(frozen=True)
class CheckpointInfo:
    path: Path
    size_bytes: int
    global_step: int | None  # known only from a manifest
    verified_by: VerifiedBy
    sharded: bool = False    # a directory (sharded checkpoint), not a file


def manifest_path(checkpoint: str | Path) -> Path:
    """The sidecar manifest of a checkpoint file: 'X.ckpt' -> 'X.ckpt.json'."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(checkpoint.name + MANIFEST_SUFFIX)


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


def _zip_problem(path: Path) -> str | None:
    """None when `path` is a non-empty zip archive whose members all pass their CRC-32; else why not."""
    try:
        with zipfile.ZipFile(path) as archive:
            if not archive.infolist():
                return "an empty zip archive"
            bad_member = archive.testzip()  # reads every byte; never unpickles
    except (zipfile.BadZipFile, zlib.error, EOFError, ValueError, NotImplementedError) as error:
        return f"not a readable zip archive ({error}); truncated, or not written by torch.save"
    except OSError as error:
        return f"unreadable ({error})"
    if bad_member is not None:
        return (f"CRC-32 mismatch in member {bad_member!r}; corrupted, or saved with "
                "torch.utils.serialization.config.save.compute_crc32=False (then write a manifest)")
    return None


def _directory_problem(path: Path, manifest: _Manifest) -> str | None:
    """None when the directory holds exactly the files its manifest lists, with their sizes and hashes."""
    assert manifest.files is not None
    try:
        found = _tree(path)
    except _NotPlain as error:
        return str(error)
    except OSError as error:
        return f"unreadable ({error})"
    missing = sorted(set(manifest.files) - set(found))
    if missing:
        return f"{len(missing)} file(s) the manifest lists are missing: {', '.join(missing[:5])}"
    extra = sorted(set(found) - set(manifest.files))
    if extra:
        return f"{len(extra)} file(s) are not in the manifest (written after it?): {', '.join(extra[:5])}"
    for name, (size, _) in sorted(manifest.files.items()):
        if found[name] != size:
            return f"{name} is {found[name]} bytes, the manifest recorded {size}"
    try:
        digests = _hash_all(path, sorted(name for name, (_, sha256) in manifest.files.items() if sha256 is not None))
    except OSError as error:
        return f"unreadable ({error})"
    for name, (sha256, size) in sorted(digests.items()):
        if (sha256, size) != (manifest.files[name][1], manifest.files[name][0]):
            return f"sha256 of {name} differs from the manifest: the file changed after it was recorded"
    return None


def _verify_directory_without_manifest(path: Path) -> CheckpointInfo | str:
    """A directory nobody recorded: trusted only when torch.distributed.checkpoint finished it (its
    coordinator writes .metadata after every rank's data) and every torch.save file in it is whole."""
    try:
        found = _tree(path)
    except _NotPlain as error:
        return str(error)
    except OSError as error:
        return f"unreadable ({error})"
    if not found.get(DCP_METADATA):
        return (f"a directory without a manifest, and without torch.distributed.checkpoint's {DCP_METADATA} "
                "(written last): nothing says it is complete")
    for name in sorted(found):
        if name.endswith((".pt", CHECKPOINT_SUFFIX)):
            problem = _zip_problem(path / name)
            if problem is not None:
                return f"{name}: {problem}"
    return CheckpointInfo(path, sum(found.values()), None, VerifiedBy.DCP_METADATA, sharded=True)


def _verify(path: Path) -> CheckpointInfo | str:
    """The checkpoint's info when it can be trusted, else the reason it cannot."""
    directory = _is_plain_directory(path)
    manifest_file = manifest_path(path)
    if manifest_file.exists():
        try:
            manifest = _read_manifest(manifest_file)
        except (OSError, ValueError) as error:
            # a manifest that makes no claim is no evidence against the file: judge it as if absent
            logger.warning("ignoring unreadable manifest %s (%s); checking %s %s", manifest_file, error, path.name,
                           "for DCP's .metadata" if directory else "as a zip archive")
        else:
            if directory != (manifest.files is not None):
                return (f"the manifest describes a {'directory' if manifest.files is not None else 'file'}, "
                        f"but this is a {'directory' if directory else 'file'}")
            if directory:
                problem = _directory_problem(path, manifest)
                if problem is not None:
                    return problem
                return CheckpointInfo(path, manifest.size_bytes, manifest.global_step, VerifiedBy.MANIFEST, sharded=True)
            try:
                size_bytes = path.stat().st_size
                if size_bytes != manifest.size_bytes:
                    return f"size is {size_bytes} bytes, the manifest recorded {manifest.size_bytes}"
                sha256, size_bytes = _sha256_and_size(path)
            except OSError as error:
                return f"unreadable ({error})"
            if sha256 != manifest.sha256:
                return "sha256 differs from the manifest: the file changed after it was recorded"
            return CheckpointInfo(path, size_bytes, manifest.global_step, VerifiedBy.MANIFEST)
    if directory:
        return _verify_directory_without_manifest(path)
    problem = _zip_problem(path)
    if problem is not None:
        return problem
    try:
        size_bytes = path.stat().st_size
    except OSError as error:  # removed since it was read
        return f"unreadable ({error})"
    return CheckpointInfo(path, size_bytes, None, VerifiedBy.ZIP)


def verify_checkpoint(path: str | Path) -> CheckpointInfo | None:
    """The checkpoint's info when it is complete and intact, None when it is not.

    Valid means: its manifest exists and size + sha256 match; or, with no (readable) manifest, it is
    a zip archive (torch.save's format) whose CRCs all check. A manifest that exists and disagrees
    makes the file invalid even if it is a sound zip: something rewrote it after it was recorded.

    A directory (sharded checkpoint) is valid when it holds exactly the files its manifest lists, each
    with its size and (where recorded) sha256, and no link or special file anywhere; with no
    (readable) manifest, when DCP's .metadata is there and every '*.pt' in it passes its zip CRCs
    (DeepSpeed's layout has no such marker: without a manifest it is not trusted).

    Note: torch's legacy non-zip format (`_use_new_zipfile_serialization=False`) cannot be checked
    without unpickling, so such a file is valid only with a manifest.
    """
    result = _verify(Path(path))
    return result if isinstance(result, CheckpointInfo) else None


# ---------------------------------------------------------------- picking the checkpoint to resume

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


# ---------------------------------------------------------------- sharded checkpoints: publishing, removing

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
        doomed = path.with_name(f"{TEMP_PREFIX}{path.name[:_MAX_TEMP_STEM]}.removing-{secrets.token_hex(4)}")
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
    return f"{TEMP_PREFIX}{Path(final).name[:_MAX_TEMP_STEM]}.{secrets.token_hex(6)}"


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


# ---------------------------------------------------------------- provenance

def _canonical(value: object) -> object:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (set, frozenset)):
        # a set has no order of its own: order its members by their canonical JSON
        return sorted(value, key=_canonical_json)
    raise TypeError(f"provenance part of type {type(value).__name__} has no canonical JSON form: {value!r}. "
                    "HINT: pass str, int, float, bool, None, list, dict, Path or set")


def _canonical_json(parts: object) -> str:
    return json.dumps(parts, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False, default=_canonical)


def provenance_digest(parts: Mapping[str, object]) -> str:
    """sha256 (hex) of `parts` as canonical JSON: key order never matters, any value change does."""
    return hashlib.sha256(_canonical_json(parts).encode("utf-8", "surrogatepass")).hexdigest()


def file_digests(paths: Iterable[str | Path]) -> dict[str, str]:
    """sha256 (hex) of the content of each existing file, keyed by the path as given; missing paths
    and directories are left out. Meant as a provenance part for training scripts."""
    digests: dict[str, str] = {}
    for path in paths:
        if Path(path).is_file():
            digests[str(path)] = _sha256_and_size(Path(path))[0]
    return digests


def _recorded_digest(directory: Path) -> str | None:
    try:
        data = json.loads((directory / PROVENANCE_FILE).read_text())
    except (OSError, ValueError):
        return None
    digest = data.get("digest") if isinstance(data, dict) else None
    return digest if isinstance(digest, str) else None


def _stale_destination(directory: Path, now: datetime) -> Path:
    stamp = now.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    candidate = directory.with_name(f"{directory.name}.stale-{stamp}")
    # checked, not left to rename: rename(2) silently replaces an existing empty directory
    counter = 2
    while candidate.exists() or candidate.is_symlink():
        candidate = directory.with_name(f"{directory.name}.stale-{stamp}-{counter}")
        counter += 1
    return candidate


def _write_provenance(directory: Path, digest: str, parts: Mapping[str, object] | None) -> None:
    record: dict[str, object] = {"digest": digest, "written_at": _utc_now_iso()}
    if parts is not None:
        record["parts"] = json.loads(_canonical_json(parts))  # for a human diffing two directories
    atomic_write_bytes(directory / PROVENANCE_FILE, (json.dumps(record, indent=2, sort_keys=True) + "\n").encode())


def ensure_provenance(directory: str | Path, digest: str, *, parts: Mapping[str, object] | None = None,
                      now: datetime | None = None) -> Path | None:
    """Makes `directory` belong to `digest`. Returns where the previous contents went when they
    belonged to another digest (or to none), else None.

    A directory holding anything besides provenance.json whose recorded digest differs, or is missing
    or unreadable, is renamed to the sibling '<name>.stale-<UTC timestamp>' (never deleted: a change
    of code or parameters may be a mistake the user wants to undo). Then the directory is (re)created
    with mode 0o700 and provenance.json is written. With a matching digest nothing changes. `parts`,
    if given, is stored next to the digest so that two provenance.json files can be diffed.

    Note: call it from one process per step (the executor before submission, or rank 0), never from
    every rank at once.
    """
    directory = Path(directory)
    moved_to: Path | None = None
    if directory.is_dir():
        if _recorded_digest(directory) == digest:
            return None
        holds_files = any(entry.name != PROVENANCE_FILE for entry in os.scandir(directory))
        if holds_files:
            moved_to = _stale_destination(directory, now or datetime.now(timezone.utc))
            os.rename(directory, moved_to)
            logger.warning("checkpoint directory %s was written for provenance %s, this step has %s; "
                           "moved it aside to %s", directory, _recorded_digest(moved_to) or "(none recorded)",
                           digest, moved_to)
    directory.parent.mkdir(parents=True, exist_ok=True)
    directory.mkdir(mode=0o700, exist_ok=True)
    _write_provenance(directory, digest, parts)
    _fsync_dir(directory.parent)
    return moved_to


# ---------------------------------------------------------------- cleanup after success

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
