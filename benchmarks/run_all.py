"""`make bench`: every benchmark in turn on the local cluster, each printing its own table; then one
report, benchmarks/results/latest.md, with the commit, the machine and all tables side by side.

    .venv/bin/python benchmarks/run_all.py [--only controller_load,poll_scale,...] [--quick]

--quick runs each with small sizes (a smoke run of the benchmarks themselves, figures meaningless).
Figures, not assertions: a benchmark that fails is reported as failed and the others still run; the
exit status says whether all of them ran.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"

BENCHMARKS = {
    "controller_load": ("Controller load and latency: 100 independent jobs and a 10-stage chain", [], 
                        ["--jobs", "10", "--chain", "3"]),
    "arrays": ("Job arrays: 1,000 independent steps, and the per-stage cost of a chain", [],
               ["--jobs", "20", "--chains", "3", "--only", "bare,bare-array,slurm-gpu,slurm-gpu-arrays"]),
    "poll_scale": ("Scale: one status poll with 1,000 and 10,000 jobs known", [],
                   ["--sizes", "100,1000", "--snakemake-jobs", "100", "--watch-s", "15"]),
    "training_overhead": ("Training overhead: steps/s under slurm-gpu vs a hand-written sbatch script", [],
                          ["--steps", "300", "--rounds", "1"]),
    "scale": ("Scale: a 256-rank step and a 200-trial sweep on a 32 x 8 cluster", [], ["--no-sweep"]),
    "resume_cost": ("Preemption cost: steps lost and stop-to-training time per kind of stop", [],
                    ["--steps", "200"]),
    "elastic": ("Elastic vs rigid: a 2-node step preempted while an urgent job holds one node", [],
                ["--steps", "100", "--hold-s", "20"]),
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", default=",".join(BENCHMARKS))
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                            text=True).stdout.strip() or "unknown"
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                           capture_output=True, text=True).stdout.strip()
    sys.path.insert(0, str(REPO / "benchmarks"))
    from benchlib import slurm_release
    release = slurm_release()  # the clients on PATH are the running release's (`. cluster/env.sh`)
    sections, failed = [], []
    for name in args.only.split(","):
        title, full, quick = BENCHMARKS[name]
        argv = [sys.executable, str(REPO / "benchmarks" / f"{name}.py"), *(quick if args.quick else full)]
        print(f"\n===== {title}\n$ {' '.join(argv[1:])}", flush=True)
        start = time.monotonic()
        done = subprocess.run(argv, cwd=REPO, stdout=subprocess.PIPE, text=True)
        took = time.monotonic() - start
        print(done.stdout, end="", flush=True)
        if done.returncode != 0:
            failed.append(name)
        status = "" if done.returncode == 0 else f" (FAILED, exit {done.returncode}: see its output above)"
        sections.append(f"## {title}\n\n`{' '.join(['python', *argv[1:]]).replace(str(REPO) + '/', '')}`"
                        f" ({took / 60:.1f} min){status}\n\n```\n{done.stdout.strip()}\n```\n")
    RESULTS.mkdir(parents=True, exist_ok=True)
    head = (f"# slurm-gpu benchmarks\n\nCommit {commit}{' (with uncommitted changes)' if dirty else ''}, "
            f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.node()}: {os.cpu_count()} CPUs, "
            f"local Slurm cluster of cluster/up.sh on {release} (2 nodes x 4 CPUs x 2 GPUs declared).\n"
            f"Reproduce: `make bench` (about 45 minutes; `make bench SLURM=24.11` for another release).{' QUICK RUN: sizes too small to mean anything.' if args.quick else ''}\n")
    (RESULTS / "latest.md").write_text(head + "\n" + "\n".join(sections))
    print(f"\nwritten {RESULTS / 'latest.md'}" + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
