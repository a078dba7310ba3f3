"""What a stop costs a training step under slurm-gpu, on the local cluster: training steps lost, and time
from the stop to training running again, next to Slurm's own requeue turnaround (the gap between the
stopped run's end and the next run's start, from sacct) measured in the same run.

    .venv/bin/python benchmarks/resume_cost.py [--steps 400] [--step-sleep 0.1] [--only preemption,...]

Runs workflows/train-eval once per scenario in a temporary directory through `snakemake --executor
slurm-gpu`, stops its training step once after its first periodic checkpoint, and prints a table (and
writes benchmarks/results/resume_cost.json). Figures, not assertions: nothing here fails on a number.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Iterator

from benchlib import daemon_pid, release_root, slurm

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
OFFICIAL_BIN = REPO / ".venv-official" / "bin"  # make bench-venv
ONE_RANK = ", 1 node x 1 rank"
CHECKPOINT_ON_SIGTERM = ", checkpoint-on-sigterm"
LOGS = Path(".snakemake/slurm-gpu/logs/train/all")
CKPT = Path(".snakemake/slurm-gpu/checkpoints/train/all")


def jobs(workdir: Path) -> list[str]:
    return sorted((p.stem for p in (workdir / LOGS).glob("*.log")), key=int)


def log_text(workdir: Path) -> str:
    return "".join((workdir / LOGS / f"{j}.log").read_text(errors="replace") for j in jobs(workdir))


def progress(text: str) -> list[tuple[int, float]]:
    return [(int(s), float(t)) for s, t in re.findall(r"(?:progress|resumed_from) global_step=(\d+) t=([\d.]+)", text)]


def segments(job_ids: list[str]) -> list[tuple[str, float, float]]:
    rows = []
    for job in job_ids:
        out = slurm("sacct", "-n", "-P", "-X", "--duplicates", f"-j{job}", "--format=State,Start,End")
        for line in out.splitlines():
            state, start, end = line.split("|")
            if start in ("Unknown", "None") or end in ("Unknown", "None"):
                continue
            ts = [datetime.fromisoformat(x).timestamp() for x in (start, end)]
            rows.append((state, ts[0], ts[1]))
    return rows


def wait_for(predicate, timeout_s: float, proc: subprocess.Popen | None = None):
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"Snakemake ended (exit {proc.returncode}) before the stop")
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise TimeoutError


def ready_to_stop(job: str | None, ckpt_dir: Path, text: str) -> str | None:
    """`job` if it runs and trained 20-40 steps past its newest checkpoint, so that a hard stop
    has steps to lose."""
    if job is None or not list(ckpt_dir.glob("step-*.ckpt.json")):
        return None
    state = slurm("squeue", "-h", "--states=all", f"-j{job}", "-o", "%T").strip()
    points = progress(text)
    newest = max(int(m) for p in ckpt_dir.glob("step-*.ckpt.json") for m in re.findall(r"step-(\d+)", p.name))
    return job if state == "RUNNING" and points and newest + 20 <= points[-1][0] < newest + 40 else None


def running_with_checkpoint(workdir: Path) -> str | None:
    ids = jobs(workdir)
    return ready_to_stop(ids[-1] if ids else None, workdir / CKPT, log_text(workdir))


def rank_pid(job: str, rank: int) -> int | None:
    """The training process of rank `rank` of `job` (the nodes share this machine's process table)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if b"scripts/train.py" not in (entry / "cmdline").read_bytes():
                continue
            env = dict(item.split("=", 1) for item in (entry / "environ").read_bytes().decode(errors="replace")
                       .split("\0") if "=" in item)
        except OSError:
            continue
        if env.get("SLURM_JOB_ID") == job and env.get("SLURM_PROCID") == str(rank) and env.get("SLURM_STEP_ID") != "batch":
            return int(entry.name)
    return None


@contextlib.contextmanager
def sigterm_only() -> Iterator[None]:
    """Preemption as many sites configure it: SIGTERM and the partition's GraceTime (15 s on debug),
    no requeue signal first (slurm.conf without preempt_send_user_signal)."""
    conf = release_root() / "etc/slurm/slurm.conf"
    original = conf.read_text()
    conf.write_text("\n".join(line for line in original.splitlines()
                              if not line.startswith("SlurmctldParameters=preempt_send_user_signal")) + "\n")
    try:
        slurm("scontrol", "reconfigure")
        wait_for(lambda: "preempt_send_user_signal" not in slurm("scontrol", "show", "config"), 30)
        yield
    finally:
        conf.write_text(original)
        slurm("scontrol", "reconfigure")
        wait_for(lambda: "preempt_send_user_signal" in slurm("scontrol", "show", "config"), 30)


def stop(scenario: str, job: str) -> None:
    if scenario.startswith("stalled rank"):
        os.kill(wait_for(lambda: rank_pid(job, 3), 30), signal.SIGSTOP)
    elif "preemption" in scenario:
        slurm("sbatch", "-p", "urgent", "-N2", "--ntasks-per-node=4", "-J", "urgent", "-o", "/dev/null",
              "--wrap=sleep 3")
    elif scenario == "scontrol requeue (no signal)":
        slurm("scontrol", "requeue", job)
    elif scenario == "node failure (slurmd killed)":
        os.kill(daemon_pid("slurmd-n2"), 9)


def run_scenario(scenario: str, steps: int, step_sleep: float) -> dict[str, object]:
    if scenario.startswith("SIGTERM-only"):
        with sigterm_only():
            return _run_scenario(scenario, steps, step_sleep)
    return _run_scenario(scenario, steps, step_sleep)


def _run_scenario(scenario: str, steps: int, step_sleep: float) -> dict[str, object]:
    if scenario.startswith("official plugin"):
        return run_official(scenario, steps, step_sleep)
    workdir = Path(tempfile.mkdtemp(prefix="resume-cost-")) / "train-eval"
    shutil.copytree(REPO / "workflows/train-eval", workdir,
                    ignore=shutil.ignore_patterns(".snakemake", "results", "data", "__pycache__"))
    args = [str(VENV_BIN / "snakemake"), "--profile", str(REPO / "profiles/slurm-gpu"), "--config", f"max_steps={steps}"]
    if scenario.endswith(ONE_RANK):
        args += ["train_nodes=1", "train_gpus=1"]
    if scenario == "time-out, resubmitted":
        # a 1-minute limit, no warning signal, and twice as much training as fits in it
        args = args[:4] + [f"max_steps={int(120 / step_sleep)}", "--set-resources", "train:runtime=1",
                            "train:signal_lead_s=0"]
    if scenario.endswith(CHECKPOINT_ON_SIGTERM):
        args.append("--slurm-gpu-checkpoint-on-sigterm")
    args.append("--slurm-gpu-keep-successful-logs")  # the figures come from the step's Slurm logs
    env = {**os.environ, "PATH": f"{VENV_BIN}:{os.environ['PATH']}", "TRAIN_STEP_SLEEP_S": str(step_sleep),
           "TRAIN_PROGRESS_EVERY": "1"}
    started = time.time()
    with open(workdir / "snakemake.txt", "w") as out:
        proc = subprocess.Popen(args, cwd=workdir, env=env, stdout=out, stderr=subprocess.STDOUT)
        stop_t = None
        if scenario != "time-out, resubmitted":
            job = wait_for(lambda: running_with_checkpoint(workdir), 300, proc)
            stop_t = time.time()
            stop(scenario, job)
            if scenario.startswith("node failure"):
                wait_for(lambda: "NODE_FAIL" in [s for s, _, _ in segments([job])], 120)
                subprocess.run(["bash", str(REPO / "cluster/up.sh")], check=True, capture_output=True)
        rc = proc.wait(timeout=1200)
    return figures(scenario, rc, log_text(workdir), jobs(workdir), stop_t, started)


def figures(scenario: str, rc: int, text: str, job_ids: list[str], stop_t: float | None,
            started: float) -> dict[str, object]:
    segs = segments(job_ids)
    if stop_t is None:  # the time-out: the stop is the end of the first run
        stop_t = segs[0][2]
    first_resume = text.find("resumed_from global_step=")
    before = [s for s, _ in progress(text[:first_resume] if first_resume >= 0 else text)]
    resumed = [int(s) for s in re.findall(r"resumed_from global_step=(\d+)", text)]
    again = [t for _, t in progress(text[first_resume:])][1:] if first_resume >= 0 else []
    gap = [nxt[1] - cur[2] for cur, nxt in zip(segs, segs[1:])]
    return {
        "scenario": scenario, "ok": rc == 0, "slurm_jobs": len(job_ids),
        "segments": [s for s, _, _ in segs],
        "step_at_stop": max(before) if before else None,
        "resumed_from": resumed[0] if resumed else None,
        # a checkpoint taken at the signal can be a step past the last one printed: nothing lost then
        # a run that failed without resuming lost every step it trained (the workflow stopped)
        "steps_lost": (max(0, max(before) - resumed[0]) if before and resumed
                       else max(before) if before and rc != 0 else None),
        "stop_to_training_s": round(again[0] - stop_t, 1) if again else None,
        "slurm_turnaround_s": round(gap[0], 1) if gap else None,
        "wall_s": round(time.time() - started, 1),
    }


# The same training script under the official plugin, which knows no GPUs-per-node geometry, no
# requeue signal and no checkpoint directory: one rank (plain python, run by its job-step executor),
# checkpoints where the script's helper puts them outside slurm-gpu (./checkpoints), every step's
# progress appended to one file across restarts.
OFFICIAL_SNAKEFILE = """
configfile: "config.yaml"

rule all:
    input: "results/model.pt"

rule train:
    input: "data/train.npz"
    output: model="results/model.pt"
    resources: runtime=30, cpus_per_task=1, mem_mb=2000
    shell: "{python} scripts/train.py --data {{input:q}} --out {{output.model:q}} --max-steps {{config[max_steps]}}"
           " --checkpoint-every {{config[checkpoint_every]}} >> progress.log 2>&1"
"""


def running_official_job() -> str | None:
    for line in slurm("squeue", "-h", "-t", "R", "-o", "%i|%j").splitlines():
        job, name = line.split("|", 1)
        if name != "urgent":
            return job
    return None


def run_official(scenario: str, steps: int, step_sleep: float) -> dict[str, object]:
    workdir = Path(tempfile.mkdtemp(prefix="resume-cost-official-")) / "train-eval"
    shutil.copytree(REPO / "workflows/train-eval", workdir,
                    ignore=shutil.ignore_patterns(".snakemake", "results", "data", "__pycache__"))
    # the data made here: the training is the plugin's only job
    subprocess.run([str(VENV_BIN / "python"), "scripts/prepare.py", "--train", "data/train.npz", "--test",
                    "data/test.npz", "--seed", "0"], cwd=workdir, check=True, capture_output=True)
    (workdir / "Snakefile.official").write_text(OFFICIAL_SNAKEFILE.format(python=VENV_BIN / "python"))
    args = [str(OFFICIAL_BIN / "snakemake"), "--snakefile", "Snakefile.official", "--executor", "slurm", "--jobs", "1",
            "--default-resources", "slurm_partition=debug", "slurm_account=root", "--config", f"max_steps={steps}"]
    env = {**os.environ, "PATH": f"{OFFICIAL_BIN}:{os.environ['PATH']}", "TRAIN_STEP_SLEEP_S": str(step_sleep),
           "TRAIN_PROGRESS_EVERY": "1"}
    progress_log = workdir / "progress.log"
    started = time.time()
    with open(workdir / "snakemake.txt", "w") as out:
        proc = subprocess.Popen(args, cwd=workdir, env=env, stdout=out, stderr=subprocess.STDOUT)
        job = wait_for(lambda: ready_to_stop(running_official_job(), workdir / "checkpoints",
                                             progress_log.read_text() if progress_log.exists() else ""), 300, proc)
        stop_t = time.time()
        stop(scenario, job)
        rc = proc.wait(timeout=1200)
    return figures(scenario, rc, progress_log.read_text(), [job], stop_t, started)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--step-sleep", type=float, default=0.1)
    ap.add_argument("--only", default="", help="comma-separated scenario name prefixes")
    args = ap.parse_args()
    scenarios = ["signalled preemption", "scontrol requeue (no signal)", "node failure (slurmd killed)",
                 "time-out, resubmitted", "SIGTERM-only preemption", "SIGTERM-only preemption" + CHECKPOINT_ON_SIGTERM,
                 "stalled rank (SIGSTOP on rank 3)", "signalled preemption" + ONE_RANK,
                 "official plugin: signalled preemption" + ONE_RANK]
    if args.only:
        scenarios = [s for s in scenarios if any(s.startswith(p.strip()) for p in args.only.split(","))]
    results = []
    for scenario in scenarios:
        print(f"... {scenario}", flush=True)
        results.append(run_scenario(scenario, args.steps, args.step_sleep))
    head = (f"{'scenario':58} {'ok':>3} {'jobs':>4} {'stop@':>6} {'resume@':>7} {'lost':>5} {'stop->train s':>13} "
            f"{'slurm gap s':>11}  Slurm states of the runs")
    print("\n" + head + "\n" + "-" * len(head))
    for r in results:
        print(f"{r['scenario']:58} {'yes' if r['ok'] else 'NO':>3} {r['slurm_jobs']:>4} {str(r['step_at_stop']):>6} "
              f"{str(r['resumed_from']):>7} {str(r['steps_lost']):>5} {str(r['stop_to_training_s']):>13} "
              f"{str(r['slurm_turnaround_s']):>11}  {' '.join(r['segments'])}")
    print("\nstop@: last step the stopped run finished; lost = stop@ - resume@ (0 if it resumed past it);"
          " stop->train: stop to the first step trained after resuming; slurm gap: end of the stopped run"
          " to the start of the next (sacct); ok NO: the Snakemake run failed (see its states), losing every step")
    out = REPO / "benchmarks/results/resume_cost.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"steps": args.steps, "step_sleep_s": args.step_sleep, "results": results}, indent=2))
    print(f"written {out}")


if __name__ == "__main__":
    main()
