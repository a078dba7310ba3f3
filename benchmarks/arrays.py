"""Job arrays and the per-step cost on the critical path (issue 20), on the local cluster in one run:

  - many independent short steps of one rule (default 1,000; `sleep 1` each): slurm-gpu with arrays on
    and off, the official plugin with --slurm-array-jobs=all, a bare sbatch loop and a bare
    `sbatch --array` of the same payloads (the limit): sbatch calls, slurmctld RPCs per step, wall time;
  - chains of 3 and 10 such steps: slurm-gpu and the bare loop, each stage cut into submission ->
    payload start (Slurm's queue and the job's start), the payload, payload end -> next submission
    (noticing the end), and Snakemake's own start and end outside the stages.

    .venv/bin/python benchmarks/arrays.py [--jobs 1000] [--chains 3,10] [--only ...]

Figures, not assertions. Writes benchmarks/results/arrays.json and prints tables and the goals' ratios.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import controller_load as cl
from benchlib import table as format_table

MANY_MODES = "bare,bare-array,slurm-gpu,slurm-gpu-arrays,official-arrays"
CHAIN_MODES = "bare,slurm-gpu"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", type=int, default=1000)
    ap.add_argument("--chains", default="3,10")
    ap.add_argument("--only", default=MANY_MODES, help="modes of the independent steps")
    ap.add_argument("--results", default="arrays.json", help="file name under benchmarks/results")
    args = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="sg-arrays-"))
    many, chains, failed = [], [], []
    for mode in (m for m in args.only.split(",") if m):
        print(f"[arrays] independent x{args.jobs}: {mode} ...", file=sys.stderr, flush=True)
        try:
            many.append(cl.measure(mode, "independent", args.jobs, base))
        except RuntimeError as e:  # a mode whose run failed: said, and the others still measured
            print(f"[arrays] {mode} failed: {e}", file=sys.stderr, flush=True)
            failed.append(f"{mode}: the run failed ({e})")
    for length in (int(c) for c in args.chains.split(",") if c):
        for mode in CHAIN_MODES.split(","):
            print(f"[arrays] chain x{length}: {mode} ...", file=sys.stderr, flush=True)
            chains.append(cl.measure(mode, "chain", length, base / f"chain{length}"))
    cl.RESULTS.mkdir(parents=True, exist_ok=True)
    (cl.RESULTS / args.results).write_text(json.dumps({"independent": many, "chains": chains}, indent=2) + "\n")
    print(many_table(many) + "".join(f"\n{line}" for line in failed))
    print()
    print(chain_table(chains))
    shutil.rmtree(base, ignore_errors=True)
    return 0


def many_table(rows: list[dict]) -> str:
    head = ("mode", "steps", "wall s", "sbatch calls", "steps per sbatch", "RPCs/step", "query RPCs/step",
            "squeue", "notice s (mean/max)")
    lines = [head]
    for r in rows:
        n, inv = r["jobs"], r["invocations"]
        sbatch = inv.get("sbatch", 0)
        lat = "-" if r["latency_mean_s"] is None else f"{r['latency_mean_s']}/{r['latency_max_s']}"
        lines.append((r["mode"], n, r["wall_s"], sbatch, f"{n / sbatch:.0f}" if sbatch else "-",
                      f"{r['rpcs'] / n:.2f}", f"{r['query_rpcs'] / n:.2f}", inv.get("squeue", 0), lat))
    by = {r["mode"]: r for r in rows}
    notes = []
    ours, bare, limit = by.get("slurm-gpu-arrays"), by.get("bare"), by.get("bare-array")
    if ours:
        sbatch = ours["invocations"].get("sbatch", 0)
        notes.append(f"slurm-gpu with arrays: {ours['jobs'] / max(sbatch, 1):.0f} steps per sbatch call "
                     "(goal: at least 50)")
    if ours and bare:
        notes.append(f"slurm-gpu with arrays: RPCs per step {ours['rpcs'] / max(bare['rpcs'], 1):.2f}x the bare "
                     f"sbatch loop's (goal <= 0.5x); wall {ours['wall_s'] / bare['wall_s']:.2f}x the bare loop's "
                     "(goal <= 1.0x)")
    if ours and limit:
        notes.append(f"slurm-gpu with arrays: wall {ours['wall_s'] / limit['wall_s']:.2f}x a bare sbatch --array "
                     f"of the same payloads (goal <= 1.1x); RPCs {ours['rpcs'] / max(limit['rpcs'], 1):.2f}x its")
    off, single = by.get("official-arrays"), by.get("slurm-gpu")
    if ours and off:
        notes.append(f"slurm-gpu with arrays vs the official plugin with --slurm-array-jobs=all: wall "
                     f"{ours['wall_s'] / off['wall_s']:.2f}x, RPCs {ours['rpcs'] / max(off['rpcs'], 1):.2f}x")
    if ours and single:
        notes.append(f"arrays on vs off (slurm-gpu): wall {ours['wall_s'] / single['wall_s']:.2f}x, "
                     f"RPCs {ours['rpcs'] / max(single['rpcs'], 1):.2f}x")
    return format_table(lines) + "\n\n" + "\n".join(notes)


def chain_table(rows: list[dict]) -> str:
    head = ("chain", "mode", "wall s", "stage s", "submit -> payload start", "payload end -> next submit",
            "before first submit s", "after last payload s")
    lines = [head]
    for r in rows:
        lines.append((r["jobs"], r["mode"], r["wall_s"], r.get("stage_s"), r.get("submit_to_payload_start_s"),
                      r.get("payload_end_to_next_submit_s"), r.get("before_first_submit_s"),
                      r.get("after_last_payload_s")))
    notes = []
    for length in sorted({r["jobs"] for r in rows}):
        by = {r["mode"]: r for r in rows if r["jobs"] == length}
        ours, bare = by.get("slurm-gpu"), by.get("bare")
        if ours and bare:
            inside = (ours["wall_s"] - ours.get("before_first_submit_s", 0) - ours.get("after_last_payload_s", 0))
            bare_inside = (bare["wall_s"] - bare.get("before_first_submit_s", 0) - bare.get("after_last_payload_s", 0))
            notes.append(f"chain of {length}: wall {ours['wall_s'] / bare['wall_s']:.2f}x the bare loop's (goal <= 1.1x); "
                         f"from the first submission to the last payload's end {inside / max(bare_inside, 0.01):.2f}x; "
                         f"per stage {ours.get('stage_s')} s vs {bare.get('stage_s')} s")
    return format_table(lines) + "\n\n" + "\n".join(notes)


if __name__ == "__main__":
    sys.exit(main())
