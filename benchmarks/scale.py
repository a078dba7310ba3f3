"""Scale figures on a 32-node x 8-GPU local cluster: a 256-rank step (submission to all ranks joined,
the node list handled, the world formed again after a signalled requeue) and a sweep of 200 training
trials with a tenth of them preempted (the executor's memory and CPU time, Slurm commands per poll).

    .venv/bin/python benchmarks/scale.py [--no-sweep]

It runs the real-cluster scale tests (tests/cluster/test_scale.py: they reshape the cluster to
32 x 8 and back, and assert correctness) with two hooks: the tests write their figures to a JSON file
(SLURM_GPU_SCALE_FIGURES), and the sweep's Snakemake gets a PATH shim that counts every Slurm command
(SLURM_GPU_SCALE_SHIM). Figures, not assertions; writes benchmarks/results/scale.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

from benchlib import shim_dir
from benchlib import table as format_table

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
RESULTS = REPO / "benchmarks" / "results"
SHIMMED = ("sbatch", "squeue", "sacct", "scontrol", "sinfo", "scancel")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--no-sweep", action="store_true", help="the 256-rank step alone (a few minutes)")
    args = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="slurm-gpu-scale-"))
    figures_file, calls = base / "figures.json", base / "calls.log"
    shim = shim_dir(base / "shim", calls, SHIMMED)
    env = dict(os.environ, SLURM_GPU_SCALE_FIGURES=str(figures_file), SLURM_GPU_SCALE_SHIM=str(shim),
               PATH=f"{VENV_BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}")
    done = subprocess.run([sys.executable, "-m", "pytest", "tests/cluster/test_scale.py", "-q", "-p", "no:cacheprovider",
                           "-k", "not sweep" if args.no_sweep else "not arrays"],
                          cwd=REPO, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        print(done.stdout[-5000:], done.stderr[-2000:])
        print("the scale tests failed: no figures")
        return 1
    array_calls = base / "array-calls.log"
    if not args.no_sweep:
        # the same 200-trial sweep with job arrays on, its Slurm commands counted apart
        array_shim = shim_dir(base / "array-shim", array_calls, SHIMMED)
        done = subprocess.run([sys.executable, "-m", "pytest", "tests/cluster/test_scale.py", "-q", "-p",
                               "no:cacheprovider", "-k", "arrays"], cwd=REPO, capture_output=True, text=True,
                              env=dict(env, SLURM_GPU_SCALE_SHIM=str(array_shim), SLURM_GPU_SWEEP_ARRAY_TRIALS="200"))
        if done.returncode != 0:
            print(done.stdout[-5000:], done.stderr[-2000:])
            print("the sweep with job arrays failed: no figures for it")
    fig = json.loads(figures_file.read_text())
    lines = calls.read_text().splitlines() if calls.exists() else []
    submit_host = Counter(line.split()[0] for line in lines if not line.endswith(" job"))
    in_jobs = Counter(line.split()[0] for line in lines if line.endswith(" job"))
    polls = submit_host["squeue"]
    status_calls = submit_host["squeue"] + submit_host["sacct"]
    fig["executor_slurm_commands"] = dict(submit_host)
    fig["job_side_slurm_commands"] = dict(in_jobs)
    fig["status_polls"] = polls
    fig["status_commands_per_poll"] = round(status_calls / polls, 2) if polls else None
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "scale.json").write_text(json.dumps(fig, indent=1))

    rows = [
        ("figure", "value"),
        ("256-rank step (32 x 8): submission -> all 256 ranks joined", f"{fig['world_256_submit_to_all_joined_s']} s"),
        ("  of which batch start -> all joined", f"{fig['world_256_start_to_all_joined_s']} s"),
        ("  of which rank 0's rendezvous (first to last rank)", f"{fig['world_256_rank0_rendezvous_s']} s"),
        ("256-rank step: requeue signal -> all 256 ranks joined again", f"{fig['world_256_signal_to_rejoined_s']} s"),
        ("largest node list handled", fig["largest_nodelist"]),
    ]
    if "sweep_trials" in fig:
        stopped, redone = fig["sweep_stopped"], fig["sweep_steps_redone_after_stops"]
        rows += [
            (f"sweep: {fig['sweep_trials']} trials, {fig['sweep_slurm_jobs']} Slurm jobs, wall", f"{fig['sweep_wall_s']} s"),
            ("sweep: trials stopped (signal / scontrol requeue)",
             f"{stopped['requeue signal']} / {stopped['scontrol requeue']}"),
            ("sweep: steps redone after a stop (signal; hard stop)",
             f"{sorted(redone['requeue signal'])}; {sorted(redone['scontrol requeue'])}"),
            ("executor (Snakemake process): peak RSS", f"{fig['executor_peak_rss_mb']} MB"),
            ("executor: CPU time (own / its Slurm commands and other children)",
             f"{fig['executor_cpu_s']:.1f} s / {fig['executor_children_cpu_s']:.1f} s"),
            ("executor: status polls; Slurm status commands per poll", f"{polls}; {fig['status_commands_per_poll']}"),
            ("executor: Slurm commands by name", ", ".join(f"{k} {v}" for k, v in sorted(submit_host.items()))),
            ("inside jobs: Slurm commands by name", ", ".join(f"{k} {v}" for k, v in sorted(in_jobs.items()))),
        ]
    if "sweep_arrays_trials" in fig:
        array_lines = array_calls.read_text().splitlines() if array_calls.exists() else []
        host = Counter(line.split()[0] for line in array_lines if not line.endswith(" job"))
        plain = fig.get("sweep_slurm_jobs")
        rows += [
            (f"sweep with job arrays: {fig['sweep_arrays_trials']} trials, wall", f"{fig['sweep_arrays_wall_s']} s"
             + (f" ({fig['sweep_arrays_wall_s'] / fig['sweep_wall_s']:.2f}x without arrays)"
                if fig.get("sweep_wall_s") and fig["sweep_arrays_trials"] == fig.get("sweep_trials") else "")),
            ("sweep with job arrays: sbatch calls", f"{host['sbatch']} (without arrays: {plain})"),
            ("sweep with job arrays: trials stopped (signal / scontrol requeue)",
             f"{fig['sweep_arrays_stopped']['requeue signal']} / {fig['sweep_arrays_stopped']['scontrol requeue']}"),
            ("sweep with job arrays: steps redone after a stop (signal; hard stop)",
             f"{sorted(fig['sweep_arrays_steps_redone_after_stops']['requeue signal'])}; "
             f"{sorted(fig['sweep_arrays_steps_redone_after_stops']['scontrol requeue'])}"),
            ("sweep with job arrays: executor Slurm commands by name",
             ", ".join(f"{k} {v}" for k, v in sorted(host.items()))),
        ]
    print(format_table(rows))
    print(f"\nwritten {RESULTS / 'scale.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
