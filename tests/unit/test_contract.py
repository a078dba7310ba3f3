"""contract.py: what the executor and the job side agree on. An event kind or reason outside it is
refused where it is written; the interrupted marker reads back as written; the executor's question
"did this job stop for a requeue Slurm has not done?" has the answers it always had; and the modules
that still hold a name of their own hold the contract's."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from snakemake_executor_plugin_slurm_gpu import contract, events, heartbeat, private
from snakemake_executor_plugin_slurm_gpu import checkpoints
from snakemake_executor_plugin_slurm_gpu.contract import (CheckpointReason, Env, EventKind, StopReason,
                                                          interrupted_for_requeue, read_interrupted_marker,
                                                          write_interrupted_marker)
from snakemake_executor_plugin_slurm_gpu.runtime import requeue, signals


# ---------------------------------------------------------------- events

def test_an_unknown_event_kind_is_refused_by_record_and_emit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="unknown event kind 'checkpointed'"):
        events.record("checkpointed", "train/all", "rank")
    # inside a job or not: a typo must fail the writer's own tests, not vanish outside Slurm
    monkeypatch.delenv(events.ENV_VAR, raising=False)
    with pytest.raises(ValueError, match="unknown event kind"):
        events.emit("checkpointed", global_step=1)
    monkeypatch.setenv(events.ENV_VAR, str(tmp_path / "log.jsonl"))
    with pytest.raises(ValueError, match="unknown event kind"):
        events.emit("checkpointed", global_step=1)
    assert not (tmp_path / "log.jsonl").exists()


@pytest.mark.parametrize(("kind", "why"), [("checkpoint", "on a whim"), ("interrupted", "requeue")])
def test_a_reason_outside_its_set_is_refused(kind: str, why: str) -> None:
    with pytest.raises(ValueError, match=f"event {kind}: why='{why}' is not one of"):
        events.record(kind, "train/all", "rank", global_step=1, why=why)


def test_known_kinds_and_reasons_are_written_as_plain_strings(tmp_path: Path) -> None:
    log = tmp_path / "log.jsonl"
    events.append(log, events.record(EventKind.CHECKPOINT, "train/all", "rank", "7", why=CheckpointReason.SIGNAL))
    events.append(log, events.record("interrupted", "train/all", "rank", "7", why=StopReason.REQUEUE_SIGNAL))
    assert [(e["event"], e["why"]) for e in events.read(log)] == [("checkpoint", "signal"),
                                                                   ("interrupted", "requeue signal")]
    assert log.read_text().count('"event": "checkpoint"') == 1


def test_every_event_kind_is_documented_with_its_fields() -> None:
    assert set(events.EVENTS) == set(EventKind)


# ---------------------------------------------------------------- the interrupted marker

def test_the_marker_reads_back_as_written(tmp_path: Path) -> None:
    path = write_interrupted_marker(tmp_path, job_id="123", global_step=7, signals=["SIGUSR1"], requeued=False)
    assert path == tmp_path / contract.INTERRUPTED_MARKER
    marker = read_interrupted_marker(tmp_path)
    assert marker is not None
    assert list(marker) == ["job_id", "step", "signals", "at", "requeued"]  # the order it always had
    assert (marker["job_id"], marker["step"], marker["signals"], marker["requeued"]) == ("123", 7, ["SIGUSR1"], False)
    assert [p.name for p in tmp_path.iterdir()] == [contract.INTERRUPTED_MARKER]  # no temporary file left
    assert path.stat().st_mode & 0o777 == 0o600
    contract.clear_interrupted_marker(tmp_path)
    contract.clear_interrupted_marker(tmp_path)  # twice is fine
    assert read_interrupted_marker(tmp_path) is None


@pytest.mark.parametrize("text", ["", "{", "not json", "null", "[]", "123"])
def test_a_marker_that_is_not_a_json_object_is_no_marker(tmp_path: Path, text: str) -> None:
    (tmp_path / contract.INTERRUPTED_MARKER).write_text(text)
    assert read_interrupted_marker(tmp_path) is None
    assert not interrupted_for_requeue(tmp_path, "123")


@pytest.mark.parametrize(
    ("marker", "job_id", "expected"),
    [
        pytest.param({"job_id": "123", "step": 7, "requeued": False}, "123", True, id="this-job"),
        pytest.param({"job_id": 123, "step": 7, "requeued": False}, "123", True, id="job-id-as-number"),
        pytest.param({"job_id": "123", "step": 7}, "123", True, id="requeued-missing"),
        pytest.param({"job_id": "123", "step": 7, "requeued": False}, "456", False, id="another-job"),
        pytest.param({"job_id": None, "step": 7, "requeued": False}, "123", False, id="no-job-id"),
        pytest.param({"step": 7}, "123", False, id="job-id-missing"),
        pytest.param({"job_id": "123", "step": 7, "requeued": True}, "123", False, id="slurm-requeued-it"),
    ],
)
def test_interrupted_for_requeue(tmp_path: Path, marker: dict[str, object], job_id: str, expected: bool) -> None:
    (tmp_path / contract.INTERRUPTED_MARKER).write_text(json.dumps(marker))
    assert interrupted_for_requeue(tmp_path, job_id) is expected


def test_no_marker_no_directory(tmp_path: Path) -> None:
    assert not interrupted_for_requeue(tmp_path, "123")
    assert not interrupted_for_requeue(tmp_path / "missing", "123")


def test_the_job_sides_marker_is_what_the_executor_asks_about(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    monkeypatch.setattr(signals.received(), "names", ["SIGTERM"])
    requeue.note_stop(tmp_path, 5)
    assert interrupted_for_requeue(tmp_path, "77") and not interrupted_for_requeue(tmp_path, "78")
    marker = read_interrupted_marker(tmp_path)
    assert marker is not None and (marker["step"], marker["signals"]) == (5, ["SIGTERM"])


# ---------------------------------------------------------------- names

def test_checkpoint_names_sort_by_step_and_read_back() -> None:
    assert contract.checkpoint_name(1200) == "step-000001200.ckpt"
    assert contract.checkpoint_step("step-000001200.ckpt") == 1200
    assert contract.checkpoint_step("hpc_ckpt_3.ckpt") is None
    assert contract.checkpoint_step("step-000001200.ckpt.json") is None
    names = [contract.checkpoint_name(s) for s in (9, 10, 100)]
    assert sorted(reversed(names)) == names


def test_modules_with_names_of_their_own_hold_the_contracts() -> None:
    # until they import them from contract.py: a disagreement here is a marker or file nobody finds
    assert (checkpoints.CHECKPOINT_SUFFIX, checkpoints.MANIFEST_SUFFIX, checkpoints.TEMP_PREFIX,
            checkpoints.INTERRUPTED_MARKER, checkpoints.PROVENANCE_FILE) == \
        (contract.CHECKPOINT_SUFFIX, contract.MANIFEST_SUFFIX, contract.TEMP_PREFIX, contract.INTERRUPTED_MARKER,
         contract.PROVENANCE_FILE)
    assert checkpoints.manifest_path("d/" + contract.checkpoint_name(3)).name == "step-000000003.ckpt.json"
    assert (heartbeat.DIR_ENV, heartbeat.INTERVAL_ENV) == (Env.HEARTBEAT_DIR, Env.HEARTBEAT_S)
    assert (events.ENV_VAR, signals.REQUEUE_SIGNAL_ENV, signals.CHECKPOINT_ON_TERM_ENV) == \
        (Env.EVENT_LOG, Env.REQUEUE_SIGNAL, Env.CHECKPOINT_ON_TERM)
    assert requeue.INTERRUPTED_EXIT_CODE == contract.INTERRUPTED_EXIT_CODE == 143
    assert private.CHECKPOINT_SUFFIX is contract.CHECKPOINT_SUFFIX


def test_every_variable_a_batch_script_names_is_in_the_contract() -> None:
    golden = Path(__file__).resolve().parents[1] / "golden"
    named = {name for script in golden.glob("*.sh") for name in re.findall(r"SLURM_GPU_[A-Z_]+", script.read_text())}
    assert named and named <= set(Env)


def test_importing_the_contract_imports_nothing_else_of_the_package() -> None:
    code = ("import sys; import snakemake_executor_plugin_slurm_gpu.contract; "
            "print(sorted(m for m in sys.modules if m.startswith('snakemake_executor_plugin_slurm_gpu.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60).stdout
    assert out.split() == ["['snakemake_executor_plugin_slurm_gpu._version',",
                           "'snakemake_executor_plugin_slurm_gpu.contract']"]
