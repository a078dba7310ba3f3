"""`slurm-gpu efficiency` after a real run: a CPU rule and a 2-GPU rule through `snakemake --executor
slurm-gpu`, then the figures sacct gave for each step.

The cluster samples memory every 30 s (JobAcctGatherFrequency), longer than these jobs run: the CPU
rule asks for 1 s sampling (`--acctg-freq=task=1` in slurm_extra) so that its peak is measured; the
GPU rule keeps the default, and its peak may be missing ('-'), which the report must survive."""

from __future__ import annotations

import csv
import io
import subprocess
import time

from conftest import VENV_BIN, snakemake, write_workflow

PYTHON = VENV_BIN / "python"

WORKFLOW = f'''
rule all:
    input: "out/cpu.txt", "out/gpu.txt"

rule burn:
    output: "out/cpu.txt"
    threads: 2
    resources: runtime=5, mem_mb=600, slurm_extra="--acctg-freq=task=1"
    shell:
        # ~3 s of CPU on one of its 2 CPUs, holding 100 MB
        "{PYTHON} -c 'import time; b = bytearray(100 << 20); b[::4096] = bytes(len(b[::4096])); "
        "end = time.process_time() + 3\\nwhile time.process_time() < end: pass' && touch {{output}}"

rule gpu:
    output: "out/gpu.txt"
    resources: runtime=5, gpus=2, mem_mb=300
    shell: "srun sleep 3 && touch {{output}}"
'''


def efficiency_rows(workdir) -> tuple[dict[str, dict[str, str]], str]:
    target = workdir / "efficiency.csv"
    done = subprocess.run([str(VENV_BIN / "slurm-gpu"), "efficiency", "--directory", str(workdir), "--csv",
                           str(target)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return {row["step"]: row for row in csv.DictReader(io.StringIO(target.read_text()))}, done.stdout


def test_efficiency_of_a_cpu_and_a_gpu_step(cluster, tmp_path):
    workdir = write_workflow(tmp_path / "wf", WORKFLOW)
    run = snakemake(workdir, "--slurm-gpu-efficiency-report", "report.csv", timeout_s=120)
    assert run.returncode == 0, run.output
    # the report the run wrote at its end (accounting may still lag there; the command below waits)
    assert "efficiency report written to" in run.output
    assert {row["step"] for row in csv.DictReader(io.StringIO((workdir / "report.csv").read_text()))} == \
        {"burn/all", "gpu/all"}

    # slurmdbd records a job's end (and its steps' usage) a moment after slurmctld knows it
    deadline = time.monotonic() + 20
    while True:
        rows, printed = efficiency_rows(workdir)
        ready = all(rows.get(step, {}).get("state") == "COMPLETED" for step in ("burn/all", "gpu/all"))
        if ready or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert set(rows) == {"burn/all", "gpu/all"}, printed
    burn, gpu = rows["burn/all"], rows["gpu/all"]
    assert burn["state"] == gpu["state"] == "COMPLETED", printed

    for row in (burn, gpu):
        assert row["jobs"] == "1"
        assert int(row["elapsed_s"]) >= 3
        assert 0.0 <= float(row["cpu_efficiency"]) <= 1.05, row
    # the CPU rule: 2 CPUs (threads), no GPU, its mem_mb per node, a measured peak
    assert (burn["cpus"], burn["gpus"], float(burn["gpu_hours"])) == ("2", "0", 0.0)
    assert float(burn["cpu_efficiency"]) > 0.2  # ~3 s of CPU over ~3-6 s x 2 CPUs
    assert float(burn["mem_requested_mb"]) == 600.0
    assert float(burn["mem_peak_mb"]) >= 50.0, burn  # 100 MB held, sampled every second
    assert 0.0 < float(burn["mem_efficiency"]) <= 1.0
    # the GPU rule: 2 GPUs for >= 3 s
    assert gpu["gpus"] == "2"
    assert float(gpu["gpu_hours"]) >= 2 * 3 / 3600 - 1e-4
    assert float(gpu["mem_requested_mb"]) == 300.0
    assert gpu["mem_peak_mb"] == "" or float(gpu["mem_peak_mb"]) > 0.0  # default 30 s sampling: maybe none
    assert float(burn["gpu_hours_lost"]) == float(gpu["gpu_hours_lost"]) == 0.0  # nothing was preempted

    assert "burn/all" in printed and "gpu/all" in printed
    assert "total: " in printed and "GPU-hours used, 0.00 GPU-hours lost to preemption" in printed
    assert run.seconds < 60, f"the workflow took {run.seconds:.0f} s"
