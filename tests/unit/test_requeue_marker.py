"""The executor's reading of interrupted.json: the marker the training writes when it checkpointed on
the requeue signal. Only a marker that belongs to the run that just ended may turn a FAILED end
into a resubmission (policy: checkpointed_for_requeue)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from snakemake_executor_plugin_slurm_gpu.checkpoints import INTERRUPTED_MARKER
from snakemake_executor_plugin_slurm_gpu import contract
from snakemake_executor_plugin_slurm_gpu.paths import StepPaths


@pytest.fixture
def paths(tmp_path: Path) -> StepPaths:
    step = StepPaths.of(tmp_path / "wf", "train", {"model": "a"}, checkpoint_root=tmp_path / "ckpt")
    step.checkpoint_dir.mkdir(parents=True)
    return step


def checkpointed(paths: StepPaths, job_id: str) -> bool:
    return contract.interrupted_for_requeue(paths.checkpoint_dir, job_id)


def write_marker(paths: StepPaths, text: str) -> None:
    (paths.checkpoint_dir / INTERRUPTED_MARKER).write_text(text)


def test_no_marker(paths: StepPaths) -> None:
    assert not checkpointed(paths, "123")


@pytest.mark.parametrize(
    ("marker", "job_id", "expected"),
    [
        pytest.param({"job_id": "123", "step": 7, "requeued": False}, "123", True, id="this-job"),
        pytest.param({"job_id": "123", "step": 7, "requeued": False}, "456", False, id="another-job"),
        pytest.param({"job_id": None, "step": 7, "requeued": False}, "123", False, id="no-job-id"),
        pytest.param({"step": 7}, "123", False, id="job-id-missing"),
    ],
)
def test_marker_names_the_job(paths: StepPaths, marker: dict[str, object], job_id: str, expected: bool) -> None:
    write_marker(paths, json.dumps(marker))
    assert checkpointed(paths, job_id) is expected


@pytest.mark.parametrize("text", ["", "{", "not json", '{"job_id": "12'])
def test_unreadable_marker_is_no_marker(paths: StepPaths, text: str) -> None:
    write_marker(paths, text)
    assert not checkpointed(paths, "123")


@pytest.mark.parametrize("text", ["null", "[]", "123"])
def test_marker_that_is_not_an_object_is_no_marker(paths: StepPaths, text: str) -> None:
    write_marker(paths, text)
    assert not checkpointed(paths, "123")


def test_marker_of_a_run_that_slurm_requeued_is_stale(paths: StepPaths) -> None:
    write_marker(paths, json.dumps({"job_id": "123", "step": 7, "requeued": True}))
    assert not checkpointed(paths, "123")
