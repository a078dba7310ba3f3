"""What `slurm-gpu status` and `slurm-gpu timeline` make of a step's event log: runs, waits and markers
behind the picture, the summary (state, restarts, what preemptions cost), the picture files, and
survival of logs that are torn, foreign or written by a newer version.

The fixture workflow (tests/data/events, times in seconds after T0):
  prepare/all             CPU, completed
  train/model=resnet      job 5002 requeued in place twice: SIGUSR1 at step 1,150 (checkpointed, resumed
                          from 1,150), then SIGTERM at step 2,140 (last checkpoint 2,000), completed
  train/model=vit         job 5003 lost a node after its checkpoint at step 750 (no signal); the executor
                          resubmitted it as job 5007, which resumed from 750 and completed
  evaluate/model=resnet, evaluate/model=vit: CPU, completed; report/all: CPU, still running
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from snakemake_executor_plugin_slurm_gpu import events
from snakemake_executor_plugin_slurm_gpu.timeline import (
    MARKER_KINDS,
    History,
    RUN_ENDS,
    STATES,
    Marker,
    RunSpan,
    StepSummary,
    TimelineModel,
    Wait,
    build_timeline,
    format_duration,
    format_steps_lost,
    render,
    summarize,
)

EVENTS_DATA = Path(__file__).resolve().parents[1] / "data" / "events"
T0 = 1767261600.0          # the fixture's first record: prepare/all submitted
NOW = T0 + 4500.0          # report/all has been running for ~50 s
STEP_ORDER = ["prepare/all", "train/model=resnet", "train/model=vit", "evaluate/model=resnet",
              "evaluate/model=vit", "report/all"]


def fixture_steps() -> dict[str, list[dict[str, Any]]]:
    return {f"{p.parent.name}/{p.stem}": events.read(p) for p in sorted(EVENTS_DATA.glob("*/*.jsonl"))}


def fixture_model() -> TimelineModel:
    return build_timeline(fixture_steps(), now=NOW)


def bar(model: TimelineModel, label: str):  # type: ignore[no-untyped-def]
    return next(b for b in model.bars if b.label == label)


def ev(t: float, event: str, job: str | None = "1", **fields: Any) -> dict[str, Any]:
    """One record `t` seconds after T0, for hand-written logs."""
    out: dict[str, Any] = {"ts": T0 + t, "event": event, "step": "train/all", "source": "x"}
    if job is not None:
        out["job_id"] = job
    out.update(fields)
    return out


# ------------------------------------------------------------------ the fixture's picture data
def test_the_fixture_has_one_bar_per_step_in_the_order_they_were_submitted() -> None:
    model = fixture_model()
    assert model.origin == T0
    assert model.now == 4500.0
    assert [b.label for b in model.bars] == STEP_ORDER
    assert [b.state for b in model.bars] == ["completed"] * 5 + ["running"]


def test_a_step_requeued_twice_in_place_is_three_runs_of_one_job_with_the_queue_waits_between() -> None:
    resnet = bar(fixture_model(), "train/model=resnet")
    assert (resnet.start, resnet.end) == (150.2, 4070.3)
    assert resnet.runs == [
        RunSpan(300.0, 1505.0, "5002", 0, "n[1-2]", "signalled", first_step=0, last_step=1150),
        # stopped by SIGTERM: no checkpoint at the stop, so a hard stop
        RunSpan(1700.0, 2790.0, "5002", 1, "n[3-4]", "hard-stop", first_step=1150, last_step=2140),
        RunSpan(3000.0, 4070.3, "5002", 2, "n[1-2]", "completed", first_step=2000, last_step=3000),
    ]
    # the first wait is the initial queueing, the others are what the two preemptions cost in the queue
    assert resnet.waits == [Wait(150.2, 300.0, "Resources"), Wait(1505.0, 1700.0, "BeginTime"),
                            Wait(2790.0, 3000.0, "Priority")]


def test_the_signal_the_checkpoint_it_forced_the_requeue_and_both_resumes_are_marked_where_logged() -> None:
    resnet = bar(fixture_model(), "train/model=resnet")
    not_checkpoints = [m for m in resnet.markers if m.kind != "checkpoint"]
    assert not_checkpoints == [
        Marker("signal", 1500.0, "SIGUSR1 at step 1,150"),
        Marker("requeue", 1504.0, "requeue at step 1,150"),
        Marker("resumed", 1712.0, "from step 1,150"),
        Marker("resumed", 3012.0, "from step 2,000"),
    ]
    checkpoints = [m for m in resnet.markers if m.kind == "checkpoint"]
    assert len(checkpoints) == 13  # 4 periodic + 1 at the signal, 4 periodic, 4 periodic
    assert checkpoints[4] == Marker("checkpoint", 1503.0, "step 1,150 (signal)")
    assert checkpoints[-1] == Marker("checkpoint", 4052.0, "step 3,000 (periodic)")


def test_a_hard_stop_ends_at_the_resubmission_and_the_new_job_waits_until_it_starts() -> None:
    vit = bar(fixture_model(), "train/model=vit")
    assert vit.runs == [
        RunSpan(400.0, 1390.0, "5003", 0, "n[5-6]", "hard-stop", first_step=0, last_step=750),
        RunSpan(1900.0, 4275.6, "5007", 0, "n[7-8]", "completed", first_step=750, last_step=3000),
    ]
    # the new job's reason changed while it waited: the last one seen is the one shown
    assert vit.waits == [Wait(160.4, 400.0, "Resources"), Wait(1390.0, 1900.0, "Resources")]
    assert [(m.kind, m.ts, m.label) for m in vit.markers if m.kind != "checkpoint"] == [
        ("resubmitted", 1390.0, "job 5003 -> 5007 (preemption)"),
        ("resumed", 1911.0, "from step 750"),
    ]
    assert not any(m.kind == "signal" for m in vit.markers)


def test_cpu_steps_are_one_run_with_no_markers_and_a_running_one_ends_at_now() -> None:
    model = fixture_model()
    prepare = bar(model, "prepare/all")
    assert prepare.runs == [RunSpan(20.4, 141.8, "5001", 0, "c1", "completed")]
    assert prepare.waits == [Wait(0.0, 20.4, "Priority")]
    assert prepare.markers == []
    report = bar(model, "report/all")
    assert report.runs == [RunSpan(4450.1, 4500.0, "5012", 0, "c2", "running")]
    assert report.end == 4500.0


def test_every_marker_and_run_end_is_one_of_the_documented_kinds() -> None:
    model = fixture_model()
    assert {m.kind for b in model.bars for m in b.markers} <= set(MARKER_KINDS)
    assert {r.ended for b in model.bars for r in b.runs} == {"completed", "signalled", "hard-stop", "running"}


# ------------------------------------------------------------------ the fixture's summaries
def test_the_requeued_step_lost_140_steps_and_617_seconds_to_its_two_preemptions() -> None:
    s = summarize(fixture_steps()["train/model=resnet"], now=NOW)
    assert (s.step, s.state, s.job_ids, s.job_id, s.nodes) == ("train/model=resnet", "completed", ["5002"], "5002",
                                                               "n[1-2]")
    assert (s.runs, s.restarts, s.resubmissions, s.preemptions) == (3, 2, 0, 2)
    assert s.last_checkpoint_step == 3000
    # 1st: interrupted at 1,150 and resumed from 1,150; 2nd: SIGTERM at 2,140, resumed from 2,000
    assert (s.steps_lost, s.steps_lost_exact) == (140, True)
    # queue: (1700 - 1505) + (3000 - 2790); work since the last checkpoint: (1505 - 1503) + (2790 - 2580)
    assert (s.seconds_waiting, s.seconds_work_lost, s.seconds_lost) == (405.0, 212.0, 617.0)
    assert (s.first_submitted, s.end) == (T0 + 150.2, T0 + 4070.3)


def test_the_resubmitted_step_lost_720_seconds_and_its_steps_lost_is_only_a_lower_bound() -> None:
    s = summarize(fixture_steps()["train/model=vit"], now=NOW)
    assert (s.state, s.job_ids, s.job_id, s.nodes) == ("completed", ["5003", "5007"], "5007", "n[7-8]")
    assert (s.runs, s.restarts, s.resubmissions, s.preemptions) == (2, 1, 1, 1)
    # nothing after the checkpoint at 750 was recorded before the node died: at least 0 steps redone
    assert (s.steps_lost, s.steps_lost_exact) == (0, False)
    assert format_steps_lost(s) == ">=0"
    # queue: 1900 - 1390; work since the checkpoint at 1180 until the executor learned of the stop
    assert (s.seconds_waiting, s.seconds_work_lost, s.seconds_lost) == (510.0, 210.0, 720.0)


def test_steps_that_never_trained_report_no_steps_lost_rather_than_zero() -> None:
    s = summarize(fixture_steps()["evaluate/model=vit"], now=NOW)
    assert (s.state, s.runs, s.restarts, s.preemptions, s.seconds_lost) == ("completed", 1, 0, 0, 0.0)
    assert s.steps_lost is None and s.last_checkpoint_step is None
    assert format_steps_lost(s) == "-"


def test_the_step_name_comes_from_the_records_unless_given() -> None:
    log = fixture_steps()["report/all"]
    assert summarize(log).step == "report/all"
    assert summarize(log, step="other/x").step == "other/x"
    assert summarize(log).state == "running" and summarize(log).end is None


# ------------------------------------------------------------------ states and edge cases, by hand
def test_a_step_only_submitted_is_pending_with_slurms_reason() -> None:
    s = summarize([ev(0, "submitted", attempt=1), ev(3, "pending", reason="Priority")])
    assert (s.state, s.pending_reason, s.runs, s.first_submitted) == ("pending", "Priority", 0, T0)


def test_no_records_at_all_is_unknown() -> None:
    assert summarize([]).state == "unknown"
    assert build_timeline({}, now=None).bars == []


def test_a_signalled_stop_is_interrupted_until_the_job_is_seen_queued_again_and_waiting_counts_until_now() -> None:
    log = [ev(0, "submitted"), ev(10, "started", nodes="n1", restart=0),
           ev(100, "checkpoint", global_step=50), ev(150, "interrupted", global_step=60, why="requeue signal")]
    stopped = summarize(log, now=T0 + 200)
    assert stopped.state == "interrupted"
    assert stopped.seconds_waiting == 50.0 and stopped.seconds_work_lost == 50.0
    assert stopped.steps_lost == 0 and not stopped.steps_lost_exact  # the resume is not known yet
    queued = summarize(log + [ev(160, "pending", reason="BeginTime")], now=T0 + 300)
    assert (queued.state, queued.pending_reason, queued.seconds_waiting) == ("pending", "BeginTime", 150.0)
    model = build_timeline({"train/all": log + [ev(160, "pending", reason="BeginTime")]}, now=T0 + 300)
    assert model.bars[0].waits[-1] == Wait(150.0, 300.0, "BeginTime")


def test_a_slurm_requeue_after_a_hard_stop_is_dated_by_the_executors_requeued_record_not_the_next_start() -> None:
    log = [ev(0, "submitted"), ev(10, "started", nodes="n[1-2]", restart=0), ev(100, "checkpoint", global_step=100),
           ev(130, "checkpoint", global_step=130), ev(200, "requeued", state="PENDING", restart=0),
           ev(200.01, "pending", reason="BeginTime")]
    waiting = summarize(log, now=T0 + 260)
    assert waiting.state == "pending" and waiting.preemptions == 1
    assert (waiting.seconds_work_lost, waiting.seconds_waiting) == (70.0, 60.0)
    restarted = log + [ev(300, "started", nodes="n[3-4]", restart=1), ev(305, "resumed", from_step=130, restart=1)]
    model = build_timeline({"train/all": restarted}, now=T0 + 400)
    assert [(r.start, r.end, r.ended) for r in model.bars[0].runs] == [(10.0, 200.0, "hard-stop"),
                                                                     (300.0, 400.0, "running")]
    assert summarize(restarted, now=T0 + 400).seconds_lost == 70.0 + 100.0


def test_a_pending_record_never_ends_a_run() -> None:
    # the executor polled squeue just before the start and wrote the reason change just after it; or
    # long after: only `requeued` (or a later start) says the run ended, no time window guesses it
    for late in (0.2, 300.0):
        log = [ev(0, "submitted"), ev(10.0, "started", nodes="c1", restart=0), ev(10 + late, "pending", reason="Resources")]
        s = summarize(log, now=T0 + 500)
        assert (s.state, s.preemptions) == ("running", 0)


def test_a_requeue_the_executor_saw_right_after_a_checkpoint_dates_the_hard_stop() -> None:
    # `scontrol requeue` a second after a checkpoint, seen at the next poll: too soon after the run's
    # last record for a bare `pending` to count, but `requeued` says the job left its nodes
    log = [ev(0, "submitted"), ev(10, "started", nodes="n[1-2]", restart=0), ev(100, "checkpoint", global_step=100),
           ev(102, "requeued", state="PENDING", restart=0), ev(102.01, "pending", reason="JobHeldAdmin"),
           ev(130, "started", nodes="n[1-2]", restart=1)]
    model = build_timeline({"train/all": log}, now=T0 + 200)
    assert [(r.start, r.end, r.ended) for r in model.bars[0].runs] == [(10.0, 102.0, "hard-stop"),
                                                                     (130.0, 200.0, "running")]
    assert model.bars[0].waits == [Wait(0.0, 10.0, ""), Wait(102.0, 130.0, "JobHeldAdmin")]


def test_a_requeue_record_written_just_after_the_jobs_next_start_ends_only_the_run_it_names() -> None:
    # the poll saw the job pending; it started before the executor wrote what it saw
    log = [ev(0, "submitted"), ev(10, "started", nodes="n1", restart=0), ev(100, "checkpoint", global_step=100),
           ev(130.0, "started", nodes="n1", restart=1), ev(130.1, "requeued", state="PENDING", restart=0)]
    runs = build_timeline({"train/all": log}, now=T0 + 200).bars[0].runs
    assert [(r.start, r.end, r.ended) for r in runs] == [(10.0, 130.0, "hard-stop"), (130.0, 200.0, "running")]


def test_a_requeued_record_of_an_older_version_ends_the_jobs_open_run() -> None:
    log = [ev(0, "submitted"), ev(10, "started", nodes="n1", restart=0), ev(100, "requeued", state="PENDING"),
           ev(130, "started", nodes="n1", restart=1)]
    runs = build_timeline({"train/all": log}, now=T0 + 200).bars[0].runs
    assert [(r.start, r.end, r.ended) for r in runs] == [(10.0, 100.0, "hard-stop"), (130.0, 200.0, "running")]


def test_the_jobs_start_logged_before_the_executors_submitted_record_is_not_a_new_job() -> None:
    log = [ev(10.000, "started", nodes="c1", restart=0), ev(10.004, "submitted", attempt=1),
           ev(50, "completed", state="COMPLETED")]
    s = summarize(log)
    assert (s.state, s.runs, s.preemptions, s.resubmissions) == ("completed", 1, 0, 0)


def test_a_watchdog_cancel_ends_the_run_as_failed_and_is_marked() -> None:
    log = [ev(0, "submitted"), ev(10, "started", nodes="n[1-2]", restart=0),
           ev(20, "rank_started", rank=0, node="n1"), ev(70, "watchdog", why="NCCL could not reach n2")]
    model = build_timeline({"train/all": log}, now=T0 + 100)
    assert model.bars[0].runs[0].ended == "failed" and model.bars[0].runs[0].end == 70.0
    assert model.bars[0].markers == [Marker("watchdog", 70.0, "watchdog: NCCL could not reach n2")]
    assert summarize(log).state == "failed" and summarize(log).preemptions == 0


def test_a_failed_verdict_wins_over_the_interruption_before_it() -> None:
    log = [ev(0, "submitted"), ev(10, "started", nodes="n1", restart=0),
           ev(40, "interrupted", global_step=5, why="SIGTERM"), ev(45, "failed", state="FAILED")]
    s = summarize(log)
    assert (s.state, s.end, s.preemptions) == ("failed", T0 + 40, 0)


def test_a_job_cancelled_while_pending_failed_without_a_run() -> None:
    s = summarize([ev(0, "submitted"), ev(30, "failed", state="CANCELLED")])
    assert (s.state, s.runs, s.end) == ("failed", 0, T0 + 30)


def test_a_retry_after_a_failure_is_pending_again() -> None:
    # Snakemake --retries: the executor submits a new job for a step whose job failed
    log = [ev(0, "submitted"), ev(10, "started", nodes="n1", restart=0), ev(40, "failed", state="FAILED"),
           ev(41, "submitted", job="2", attempt=2)]
    s = summarize(log)
    assert (s.state, s.job_ids, s.resubmissions) == ("pending", ["1", "2"], 1)


def test_a_run_after_a_preemption_that_trained_from_scratch_lost_every_step() -> None:
    log = [ev(0, "submitted"), ev(10, "started", nodes="n1", restart=0),
           ev(50, "interrupted", global_step=40, why="requeue signal"),
           ev(60, "started", nodes="n1", restart=1), ev(90, "checkpoint", global_step=10)]
    assert summarize(log).steps_lost == 40


# ------------------------------------------------------------------ the picture
def test_render_writes_a_png_and_an_svg_that_name_every_step(tmp_path: Path) -> None:
    model = fixture_model()
    png = render(model, tmp_path / "t.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    svg = render(model, tmp_path / "t.SVG")  # the suffix decides, whatever its case
    root = ET.parse(svg).getroot()
    assert root.tag.endswith("svg")
    text = " ".join(t for t in root.itertext())
    for step in STEP_ORDER:
        assert step in text
    assert "lost 10m 17s, 140 steps" in text  # what the preemptions cost, under the step's name


def test_render_draws_an_empty_model_and_a_big_one(tmp_path: Path) -> None:
    assert render(build_timeline({}, None), tmp_path / "empty.png").stat().st_size > 0
    many = {f"rule{i}/w={i}": [ev(i * 10, "submitted", job=str(i)), ev(i * 10 + 5, "started", job=str(i),
                                                                          nodes="n1", restart=0)]
            for i in range(40)}
    assert render(build_timeline(many, now=T0 + 1000), tmp_path / "many.png").stat().st_size > 0


def test_render_refuses_a_format_it_does_not_write(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"\.png or \.svg"):
        render(fixture_model(), tmp_path / "t.pdf")
    assert not (tmp_path / "t.pdf").exists()


def test_importing_the_timeline_and_the_cli_does_not_load_matplotlib() -> None:
    # `slurm-gpu status` must work (and start fast) without the [report] extra
    code = ("import sys; import snakemake_executor_plugin_slurm_gpu.timeline, snakemake_executor_plugin_slurm_gpu.cli; "
            "sys.exit('matplotlib' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


@pytest.mark.parametrize(("seconds", "shown"), [(0, "0s"), (59.6, "1m 00s"), (617, "10m 17s"), (3600, "1h 00m"),
                                                (7380, "2h 03m"), (-5, "0s")])
def test_durations_are_shown_at_a_readable_precision(seconds: float, shown: str) -> None:
    assert format_duration(seconds) == shown


# ------------------------------------------------------------------ robustness
def test_a_torn_last_line_and_foreign_lines_are_skipped(tmp_path: Path) -> None:
    log = tmp_path / "all.jsonl"
    good = [ev(0, "submitted"), ev(10, "started", nodes="n1", restart=0)]
    log.write_text("".join(json.dumps(e) + "\n" for e in good) + "not json\n[1, 2]\n"
                   + json.dumps(ev(20, "completed"))[:25])  # the writer was killed mid-line
    s = summarize(events.read(log))
    assert (s.state, s.runs) == ("running", 1)


def test_unknown_events_missing_fields_and_wrong_types_never_crash() -> None:
    nasty: list[Any] = [
        {"event": "submitted"},                                        # no ts before any ts: dropped
        ev(0, "submitted", job=None),
        ev(1, "from_a_newer_version", payload={"x": 1}),
        {"ts": "yesterday", "event": "pending", "job_id": 1, "reason": 7},  # takes the previous ts
        {"ts": float("nan"), "event": "started", "nodes": ["n1"], "restart": "one"},
        ev(5, "started", job=None),
        ev(6, "checkpoint", job=None, global_step="100"),
        ev(7, "signal", job=None, signal=None, global_step=True),
        ev(8, "resumed", job=None, from_step=None),
        ev(9, "interrupted", job=None, global_step=math.inf),
        ev(9.5, "checkpoint", job=None, global_step=10**400),       # valid JSON, no float holds it
        ev(10, "resubmitted", job=None),
        ev(11, "requeue_requested", job=None, requeued="yes"),
        ev(12, "watchdog", job=None, why=None),
        ev(13, "completed", job=None),
        "a string", 42, None, {"ts": 14.0},
    ]
    s = summarize(nasty, now=T0 + 100)
    assert s.state in STATES
    model = build_timeline({"x/y": nasty, "empty/all": []}, now=T0 + 100)
    assert [b.label for b in model.bars] == ["x/y"]
    assert all(r.end >= r.start and r.ended in RUN_ENDS for r in model.bars[0].runs)


RECORD = st.fixed_dictionaries(
    {"ts": st.one_of(st.floats(T0, T0 + 1000, allow_nan=False), st.none(), st.just("x"), st.just(math.nan)),
     "event": st.sampled_from(sorted(events.EVENTS) + ["mystery"])},
    optional={"job_id": st.sampled_from(["1", "2", 3, None]),
              "global_step": st.one_of(st.integers(-5, 500), st.none(), st.text(max_size=2), st.just(10**400)),
              "from_step": st.one_of(st.integers(0, 500), st.none()),
              "restart": st.one_of(st.integers(0, 3), st.text(max_size=2)),
              "nodes": st.one_of(st.text(max_size=5), st.integers()),
              "new_job_id": st.sampled_from(["1", "2", None]),
              "requeued": st.booleans(), "why": st.one_of(st.text(max_size=5), st.none())})


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(RECORD, max_size=30))
def test_any_sequence_of_records_gives_a_consistent_summary_and_timeline(log: list[dict[str, Any]]) -> None:
    s = summarize(log, now=T0 + 2000)
    assert s.state in STATES
    assert s.seconds_lost >= 0 and s.seconds_waiting >= 0 and s.seconds_work_lost >= 0
    assert s.restarts == max(0, s.runs - 1)
    assert s.steps_lost is None or s.steps_lost >= 0
    json.dumps(vars(s))  # what --json prints
    model = build_timeline({"a/b": log}, now=T0 + 2000)
    for b in model.bars:
        assert b.start <= b.end
        assert all(r.start <= r.end and r.ended in RUN_ENDS for r in b.runs)
        assert all(w.start < w.end for w in b.waits)
        assert all(m.kind in MARKER_KINDS for m in b.markers)


def read_in_chunks(log: list[Any], cuts: list[int]) -> History:
    history = History()
    for start, end in zip([0, *sorted(cuts)], [*sorted(cuts), len(log)]):
        history.add(log[start:end])
    return history


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(RECORD, max_size=30), st.lists(st.integers(0, 30), max_size=6))
def test_a_log_read_as_it_grows_gives_the_history_read_at_once(log: list[dict[str, Any]], cuts: list[int]) -> None:
    """The executor follows a live step line by line; `status` reads the whole log later. Same story."""
    at_once = read_in_chunks(log, [])
    assert read_in_chunks(log, [min(c, len(log)) for c in cuts]).step == at_once.step


def test_the_fixture_read_line_by_line_is_the_fixture_read_at_once_even_with_late_dated_lines() -> None:
    for name, log in fixture_steps().items():
        skewed = [*log[:2], {**log[-1], "ts": log[0]["ts"]}, *log[2:]] if len(log) > 2 else log  # another clock
        for records in (log, skewed):
            assert read_in_chunks(records, list(range(len(records)))).step == read_in_chunks(records, []).step, name


def test_a_summary_round_trips_through_json() -> None:
    s = summarize(fixture_steps()["train/model=vit"], now=NOW)
    assert StepSummary(**json.loads(json.dumps(vars(s)))) == s


def test_a_run_slurm_requeued_after_the_step_finished_is_no_stop() -> None:
    # Slurm 24.05+: a job once preempted is requeued at its next end, a successful one too; the batch
    # script of that extra run finds the step finished and runs nothing (already_finished)
    log = [ev(0, "submitted"), ev(1, "started", restart=0, nodes="n1"), ev(20, "signal", global_step=40),
           ev(21, "interrupted", global_step=40, why="requeue signal"), ev(22, "requeue_requested", global_step=40,
                                                                       requeued=True),
           ev(30, "started", restart=1, nodes="n1"), ev(31, "resumed", from_step=40, restart=1),
           ev(60, "training_done", global_step=100), ev(61, "ended", exit_code=0),
           ev(62, "requeued", state="PENDING", restart=1), ev(62.5, "pending", reason="BeginTime"),
           ev(70, "started", restart=2, nodes="n1"), ev(70.1, "already_finished", restart=2),
           ev(70.2, "ended", exit_code=0), ev(71, "completed", state="COMPLETED", exit_code="")]
    (train,) = build_timeline({"train/all": log}).bars
    assert [(r.restart, r.ended) for r in train.runs] == [(0, "signalled"), (1, "completed"), (2, "completed")]
    assert train.runs[1].end == 61.0  # its own end, not the next run's
    s = summarize(log, now=T0 + 100)
    assert (s.state, s.runs, s.preemptions) == ("completed", 3, 1)


def test_a_step_whose_run_the_executor_saw_requeued_is_pending_even_without_a_reason() -> None:
    log = [ev(0, "submitted"), ev(10, "started", nodes="n1", restart=0), ev(100, "requeued", state="PENDING", restart=0)]
    s = summarize(log, now=T0 + 150)
    assert (s.state, s.pending_reason, s.preemptions) == ("pending", None, 1)
