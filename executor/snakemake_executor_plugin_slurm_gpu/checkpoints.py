"""The lifecycle of a step's checkpoint directory, without torch: atomic writes, a sidecar manifest
per checkpoint, the newest checkpoint that can be trusted, provenance (moving a directory aside when
the step it belongs to has changed) and cleanup after success.

Imported by the executor on the submit host, which must never import torch, and by training code in
the job. Writing a checkpoint from training code:

    with atomic_output(directory / "step-1200.ckpt") as tmp:
        torch.save(state, tmp)
    write_manifest(directory / "step-1200.ckpt", global_step=1200)

Nothing here unpickles a checkpoint: verification reads bytes only, so a hostile file runs no code.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import hashlib
import json
import logging
import os
import re
import shutil
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
    MANIFEST = "manifest"  # size and sha256 match what the writer recorded
    ZIP = "zip"            # no manifest; every member's CRC-32 in torch.save's zip archive checks


@dataclass(frozen=True)
class CheckpointInfo:
    path: Path
    size_bytes: int
    global_step: int | None  # known only from a manifest
    verified_by: VerifiedBy


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


def _utc_now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def write_manifest(checkpoint: str | Path, global_step: int) -> Path:
    """Records size, sha256 and global step of a finished checkpoint in 'X.ckpt.json'; returns that path.

    Note: call it only after the checkpoint file is complete and in place. A crash between the two
    leaves a checkpoint without a manifest, which still verifies by its zip CRCs (step unknown).
    """
    checkpoint = Path(checkpoint)
    if isinstance(global_step, bool) or not isinstance(global_step, int) or global_step < 0:
        raise ValueError(f"write_manifest({str(checkpoint)!r}): global_step={global_step!r} must be an int >= 0")
    sha256, size_bytes = _sha256_and_size(checkpoint)
    manifest = {
        "format": _MANIFEST_FORMAT,
        "file": checkpoint.name,
        "size_bytes": size_bytes,
        "sha256": sha256,
        "global_step": global_step,
        "written_at": _utc_now_iso(),
    }
    target = manifest_path(checkpoint)
    atomic_write_bytes(target, (json.dumps(manifest, indent=2) + "\n").encode())
    return target


@dataclass(frozen=True)
class _Manifest:
    size_bytes: int
    sha256: str
    global_step: int | None


def _read_manifest(path: Path) -> _Manifest:
    """Raises ValueError (or OSError) when the manifest cannot be trusted as a claim."""
    data = json.loads(path.read_text())
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    size, sha256, step = data.get("size_bytes"), data.get("sha256"), data.get("global_step")
    if isinstance(size, bool) or not isinstance(size, int) or not isinstance(sha256, str) \
            or not re.fullmatch(r"[0-9a-f]{64}", sha256):
        raise ValueError("size_bytes or sha256 missing or malformed")
    if step is not None and (isinstance(step, bool) or not isinstance(step, int)):
        raise ValueError(f"global_step={step!r} is not an int")
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


def _verify(path: Path) -> CheckpointInfo | str:
    """The checkpoint's info when it can be trusted, else the reason it cannot."""
    manifest_file = manifest_path(path)
    if manifest_file.exists():
        try:
            manifest = _read_manifest(manifest_file)
        except (OSError, ValueError) as error:
            # a manifest that makes no claim is no evidence against the file: judge it as if absent
            logger.warning("ignoring unreadable manifest %s (%s); checking %s as a zip archive",
                           manifest_file, error, path.name)
        else:
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

    Skipped: '.tmp-*' files (writes in progress or killed), directories, and symbolic links (a link
    such as Lightning's 'last.ckpt' names a file that is itself a candidate; keep-last must never keep
    a link and delete what it points at).
    """
    if not directory.is_dir():
        return []
    found: list[tuple[int, tuple[object, ...], Path]] = []
    for entry in os.scandir(directory):
        if not entry.name.endswith(CHECKPOINT_SUFFIX) or entry.name.startswith(TEMP_PREFIX):
            continue
        if entry.is_symlink() or not entry.is_file():
            continue
        try:
            mtime_ns = entry.stat().st_mtime_ns
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

    keep-last removes checkpoint files ('*.ckpt', links included), manifests ('*.ckpt.json', orphans
    included) and leftover '.tmp-*' files, except the newest valid checkpoint and its manifest. It
    never removes provenance.json, subdirectories or other files. When no checkpoint verifies it
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
            continue
        Path(entry.path).unlink(missing_ok=True)
        removed.append(Path(entry.path))
    return removed
