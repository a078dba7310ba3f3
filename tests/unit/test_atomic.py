"""atomic.py: a write is complete or absent, and a failed one leaves no temporary file behind."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from snakemake_executor_plugin_slurm_gpu.atomic import atomic_output, atomic_write_bytes, atomic_write_text


@pytest.mark.parametrize("fsync", [True, False])
def test_a_failing_write_leaves_no_file_and_no_temporary(tmp_path: Path, fsync: bool) -> None:
    target = tmp_path / "record.json"
    with pytest.raises(OSError, match="disk full"):
        with atomic_output(target, fsync=fsync) as temporary:
            temporary.write_bytes(b"half")
            raise OSError("disk full")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("fsync", [True, False])
def test_the_result_is_complete_and_private(tmp_path: Path, fsync: bool) -> None:
    target = tmp_path / "record.json"
    target.write_text("old")
    payload = "x" * 3_000_000 + "end"
    atomic_write_text(target, payload, fsync=fsync)
    assert target.read_text() == payload
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["record.json"]


def test_bytes_replace_what_was_there(tmp_path: Path) -> None:
    target = tmp_path / "a.bin"
    atomic_write_bytes(target, b"first")
    atomic_write_bytes(target, b"second")
    assert target.read_bytes() == b"second"
    assert [p.name for p in tmp_path.iterdir()] == ["a.bin"]
