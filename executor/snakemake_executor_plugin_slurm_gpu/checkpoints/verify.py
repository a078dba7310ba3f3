"""Whether a checkpoint can be trusted: its manifest's sizes and hashes, or without one torch.save's
zip CRCs (a file) or DCP's .metadata (a directory). Reads bytes only, never unpickles."""

from __future__ import annotations

import enum
import logging
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from .manifest import (_hash_all, _is_plain_directory, _Manifest, _NotPlain, _read_manifest, _sha256_and_size,
                       _tree)
from .names import CHECKPOINT_SUFFIX, DCP_METADATA, manifest_path

# the package's name, as when this was one module: logging configured for it keeps working
logger = logging.getLogger(__package__)


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


def _listing(path: Path) -> dict[str, int] | str:
    """The directory's files and sizes (_tree), or why it cannot be trusted or read."""
    try:
        return _tree(path)
    except _NotPlain as error:
        return str(error)
    except OSError as error:
        return f"unreadable ({error})"


def _directory_problem(path: Path, manifest: _Manifest) -> str | None:
    """None when the directory holds exactly the files its manifest lists, with their sizes and hashes."""
    assert manifest.files is not None
    found = _listing(path)
    if isinstance(found, str):
        return found
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
    found = _listing(path)
    if isinstance(found, str):
        return found
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
