"""The step event log (events.py), the executor's following of it (tracking.py) and the hang
watchdog's verdicts (watchdog.py)."""

from __future__ import annotations

import json
import multiprocessing
import os
import stat
from pathlib import Path

import pytest

from snakemake_executor_plugin_slurm_gpu import events, timeline, watchdog
from snakemake_executor_plugin_slurm_gpu.tracking import StepTracker, describe


# ---------------------------------------------------------------- events.py

def test_append_writes_one_private_json_line_per_event(tmp_path: Path) -> None:
    log = tmp_path / "train.jsonl"
    old = os.umask(0)
    try:
        events.append(log, events.record("submitted", "train/all", "executor", "12", attempt=1))
    finally:
        os.umask(old)
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
    (line,) = log.read_text().splitlines()
    entry = json.loads(line)
    assert (entry["event"], entry["step"], entry["source"], entry["job_id"], entry["attempt"]) == \
        ("submitted", "train/all", "executor", "12", 1)


def test_append_refuses_a_planted_symlink(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    (tmp_path / "log.jsonl").symlink_to(victim)
    with pytest.raises(OSError):
        events.append(tmp_path / "log.jsonl", events.record("submitted", "s", "executor"))
    assert victim.read_text() == "precious\n"


def _writer(path: str, who: int) -> None:
    for i in range(200):
        events.append(path, events.record("checkpoint", "s", "rank", str(who), global_step=i, pad="x" * 300))


def test_concurrent_writers_never_interleave_lines(tmp_path: Path) -> None:
    log = tmp_path / "log.jsonl"
    procs = [multiprocessing.Process(target=_writer, args=(str(log), who)) for who in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    lines = log.read_text().splitlines()
    assert len(lines) == 800
    parsed = [json.loads(line) for line in lines]  # every line whole
    for who in range(4):
        assert [e["global_step"] for e in parsed if e["job_id"] == str(who)] == list(range(200))


def test_read_from_leaves_a_line_being_written_for_the_next_call(tmp_path: Path) -> None:
    log = tmp_path / "log.jsonl"
    log.write_text('{"event": "a"}\nnot json\n{"event": "b"}\n{"event": "c", "ts"')
    got, offset = events.read_from(log, 0)
    assert [e["event"] for e in got] == ["a", "b"]  # the foreign line skipped, the torn one left
    with open(log, "a") as f:
        f.write(': 1}\n')
    more, _ = events.read_from(log, offset)
    assert [e["event"] for e in more] == ["c"]


def test_emit_outside_a_job_does_nothing_and_never_raises(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(events.ENV_VAR, raising=False)
    events.emit("checkpoint", global_step=1)
    monkeypatch.setenv(events.ENV_VAR, str(tmp_path / "missing-dir" / "log.jsonl"))
    events.emit("checkpoint", global_step=1)  # no directory: swallowed, training goes on
    monkeypatch.setenv(events.ENV_VAR, str(tmp_path / "log.jsonl"))
    monkeypatch.setenv("SLURM_GPU_STEP", "train/all")
    monkeypatch.setenv("SLURM_JOB_ID", "99")
    events.emit("checkpoint", global_step=7, why="periodic")
    (entry,) = events.read(tmp_path / "log.jsonl")
    assert (entry["step"], entry["source"], entry["job_id"], entry["global_step"]) == ("train/all", "rank", "99", 7)


# ---------------------------------------------------------------- tracking.py

def job_event(kind: str, job: str = "5", **fields: object) -> dict[str, object]:
    return {"ts": 100.0, "event": kind, "step": "train/all", "source": "rank", "job_id": job, **fields}


@pytest.mark.parametrize(
    ("entry", "line"),
    [
        (job_event("started", nodes="n[1-2]", restart=0), "started on n[1-2]"),
        (job_event("started", nodes="n1", restart=2), "started on n1 (restart 2)"),
        (job_event("resumed", from_step=1200, restart=1), "resumed from step 1,200 (restart 1)"),
        (job_event("signal", signal="USR1", global_step=1200), "got USR1 at step 1,200: checkpointing"),
        (job_event("interrupted", global_step=1200, why="requeue signal"), "preempted at step 1,200 (requeue signal)"),
        (job_event("requeue_requested", requeued=True), "Slurm requeues the job"),
        (job_event("training_done", global_step=3000), "training finished at step 3,000"),
        (job_event("checkpoint", global_step=50, why="periodic"), None),
        (job_event("rank_started", rank=0), None),
    ],
)
def test_console_line_per_transition(entry: dict[str, object], line: str | None) -> None:
    assert describe(entry) == line


def write_events(path: Path, *entries: dict[str, object]) -> None:
    for entry in entries:
        events.append(path, entry)


def test_tracker_reads_only_new_lines_of_its_job_and_says_when_all_ranks_joined(tmp_path: Path) -> None:
    log = tmp_path / "log.jsonl"
    tracker = StepTracker()
    write_events(log, job_event("started", job="4", nodes="n1", restart=0),  # an earlier job of the step
                 job_event("started", nodes="n[1-2]", restart=0),
                 *(job_event("rank_ready", rank=r, restart=0) for r in range(3)))
    assert tracker.read(log, "5", nodes=4, ranks_per_node=1) == ["started on n[1-2]"]
    write_events(log, job_event("rank_ready", rank=3, restart=0), job_event("rank_ready", rank=3, restart=0))
    assert tracker.read(log, "5", nodes=4, ranks_per_node=1) == ["all 4 ranks joined the process group"]
    assert tracker.read(log, "5", nodes=4, ranks_per_node=1) == []
    run = tracker.current_run("5")
    assert run is not None and run.started_ts == 100.0 and run.restart == 0 and len(run.events) == 6


def test_a_new_start_begins_a_new_run(tmp_path: Path) -> None:
    log = tmp_path / "log.jsonl"
    tracker = StepTracker()
    write_events(log, job_event("started", restart=0), job_event("rank_ready", rank=0, restart=0),
                 {**job_event("started", restart=1), "ts": 200.0})
    tracker.read(log, "5", nodes=2, ranks_per_node=1)
    run = tracker.current_run("5")
    assert run is not None and run.started_ts == 200.0 and run.restart == 1
    assert [e["event"] for e in run.events] == ["started"]


def test_the_tracker_reads_runs_as_the_timeline_does(tmp_path: Path) -> None:
    """The executor's `requeued` record ends the run for both; the next start is a new run."""
    log = tmp_path / "log.jsonl"
    tracker = StepTracker()
    write_events(log, job_event("started", nodes="n1", restart=0), job_event("ended", exit_code=143),
                 {**job_event("requeued", restart=0), "source": "executor", "ts": 150.0})
    assert tracker.read(log, "5", nodes=1, ranks_per_node=1) == ["started on n1"]
    assert tracker.ended_at("5") == 100.0
    assert timeline.summarize(events.read(log)).state == "pending"
    write_events(log, {**job_event("started", nodes="n2", restart=1), "ts": 200.0})
    assert tracker.read(log, "5", nodes=1, ranks_per_node=1) == ["started on n2 (restart 1)"]
    run = tracker.current_run("5")
    assert run is not None and (run.started_ts, run.restart) == (200.0, 1) and tracker.ended_at("5") is None
    tracker.forget("5", step_ended=True)
    assert tracker.current_run("5") is None
    assert tracker.read(log, "5", nodes=1, ranks_per_node=1) == []  # the lines already said are not said again


# ---------------------------------------------------------------- watchdog.py

def ranks(kind: str, numbers: range | list[int], **fields: object) -> list[dict[str, object]]:
    return [{"event": kind, "rank": r, "node": f"n{r // 2 + 1}", **fields} for r in numbers]


def test_no_verdict_before_the_timeout_or_when_the_world_formed() -> None:
    started = ranks("rank_started", range(4))
    assert watchdog.check(started, 4, 2, started_ts=0, now=29, timeout_s=30) is None
    formed = started + ranks("rank_ready", range(4))
    assert watchdog.check(formed, 4, 2, started_ts=0, now=1000, timeout_s=30) is None


def test_no_verdict_without_evidence_or_when_turned_off() -> None:
    # a script that does not use the runtime says nothing about its ranks: never cancelled
    assert watchdog.check([], 4, 2, started_ts=0, now=1000, timeout_s=30) is None
    assert watchdog.check(ranks("rank_started", range(4)), 4, 2, 0, 1000, timeout_s=0) is None
    assert watchdog.check(ranks("rank_started", [0]), 1, 1, 0, 1000, timeout_s=30) is None


def test_ranks_that_never_started_are_named_with_their_cause() -> None:
    hang = watchdog.check(ranks("rank_started", [0, 1]), 4, 2, started_ts=0, now=60, timeout_s=30)
    assert hang is not None and hang.missing_ranks == [0, 1, 2, 3] and hang.joined == []
    assert "ranks 2-3 never started" in hang.why and "plain `srun python ...`" in hang.why
    assert "4 of 4 ranks (ranks 0-3) had not joined the process group after 30 s (nodes: n1)" in hang.message(30)


def test_a_node_that_cannot_resolve_the_master_is_named() -> None:
    started = ranks("rank_started", [0, 1], master_addr="n1") + \
        ranks("rank_started", [2, 3], master_addr="bad.invalid", master_error="Name or service not known")
    hang = watchdog.check(started, 4, 2, started_ts=0, now=60, timeout_s=30)
    assert hang is not None
    assert hang.why.startswith("node(s) n2 cannot resolve the master address 'bad.invalid' (Name or service not known)")


def test_all_started_none_joined_points_at_the_scripts_own_world() -> None:
    hang = watchdog.check(ranks("rank_started", range(4)) + ranks("rank_ready", [0]), 4, 2, 0, 60, 30)
    assert hang is not None and hang.joined == [0] and hang.missing_ranks == [1, 2, 3]
    assert "devices must be 2 per node" in hang.why




def test_the_world_of_an_elastic_run_is_the_nodes_it_got(tmp_path: Path) -> None:
    # submitted for 2 nodes x 2 ranks; this run got 1 node: its 2 ranks are the whole world
    log = tmp_path / "train.jsonl"
    tracker = StepTracker()
    events.append(log, events.record("started", "train/all", "job", "5", nodes="n1", num_nodes=1, restart=0))
    for rank in range(2):
        events.append(log, events.record("rank_ready", "train/all", "job", "5", rank=rank))
    assert tracker.read(log, "5", nodes=2, ranks_per_node=2) == [
        "started on n1, 1 of its 2 nodes (min_nodes)",
        "all 2 ranks joined the process group"]
    run = tracker.current_run("5")
    assert run is not None and run.num_nodes == 1 and run.world_size(2, 2) == 2


def test_status_and_the_timeline_say_each_runs_node_count() -> None:
    log = [events.record("submitted", "train/all", "executor", "5", ts=1.0),
           events.record("started", "train/all", "job", "5", nodes="n[1-2]", num_nodes=2, restart=0, ts=2.0),
           events.record("requeued", "train/all", "executor", "5", restart=0, ts=3.0),
           events.record("started", "train/all", "job", "5", nodes="n1", num_nodes=1, restart=1, ts=4.0)]
    summary = timeline.summarize(log, now=5.0)
    assert summary.node_counts == [2, 1]
    from snakemake_executor_plugin_slurm_gpu.cli import status_row
    assert status_row(summary)[3:5] == ("n1", "2,1")
    runs = timeline.build_timeline({"train/all": log}, now=5.0).bars[0].runs
    assert [(r.nodes, r.num_nodes) for r in runs] == [("n[1-2]", 2), ("n1", 1)]
