"""Job arrays (--slurm-gpu-array-jobs) on the real cluster: the ready training steps of one rule are
one `sbatch --array`, each task runs its own step (its own checkpoint directory, event log and log
file), a task requeued in place resumes from its checkpoint while its siblings run on, and a
Snakemake killed mid-run is replaced by one that waits for the tasks instead of submitting again.

The workflow is the sweep's torch-free trainer (workflows/sweep/scripts/train.py: rendezvous,
checkpoints, requeue on the signal) with every trial on one GPU, so each trial's result is a pure
function of its learning rate: a resumed task must end on exactly the floats computed here."""

from __future__ import annotations

import csv
import io
import json
import re
import subprocess
import sys
import time
from pathlib import Path

from conftest import VENV_BIN, Background, copy_workflow, slurm, snakemake, wait_for

from snakemake_executor_plugin_slurm_gpu import events, timeline

TRIALS = 6
STEPS = 200
ARRAYS = "--slurm-gpu-array-jobs=all"

SNAKEFILE = '''
import sys

sys.path.insert(0, f"{workflow.basedir}/scripts")
import sweep

TRIALS = sweep.trial_names(int(config["trials"]))


rule all:
    input:
        expand("results/trials/{trial}/score.json", trial=TRIALS),


rule train:
    output:
        "results/trials/{trial}/model.json",
    params:
        lr=lambda wc: sweep.hyper(wc.trial)["lr"],
    resources:
        gpus=1,
        cpus_per_task=1,
        mem_mb=200,
        runtime=30,
    shell:
        "srun python scripts/train.py --trial {wildcards.trial} --lr {params.lr} --steps {config[steps]}"
        " --step-s {config[step_s]} --checkpoint-every {config[checkpoint_every]} --out {output:q}"


rule evaluate:
    input:
        "results/trials/{trial}/model.json",
    output:
        "results/trials/{trial}/score.json",
    resources:
        mem_mb=100,
        runtime=5,
    shell:
        "python scripts/evaluate.py --model {input:q} --out {output:q}"
'''

CONFIG = ("--config", f"trials={TRIALS}", f"steps={STEPS}", "step_s=0.05", "checkpoint_every=10")


def workflow(tmp_path: Path) -> Path:
    workdir = copy_workflow("sweep", tmp_path)
    (workdir / "Snakefile").write_text(SNAKEFILE)
    return workdir


def trials() -> list[str]:
    return [f"t{i:03d}" for i in range(TRIALS)]


def step_log(workdir: Path, rule: str, trial: str) -> list[dict]:
    return events.read(workdir / f".snakemake/slurm-gpu/events/{rule}/trial={trial}.jsonl")


def job_of(workdir: Path, rule: str, trial: str) -> str | None:
    submitted = [e["job_id"] for e in step_log(workdir, rule, trial) if e["event"] == "submitted"]
    return submitted[-1] if submitted else None


def expected(trial: str) -> dict[str, float]:
    """The trial's model after STEPS steps in a world of one rank, computed here without Slurm."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "workflows/sweep/scripts"))
    import sweep

    lr = float(sweep.hyper(trial)["lr"])
    w = b = loss = 0.0
    for _ in range(STEPS):
        w, b, loss = sweep.update(w, b, sweep.fold([sweep.partial_gradient(w, b, 0, 1)]), lr)
    return {"w": w, "b": b, "train_loss": loss}


def assert_every_trial_exact(workdir: Path) -> None:
    for trial in trials():
        model = json.loads((workdir / f"results/trials/{trial}/model.json").read_text())
        assert {k: model[k] for k in ("w", "b", "train_loss")} == expected(trial), trial
        assert (workdir / f"results/trials/{trial}/score.json").exists()


def test_training_steps_are_one_array_and_a_task_requeued_in_place_resumes_alone(cluster, tmp_path):
    workdir = workflow(tmp_path)
    bg = Background(workdir, *CONFIG, ARRAYS, "--slurm-gpu-efficiency-report", "report.csv")
    try:
        # the second trial's task, once it has a checkpoint: its requeue signal, as a preemption sends it
        target = wait_for(lambda: any(e["event"] == "checkpoint" for e in step_log(workdir, "train", "t001"))
                          and job_of(workdir, "train", "t001"), 240, "a checkpoint of trial t001")
        # to the task's training step (srun's step 0), as a preemption notice reaches the ranks: a signal to
        # the whole task makes scancel (22.05, 24.11) signal it, hear "Job can not be altered now" and retry
        # every few seconds, so the signal would come again after the requeue
        slurm("scancel", "--signal=USR1", f"{target}.0")
        run = bg.wait()
    finally:
        bg.kill()
    assert run.returncode == 0, run.output[-4000:]
    jobs = {trial: job_of(workdir, "train", trial) for trial in trials()}
    # one sbatch for the six training steps: tasks 0-5 of one array
    assert all(re.fullmatch(r"\d+_\d", j or "") for j in jobs.values()), jobs
    assert len({j.split("_")[0] for j in jobs.values()}) == 1, jobs
    assert sorted(int(j.split("_")[1]) for j in jobs.values()) == list(range(TRIALS))
    assert f"{TRIALS} steps of rule train are Slurm job array {jobs['t000'].split('_')[0]}" in run.output
    assert_every_trial_exact(workdir)
    for trial, job in jobs.items():
        log = step_log(workdir, "train", trial)
        starts = [(e["job_id"], e["restart"]) for e in log if e["event"] == "started"]
        summary = timeline.summarize(log)
        assert summary.state == "completed", (trial, summary)
        if trial == "t001":
            # requeued in place (same task id) by its own request, and resumed from its checkpoint
            assert starts == [(job, 0), (job, 1)], log
            assert [e["requeued"] for e in log if e["event"] == "requeue_requested"] == [True]
            assert [e["from_step"] for e in log if e["event"] == "resumed"][0] > 0
            assert summary.runs == 2
        else:
            assert starts == [(job, 0)], (trial, log)  # the signal reached this task alone
        # its output went to its own step's log, under the task's id
        assert (workdir / f".snakemake/slurm-gpu/logs/train/trial={trial}/{job}.log").stat().st_size > 0
    states = slurm("sacct", "-X", "--noheader", "--parsable2", f"--jobs={jobs['t001']}", "--duplicates",
                   "--format=JobID,State").split()
    assert states[0].endswith("|REQUEUED") and states[-1] == f"{jobs['t001']}|COMPLETED", states
    # the efficiency report has a row per step, read from its task's accounting
    assert "efficiency report written to" in run.output
    rows = efficiency_rows(workdir, [f"train/trial={t}" for t in trials()])
    for trial in trials():
        row = rows[f"train/trial={trial}"]
        assert row["state"] == "COMPLETED" and row["gpus"] == "1" and float(row["gpu_hours"]) > 0, row
        # accounting keeps one record per run: the requeued task's two runs, one for each other task
        assert row["jobs"] == ("2" if trial == "t001" else "1"), row


def efficiency_rows(workdir: Path, steps: list[str]) -> dict[str, dict[str, str]]:
    """`slurm-gpu efficiency`'s rows by step, once accounting has every step's end (slurmdbd records a
    job's end a moment after slurmctld knows it)."""
    deadline = time.monotonic() + 30
    while True:
        target = workdir / "efficiency.csv"
        done = subprocess.run([str(VENV_BIN / "slurm-gpu"), "efficiency", "--directory", str(workdir), "--csv",
                               str(target)], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        rows = {row["step"]: row for row in csv.DictReader(io.StringIO(target.read_text()))}
        if all(rows.get(step, {}).get("state") == "COMPLETED" for step in steps) or time.monotonic() > deadline:
            return rows
        time.sleep(1)


def test_ctrl_c_cancels_every_task_of_the_array(cluster, tmp_path):
    workdir = workflow(tmp_path)
    bg = Background(workdir, *CONFIG, ARRAYS)
    try:
        wait_for(lambda: all(job_of(workdir, "train", t) for t in trials())
                 and any(e["event"] == "started" for e in step_log(workdir, "train", "t000")), 240,
                 "every training step submitted, one started")
        bg.interrupt()
        run = bg.wait(timeout_s=120)
    finally:
        bg.kill()
    assert run.returncode != 0
    jobs = [job_of(workdir, "train", t) for t in trials()]
    array = jobs[0].split("_")[0]
    wait_for(lambda: not slurm("squeue", "--noheader", "--array", f"--jobs={array}", "--format=%i").strip(), 30,
             f"every task of array {array} to leave the queue")

    def accounted() -> dict[str, str] | None:
        # a task that started has a record of its own; the tasks still pending share the array's
        states = dict(line.split("|") for line in slurm("sacct", "-X", "--noheader", "--parsable2", f"--jobs={array}",
                                                         "--format=JobID,State").splitlines())
        # (22.05 names that record <array>, 24.11 and later <array>_[<first>-<last>])
        pending = any(k == array or k.startswith(f"{array}_[") for k in states)
        return states if all(j in states or pending for j in jobs) else None

    states = wait_for(accounted, 30, f"accounting of array {array}")
    assert states and all(state.startswith("CANCELLED") for state in states.values()), states
    assert not (workdir / "results/trials/t000/model.json").exists()


def test_a_new_snakemake_waits_for_the_tasks_of_the_one_that_was_killed(cluster, tmp_path):
    workdir = workflow(tmp_path)
    bg = Background(workdir, *CONFIG, ARRAYS)
    try:
        wait_for(lambda: all(job_of(workdir, "train", t) for t in trials())
                 and any(e["event"] == "checkpoint" for e in step_log(workdir, "train", "t000")), 240,
                 "every training step submitted, one training")
    finally:
        bg.kill()  # SIGKILL: no clean-up, the tasks run on
    jobs = {trial: job_of(workdir, "train", trial) for trial in trials()}
    unlock = snakemake(workdir, *CONFIG, "--unlock")  # as a user would after a crash
    assert unlock.returncode == 0, unlock.output
    run = snakemake(workdir, *CONFIG, ARRAYS)
    assert run.returncode == 0, run.output[-4000:]
    waited = re.findall(r"step train/trial=(t\d+) is still Slurm job (\d+_\d+)", run.output)
    assert waited and all(jobs[trial] == job for trial, job in waited), (waited, jobs)
    for trial, job in waited:
        submitted = [e["job_id"] for e in step_log(workdir, "train", trial) if e["event"] == "submitted"]
        assert submitted == [job], (trial, submitted)  # its task was followed, never submitted again
    assert_every_trial_exact(workdir)
