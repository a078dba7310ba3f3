"""The names of the files in a checkpoint directory, which the executor, the training side and the
checks before a resume all have to agree on."""

from __future__ import annotations

from pathlib import Path

# the names both sides of a step agree on are defined once, in contract.py
from ..contract import CHECKPOINT_SUFFIX, INTERRUPTED_MARKER, MANIFEST_SUFFIX, PROVENANCE_FILE, TEMP_PREFIX

__all__ = ["CHECKPOINT_SUFFIX", "DCP_METADATA", "INTERRUPTED_MARKER", "MANIFEST_SUFFIX", "PROVENANCE_FILE",
           "TEMP_PREFIX", "manifest_path"]

DCP_METADATA = ".metadata"         # torch.distributed.checkpoint's index; its coordinator writes it last


def manifest_path(checkpoint: str | Path) -> Path:
    """The sidecar manifest of a checkpoint file: 'X.ckpt' -> 'X.ckpt.json'."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(checkpoint.name + MANIFEST_SUFFIX)
