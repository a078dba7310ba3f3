"""How much a workflow loads the Slurm controller, and how fast finished jobs are noticed: slurm-gpu
next to the official snakemake-executor-plugin-slurm (its defaults) and a bare sbatch + squeue loop
with no workflow engine, on the same local cluster in the same run.

    .venv/bin/python benchmarks/controller_load.py [--jobs 100] [--chain 10]
        [--only slurm-gpu,slurm-gpu-job-side,official,bare]

slurm-gpu runs these plain shell rules as direct steps (no job-side Snakemake); `slurm-gpu-job-side` is
the same with --slurm-gpu-job-side-snakemake, i.e. a job-side Snakemake in every job as the official
plugin has, to show what that costs.

Scenarios: `independent` (N short jobs, `sleep 1`, all submitted at once) and `chain` (a chain of M such
jobs, each needing the one before). For each mode it counts
  - slurmctld RPCs from `sdiag` (reset before each run): all of them, and the queries (job/node/partition
    info, config) that are the executor's doing rather than the jobs' own;
  - invocations of squeue/sacct/scontrol/sbatch/sinfo/sacctmgr/... by the workflow (a PATH shim counts
    them; the jobs inherit it, so calls made inside jobs count too);
and measures wall time and notice latency: for each job, the time from its output file being written (the
end of its payload, a moment before Slurm's End) to Snakemake logging it finished (Snakemake logs whole
seconds) or, for the bare loop, to the loop seeing it leave the queue.

Figures, not assertions. Writes benchmarks/results/controller_load.json and prints a table.
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
from datetime import datetime
from pathlib import Path

from benchlib import rpc_counts, shim_dir, slurm
from benchlib import table as format_table

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
# the official plugin lives in a venv of its own (make bench-venv): installed beside slurm-gpu it runs
# `scontrol show config` at every Snakemake start, ours and the job-side ones included
OFFICIAL_BIN = REPO / ".venv-official" / "bin"
RESULTS = REPO / "benchmarks" / "results"
SHIMMED = ["sbatch", "squeue", "sacct", "scontrol", "sinfo", "scancel", "sacctmgr", "sshare", "srun"]
# RPCs a status loop or submission path causes (as opposed to the jobs' own lifecycle messages)
QUERY_RPCS = re.compile(r"REQUEST_(JOB_INFO|JOB_USER_INFO|JOB_INFO_SINGLE|NODE_INFO|PARTITION_INFO|BUILD_INFO|"
                        r"FED_INFO|SHARE_INFO|PRIORITY_FACTORS|CONFIG|RESERVATION_INFO|PING)$|"
                        # slurmdbd: sacct and sacctmgr asking (the controller's own job records are not queries)
                        r"DBD_GET_\w+$")
# the benchmark's own reads of the counters
OWN_RPCS = {"REQUEST_STATS_INFO"}

SNAKEFILE = '''
N = {n}
CHAIN = {chain}

rule all:
    input: [f"out/{{i}}.txt" for i in range(N)] if not CHAIN else f"out/{{N - 1}}.txt"

def previous(wc):
    return [f"out/{{int(wc.i) - 1}}.txt"] if CHAIN and int(wc.i) > 0 else []

rule short:
    input: previous
    output: "out/{{i}}.txt"
    resources: runtime=5, mem_mb=100
    shell: "date +%s.%N > {{output}}.start; sleep 1; date +%s.%N > {{output}}"
'''

# the payload of every mode: when it began and when it ended, in files beside the output
PAYLOAD = "date +%s.%N > out/{i}.txt.start; sleep 1; date +%s.%N > out/{i}.txt"


OFFICIAL_ARGS = ["--executor", "slurm", "--default-resources", "slurm_partition=debug", "slurm_account=root"]
# the workflow-engine modes: (snakemake, its arguments); "bare" and "bare-array" have no engine
MODES = {
    "slurm-gpu": (VENV_BIN / "snakemake", ["--executor", "slurm-gpu"]),
    "slurm-gpu-arrays": (VENV_BIN / "snakemake", ["--executor", "slurm-gpu", "--slurm-gpu-array-jobs=all"]),
    "slurm-gpu-job-side": (VENV_BIN / "snakemake", ["--executor", "slurm-gpu", "--slurm-gpu-job-side-snakemake"]),
    "official": (OFFICIAL_BIN / "snakemake", OFFICIAL_ARGS),
    # at most 50 steps per hand-over, so per array: the official plugin 2.8.0 puts an array's task commands
    # in one --wrap argument, over Linux's 128 kB per argument at about 90 tasks, and its fallback (the
    # script on stdin) splits the command over lines, so every task but the first fails
    "official-arrays": (OFFICIAL_BIN / "snakemake", [*OFFICIAL_ARGS, "--slurm-array-jobs=all",
                                                     "--max-jobs-per-timespan", "50/1s"]),
}


def reset_counters() -> None:
    slurm("sdiag", "--reset")
    slurm("sacctmgr", "-i", "clear", "stats")


def counters() -> tuple[dict[str, int], dict[str, int]]:
    """(slurmctld RPCs, slurmdbd RPCs) by message type since reset_counters()."""
    return rpc_counts(slurm("sdiag")), rpc_counts(slurm("sacctmgr", "show", "stats"))


def finished_times(lines: list[tuple[float, str]]) -> dict[str, float]:
    """Output path -> when Snakemake printed that the job making it finished, from its console
    output as it arrived (Snakemake's own log stamps whole seconds only)."""
    outputs, done = {}, {}
    current_output: str | None = None
    for arrived, line in lines:
        m = re.match(r"\s+output: (\S+)$", line)
        if m:
            current_output = m.group(1)
            continue
        m = re.match(r"\s+jobid: (\d+)$", line)
        if m and current_output:
            outputs[m.group(1)] = current_output
            current_output = None
            continue
        m = re.match(r"Finished jobid: (\d+)", line)
        if m and m.group(1) in outputs:
            done[outputs[m.group(1)]] = arrived
    return done


def run_snakemake(workdir: Path, snakemake: Path, executor_args: list[str], jobs: int,
                  bin_dir: Path) -> tuple[float, dict[str, float]]:
    """Wall time of the run, and when each output's job was reported finished."""
    env = dict(os.environ, PATH=f"{bin_dir}:{snakemake.parent}:{os.environ['PATH']}")
    argv = [str(snakemake), "--jobs", str(jobs), "--latency-wait", "5", *executor_args]
    lines: list[tuple[float, str]] = []
    start = time.time()
    proc = subprocess.Popen(argv, cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, bufsize=1)
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append((time.time(), line.rstrip("\n")))
    rc = proc.wait(timeout=3600)
    took = time.time() - start
    (workdir / "snakemake-output.txt").write_text("\n".join(text for _, text in lines) + "\n")
    if rc != 0:
        raise RuntimeError(f"{' '.join(argv)} failed; see {workdir / 'snakemake-output.txt'}")
    return took, finished_times(lines)


def run_bare(workdir: Path, n: int, chain: bool, bin_dir: Path) -> tuple[float, dict[str, float]]:
    """The limit: sbatch each job (argv, no engine), poll squeue once a second until it is gone."""
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}")
    (workdir / "out").mkdir()
    seen: dict[str, float] = {}

    def submit(i: int) -> str:
        out = subprocess.run(["sbatch", "--parsable", "--time=5", "--mem=100", f"--output={workdir}/slurm-%j.out",
                              f"--chdir={workdir}", "--wrap=" + PAYLOAD.format(i=i)],
                             env=env, capture_output=True, text=True, check=True).stdout
        return out.strip().split(";")[0]

    def wait(ids: dict[str, int]) -> None:
        while ids:
            time.sleep(1)
            out = subprocess.run(["squeue", "--noheader", f"--jobs={','.join(ids)}", "--format=%i"], env=env,
                                 capture_output=True, text=True).stdout.split()
            for job in [j for j in ids if j not in out]:
                seen[f"out/{ids.pop(job)}.txt"] = time.time()

    start = time.time()
    if chain:
        for i in range(n):
            wait({submit(i): i})
    else:
        wait({submit(i): i for i in range(n)})
    return time.time() - start, seen


def run_bare_array(workdir: Path, n: int, bin_dir: Path) -> tuple[float, dict[str, float]]:
    """The limit of arrays: one sbatch --array of the same payloads, squeue once a second until gone."""
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}")
    (workdir / "out").mkdir()
    seen: dict[str, float] = {}
    start = time.time()
    array = subprocess.run(["sbatch", "--parsable", "--time=5", "--mem=100", f"--array=0-{n - 1}",
                            f"--output={workdir}/slurm-%A_%a.out", f"--chdir={workdir}",
                            "--wrap=" + PAYLOAD.replace("{i}", "$SLURM_ARRAY_TASK_ID")],
                           env=env, capture_output=True, text=True, check=True).stdout.strip().split(";")[0]
    left = set(range(n))
    while left:
        time.sleep(1)
        out = subprocess.run(["squeue", "--noheader", "--array", f"--jobs={array}", "--format=%i"], env=env,
                             capture_output=True, text=True).stdout.split()
        listed = {int(i.split("_")[1]) for i in out if "_" in i and i.split("_")[1].isdigit()}
        for task in [t for t in left if t not in listed]:
            seen[f"out/{task}.txt"] = time.time()
            left.discard(task)
    return time.time() - start, seen


def slurm_times(since: float) -> list[tuple[float, float, float]]:
    """(submit, start, end) of every job submitted since `since`, from accounting (whole seconds)."""
    out = slurm("sacct", "--noheader", "--parsable2", "-X", "--allusers",
                f"--starttime={datetime.fromtimestamp(since - 1).strftime('%Y-%m-%dT%H:%M:%S')}",
                "--format=Submit,Start,End")
    rows = []
    for line in out.splitlines():
        try:
            submit, start, end = (datetime.fromisoformat(v).timestamp() for v in line.split("|"))
        except ValueError:  # a job without a start or end: not one of ours, or not finished
            continue
        if submit >= int(since):
            rows.append((submit, start, end))
    return rows


def measure(mode: str, scenario: str, n: int, base: Path) -> dict[str, object]:
    workdir = base / f"{scenario}-{mode}"
    workdir.mkdir(parents=True)
    tools = workdir.parent / f"{scenario}-{mode}-tools"
    calls = tools / "calls.log"
    bin_dir = shim_dir(tools / "shim", calls, SHIMMED)
    chain = scenario == "chain"
    (workdir / "Snakefile").write_text(SNAKEFILE.format(n=n, chain=chain))
    reset_counters()
    began = time.time()
    if mode == "bare":
        wall, noticed = run_bare(workdir, n, chain, bin_dir)
    elif mode == "bare-array":
        wall, noticed = run_bare_array(workdir, n, bin_dir)
    else:
        snakemake, args = MODES[mode]
        wall, noticed = run_snakemake(workdir, snakemake, args, n, bin_dir)
    ctld, dbd = counters()
    rpcs = {k: v for k, v in ctld.items() if k not in OWN_RPCS}
    dbd_queries = sum(c for k, c in dbd.items() if QUERY_RPCS.match(k))
    # the payload writes the time it ended into its output
    latencies = [noticed[o] - float((workdir / o).read_text()) for o in noticed if (workdir / o).exists()]
    invoked: dict[str, int] = {}
    submits: list[float] = []
    if calls.exists():
        for line in calls.read_text().splitlines():
            invoked[line.split()[0]] = invoked.get(line.split()[0], 0) + 1
            if line.startswith("sbatch "):
                submits.append(float(line.split()[1]))
    stages = {}
    if chain and len(submits) == n:
        # one job at a time: from each submission to its payload's end (queue, start, job-side
        # engine, the payload), and from a payload's end to the next submission (noticing, scheduling)
        ends = [float((workdir / f"out/{i}.txt").read_text()) for i in range(n)]
        begins = [float((workdir / f"out/{i}.txt.start").read_text()) for i in range(n)]
        stages = {"submit_to_payload_end_s": round(statistics.mean(e - s for s, e in zip(submits, ends)), 2),
                  "payload_end_to_next_submit_s": round(statistics.mean(s - e for e, s in zip(ends, submits[1:])), 2),
                  # of submission -> payload end: Slurm's queue and the job's start, up to the payload's first line
                  "submit_to_payload_start_s": round(statistics.mean(b - s for s, b in zip(submits, begins)), 2),
                  "stage_s": round(statistics.mean(b - a for a, b in zip(ends, ends[1:])), 2) if n > 1 else None,
                  # Snakemake's own start (imports, DAG, pre-flight) and end, outside the stages
                  "before_first_submit_s": round(submits[0] - began, 2),
                  "after_last_payload_s": round(began + wall - ends[-1], 2)}
    times = slurm_times(began)
    return {
        "mode": mode, "scenario": scenario, "jobs": n, "wall_s": round(wall, 1),
        "queued_mean_s": round(statistics.mean(s - q for q, s, _ in times), 2) if times else None,
        "ran_mean_s": round(statistics.mean(e - s for _, s, e in times), 2) if times else None,
        "rpcs": sum(rpcs.values()) + dbd_queries,
        "query_rpcs": sum(c for k, c in rpcs.items() if QUERY_RPCS.match(k)) + dbd_queries,
        "rpcs_by_type": rpcs, "dbd_rpcs_by_type": dbd, "invocations": invoked,
        **stages,
        "latency_mean_s": round(statistics.mean(latencies), 2) if latencies else None,
        "latency_max_s": round(max(latencies), 2) if latencies else None,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", type=int, default=100)
    ap.add_argument("--chain", type=int, default=10)
    ap.add_argument("--only", default="slurm-gpu,slurm-gpu-job-side,official,bare")
    ap.add_argument("--scenarios", default="independent,chain")
    args = ap.parse_args()
    modes = args.only.split(",")
    base = Path(tempfile.mkdtemp(prefix="sg-controller-load-"))
    rows = []
    for scenario, n in (("independent", args.jobs), ("chain", args.chain)):
        if scenario not in args.scenarios.split(","):
            continue
        for mode in modes:
            print(f"[controller-load] {scenario} x{n}: {mode} ...", file=sys.stderr, flush=True)
            rows.append(measure(mode, scenario, n, base))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "controller_load.json").write_text(json.dumps(rows, indent=2) + "\n")
    print(table(rows))
    shutil.rmtree(base, ignore_errors=True)
    return 0


def table(rows: list[dict[str, object]]) -> str:
    head = ("scenario", "mode", "wall s", "RPCs/job", "query RPCs/job", "squeue", "sacct", "scontrol", "sbatch",
            "other", "queued s", "ran s", "notice s (mean/max)")
    lines = [head]
    for r in rows:
        n = r["jobs"]
        inv = dict(r["invocations"])  # type: ignore[arg-type]
        other = sum(v for k, v in inv.items() if k not in ("squeue", "sacct", "scontrol", "sbatch"))
        lat = "-" if r["latency_mean_s"] is None else f"{r['latency_mean_s']}/{r['latency_max_s']}"
        lines.append((r["scenario"], r["mode"], r["wall_s"], f"{r['rpcs'] / n:.1f}", f"{r['query_rpcs'] / n:.1f}",
                      inv.get("squeue", 0), inv.get("sacct", 0), inv.get("scontrol", 0), inv.get("sbatch", 0),
                      other, r["queued_mean_s"], r["ran_mean_s"], lat))
    return format_table(lines) + "\n\n" + "\n".join(ratios(rows))


def ratios(rows: list[dict[str, object]]) -> list[str]:
    """The issue's goals, side by side with what was measured (figures, never a failure)."""
    by = {(r["scenario"], r["mode"]): r for r in rows}
    notes = []
    for scenario in ("independent", "chain"):
        ours, off, bare = (by.get((scenario, m)) for m in ("slurm-gpu", "official", "bare"))
        if ours and off:
            rpc = ours["rpcs"] / max(off["rpcs"], 1)
            wall = ours["wall_s"] / off["wall_s"]
            notes.append(f"{scenario}: RPCs/job slurm-gpu/official = {rpc:.2f}x (goal <= 0.5x), "
                         f"query RPCs {ours['query_rpcs'] / max(off['query_rpcs'], 1):.2f}x, "
                         f"wall {wall:.2f}x (goal <= 0.5x)")
        if ours and bare:
            notes.append(f"{scenario}: wall slurm-gpu/bare sbatch loop = {ours['wall_s'] / bare['wall_s']:.2f}x "
                         "(goal <= 1.3x)")
            if scenario == "chain" and "submit_to_payload_end_s" in ours and "submit_to_payload_end_s" in bare:
                notes.append(
                    f"chain, per stage: payload end -> next submission {ours['payload_end_to_next_submit_s']} s "
                    f"(bare loop {bare['payload_end_to_next_submit_s']} s); submission -> payload end "
                    f"{ours['submit_to_payload_end_s']} s (bare loop {bare['submit_to_payload_end_s']} s)")
        side = by.get((scenario, "slurm-gpu-job-side"))
        if ours and side:
            notes.append(f"{scenario}: with a job-side Snakemake in every job (--slurm-gpu-job-side-snakemake) the wall "
                         f"time is {side['wall_s']} s, {side['wall_s'] / ours['wall_s']:.2f}x that of direct steps"
                         + (f", {side['wall_s'] / bare['wall_s']:.2f}x the bare loop" if bare else ""))
    return notes


if __name__ == "__main__":
    sys.exit(main())
