"""Provenance: which step a checkpoint directory belongs to (a digest of its inputs, parameters and
code), and moving the directory aside when the step has changed."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Mapping

from ..atomic import _fsync_dir, atomic_write_bytes
from .manifest import _sha256_and_size, _utc_now_iso
from .names import PROVENANCE_FILE

# the package's name, as when this was one module: logging configured for it keeps working
logger = logging.getLogger(__package__)


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
