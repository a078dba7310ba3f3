"""What a user sees of a training step, on the real cluster through `snakemake --executor slurm-gpu`:
the step's event log (executor, batch script and ranks writing into one file), the console lines of
each transition, the status table and timeline picture built from the log, the hang watchdog, and
explain printing exactly the script that is then submitted."""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

from conftest import VENV_BIN, Background, copy_workflow, runs_of, slurm, snakemake, write_workflow
from test_resume import running_train_job, train_jobs

from snakemake_executor_plugin_slurm_gpu import events, timeline

EVENT_LOG = Path(".snakemake/slurm-gpu/events/train/all.jsonl")


def subsequence_positions(kinds: list[str], wanted: list[str]) -> list[int]:
    """Where each of `wanted` occurs in `kinds`, in order (a wanted kind may skip others)."""
    positions, i = [], 0
    for kind in wanted:
        while i < len(kinds) and kinds[i] != kind:
            i += 1
        assert i < len(kinds), f"{kind!r} missing after {wanted[:len(positions)]} in {kinds}"
        positions.append(i)
        i += 1
    return positions


def queue_sightings(workdir: Path) -> list[dict]:
    """The executor's records of the training job back in the queue."""
    return [e for e in events.read(workdir / EVENT_LOG) if e["event"] == "requeued" and e["source"] == "executor"]


def test_event_log_console_status_and_timeline_of_a_signalled_preemption_and_a_hard_stop(cluster, tmp_path):
    workdir = copy_workflow("train-eval", tmp_path)
    bg = Background(workdir, "--config", "max_steps=400", env={"TRAIN_STEP_SLEEP_S": "0.1"})
    try:
        job = running_train_job(workdir, min_checkpoint_step=50)
        # 1. signalled preemption: the urgent partition needs every CPU, Slurm signals and requeues
        slurm("sbatch", "--partition=urgent", "--nodes=2", "--ntasks-per-node=4", "--job-name=urgent",
              "--output=/dev/null", "--wrap=sleep 5")

        def resumed_once():
            return [e for e in events.read(workdir / EVENT_LOG) if e["event"] == "resumed"]
        deadline = time.monotonic() + 180
        while not resumed_once() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert resumed_once(), "training did not resume after the preemption"
        first_resume = resumed_once()[0]["from_step"]
        running_train_job(workdir, min_checkpoint_step=first_resume + 50)
        # 2. hard stop: requeued without a signal, so no checkpoint at the stop. Only the executor's
        # poll can date a hard stop (nothing in the job writes at a SIGTERM), and Slurm may start the
        # job again within one poll interval; an admin hold keeps it queued until the executor saw it.
        seen_before = len(queue_sightings(workdir))
        slurm("scontrol", "requeue", job)
        slurm("scontrol", "hold", job)
        deadline = time.monotonic() + 60
        while len(queue_sightings(workdir)) == seen_before and time.monotonic() < deadline:
            time.sleep(0.5)
        slurm("scontrol", "release", job)
        assert len(queue_sightings(workdir)) > seen_before, "the executor never saw the job queued again"
        run = bg.wait()
    finally:
        bg.kill()
    assert run.returncode == 0, run.output
    assert train_jobs(workdir) == [job]

    log = events.read(workdir / EVENT_LOG)
    train = [e for e in log if e["step"] == "train/all"]
    assert {e.get("job_id") for e in train} == {job}
    kinds = [e["event"] for e in train]
    subsequence_positions(kinds, [
        "submitted", "started", "rank_started", "rank_ready", "checkpoint",          # first run
        "signal", "checkpoint", "interrupted", "requeue_requested",                  # the preemption
        "started", "resumed", "checkpoint",                                          # restart 1
        "started", "resumed", "training_done", "completed"])                         # the hard stop
    starts = [e for e in train if e["event"] == "started"]
    assert runs_of(train) == [0, 1, 2]
    signal = next(e for e in train if e["event"] == "signal")
    resumes = [e for e in train if e["event"] == "resumed"]
    assert resumes[0]["from_step"] == signal["global_step"]           # nothing lost to the signalled stop
    assert resumes[1]["from_step"] % 50 == 0                          # a periodic checkpoint after the hard one
    ranks = {(e["rank"], e["restart"]) for e in train if e["event"] == "rank_ready"}
    assert ranks == {(r, k) for r in range(4) for k in range(3)}      # all four ranks joined every run
    # every step has its log, ending in the executor's verdict
    for rule in ("prepare", "evaluate", "report"):
        kinds_of = [e["event"] for e in events.read(workdir / f".snakemake/slurm-gpu/events/{rule}/all.jsonl")]
        assert kinds_of[0] == "submitted" and kinds_of[-1] == "completed" and "started" in kinds_of, kinds_of

    # one console line per transition
    step_of = rf"slurm-gpu: step train/all, Slurm job {job}: "
    assert re.search(step_of + rf"preempted at step {signal['global_step']:,} \(requeue signal\)", run.output)
    assert re.search(step_of + rf"resumed from step {resumes[0]['from_step']:,} \(restart 1\)", run.output)
    assert re.search(step_of + r"started on n\[1-2\] \(restart 2\)", run.output)
    assert re.search(step_of + r"all 4 ranks joined the process group", run.output)

    # the status table and the data behind the picture come from the same log
    status = subprocess.run([str(VENV_BIN / "slurm-gpu"), "status", "--directory", str(workdir), "--json"],
                            capture_output=True, text=True, timeout=60)
    assert status.returncode == 0, status.stderr
    rows = {row["step"]: row for row in json.loads(status.stdout)}
    assert set(rows) >= {"prepare/all", "train/all", "evaluate/all", "report/all"}
    assert rows["train/all"]["state"] == "completed" and rows["train/all"]["restarts"] == starts[-1]["restart"]
    check_timeline(workdir, job, signal["global_step"], extra_runs=len(starts) - 3)


def check_timeline(workdir: Path, job: str, signal_step: int, extra_runs: int = 0) -> None:
    """`extra_runs`: runs after the step finished that ran nothing (Slurm 24.05+ requeues a job once
    preempted at its next end, see runs_of); each is drawn as a short completed run after a wait."""
    logs = {f"{p.parent.name}/{p.stem}": events.read(p) for p in events.step_logs(workdir / ".snakemake/slurm-gpu")}
    bars = {bar.label: bar for bar in timeline.build_timeline(logs).bars}
    assert set(bars) == {"prepare/all", "train/all", "evaluate/all", "report/all"}
    train = bars["train/all"]
    # three runs of one job: stopped by the signal (checkpoint at the stop), by SIGTERM (none), then done
    assert [(r.job_id, r.restart, r.ended) for r in train.runs] == [
        (job, 0, "signalled"), (job, 1, "hard-stop"), (job, 2, "completed")] + [
        (job, 3 + i, "completed") for i in range(extra_runs)]
    assert all(r.nodes == "n[1-2]" for r in train.runs)
    kinds = [m.kind for m in train.markers if m.kind != "checkpoint"]
    assert kinds.count("signal") == 1 and kinds.count("resumed") == 2 and kinds.count("requeue") == 1
    assert any(m.kind == "signal" and f"{signal_step:,}" in m.label for m in train.markers)
    assert len(train.waits) == 3 + extra_runs  # queued at first, then after each stop
    for step in ("prepare/all", "evaluate/all", "report/all"):
        assert [r.ended for r in bars[step].runs] == ["completed"], step
    png, svg = workdir / "timeline.png", workdir / "timeline.svg"
    drawn = subprocess.run([str(VENV_BIN / "slurm-gpu"), "timeline", "-d", str(workdir), "-o", str(png),
                            "-o", str(svg)], capture_output=True, text=True, timeout=120)
    assert drawn.returncode == 0, drawn.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "train/all" in svg.read_text()


HANG_SNAKEFILE = '''
rule all:
    input: "model.pt"

rule prepare:
    output: train="data/train.npz", test="data/test.npz"
    resources: runtime=5
    shell: "python scripts/prepare.py --train {output.train} --test {output.test} --seed 0"

rule train:
    input: "data/train.npz"
    output: "model.pt"
    resources: nodes=2, gpus=4, runtime=10
    # the second node cannot resolve the master address: its ranks never join, the others wait
    shell: "srun bash -c 'if [ $SLURM_NODEID = 1 ]; then export MASTER_ADDR=no-such-host.invalid; fi; "
           "exec python scripts/train.py --data {input} --out {output} --max-steps 50'"
'''


def test_a_step_whose_world_never_forms_is_cancelled_by_the_watchdog_with_the_cause(cluster, tmp_path):
    workdir = copy_workflow("train-eval", tmp_path)
    (workdir / "Snakefile").write_text(HANG_SNAKEFILE)
    started = time.monotonic()
    run = snakemake(workdir, "--slurm-gpu-rendezvous-timeout-s", "30", timeout_s=300)
    took = time.monotonic() - started
    assert run.returncode != 0
    assert took < 120, f"the watchdog took {took:.0f} s"
    assert "had not joined the process group after 30 s" in run.output, run.output
    assert "node(s) n2 cannot resolve the master address 'no-such-host.invalid'" in run.output
    (job,) = train_jobs(workdir)
    state = slurm("sacct", "--noheader", "--parsable2", "-X", f"--jobs={job}", "--format=State").strip()
    assert state.startswith("CANCELLED"), state
    watchdog = [e for e in events.read(workdir / EVENT_LOG) if e["event"] == "watchdog"]
    assert len(watchdog) == 1 and watchdog[0]["missing_ranks"] == [0, 1, 2, 3]


EXPLAIN_SNAKEFILE = '''
rule all:
    input: expand("out/{name}.txt", name=["a", "b c"])

rule echo:
    output: "out/{name}.txt"
    resources: runtime=5, slurm_extra="--nice=5"
    shell: "echo {wildcards.name:q} > {output:q}"
'''


def scripts_in(text: str) -> dict[str, str]:
    """step -> script, from explain's output."""
    parts = re.split(r"^# ===== slurm-gpu explain: step (\S+) \(rule \w+\) =+\n", text, flags=re.M)
    return {parts[i]: parts[i + 1] for i in range(1, len(parts), 2)}


def without_run_tmpdir(script: str) -> str:
    """Snakemake's per-run temporary directories are the one thing two runs cannot share."""
    script = re.sub(r"\.snakemake/tmp\.[A-Za-z0-9_]+", ".snakemake/tmp.RUN", script)
    return re.sub(r"snakemake-runtime-cache/tmp[A-Za-z0-9_]+", "snakemake-runtime-cache/tmpRUN", script)


def split_inner_command(script: str) -> tuple[list[str], str]:
    """(every other line, the inner Snakemake call) of a batch script; a direct step (a plain shell
    rule running its own command) has no inner call: all of it is compared line by line."""
    lines = script.splitlines()
    inner = [i for i, line in enumerate(lines) if " -m snakemake " in line]
    if not inner:
        return lines, ""
    (inner,) = inner
    return lines[:inner] + lines[inner + 1:], lines[inner]


def test_explain_prints_the_scripts_that_are_then_submitted_and_submits_nothing(cluster, tmp_path):
    workdir = write_workflow(tmp_path / "wf", EXPLAIN_SNAKEFILE)
    explained = subprocess.run([str(VENV_BIN / "slurm-gpu"), "explain", "--", "--profile",
                                str(Path(__file__).resolve().parents[2] / "profiles/slurm-gpu")],
                               cwd=workdir, capture_output=True, text=True, timeout=120)
    assert explained.returncode == 0, explained.stdout + explained.stderr
    shown = scripts_in(explained.stdout)
    assert len(shown) == 2 and "echo/name=a" in shown
    assert any(step.startswith("echo/name=b_c-") for step in shown)  # 'b c' made safe, with its hash
    assert all("#SBATCH --nice=5" in script for script in shown.values())
    assert not (workdir / ".snakemake/slurm-gpu/scripts").exists(), "explain submitted something"
    run = snakemake(workdir)
    assert run.returncode == 0, run.output
    for step, script in shown.items():
        (submitted,) = (workdir / ".snakemake/slurm-gpu/scripts" / step).glob("*.sh")
        head, command = split_inner_command(without_run_tmpdir(submitted.read_text()))
        explained_head, explained_command = split_inner_command(without_run_tmpdir(script))
        assert head == explained_head  # every other line (#SBATCH lines, exports, events), byte for byte
        # the inner Snakemake call: Snakemake prints set-valued options (--rerun-triggers, ...) in
        # hash order, which differs between processes; the words are the same
        assert sorted(command.split(" ")) == sorted(explained_command.split(" "))
