"""workflows/plain-torch on the real cluster: plain torch.distributed training (no Lightning) under both
launchers (one task per GPU with srun; one task per node with torchrun), three sizes of training
step beside CPU-only rules, and resumption after a signalled preemption and after a hard stop.

Each step's batches depend only on the step number, so the same 4-rank world trains bit-identical
weights whichever launcher started it, and however often it was stopped and resumed."""

from __future__ import annotations

import json
import re
import time
from collections import defaultdict
from datetime import datetime
from pathlib import Path

import torch

from conftest import Background, copy_workflow, jobs_from, slurm, snakemake, wait_for

EVENTS = Path(".snakemake/slurm-gpu/events/train")


def workflow(tmp_path: Path) -> Path:
    copy_workflow("train-eval", tmp_path)  # plain-torch shares its prepare/evaluate scripts and model
    return copy_workflow("plain-torch", tmp_path)


def same_weights(a: Path, b: Path, atol: float = 0.0) -> bool:
    """Bit for bit (atol=0), or to within atol."""
    left, right = torch.load(a, weights_only=True), torch.load(b, weights_only=True)
    return left.keys() == right.keys() and all(
        torch.equal(left[k], right[k]) if atol == 0 else torch.allclose(left[k], right[k], rtol=0, atol=atol)
        for k in left)


def events(workdir: Path, model: str) -> list[dict]:
    path = workdir / EVENTS / f"model={model}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def gpu_peaks(rows: list[dict[str, str]]) -> dict[str, int]:
    """The most GPUs allocated at once on each node, from sacct's allocations."""
    changes: dict[str, list[tuple[float, int]]] = defaultdict(list)
    for row in rows:
        gpus = int(re.search(r"gres/gpu=(\d+)", row["tres"]).group(1)) if "gres/gpu=" in row["tres"] else 0
        if not gpus or row["start"] in ("", "Unknown", "None"):
            continue
        nodes = slurm("scontrol", "show", "hostnames", row["nodes"]).split()
        start = datetime.fromisoformat(row["start"]).timestamp()
        end = datetime.fromisoformat(row["end"]).timestamp() if row["end"] not in ("", "Unknown") else time.time()
        for node in nodes:  # the allocation's GPUs are spread evenly (gpus-per-node)
            changes[node] += [(start, gpus // len(nodes)), (end, -(gpus // len(nodes)))]
    peaks = {}
    for node, points in changes.items():
        level = peak = 0
        for _, delta in sorted(points, key=lambda p: (p[0], p[1])):  # releases before grants at a tie
            level += delta
            peak = max(peak, level)
        peaks[node] = peak
    return peaks


def test_the_mixed_pipeline_trains_three_sizes_under_both_launchers_without_oversubscribing_gpus(cluster,
                                                                                                    tmp_path):
    since = time.strftime("%Y-%m-%dT%H:%M:%S")
    workdir = workflow(tmp_path)
    run = snakemake(workdir, timeout_s=900)
    assert run.returncode == 0, run.output
    summary = json.loads((workdir / "results/summary.json").read_text())
    assert sorted(summary["models"]) == ["elastic", "small", "wide"]
    assert all(m["accuracy"] > 0.85 for m in summary["models"].values()), summary
    assert summary["data"]["train"]["n"] + summary["data"]["test"]["n"] == 1797
    # the same 4-rank world, started by srun (4 tasks) and by torchrun (2 tasks x 2 processes)
    for model, launcher, ranks in (("small", "srun", 1), ("wide", "srun", 4), ("elastic", "torchrun", 4)):
        log = (workdir / f"results/{model}/train.log").read_text()
        joined = re.findall(r"rank_joined rank=(\d+) world_size=(\d+) host=(\S+) launcher=(\S+)", log)
        assert sorted(int(r) for r, *_ in joined) == list(range(ranks)), log
        assert {(w, l) for _, w, _, l in joined} == {(str(ranks), launcher)}
        if ranks == 4:
            assert sorted(h for *_, h, _ in joined) == ["n1", "n1", "n2", "n2"]
    assert same_weights(workdir / "results/wide/model.pt", workdir / "results/elastic/model.pt")
    rows = [dict(zip(("id", "name", "start", "end", "nodes", "tres"), line.split("|")))
            for line in slurm("sacct", "-X", "--noheader", "--parsable2", f"--starttime={since}",
                              "--format=JobID,JobName,Start,End,NodeList,AllocTRES").splitlines()]
    ours = {r["id"] for r in jobs_from(workdir, since)}
    rows = [r for r in rows if r["id"] in ours]
    assert sorted(r["name"] for r in rows if r["name"] == "sg-train") == ["sg-train"] * 3  # one job per step
    peaks = gpu_peaks(rows)
    assert peaks and all(peak <= 2 for peak in peaks.values()), peaks  # 2 GPUs per node, never more in use


def _checkpoint_after(workdir: Path, model: str, restart_seen: int, after_step: int) -> int | None:
    """A periodic checkpoint later than after_step, written after `restart_seen` resumes."""
    found = events(workdir, model)
    if sum(e["event"] == "resumed" for e in found) < restart_seen:
        return None
    steps = [e["global_step"] for e in found if e["event"] == "checkpoint" and e.get("why") == "periodic"]
    return next((s for s in reversed(steps) if s > after_step), None)


def _interrupt_twice(workdir: Path, model: str) -> tuple[int, int]:
    """Signal the step like a preemption, then, after it resumed, requeue it without a signal.
    Returns (the step it checkpointed at the signal, its newest periodic checkpoint at the hard stop)."""
    first = wait_for(lambda: _checkpoint_after(workdir, model, 0, 0), 240, f"{model}: a first periodic checkpoint")
    job = sorted(p.stem for p in (workdir / f".snakemake/slurm-gpu/logs/train/model={model}").glob("*.log"))[-1]
    slurm("scancel", "--signal=USR1", job)  # what the tasks get at preemption (preempt_send_user_signal)
    signal_step = wait_for(lambda: next((e["global_step"] for e in events(workdir, model)
                                      if e["event"] == "checkpoint" and e.get("why") == "signal"), None),
                        120, f"{model}: the checkpoint at the signal")
    periodic = wait_for(lambda: _checkpoint_after(workdir, model, 1, signal_step), 240,
                     f"{model}: a periodic checkpoint after the resume")
    assert first < signal_step < periodic
    slurm("scontrol", "requeue", job)  # SIGTERM, then SIGKILL: no checkpoint at the stop
    return signal_step, periodic


def test_plain_torch_and_torchrun_steps_resume_after_a_signal_and_after_a_hard_stop(cluster, tmp_path):
    workdir = workflow(tmp_path)
    stops = {}
    # one after the other: both take all 4 GPUs, and while one waits to be requeued the other would
    # take them and run through uninterrupted
    for model in ("wide", "elastic"):
        run = Background(workdir, f"results/{model}/model.pt", "--config", "max_steps=300",
                         env={"TRAIN_STEP_SLEEP_S": "0.05"})
        try:
            stops[model] = _interrupt_twice(workdir, model)
            result = run.wait(timeout_s=600)
        finally:
            run.kill()
        assert result.returncode == 0, result.output
    for model, (signal_step, periodic) in stops.items():
        found = events(workdir, model)
        resumed = [(e["from_step"], e["restart"]) for e in found if e["event"] == "resumed"]
        # from the exact step of the signal; after the hard stop from the newest periodic checkpoint
        # (a later one may have been written before the SIGTERM landed)
        assert resumed[0] == (signal_step, 1), found
        assert resumed[1][1] == 2 and resumed[1][0] >= periodic, found
        assert [e["global_step"] for e in found if e["event"] == "training_done"] == [300]
        jobs = {e["job_id"] for e in found if e["event"] == "started"}
        assert len(jobs) == 1, jobs  # requeued in place both times: one Slurm job
        log = (workdir / f"results/{model}/train.log").read_text()
        assert "training_done global_step=300" in log
    # stopped at different steps, resumed twice each: still what one uninterrupted 4-rank run
    # computes, to float rounding (a restarted DDP process starts with its initial gradient-bucket
    # layout, so the first steps after a resume may sum in another order: ~1e-7 here). A momentum
    # buffer lost at one resume puts the weights 0.09 apart, a repeated or skipped step as much.
    assert same_weights(workdir / "results/wide/model.pt", workdir / "results/elastic/model.pt", atol=1e-5)
