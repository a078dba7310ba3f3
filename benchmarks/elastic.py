"""Elastic vs rigid under the same preemption (issue 21), on the local cluster's 2 nodes x 2 GPUs:
workflows/elastic's training step (Lightning by default, --trainer torch) at nodes=2, with min_nodes=1
(elastic) and without (rigid). Once it trains on both nodes, an urgent job takes n2's GPUs for --hold-s
seconds and the step gets the preemption notice (the requeue signal). Measured: from the notice to training
again, and the time to finish the fixed number of optimizer steps, each mode's own run.

    .venv/bin/python benchmarks/elastic.py [--steps 300] [--hold-s 120] [--trainer lightning|torch]

Figures, not assertions. Writes benchmarks/results/elastic.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchlib import slurm
from benchlib import table as format_table

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
VENV_BIN = Path(sys.executable).parent
sys.path.insert(0, str(REPO / "executor"))
from snakemake_executor_plugin_slurm_gpu import events  # noqa: E402


def started(log: Path) -> list[dict]:
    return [e for e in events.read(log) if e["event"] == "started"] if log.exists() else []


def wait(predicate, timeout_s: float, what: str):
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise RuntimeError(f"timed out waiting for {what}")


def run(mode: str, steps: int, hold_s: int, base: Path, trainer: str) -> dict[str, object]:
    workdir = base / mode
    shutil.copytree(REPO / "workflows" / "elastic", workdir,
                    ignore=shutil.ignore_patterns(".snakemake", "results", "__pycache__"))
    min_nodes = 1 if mode == "elastic" else 2
    argv = [str(VENV_BIN / "snakemake"), "--profile", str(REPO / "profiles" / "slurm-gpu"), "--jobs", "4",
            "--config", f"trainer={trainer}", "nodes=2", f"min_nodes={min_nodes}", "gpus=4", f"steps={steps}",
            "step_s=0.05", "checkpoint_every=10"]
    env = dict(os.environ, PATH=f"{VENV_BIN}:{os.environ['PATH']}")
    log = workdir / ".snakemake/slurm-gpu/events/train/all.jsonl"
    began = time.time()
    out = open(workdir / "snakemake-output.txt", "w")
    proc = subprocess.Popen(argv, cwd=workdir, env=env, stdout=out, stderr=subprocess.STDOUT)
    urgent = None
    try:
        job = wait(lambda: started(log), 300, "the training step to start")[0]["job_id"]
        wait(lambda: any(e["event"] == "checkpoint" for e in events.read(log)), 300, "a first checkpoint")
        urgent = slurm("sbatch", "--parsable", "--nodelist=n2", "--nodes=1", "--ntasks=1", "--gpus-per-node=2",
                       "--priority=4000000", "--time=30", "--output=/dev/null", "--job-name=urgent",
                       f"--wrap=sleep {hold_s}").strip()
        notice = time.time()
        slurm("scancel", "--signal=USR1", job)
        rc = proc.wait(timeout=hold_s + 1200)
    finally:
        if proc.poll() is None:
            proc.kill()
        out.close()
        if urgent:
            subprocess.run(["scancel", urgent], capture_output=True)
    finished = time.time()
    if rc != 0:
        raise RuntimeError(f"{mode}: snakemake failed, see {workdir / 'snakemake-output.txt'}")
    runs = started(log)
    training = [e["ts"] for e in events.read(log) if e["event"] == "resumed"]
    world_sizes = [r["world_size"] for r in json.loads((workdir / "results/runs.json").read_text())]
    return {"mode": mode, "wall_s": round(finished - began, 1),
            "notice_to_restart_s": round(runs[1]["ts"] - notice, 1) if len(runs) > 1 else None,
            "notice_to_training_s": round(training[0] - notice, 1) if training else None,
            "nodes_per_run": [r.get("num_nodes") for r in runs], "world_sizes": world_sizes}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--hold-s", type=int, default=120, help="how long the urgent job holds n2")
    ap.add_argument("--trainer", choices=("lightning", "torch"), default="lightning",
                    help="the example's training script: Lightning (ElasticBatches) or plain torch (Session)")
    args = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="sg-elastic-"))
    rows = [run(mode, args.steps, args.hold_s, base, args.trainer) for mode in ("rigid", "elastic")]
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "elastic.json").write_text(json.dumps({"steps": args.steps, "hold_s": args.hold_s,
                                                      "trainer": args.trainer, "runs": rows}, indent=2) + "\n")
    head = ("mode", "wall s", "notice -> started again s", "notice -> resumed training s", "nodes per run",
            "ranks per run")
    print(f"{args.steps} optimizer steps of the {args.trainer} script (0.05 s a micro-batch); the urgent job holds n2 "
          f"for {args.hold_s} s")
    print(format_table([head] + [(r["mode"], r["wall_s"], r["notice_to_restart_s"], r["notice_to_training_s"],
                                  ",".join(map(str, r["nodes_per_run"])), ",".join(map(str, r["world_sizes"])))
                                 for r in rows]))
    by = {r["mode"]: r for r in rows}
    print(f"elastic/rigid wall: {by['elastic']['wall_s'] / by['rigid']['wall_s']:.2f}x; "
          f"training again {by['elastic']['notice_to_training_s']} s vs {by['rigid']['notice_to_training_s']} s "
          "after the notice")
    shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
