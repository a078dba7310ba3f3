"""What goes wrong in the middle of a distributed training run, on the real cluster: a rank that stops
(SIGSTOP: a hung GPU or file-system read looks the same from outside), a rank that dies (SIGKILL: the
kernel's out-of-memory killer), and the requeue signal arriving where the script cannot take it.
Figures for the closing note are printed (run with -s to see them)."""

from __future__ import annotations

import json
import os
import re
import signal
import time
from pathlib import Path

import pytest

from conftest import REPO, Background, copy_workflow, release_root, slurm, wait_for
from test_resume import CKPT, StepWatch, done_steps, resumed_steps, train_jobs, train_output

EVENTS = Path(".snakemake/slurm-gpu/events/train/all.jsonl")
HEARTBEATS = Path(".snakemake/slurm-gpu/heartbeats/train/all")


def events_of(workdir: Path) -> list[dict]:
    path = workdir / EVENTS
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def rank_process(job_id: str, rank: int, script: str) -> int:
    """The pid of rank `rank` of Slurm job `job_id` (the nodes share this machine's process table)."""
    def find():
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if script not in (entry / "cmdline").read_bytes().decode(errors="replace"):
                    continue
                env = dict(item.split("=", 1) for item in
                           (entry / "environ").read_bytes().decode(errors="replace").split("\0") if "=" in item)
            except OSError:
                continue
            if env.get("SLURM_JOB_ID") == job_id and env.get("SLURM_PROCID") == str(rank) \
                    and "SLURM_STEP_ID" in env and env.get("SLURM_STEP_ID") != "batch":
                return int(entry.name)
        return None
    return wait_for(find, 60, f"rank {rank} of job {job_id}")


def checkpointed_train_job(workdir: Path, min_step: int) -> str:
    def ready():
        jobs = train_jobs(workdir)
        steps = [int(m) for p in (workdir / CKPT).glob("step-*.ckpt.json") for m in re.findall(r"step-(\d+)", p.name)]
        return jobs[-1] if jobs and steps and max(steps) >= min_step else None
    return wait_for(ready, 300, f"a checkpoint at step >= {min_step}")


def test_stalled_rank_is_named_cancelled_and_the_step_resumes_elsewhere(cluster, tmp_path):
    """Rank 3 of a 2 x 2 step stops (SIGSTOP) after its checkpoint at step 100: the others wait in the
    next all-reduce. Without a setting, the watchdog's limit comes from the step's pace; it names the
    rank and node that went silent, cancels the job and resubmits the step, which resumes from the
    checkpoint and finishes. The partition has no third node, so the new job may use n2 again."""
    workdir = copy_workflow("train-eval", tmp_path)
    watch = StepWatch(workdir)
    watch.start()
    bg = Background(workdir, "--config", "max_steps=400", env={"TRAIN_STEP_SLEEP_S": "0.1"})
    try:
        job = checkpointed_train_job(workdir, 100)
        pid = rank_process(job, 3, "scripts/train.py")
        os.kill(pid, signal.SIGSTOP)
        stopped_at = time.time()
        run = bg.wait()
    finally:
        bg.kill()
        watch.stop()
    assert run.returncode == 0, run.output
    stalled = [e for e in events_of(workdir) if e["event"] == "stalled"]
    assert len(stalled) == 1, run.output
    assert [(r["rank"], r["node"]) for r in stalled[0]["silent"]] == [(3, "n2")], stalled
    assert stalled[0]["action"] == "resubmit" and stalled[0]["job_id"] == job
    assert "rank 3 on n2 stopped answering" in run.output
    jobs = train_jobs(workdir)
    assert len(jobs) == 2 and jobs[0] == job, jobs
    text = train_output(workdir)
    assert min(resumed_steps(text)) >= 100 and done_steps(text) == [400], text[-3000:]
    assert watch.max_running == 1  # the cancelled job may still be COMPLETING while its successor waits
    resumed = [e for e in events_of(workdir) if e["event"] == "resumed" and e.get("job_id") == jobs[1]]
    print(f"\nFIGURE stall: SIGSTOP -> diagnosis {stalled[0]['ts'] - stopped_at:.1f} s "
          f"(limit {stalled[0]['limit_s']:.0f} s from the pace), SIGSTOP -> training again "
          f"{resumed[0]['ts'] - stopped_at:.1f} s")


def test_a_stalled_single_node_step_is_resubmitted_without_the_stalled_node(cluster, tmp_path):
    """A 1 x 2 step whose rank 1 stops: the partition has another node, so the new job excludes the
    one where the rank stalled, and the step finishes there."""
    workdir = copy_workflow("train-eval", tmp_path)
    # beats every 2 s and a fixed 20 s limit: a silent rank is named after 16 s (3 beats + 10 s)
    bg = Background(workdir, "--config", "max_steps=300", "train_nodes=1", "train_gpus=2",
                    "--slurm-gpu-stall-timeout-s", "20", env={"TRAIN_STEP_SLEEP_S": "0.1", "SLURM_GPU_HEARTBEAT_S": "2"})
    try:
        job = checkpointed_train_job(workdir, 50)
        os.kill(rank_process(job, 1, "scripts/train.py"), signal.SIGSTOP)
        run = bg.wait()
    finally:
        bg.kill()
    assert run.returncode == 0, run.output
    [stalled] = [e for e in events_of(workdir) if e["event"] == "stalled"]
    [silent] = stalled["silent"]
    first_node = silent["node"]
    jobs = train_jobs(workdir)
    assert len(jobs) == 2 and jobs[0] == job
    second = slurm("sacct", "-X", "--noheader", "--parsable2", f"--jobs={jobs[1]}", "--format=NodeList").strip()
    assert second and second != first_node, (first_node, second)
    assert f"its new job excludes {first_node}" in run.output
    assert done_steps(train_output(workdir)) == [300]


def test_killed_rank_ends_the_step_at_once_naming_rank_node_and_signal(cluster, tmp_path):
    """Rank 3 is killed (SIGKILL, as the out-of-memory killer does). The others would wait in their
    next all-reduce for the process group's timeout; srun's kill-on-bad-exit ends them at once, and
    the failure message says which rank on which node died of what."""
    workdir = copy_workflow("train-eval", tmp_path)
    bg = Background(workdir, "--config", "max_steps=2000", env={"TRAIN_STEP_SLEEP_S": "0.1"})
    try:
        job = checkpointed_train_job(workdir, 50)
        os.kill(rank_process(job, 3, "scripts/train.py"), signal.SIGKILL)
        killed_at = time.time()
        run = bg.wait(timeout_s=300)
    finally:
        bg.kill()
    assert run.returncode != 0
    assert "How the ranks ended: rank 3 on n2: Killed (the first rank to end)" in run.output, run.output[-3000:]
    assert "kill-on-bad-exit" in run.output
    end = slurm("sacct", "-X", "--noheader", "--parsable2", f"--jobs={job}", "--format=End").strip()
    ended_at = time.mktime(time.strptime(end, "%Y-%m-%dT%H:%M:%S"))
    failed = [e for e in events_of(workdir) if e["event"] == "failed"]
    print(f"\nFIGURE dead rank: SIGKILL -> job end {ended_at - killed_at:.1f} s (Slurm's clock, 1 s resolution), "
          f"SIGKILL -> step failed in Snakemake {failed[-1]['ts'] - killed_at:.1f} s")
    assert train_jobs(workdir) == [job]  # a rank's death is the step's own failure: no resubmission


SEED_SNAKEFILE = '''
rule train:
    output: "done.txt"
    resources: nodes=2, gpus=4, runtime=10
    shell: "srun python {script} >> train.log 2>&1"
'''


def test_late_requeue_signal_after_fit_does_not_fail_a_plain_lightning_step(cluster, tmp_path):
    """A plain Lightning script (its own SLURMEnvironment, nothing of slurm-gpu's) gets the requeue
    signal after fit() returned, while it writes its results: Lightning has put the signal's default
    action (terminate) back by then. The step still completes, in its one job. The observer Lightning
    loads from slurm-gpu's entry point also gave every rank a heartbeat."""
    workdir = tmp_path / "late"
    workdir.mkdir()
    (workdir / "Snakefile").write_text(SEED_SNAKEFILE.format(script=REPO / "tests/cluster/seed_train.py"))
    log = workdir / "train.log"
    bg = Background(workdir, env={"MAX_STEPS": "60", "AFTER_FIT_SLEEP": "15"})
    try:
        wait_for(lambda: log.exists() and log.read_text().count("FIT_RETURNED") == 4, 300, "fit() to return")
        job = train_jobs(workdir)[-1]
        slurm("scancel", "--signal=USR1", job)  # what Slurm sends at the time-limit warning
        run = bg.wait()
    finally:
        bg.kill()
    assert run.returncode == 0, run.output
    assert (workdir / "done.txt").read_text().strip() == "60"
    assert train_jobs(workdir) == [job]
    assert "User defined signal" not in log.read_text() + train_output(workdir)
    beats = [json.loads(p.read_text()) for p in sorted((workdir / HEARTBEATS).glob("rank-*.json"))]
    assert sorted(b["rank"] for b in beats) == [0, 1, 2, 3]
    assert all(b["state"] == "done" and b["progress"] >= 60 and b["job_id"] == job for b in beats), beats


PLAIN_SNAKEFILE = '''
rule train:
    output: "done.txt"
    resources: gpus=1, runtime=10
    shell: "srun python {script} && echo done > {{output}}"
'''

# knows nothing of signals: the requeue signal's default action kills it. Its second run finishes
PLAIN_SCRIPT = '''
import os, time
from pathlib import Path

import pytest
first = Path("first-run")
if not first.exists():
    first.write_text(os.environ["SLURM_JOB_ID"])
    print("RUNNING", flush=True)
    time.sleep(300)
print("FINISHED", flush=True)
'''


def test_rank_killed_by_the_requeue_signal_is_preempted_not_failed(cluster, tmp_path):
    """A script that does not handle the requeue signal dies of it: Slurm says FAILED, but slurm-gpu
    asked for that signal, so the cluster stopped the step: it is resubmitted (preemption budget)
    and its second run finishes."""
    workdir = tmp_path / "plain"
    workdir.mkdir()
    (workdir / "train.py").write_text(PLAIN_SCRIPT)
    (workdir / "Snakefile").write_text(PLAIN_SNAKEFILE.format(script="train.py"))
    bg = Background(workdir)
    try:
        first = wait_for(lambda: (workdir / "first-run").exists() and (workdir / "first-run").read_text(), 240,
                         "the first run")
        time.sleep(1)
        slurm("scancel", "--signal=USR1", first)
        run = bg.wait()
    finally:
        bg.kill()
    assert run.returncode == 0, run.output
    jobs = train_jobs(workdir)
    assert len(jobs) == 2 and jobs[0] == first, jobs
    assert "died of the requeue signal" in run.output, run.output
    resubmitted = [e for e in events_of(workdir) if e["event"] == "resubmitted"]
    assert [e["cause"] for e in resubmitted] == ["preemption"]


@pytest.fixture
def sigterm_only_preemption(cluster):
    """The cluster as many sites run it: preemption warns with SIGTERM only (no
    preempt_send_user_signal), and the debug partition's GraceTime (15 s) before the SIGKILL."""
    conf = release_root() / "etc/slurm/slurm.conf"
    original = conf.read_text()
    conf.write_text("\n".join(line for line in original.splitlines()
                              if not line.startswith("SlurmctldParameters=preempt_send_user_signal")) + "\n")
    try:
        slurm("scontrol", "reconfigure")
        wait_for(lambda: "preempt_send_user_signal" not in slurm("scontrol", "show", "config"), 30,
                 "slurmctld to drop preempt_send_user_signal")
        yield
    finally:
        conf.write_text(original)
        slurm("scontrol", "reconfigure")
        wait_for(lambda: "preempt_send_user_signal" in slurm("scontrol", "show", "config"), 30,
                 "slurmctld to take preempt_send_user_signal back")


def _preempt_with_sigterm(tmp_path: Path, name: str, *args: str) -> tuple[object, Path, str]:
    workdir = copy_workflow("train-eval", tmp_path / name)
    bg = Background(workdir, "--config", "max_steps=200", *args, env={"TRAIN_STEP_SLEEP_S": "0.1"})
    try:
        job = checkpointed_train_job(workdir, 50)
        time.sleep(2.5)  # about 25 steps past the periodic checkpoint
        slurm("sbatch", "--partition=urgent", "--nodes=2", "--ntasks-per-node=4", "--job-name=urgent",
              "--output=/dev/null", "--wrap=sleep 5")
        run = bg.wait()
    finally:
        bg.kill()
    return run, workdir, job


def test_preemption_by_sigterm_only_resumes_and_checkpoint_on_sigterm_loses_no_steps(sigterm_only_preemption,
                                                                                       tmp_path):
    """Without the requeue signal, the ranks stop on SIGTERM: by default they resume from the last
    periodic checkpoint; with --slurm-gpu-checkpoint-on-sigterm they save within the GraceTime
    first and lose nothing."""
    figures = {}
    for name, args in (("default", ()), ("opt-in", ("--slurm-gpu-checkpoint-on-sigterm",))):
        run, workdir, job = _preempt_with_sigterm(tmp_path, name, *args)
        assert run.returncode == 0, run.output
        log = events_of(workdir)
        interrupted = [e for e in log if e["event"] == "interrupted"]
        resumed = [e for e in log if e["event"] == "resumed"]
        assert [e["why"] for e in interrupted] == ["SIGTERM"], interrupted
        assert resumed and done_steps(train_output(workdir)) == [200], train_output(workdir)[-3000:]
        stopped, restarted = interrupted[0]["global_step"], resumed[0]["from_step"]
        figures[name] = (stopped, restarted, train_jobs(workdir))
        if name == "default":
            assert restarted % 50 == 0 and restarted < stopped
        else:
            saved = [e for e in log if e["event"] == "checkpoint" and e.get("why") == "sigterm"]
            assert [e["global_step"] for e in saved] == [stopped] and restarted == stopped
    print("\nFIGURE SIGTERM-only preemption (GraceTime 15 s): " + "; ".join(
        f"{name}: stopped at step {s}, resumed from {r}, {s - r} steps lost, jobs {jobs}"
        for name, (s, r, jobs) in figures.items()))
