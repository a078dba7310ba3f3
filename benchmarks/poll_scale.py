"""What one status poll costs when the executor knows many jobs: 1,000 and 10,000 held jobs on the
local cluster, polled through slurm-gpu's own StatusQuery (the code the executor runs every poll).

    .venv/bin/python benchmarks/poll_scale.py [--sizes 1000,10000] [--snakemake-jobs 1000]

For each size: Slurm commands per poll, slurmctld RPCs per poll (sdiag), wall time of the poll, the
part of it spent parsing (outside the Slurm command), and the Python memory the poll allocates at
its peak (tracemalloc). With --snakemake-jobs M (0 to skip) it also runs a real Snakemake workflow of
M held jobs under `--executor slurm-gpu`, and, once all are submitted, watches it for a while: Slurm
commands per poll (a PATH shim counts them), CPU seconds per poll and the resident memory of the
Snakemake process. Then Snakemake is interrupted (it cancels its jobs, as on Ctrl-C).

Figures, not assertions. Writes benchmarks/results/poll_scale.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from benchlib import rpc_counts, shim_dir
from benchlib import slurm as sh
from benchlib import table as format_table
from snakemake_executor_plugin_slurm_gpu import slurm
from snakemake_executor_plugin_slurm_gpu.status import StatusQuery

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
RESULTS = REPO / "benchmarks" / "results"
JOB_NAME = "sg-bench-held"
POLLS = 5

SNAKEFILE = '''
rule all:
    input: [f"out/{{i}}.txt" for i in range({n})]

rule held:
    output: "out/{{i}}.txt"
    resources: runtime=5, mem_mb=10, slurm_extra="--hold"
    shell: "echo {{wildcards.i}} > {{output}}"
'''


def submit_held(count: int) -> tuple[list[str], float]:
    """`count` held one-line jobs (8 sbatch at a time); their ids and the submissions per second."""
    def one(_: int) -> str:
        return slurm.parse_sbatch(sh("sbatch", "--parsable", "--hold", "-J", JOB_NAME, "-o", "/dev/null",
                                     "--time=1", "--mem=10", "--wrap=true"))
    start = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        ids = list(pool.map(one, range(count)))
    return ids, count / (time.monotonic() - start)


def rpc_total() -> int:
    """slurmctld RPCs since the last reset, the benchmark's own reads of the counters left out."""
    return sum(c for name, c in rpc_counts(sh("sdiag")).items() if name != "REQUEST_STATS_INFO")


def poll_figures(ids: list[str]) -> dict[str, object]:
    """POLLS polls of `ids` through StatusQuery: commands, RPCs, wall, parse and memory per poll."""
    commands: list[str] = []
    in_slurm = 0.0

    def runner(argv, timeout_s, stdin=None):
        nonlocal in_slurm
        commands.append(argv[0])
        start = time.perf_counter()
        try:
            return slurm.run_subprocess(argv, timeout_s, stdin)
        finally:
            in_slurm += time.perf_counter() - start

    query = StatusQuery(run=lambda argv: slurm.run(argv, timeout_s=120, runner=runner))
    walls, parses, peaks = [], [], []
    sh("sdiag", "--reset")
    for _ in range(POLLS):
        in_slurm = 0.0
        start = time.perf_counter()
        records = query.records(ids)
        walls.append(time.perf_counter() - start)
        parses.append(walls[-1] - in_slurm)
        assert len(records) == len(ids), f"the poll found {len(records)} of {len(ids)} jobs"
    rpcs = rpc_total()
    calls = len(commands)
    # memory apart: tracing every allocation slows the poll down
    tracemalloc.start()
    query.records(ids)
    peaks.append(tracemalloc.get_traced_memory()[1])
    tracemalloc.stop()
    return {
        "jobs": len(ids),
        "commands_per_poll": calls / POLLS,
        "command_names": sorted(set(commands)),
        "rpcs_per_poll": round(rpcs / POLLS, 1),  # squeue: job info + partition info
        "poll_s": round(statistics.median(walls), 3),
        "parse_s": round(statistics.median(parses), 4),
        "parse_us_per_job": round(statistics.median(parses) / len(ids) * 1e6, 2),
        "peak_python_mb": round(max(peaks) / 2**20, 1),
    }


def proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def snakemake_figures(n: int, watch_s: float) -> dict[str, object]:
    """A real Snakemake run of n held jobs: submission time, then per-poll commands, CPU and memory."""
    base = Path(tempfile.mkdtemp(prefix="sg-poll-scale-"))
    work, calls = base / "wf", base / "calls.log"
    work.mkdir()
    shim = shim_dir(base / "shim", calls, ("sbatch", "squeue", "sacct", "scontrol", "sinfo", "scancel"))
    (work / "Snakefile").write_text(SNAKEFILE.format(n=n))
    env = dict(os.environ, PATH=f"{shim}:{VENV_BIN}:{os.environ['PATH']}")
    start = time.monotonic()
    out = open(base / "snakemake.txt", "w")
    proc = subprocess.Popen([str(VENV_BIN / "snakemake"), "--executor", "slurm-gpu", "--jobs", str(n)],
                            cwd=work, env=env, stdout=out, stderr=subprocess.STDOUT)

    def submitted() -> int:
        return sum(1 for line in calls.read_text().splitlines() if line.startswith("sbatch")) if calls.exists() else 0

    try:
        while submitted() < n:
            if proc.poll() is not None:
                raise RuntimeError(f"Snakemake ended early; see {base / 'snakemake.txt'}")
            time.sleep(1)
        submit_s = time.monotonic() - start
        time.sleep(5)  # the last submissions' bookkeeping
        before_calls = calls.read_text().splitlines()
        cpu0, t0 = proc_cpu_s(proc.pid), time.monotonic()
        rss = []
        while time.monotonic() - t0 < watch_s:
            rss.append(proc_rss_mb(proc.pid))
            time.sleep(1)
        cpu = proc_cpu_s(proc.pid) - cpu0
        during = calls.read_text().splitlines()[len(before_calls):]
    finally:
        proc.send_signal(signal.SIGINT)  # Snakemake cancels its Slurm jobs, as on Ctrl-C
        try:
            proc.wait(timeout=300)
        except subprocess.TimeoutExpired:
            proc.kill()
        out.close()
    polls = sum(1 for line in during if line.startswith("squeue"))
    others = sorted({line.split()[0] for line in during} - {"squeue"})
    shutil.rmtree(base, ignore_errors=True)
    return {
        "jobs": n, "submit_s": round(submit_s, 1), "watched_s": watch_s, "polls": polls,
        "commands_per_poll": round(len(during) / max(polls, 1), 2), "other_commands": others,
        "cpu_s_per_poll": round(cpu / max(polls, 1), 3), "cpu_share": round(cpu / watch_s, 3),
        "rss_mb": round(max(rss), 1) if rss else None,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1000,10000")
    ap.add_argument("--snakemake-jobs", type=int, default=1000)
    ap.add_argument("--watch-s", type=float, default=40.0)
    args = ap.parse_args()
    sizes = sorted(int(s) for s in args.sizes.split(","))
    rows: list[dict[str, object]] = []
    snake: dict[str, object] | None = None
    try:
        print(f"[poll-scale] submitting {sizes[-1]} held jobs ...", file=sys.stderr, flush=True)
        ids, rate = submit_held(sizes[-1])
        for size in sizes:
            rows.append(poll_figures(ids[:size]))
        subprocess.run(["scancel", "--name", JOB_NAME], check=False)
        if args.snakemake_jobs:
            print(f"[poll-scale] Snakemake with {args.snakemake_jobs} held jobs ...", file=sys.stderr, flush=True)
            snake = snakemake_figures(args.snakemake_jobs, args.watch_s)
    finally:
        subprocess.run(["scancel", "--name", JOB_NAME], check=False)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "poll_scale.json").write_text(json.dumps({"held_submissions_per_s": round(rate, 1), "polls": rows,
                                                         "snakemake": snake}, indent=2) + "\n")
    print(table(rows, snake, rate))
    return 0


def table(rows: list[dict[str, object]], snake: dict[str, object] | None, rate: float) -> str:
    head = ("jobs known", "Slurm commands/poll", "RPCs/poll", "poll s", "parse s", "parse us/job",
            "peak Python MB")
    lines = [head] + [(r["jobs"], r["commands_per_poll"], r["rpcs_per_poll"], r["poll_s"], r["parse_s"],
                       r["parse_us_per_job"], r["peak_python_mb"]) for r in rows]
    text = format_table(lines)
    text += f"\n(held jobs submitted at {rate:.0f}/s by 8 parallel sbatch)"
    if len(rows) >= 2:
        small, large = rows[0], rows[-1]
        growth = (large["parse_s"] / max(small["parse_s"], 1e-9)) / (large["jobs"] / small["jobs"])
        text += (f"\nparse time grows {large['parse_s'] / max(small['parse_s'], 1e-9):.1f}x for "
                 f"{large['jobs'] / small['jobs']:.0f}x the jobs ({growth:.2f} of linear)")
    if snake:
        text += (f"\nSnakemake with {snake['jobs']} held jobs: submitted in {snake['submit_s']} s; then over "
                 f"{snake['watched_s']:.0f} s: {snake['polls']} polls, {snake['commands_per_poll']} Slurm commands "
                 f"per poll (others: {', '.join(snake['other_commands']) or 'none'}), "  # type: ignore[arg-type]
                 f"{snake['cpu_s_per_poll']} CPU s per poll (Snakemake's whole process, event-log reads between polls "
                 f"included: {snake['cpu_share'] * 100:.1f}% of one core), Snakemake RSS {snake['rss_mb']} MB")
    return text


if __name__ == "__main__":
    sys.exit(main())
