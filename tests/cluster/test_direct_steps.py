"""Direct steps on the real cluster: a plain shell rule's command runs in its batch script without a
job-side Snakemake, with Snakemake's semantics kept (stale outputs removed before, outputs checked and
a failed step's outputs removed after, the Snakefile's shell prefix, the thread variables); rules that
need the job-side Snakemake, and every rule under --slurm-gpu-job-side-snakemake, keep it."""

from conftest import snakemake, write_workflow

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
