"""What slurm-gpu removes of its own files: a successful step's log and scripts, and old files."""

from __future__ import annotations

import os
import time
from pathlib import Path

from snakemake_executor_plugin_slurm_gpu.housekeeping import remove_older_than, remove_step_files
from snakemake_executor_plugin_slurm_gpu.paths import StepPaths


def _touch(path: Path, age_s: float = 0.0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("x")
    past = time.time() - age_s
    os.utime(path, (past, past))
    return path


def test_a_successful_step_keeps_only_its_event_log(tmp_path: Path) -> None:
    paths = StepPaths.of(tmp_path, "train", {"model": "a"})
    other = StepPaths.of(tmp_path, "train", {"model": "b"})
    for p in (paths, other):
        _touch(p.log_file("7"))
        _touch(p.script_dir / "attempt1.sh")
        _touch(p.event_log)
    remove_step_files(paths)
    assert not paths.log_dir.exists() and not paths.script_dir.exists()
    assert paths.event_log.exists()
    assert other.log_file("7").exists() and (other.script_dir / "attempt1.sh").exists()


def test_a_custom_log_directory_is_cleaned_up_to_its_root(tmp_path: Path) -> None:
    paths = StepPaths.of(tmp_path, "train", {}, log_root=tmp_path / "logs")
    _touch(paths.log_file("7"))
    remove_step_files(paths)
    assert (tmp_path / "logs").is_dir() and not (tmp_path / "logs" / "train").exists()


def test_files_older_than_the_limit_go_and_emptied_directories_with_them(tmp_path: Path) -> None:
    base = tmp_path / "events"
    old = _touch(base / "gone" / "old.jsonl", age_s=11 * 86400)
    fresh = _touch(base / "kept" / "new.jsonl", age_s=9 * 86400)
    (tmp_path / "outside.txt").write_text("x")
    link = base / "link"
    link.symlink_to(tmp_path / "outside.txt")
    os.utime(link, (0, 0), follow_symlinks=False)
    assert remove_older_than([base, tmp_path / "missing"], 10 * 86400) == 2  # old.jsonl, and the link itself
    assert not old.exists() and not (base / "gone").exists()
    assert fresh.exists() and (tmp_path / "outside.txt").exists() and base.is_dir()
