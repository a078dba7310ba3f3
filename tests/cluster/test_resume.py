"""Training steps survive what clusters do to jobs, through `snakemake --executor slurm-gpu` on the
real cluster: each row stops the example's training step a different way and checks that it resumed
from its checkpoint (step > 0), finished at exactly its target step count, that evaluate ran, that
the step never had two live Slurm jobs, and that its checkpoint directory was never emptied."""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
import time
from pathlib import Path

import pytest

from conftest import REPO, Background, copy_workflow, daemon_pid, restore_cluster, slurm, snakemake, wait_for

CKPT = Path(".snakemake/slurm-gpu/checkpoints/train/all")
LOGS = Path(".snakemake/slurm-gpu/logs/train/all")


class StepWatch(threading.Thread):
    """Samples, every 0.3 s while the run goes on, the live Slurm jobs of the training step and the
    checkpoint files in its directory."""

    def __init__(self, workdir: Path) -> None:
        super().__init__(daemon=True)
        self.workdir = workdir
        self.max_live = 0
        self.max_running = 0  # RUNNING only: a cancelled job may still be COMPLETING beside its successor
        self.emptied_after_first_checkpoint = False
        self._seen_checkpoint = False
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            out = subprocess.run(["squeue", "--noheader", "--format=%i|%j|%T|%Z"], capture_output=True,
                                 text=True).stdout
            live = [line for line in out.splitlines()
                    if line.split("|")[1:2] == ["sg-train"] and line.endswith(f"|{self.workdir}")]
            self.max_live = max(self.max_live, len(live))
            self.max_running = max(self.max_running, sum(line.split("|")[2] == "RUNNING" for line in live))
            ckpts = list((self.workdir / CKPT).glob("*.ckpt")) if (self.workdir / CKPT).is_dir() else []
            if ckpts:
                self._seen_checkpoint = True
            elif self._seen_checkpoint:
                self.emptied_after_first_checkpoint = True
            time.sleep(0.3)

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=10)


def train_jobs(workdir: Path) -> list[str]:
    return sorted((p.stem for p in (workdir / LOGS).glob("*.log")), key=int)


def train_output(workdir: Path) -> str:
    """Every run of the training step, in order: the Slurm logs append across requeues."""
    return "".join((workdir / LOGS / f"{job}.log").read_text(errors="replace") for job in train_jobs(workdir))


def resumed_steps(text: str) -> list[int]:
    return [int(s) for s in re.findall(r"resumed_from global_step=(\d+)", text)]


def done_steps(text: str) -> list[int]:
    return [int(s) for s in re.findall(r"training_done global_step=(\d+)", text)]


def running_train_job(workdir: Path, min_checkpoint_step: int | None = None) -> str:
    def ready():
        jobs = train_jobs(workdir)
        if not jobs:
            return None
        state = slurm("squeue", "--noheader", "--states=all", f"--jobs={jobs[-1]}", "--format=%T").strip()
        if state != "RUNNING":
            return None
        if min_checkpoint_step is not None:
            steps = [int(m) for p in (workdir / CKPT).glob("step-*.ckpt.json")
                     for m in re.findall(r"step-(\d+)", p.name)]
            if not steps or max(steps) < min_checkpoint_step:
                return None
        return jobs[-1]
    return wait_for(ready, 240, f"training to run (checkpoint >= {min_checkpoint_step})")


def segments(job_id: str) -> list[tuple[str, str, str]]:
    out = slurm("sacct", "--noheader", "--parsable2", "-X", "--duplicates", f"--jobs={job_id}",
                "--format=State,Start,End")
    return [tuple(line.split("|")) for line in out.splitlines() if line]


def assert_resumed_and_completed(run, workdir: Path, watch: StepWatch, max_steps: int) -> str:
    assert run.returncode == 0, run.output
    text = train_output(workdir)
    resumed = resumed_steps(text)
    assert resumed and min(resumed) > 0, text[-3000:]
    assert done_steps(text) == [max_steps], text[-3000:]
    assert json.loads((workdir / "results/metrics.json").read_text())["accuracy"] > 0.5
    assert watch.max_live == 1
    assert not watch.emptied_after_first_checkpoint
    return text


@pytest.fixture
def workflow(tmp_path):
    return copy_workflow("train-eval", tmp_path)


def start(workdir: Path, *args: str, sleep_s: float = 0.1, max_steps: int = 400, **env: str):
    watch = StepWatch(workdir)
    watch.start()
    bg = Background(workdir, "--config", f"max_steps={max_steps}", *args,
                    env={"TRAIN_STEP_SLEEP_S": str(sleep_s), **env})
    return bg, watch


def test_preemption_by_urgent_partition_checkpoints_requeues_in_place_and_resumes(cluster, slurm_release, workflow):
    bg, watch = start(workflow)
    try:
        job = running_train_job(workflow, min_checkpoint_step=50)
        # the urgent partition's job needs every CPU of both nodes: Slurm preempts the training
        slurm("sbatch", "--partition=urgent", "--nodes=2", "--ntasks-per-node=4", "--job-name=urgent",
              "--output=/dev/null", "--wrap=sleep 5")
        run = bg.wait()
    finally:
        bg.kill()
        watch.stop()
    text = assert_resumed_and_completed(run, workflow, watch, 400)
    assert train_jobs(workflow) == [job]  # requeued in place: the same job id
    assert "restart 1" in text
    states = [s for s, _, _ in segments(job)]
    assert states[0] in ("REQUEUED", "PREEMPTED") and states[-1] == "COMPLETED", states


def test_walltime_warning_signal_checkpoints_and_requeues_until_done(cluster, workflow):
    # runtime 3 min with a 59 s lead (the longest that leaves a minute of training even when Slurm
    # signals 60 s early): the warning is due 121 s into each run, and Slurm's periodic check may
    # deliver it up to a minute sooner; 2400 steps take ~120 s plus start-up, so at least one run is
    # warned before training ends
    bg, watch = start(workflow, "--set-resources", "train:runtime=3", "train:signal_lead_s=59", sleep_s=0.05,
                      max_steps=2400)
    try:
        run = bg.wait(timeout_s=900)
    finally:
        bg.kill()
        watch.stop()
    assert_resumed_and_completed(run, workflow, watch, 2400)
    (job,) = train_jobs(workflow)
    states = [s for s, _, _ in segments(job)]
    assert "REQUEUED" in states and states[-1] == "COMPLETED", states
    assert "TIMEOUT" not in states


def test_scontrol_requeue_without_signal_resumes_from_periodic_checkpoint(cluster, slurm_release, workflow):
    bg, watch = start(workflow)
    try:
        job = running_train_job(workflow, min_checkpoint_step=100)
        slurm("scontrol", "requeue", job)  # SIGTERM, no warning: no checkpoint at the stop
        run = bg.wait()
    finally:
        bg.kill()
        watch.stop()
    text = assert_resumed_and_completed(run, workflow, watch, 400)
    assert train_jobs(workflow) == [job]
    assert min(resumed_steps(text)) >= 100
    assert min(resumed_steps(text)) % 50 == 0  # a periodic checkpoint, not one taken at the stop


def training_processes(workdir: Path) -> list[int]:
    """Pids of train.py ranks running in `workdir`, on any node."""
    pids = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if b"scripts/train.py" in (proc / "cmdline").read_bytes() and os.readlink(proc / "cwd") == str(workdir):
                pids.append(int(proc.name))
        except OSError:
            continue
    return pids


def test_node_whose_slurmd_dies_fails_the_job_and_training_resumes(cluster, slurm_release, workflow):
    bg, watch = start(workflow)
    try:
        job = running_train_job(workflow, min_checkpoint_step=50)
        pid = daemon_pid("slurmd-n2")
        subprocess.run(["kill", "-KILL", str(pid)], check=True)
        # Slurm declares n2 DOWN after SlurmdTimeout, ends the job NODE_FAIL and requeues it
        wait_for(lambda: "NODE_FAIL" in [s for s, _, _ in segments(job)], 120, "NODE_FAIL")
        # Harness only: Slurm 22.05 can lose the old run's step completion when the requeued job is
        # allocated again within a moment of it (srun then waits forever: "step creation temporarily
        # disabled"; seen once in CI). Hold the job until every rank of the old run is gone.
        wait_for(lambda: slurm("squeue", "--noheader", f"--jobs={job}", "--format=%T").strip() == "PENDING",
                 60, "the requeued job to be pending")
        slurm("scontrol", "hold", job)
        restore_cluster(check=True)
        wait_for(lambda: not training_processes(workflow), 60, "the old run's ranks to exit")
        time.sleep(2)
        slurm("scontrol", "release", job)
        run = bg.wait()
    finally:
        bg.kill()
        watch.stop()
        restore_cluster()
    assert_resumed_and_completed(run, workflow, watch, 400)
    states = [s for s, _, _ in segments(train_jobs(workflow)[0])]
    assert states[0] == "NODE_FAIL" and states[-1] == "COMPLETED", states


def test_timeout_without_signal_is_resubmitted_within_budget_then_fails_clearly(cluster, workflow):
    # no warning signal, 1 minute limit, training that needs about three runs, one resubmission allowed
    bg, watch = start(workflow, "--set-resources", "train:runtime=1", "train:signal_lead_s=0",
                      "--slurm-gpu-max-timeouts", "1", sleep_s=0.05, max_steps=3000)
    try:
        run = bg.wait(timeout_s=600)
    finally:
        bg.kill()
        watch.stop()
    assert run.returncode != 0
    jobs = train_jobs(workflow)
    assert len(jobs) == 2, jobs  # the first attempt and one resubmission, then no more
    assert [s for s, _, _ in segments(jobs[0])][-1] == "TIMEOUT"
    assert [s for s, _, _ in segments(jobs[1])][-1] == "TIMEOUT"
    assert f"Slurm job {jobs[0]}: Slurm job stopped from outside (TIMEOUT" in run.output
    assert "resubmitting (timeout 1 of 1)" in run.output
    assert "the timeout budget is spent (1 resubmissions of 1); raise --slurm-gpu-max-timeouts" in run.output
    second = (workflow / LOGS / f"{jobs[1]}.log").read_text(errors="replace")
    assert resumed_steps(second) and resumed_steps(second)[0] > 0
    assert watch.max_live == 1
    assert not watch.emptied_after_first_checkpoint
    assert not (workflow / "results/metrics.json").exists()


def test_training_script_that_raises_fails_once_without_requeue(cluster, workflow):
    run = snakemake(workflow, "--config", "max_steps=400", env={"TRAIN_FAIL_AT_STEP": "30"})
    assert run.returncode != 0
    (job,) = train_jobs(workflow)
    assert [s for s, _, _ in segments(job)] == ["FAILED"]
    assert "RuntimeError: injected failure at global_step=30" in run.output  # the log tail
    assert "resubmitting" not in run.output
    assert not (workflow / "results/model.pt").exists()


def test_truncated_newest_checkpoint_falls_back_to_the_previous_one(cluster, workflow):
    first = snakemake(workflow, "--config", "max_steps=100", "--slurm-gpu-checkpoint-cleanup", "keep")
    assert first.returncode == 0, first.output
    newest = workflow / CKPT / "step-000000100.ckpt"
    size = newest.stat().st_size
    with open(newest, "r+b") as f:
        f.truncate(size // 2)
    second = snakemake(workflow, "--config", "max_steps=100", "--forcerun", "train")
    assert second.returncode == 0, second.output
    last = (workflow / LOGS / f"{train_jobs(workflow)[-1]}.log").read_text(errors="replace")
    assert resumed_steps(last) == [50]
    assert done_steps(last) == [100]
    assert (workflow / "results/metrics.json").stat().st_mtime > newest.stat().st_mtime


def test_changed_params_move_old_checkpoints_aside_instead_of_resuming(cluster, workflow):
    first = snakemake(workflow, "--config", "max_steps=100", "--slurm-gpu-checkpoint-cleanup", "keep")
    assert first.returncode == 0, first.output
    second = snakemake(workflow, "--config", "max_steps=100", "lr=0.07")
    assert second.returncode == 0, second.output
    assert "moved to" in second.output and "training starts afresh" in second.output
    last = (workflow / LOGS / f"{train_jobs(workflow)[-1]}.log").read_text(errors="replace")
    assert resumed_steps(last) == []
    assert done_steps(last) == [100]
    (stale,) = (workflow / CKPT).parent.glob("all.stale-*")
    assert (stale / "step-000000100.ckpt").exists()


SEED_SNAKEFILE = '''
rule train:
    output: "done.txt"
    resources: nodes=2, gpus=4, runtime=10
    shell: "srun python {script} >> train.log 2>&1"
'''


def test_seed_style_lightning_auto_requeue_works_under_the_executor(cluster, tmp_path):
    """A script that only uses Lightning's own SLURMEnvironment auto-requeue, with default_root_dir
    set to SLURM_GPU_CHECKPOINT_DIR, is requeued in place on the signal and resumes from hpc_ckpt."""
    workdir = tmp_path / "seed"
    workdir.mkdir()
    (workdir / "Snakefile").write_text(SEED_SNAKEFILE.format(script=REPO / "tests/cluster/seed_train.py"))
    watch = StepWatch(workdir)
    watch.start()
    bg = Background(workdir, env={"MAX_STEPS": "400", "STEP_SLEEP": "0.1"})
    try:
        def job_running():
            jobs = train_jobs(workdir)
            ok = jobs and slurm("squeue", "-h", "--states=all", f"--jobs={jobs[-1]}", "-o", "%T").strip() == "RUNNING"
            return jobs[-1] if ok and "global_step=100" in train_output(workdir) + _seed_log(workdir) else None
        job = wait_for(job_running, 240, "seed training to pass step 100")
        slurm("scancel", "--signal=USR1", job)  # what Slurm sends at the time-limit warning
        run = bg.wait()
    finally:
        bg.kill()
        watch.stop()
    assert run.returncode == 0, run.output
    text = _seed_log(workdir)
    assert re.search(r"resuming from global_step=(\d+)", text) and "DONE global_step=400" in text, text[-2000:]
    assert int(re.search(r"resuming from global_step=(\d+)", text).group(1)) >= 100
    assert list((workdir / ".snakemake/slurm-gpu/checkpoints/train/all").glob("hpc_ckpt_*.ckpt"))
    assert train_jobs(workdir) == [job]
    assert watch.max_live == 1


def _seed_log(workdir: Path) -> str:
    path = workdir / "train.log"
    return path.read_text(errors="replace") if path.exists() else ""
