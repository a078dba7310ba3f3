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

Modules: names (file names in the directory), manifest (writing and reading 'X.ckpt.json'), verify
(whether a checkpoint can be trusted), resume (the newest one that can), publish (putting a sharded
checkpoint in place, removing checkpoints and leftovers), provenance, cleanup. Everything callers
use is importable from here, as when this package was one module.
"""

from __future__ import annotations

# atomic writes live in ..atomic; imported here too, as callers always have
from ..atomic import _fsync_dir, _fsync_file, atomic_output, atomic_write_bytes, atomic_write_text
from .cleanup import CleanupPolicy, cleanup_after_success
from .manifest import DIRECTORY_HASH_LIMIT_BYTES, SMALL_FILE_BYTES, write_manifest
from .names import (CHECKPOINT_SUFFIX, DCP_METADATA, INTERRUPTED_MARKER, MANIFEST_SUFFIX, PROVENANCE_FILE,
                    TEMP_PREFIX, manifest_path)
from .provenance import ensure_provenance, file_digests, provenance_digest
from .publish import make_private_tree, publish_directory, remove_checkpoint, remove_leftovers, temporary_name
from .resume import find_resumable, newest_valid_checkpoint
from .verify import CheckpointInfo, VerifiedBy, verify_checkpoint

__all__ = [
    "CHECKPOINT_SUFFIX", "DCP_METADATA", "DIRECTORY_HASH_LIMIT_BYTES", "INTERRUPTED_MARKER", "MANIFEST_SUFFIX",
    "PROVENANCE_FILE", "SMALL_FILE_BYTES", "TEMP_PREFIX",
    "CheckpointInfo", "CleanupPolicy", "VerifiedBy",
    "atomic_output", "atomic_write_bytes", "atomic_write_text", "cleanup_after_success", "ensure_provenance",
    "file_digests", "find_resumable", "make_private_tree", "manifest_path", "newest_valid_checkpoint",
    "provenance_digest", "publish_directory", "remove_checkpoint", "remove_leftovers", "temporary_name",
    "verify_checkpoint", "write_manifest",
]
