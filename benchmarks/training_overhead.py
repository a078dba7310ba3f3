"""What running under slurm-gpu costs a training step: training steps per second of the example's
scripts/train.py (2 nodes x 2 ranks, Gloo on the CPU) as the `train` step of workflows/train-eval
under `snakemake --executor slurm-gpu`, next to the same script in a hand-written sbatch script
(`srun python scripts/train.py ...`, Lightning finding its world in Slurm's environment).

    .venv/bin/python benchmarks/training_overhead.py [--steps 1500] [--rounds 4]

Both read the per-step progress lines the script prints (TRAIN_PROGRESS_EVERY=1) and count steps per
second from step 50 to the last step, leaving out start-up (Python, torch, the rendezvous), which
the table shows apart as time from submission to the first step. Rounds alternate the two in ABBA
order (hand-written first in odd rounds, the executor first in even ones), so that neither a slow
moment of this shared machine nor what the previous run left behind lands on one side only. The
ratio is the median of the per-round ratios, with their spread: on 2 cores running 4 ranks, one run
can differ from the next by 10% and more.

Figures, not assertions. Writes benchmarks/results/training_overhead.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchlib import table

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
RESULTS = REPO / "benchmarks" / "results"
SKIP_STEPS = 50

HAND_WRITTEN = """#!/bin/bash
#SBATCH --job-name=hand-train
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=2
#SBATCH --gpus-per-node=2
#SBATCH --cpus-per-task=1
#SBATCH --time=30
#SBATCH --output={log}
srun {python} scripts/train.py --data data/train.npz --out results/hand.pt --max-steps {steps} --checkpoint-every 50
"""


def rate(text: str) -> tuple[float, float, float]:
    """(steps per second after SKIP_STEPS, time of the first step, of the last) from rank 0's
    progress lines."""
    points = [(int(s), float(t)) for s, t in re.findall(r"progress global_step=(\d+) t=([\d.]+)", text)]
    late = [(s, t) for s, t in points if s >= SKIP_STEPS]
    if len(late) < 2:
        raise RuntimeError(f"too few progress lines ({len(points)})")
    (s0, t0), (s1, t1) = late[0], late[-1]
    return (s1 - s0) / (t1 - t0), points[0][1], points[-1][1]


def workdir(base: Path, name: str) -> Path:
    work = base / name
    shutil.copytree(REPO / "workflows/train-eval", work,
                    ignore=shutil.ignore_patterns(".snakemake", "results", "data", "__pycache__"))
    shutil.copytree(base / "data", work / "data")
    return work


def env() -> dict[str, str]:
    return {**os.environ, "PATH": f"{VENV_BIN}:{os.environ['PATH']}", "TRAIN_PROGRESS_EVERY": "1"}


def under_executor(base: Path, name: str, steps: int) -> dict[str, float]:
    work = workdir(base, name)
    start = time.time()
    done = subprocess.run([str(VENV_BIN / "snakemake"), "--profile", str(REPO / "profiles/slurm-gpu"),
                           "--config", f"max_steps={steps}", "--", "results/model.pt"],
                          cwd=work, env=env(), capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise RuntimeError(f"snakemake failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    steps_per_s, first, last = rate((work / "results/logs/train.log").read_text())
    return {"steps_per_s": steps_per_s, "to_first_step_s": first - start, "to_last_step_s": last - start}


def hand_written(base: Path, name: str, steps: int) -> dict[str, float]:
    work = workdir(base, name)
    (work / "results").mkdir()
    log = work / "hand.log"
    script = HAND_WRITTEN.format(log=log, python=VENV_BIN / "python", steps=steps)
    start = time.time()
    subprocess.run(["sbatch", "--wait", "--parsable"], input=script, cwd=work, env=env(), text=True, check=True,
                   capture_output=True, timeout=1800)
    steps_per_s, first, last = rate(log.read_text())
    return {"steps_per_s": steps_per_s, "to_first_step_s": first - start, "to_last_step_s": last - start}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--rounds", type=int, default=4)
    args = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="sg-training-overhead-"))
    (base / "data").mkdir()
    subprocess.run([str(VENV_BIN / "python"), "scripts/prepare.py", "--train", str(base / "data/train.npz"),
                    "--test", str(base / "data/test.npz"), "--seed", "0"],
                   cwd=REPO / "workflows/train-eval", check=True, capture_output=True)
    runs: dict[str, list[dict[str, float]]] = {"slurm-gpu": [], "hand-written sbatch": []}
    order = (("hand-written sbatch", hand_written), ("slurm-gpu", under_executor))
    for i in range(args.rounds):
        for mode, how in (order if i % 2 == 0 else order[::-1]):
            print(f"[training-overhead] round {i + 1}: {mode} ...", file=sys.stderr, flush=True)
            runs[mode].append(how(base, f"{mode.split()[0]}-{i}", args.steps))
    summary = {mode: {key: round(statistics.median(r[key] for r in rs), 2) for key in rs[0]}
               for mode, rs in runs.items()}
    per_round = [ours["steps_per_s"] / hand["steps_per_s"]
                 for ours, hand in zip(runs["slurm-gpu"], runs["hand-written sbatch"])]
    ratio = statistics.median(per_round)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "training_overhead.json").write_text(json.dumps(
        {"steps": args.steps, "runs": runs, "median": summary, "ratio": round(ratio, 3),
         "ratio_per_round": [round(r, 3) for r in per_round]}, indent=2) + "\n")
    head = ("mode", "steps/s (median)", "each run", "submission to first step s", "to last step s")
    lines = [head] + [(mode, summary[mode]["steps_per_s"], " ".join(f"{r['steps_per_s']:.1f}" for r in runs[mode]),
                       summary[mode]["to_first_step_s"], summary[mode]["to_last_step_s"]) for mode in runs]
    print(table(lines))
    print(f"steps/s slurm-gpu / hand-written = {ratio:.3f}x (goal >= 0.98x; median of the per-round ratios "
          f"{' '.join(f'{r:.3f}' for r in per_round)}); {args.steps} steps, 2 nodes x 2 ranks, checkpoint every "
          f"50 steps in both, rounds in ABBA order")
    shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
