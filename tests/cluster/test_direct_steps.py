"""Direct steps on the real cluster: a plain shell rule's command runs in its batch script without a
job-side Snakemake, with Snakemake's semantics kept (stale outputs removed before, outputs checked and
a failed step's outputs removed after, the Snakefile's shell prefix, the thread variables); rules that
need the job-side Snakemake, and every rule under --slurm-gpu-job-side-snakemake, keep it."""

import os
import signal
from pathlib import Path

from conftest import Background, daemon_pid, restore_cluster, slurm, snakemake, wait_for, write_workflow

PIPELINE = '''
shell.prefix("set -euo pipefail; export FROM_PREFIX=yes; ")

rule all:
    input: "out/summary.txt", "out/by_python.txt"

rule count:
    output: "out/{name}.txt"
    log: "logs/count/{name}.log"
    threads: 2
    resources: runtime=5
    shell:
        "test ! -e {output:q}; "  # the stale copy is gone before the command runs
        "echo {wildcards.name:q} threads=$OMP_NUM_THREADS prefix=$FROM_PREFIX > {output:q} 2> {log:q}"

rule summary:
    input: expand("out/{name}.txt", name=["a", "b c"])
    output: "out/summary.txt"
    resources: runtime=5
    shell: "cat {input:q} > {output:q}"

rule by_python:
    input: "out/summary.txt"
    output: "out/by_python.txt"
    resources: runtime=5
    run:
        with open(output[0], "w") as f:
            f.write(open(input[0]).read().upper())
'''

HALF_WRITTEN = '''
rule all:
    input: "out/half.txt"

rule half:
    output: "out/half.txt"
    resources: runtime=5
    shell: "echo partial > {output:q}; echo the-command-failed-here >&2; exit 5"
'''


def scripts(workdir, rule):
    return [p.read_text() for p in sorted((workdir / ".snakemake/slurm-gpu/scripts" / rule).rglob("*.sh"))]


def test_plain_shell_rules_run_directly_and_a_run_block_keeps_the_job_side_snakemake(cluster, tmp_path):
    workdir = write_workflow(tmp_path / "wf", PIPELINE)
    (workdir / "out").mkdir()
    (workdir / "out/a.txt").write_text("stale\n")  # forced to run again: gone before its command starts
    run = snakemake(workdir, "--forcerun", "count")
    assert run.returncode == 0, run.output
    assert (workdir / "out/summary.txt").read_text() == "a threads=2 prefix=yes\nb c threads=2 prefix=yes\n"
    assert (workdir / "out/by_python.txt").read_text() == "A THREADS=2 PREFIX=YES\nB C THREADS=2 PREFIX=YES\n"
    assert (workdir / "logs/count").is_dir()
    for rule in ("count", "summary"):
        for script in scripts(workdir, rule):
            assert " -m snakemake " not in script and "#SBATCH --no-requeue" in script
    (python_script,) = scripts(workdir, "by_python")
    assert " -m snakemake " in python_script and "--no-requeue" not in python_script


def test_a_failed_direct_step_reports_its_own_exit_status_and_loses_its_output(cluster, tmp_path):
    workdir = write_workflow(tmp_path / "wf", HALF_WRITTEN)
    run = snakemake(workdir)
    assert run.returncode != 0
    (job,) = run.jobs("half")
    assert f"Slurm job {job}: Slurm job ended FAILED" in run.output and "exit code 5:0" in run.output
    assert "the-command-failed-here" in run.output  # the end of the job's log
    assert not (workdir / "out/half.txt").exists()  # removed by Snakemake: it might be half written


def test_the_job_side_snakemake_setting_runs_every_step_through_it(cluster, tmp_path):
    workdir = write_workflow(tmp_path / "wf", PIPELINE)
    run = snakemake(workdir, "--slurm-gpu-job-side-snakemake")
    assert run.returncode == 0, run.output
    assert (workdir / "out/summary.txt").read_text() == "a threads=2 prefix=yes\nb c threads=2 prefix=yes\n"
    for rule in ("count", "summary", "by_python"):
        assert all(" -m snakemake " in script for script in scripts(workdir, rule))


NODE_LOSS = '''
rule all:
    input: "out/a.txt"

rule slow:
    output: "out/a.txt"
    resources: runtime=5
    shell:
        # appends: a run that found the first run's output still there would show it
        "printf 'from-%s\\n' $SLURM_JOB_ID >> {output:q}; if [ ! -e go ]; then sleep 601; fi; echo done >> {output:q}"
'''


def _orphans() -> list[int]:
    """The first run's command, left running on the node whose slurmd died (all nodes are this machine)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and (entry / "cmdline").read_bytes() == b"sleep\x00601\x00":
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def test_a_direct_step_on_a_node_that_dies_is_resubmitted_at_once_with_its_output_removed(cluster, tmp_path):
    workdir = write_workflow(tmp_path / "wf", NODE_LOSS)
    logs = workdir / ".snakemake/slurm-gpu/logs/slow/all"
    bg = Background(workdir)
    try:
        (first,) = wait_for(lambda: [p.stem for p in logs.glob("*.log")] if logs.is_dir() else [], 60, "the job")
        wait_for(lambda: (workdir / "out/a.txt").exists(), 60, "the command to start")
        node = slurm("squeue", "--noheader", f"--jobs={first}", "--format=%N").strip()
        (workdir / "go").touch()  # the next run goes straight through; this one sleeps on
        os.kill(daemon_pid(f"slurmd-{node}"), signal.SIGKILL)
        wait_for(lambda: len(list(logs.glob("*.log"))) == 2, 120, "the step to be resubmitted")
        for pid in _orphans():
            os.kill(pid, signal.SIGKILL)
        run = bg.wait(timeout_s=300)
    finally:
        bg.kill()
        for pid in _orphans():
            os.kill(pid, signal.SIGKILL)
        restore_cluster()
    assert run.returncode == 0, run.output
    second = max((p.stem for p in logs.glob("*.log")), key=int)
    # Snakemake removed the first run's output before the second began; nothing of the first run is in it
    assert (workdir / "out/a.txt").read_text() == f"from-{second}\ndone\n"
    assert "resubmitting (preemption 1 of" in run.output
    # the node that failed is kept out of the new job (the partition has another one)
    scripts = sorted((workdir / ".snakemake/slurm-gpu/scripts/slow/all").glob("*.sh"))
    assert f"#SBATCH --exclude={node}" in scripts[-1].read_text()
    assert f"#SBATCH --exclude" not in scripts[0].read_text()
    assert f"its new job excludes {node}" in run.output
    # --no-requeue: Slurm ended the first job for good instead of rerunning its script over the output
    states = slurm("sacct", "--noheader", "--parsable2", "-X", "--duplicates", f"--jobs={first}",
                   "--format=State").split()
    assert states == ["NODE_FAIL"], states
