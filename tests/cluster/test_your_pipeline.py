"""A user's pipeline as it is, run through slurm-gpu on the real cluster: Snakemake's default
resources and resources it knows only later, the official Slurm plugin's resource names, group
jobs and pipes, threads as Slurm gave them, and an environment that would otherwise change the jobs
behind their scripts' backs. No profile of ours: a user's pipeline has none."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from conftest import KEEP_LOGS, VENV_BIN, Run, _env, jobs_from, slurm, write_workflow


def plain(workdir: Path, *args: str, env: dict[str, str] | None = None, timeout_s: float = 300) -> Run:
    """`snakemake --executor slurm-gpu` as a user of the official plugin would call it."""
    argv = [str(VENV_BIN / "snakemake"), "--executor", "slurm-gpu", "--jobs", "8", "--latency-wait", "5", *args]
    start = time.monotonic()
    proc = subprocess.run(argv, cwd=workdir, env=_env(env), capture_output=True, text=True, timeout=timeout_s)
    return Run(proc.returncode, proc.stdout + proc.stderr, workdir, time.monotonic() - start)


def since() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(time.time() - 60))


TWO_RULES = r'''
rule all:
    input: "b.txt", "c.txt"

rule a:
    output: "a.txt"
    shell: "seq 1 1000 > {output}"

# a plain shell rule: its command runs in the batch script; {threads} as Snakemake formats it
rule b:
    input: "a.txt"
    output: "b.txt"
    threads: 3
    # known only once a.txt exists: '<TBD>' when the run starts
    resources: mem_mb=lambda wildcards, input: 300 + int(input.size_mb)
    shell: "echo threads={threads} cpus=$SLURM_CPUS_PER_TASK mem=$SLURM_MEM_PER_NODE > {output}"

# a run block needs the job-side Snakemake, whose {threads} is capped by its --cores
rule c:
    input: "a.txt"
    output: "c.txt"
    threads: 3
    run:
        shell("echo threads={threads} cpus=$SLURM_CPUS_PER_TASK > {output}")
'''


@pytest.mark.parametrize("defaults", [[], ["slurm_partition=debug"]], ids=["bare", "with-partition"])
def test_default_resources_and_later_known_resources_run_and_threads_are_the_cpus_slurm_gave(
        cluster, tmp_path, defaults):
    workdir = write_workflow(tmp_path / "wf", TWO_RULES)
    run = plain(workdir, "--default-resources", *defaults)
    assert run.returncode == 0, run.output
    assert "<TBD>" not in run.output.split("resources:")[0]  # no refusal of what was not known yet
    # the host has 2 cores; "--cores all" in the job gave threads=2 here before
    assert (workdir / "b.txt").read_text().split() == ["threads=3", "cpus=3", "mem=300"]
    assert (workdir / "c.txt").read_text().split() == ["threads=3", "cpus=3"]


def test_a_resource_known_only_at_submission_is_checked_then(cluster, tmp_path):
    workdir = write_workflow(tmp_path / "wf", '''
import os
rule all:
    input: "b.txt"
rule a:
    output: "a.txt"
    shell: "echo a > {output}"
rule b:
    input: "a.txt"
    output: "b.txt"
    # reads the input, so Snakemake can only tell once a.txt exists (3 then)
    resources: nodes=2, gpus=lambda wildcards, input: 1 + 2 * (os.path.getsize(input[0]) > 0)
    shell: "srun cat {input} > {output}"
''')
    start = since()
    run = plain(workdir)
    assert run.returncode != 0
    assert (workdir / "a.txt").exists()  # the pre-flight let the run start: 'gpus' was not known yet
    assert "slurm-gpu: not submitted: rule 'b': resource 'gpus' is 3, which is not divisible by nodes=2" in run.output
    assert "HINT: use gpus=2 or 4" in run.output
    assert {j["name"] for j in jobs_from(workdir, start)} == {"sg-a"}  # b never reached Slurm


OFFICIAL_NAMES = r'''
rule all:
    input: "gres.txt", "mpi.txt", "cpus_per_gpu.txt", "cluster.txt", "partitions.txt", "typo.txt"

rule gres:
    output: "gres.txt"
    resources: gres="gpu:1"
    shell: "srun bash -c 'echo gpus=$CUDA_VISIBLE_DEVICES tasks=$SLURM_NTASKS' > {output}"

rule mpi:
    output: "mpi.txt"
    resources: tasks=4, mpi="srun"
    shell: "{resources.mpi} hostname > {output}"

rule cpus_per_gpu:
    output: "cpus_per_gpu.txt"
    resources: gpu=1, cpus_per_gpu=2
    shell: "srun bash -c 'echo cpus=$SLURM_CPUS_PER_TASK' > {output}"

rule cluster:
    output: "cluster.txt"
    resources: clusters="local"
    shell: "echo $SLURM_CLUSTER_NAME > {output}"

rule partitions:
    output: "partitions.txt"
    resources: slurm_partition="urgent,debug"
    shell: "echo $SLURM_JOB_PARTITION > {output}"

rule typo:
    output: "typo.txt"
    resources: slurm_partiton="urgent"
    shell: "echo $SLURM_JOB_PARTITION > {output}"
'''


def test_the_official_plugins_resource_names_submit_what_they_say(cluster, tmp_path):
    workdir = write_workflow(tmp_path / "wf", OFFICIAL_NAMES)
    start = since()
    run = plain(workdir, KEEP_LOGS)
    assert run.returncode == 0, run.output
    text = {name: (workdir / f"{name}.txt").read_text().split()
            for name in ("gres", "mpi", "cpus_per_gpu", "cluster", "partitions", "typo")}
    # one GPU (0 or 1: the other rules' GPU jobs may hold either), one rank (it was no GPU at all)
    assert text["gres"] in (["gpus=0", "tasks=1"], ["gpus=1", "tasks=1"])
    assert len(text["mpi"]) == 4  # 4 tasks (it was 1)
    assert text["cpus_per_gpu"] == ["cpus=2"]  # (it was 1)
    assert text["cluster"] == ["local"]
    assert text["partitions"][0] in ("urgent", "debug")
    assert text["typo"] == ["debug"]  # not read, and said so:
    assert "resource 'slurm_partiton' is not read by slurm-gpu; did you mean 'slurm_partition'?" in run.output
    jobs = jobs_from(workdir, start)
    assert {j["state"] for j in jobs} == {"COMPLETED"}, jobs
    # status polls and the rest named every cluster once a step named one
    assert "--clusters=local" in "".join(p.read_text() for p in (workdir / ".snakemake/slurm-gpu/scripts/cluster")
                                          .rglob("*.sh"))


GROUPS = r'''
rule all:
    input: expand("out/{i}.b", i=range(5)), "out/piped.txt"

rule a:
    output: "out/{i}.a"
    group: "g"
    shell: "echo {wildcards.i} > {output}"

rule b:
    input: "out/{i}.a"
    output: "out/{i}.b"
    group: "g"
    shell: "cat {input} > {output}; echo b >> {output}"

rule produce:
    output: pipe("out/stream.pipe")
    threads: 2
    shell: "for i in 1 2 3; do echo line$i; done > {output}"

rule consume:
    input: "out/stream.pipe"
    output: "out/piped.txt"
    shell: "wc -l < {input} > {output}"
'''


def test_group_jobs_are_steps_of_their_own_and_pipes_run(cluster, tmp_path):
    workdir = write_workflow(tmp_path / "wf", GROUPS)
    start = since()
    run = plain(workdir)
    assert run.returncode == 0, run.output
    for i in range(5):
        assert (workdir / f"out/{i}.b").read_text().split() == [str(i), "b"]
    assert (workdir / "out/piped.txt").read_text().strip() == "3"
    jobs = jobs_from(workdir, start)
    # five jobs of group g (they cancelled each other as one step before) and one pipe group
    assert len({j["id"] for j in jobs}) == 6, jobs
    assert {j["state"] for j in jobs} == {"COMPLETED"}, jobs
    assert "cancelling" not in run.output
    assert len(list((workdir / ".snakemake/slurm-gpu/events/g_a_b").iterdir())) == 5
    # steps that succeeded leave their event log only (as the official plugin removes its logs)
    assert not (workdir / ".snakemake/slurm-gpu/logs/g_a_b").exists()
    assert not (workdir / ".snakemake/slurm-gpu/scripts/g_a_b").exists()


GPU_STEP = r'''
rule train:
    output: "trained.txt"
    resources: gpus=1, runtime=5
    shell: "srun bash -c 'echo job=$SLURM_JOB_ID' > {output}"
'''


def test_sbatch_variables_in_the_environment_do_not_override_the_script(cluster, tmp_path):
    workdir = write_workflow(tmp_path / "wf", GPU_STEP)
    run = plain(workdir, env={"SBATCH_NO_REQUEUE": "1", "SBATCH_TIMELIMIT": "1", "SBATCH_WCKEY": "kept"})
    assert run.returncode == 0, run.output
    job = (workdir / "trained.txt").read_text().split("=")[1].strip()
    shown = slurm("scontrol", "show", "job", job)
    assert "Requeue=1" in shown  # the training step stays requeueable (it was Requeue=0)
    assert "TimeLimit=00:05:00" in shown
    assert "SBATCH_NO_REQUEUE, SBATCH_TIMELIMIT set in the environment would override" in run.output
    assert "SBATCH_WCKEY" not in run.output  # the script sets no wckey: a site default stays one


def test_snakemake_inside_a_slurm_job_does_not_pass_that_jobs_settings_on(cluster, tmp_path):
    workdir = write_workflow(tmp_path / "wf", r'''
rule step:
    output: "step.txt"
    resources: mem_mb=500, runtime=5
    shell: "srun bash -c 'echo mem=$SLURM_MEM_PER_NODE per_cpu=${{SLURM_MEM_PER_CPU:-none}}' > {output}"
''')
    snakemake = f"{VENV_BIN / 'snakemake'} --executor slurm-gpu --jobs 2 --latency-wait 5"
    proc = subprocess.run(["sbatch", "--wait", "--parsable", "--mem-per-cpu=400", "--time=10",
                           f"--output={workdir / 'outer.log'}", f"--chdir={workdir}", f"--wrap={snakemake}"],
                          env=_env(), capture_output=True, text=True, timeout=300)
    log = (workdir / "outer.log").read_text() if (workdir / "outer.log").exists() else ""
    assert proc.returncode == 0, proc.stderr + log
    # srun in the step used to die: SLURM_MEM_PER_CPU (outer job) and SLURM_MEM_PER_NODE (step)
    assert (workdir / "step.txt").read_text().split() == ["mem=500", "per_cpu=none"]
    assert "SLURM_* variables are not passed on to the steps' jobs" in log
    assert os.environ.get("SLURM_JOB_ID") is None  # the test itself runs outside any job


SETTINGS = r"""
rule all:
    input: "ok.txt", "bad.txt"

rule ok:
    output: "ok.txt"
    shell: "echo $SLURM_JOB_ID > {output}"

rule bad:
    output: "bad.txt"
    shell: "echo failing on purpose; exit 3"
"""


def test_settings_users_of_the_official_plugin_rely_on(cluster, tmp_path):
    workdir = write_workflow(tmp_path / "wf", SETTINGS)
    logdir = tmp_path / "slurm-logs"
    old_events = workdir / ".snakemake/slurm-gpu/events/gone"
    old_events.mkdir(parents=True)
    for name, age_days in (("old.jsonl", 11), ("recent.jsonl", 9)):
        (old_events / name).write_text("{}\n")
        past = time.time() - age_days * 86400
        os.utime(old_events / name, (past, past))
    reservation = "sg-test"
    slurm("scontrol", "create", "reservation", f"reservationname={reservation}", "users=root", "starttime=now",
          "duration=5", "nodes=n2")
    try:
        start = since()
        run = plain(workdir, "--keep-going", "--slurm-gpu-logdir", str(logdir), "--slurm-gpu-jobname-prefix", "proj",
                    "--slurm-gpu-qos", "normal", "--slurm-gpu-reservation", reservation)
        assert run.returncode != 0, run.output
        ok_job = (workdir / "ok.txt").read_text().strip()
        shown = slurm("scontrol", "show", "job", ok_job)  # (the reservation is shown while it exists)
    finally:
        slurm("scontrol", "delete", f"reservationname={reservation}")
    assert "JobName=proj-ok" in shown and "QOS=normal" in shown and f"Reservation={reservation}" in shown
    assert " NodeList=n2" in shown
    assert {j["name"] for j in jobs_from(workdir, start)} == {"proj-ok", "proj-bad"}
    # the failed step's log is kept, in the log directory; the successful one's is gone
    (bad_log,) = (logdir / "bad" / "all").glob("*.log")
    assert "failing on purpose" in bad_log.read_text()
    assert str(bad_log) in run.output  # the failure message points at it
    assert not (logdir / "ok").exists()
    assert not (workdir / ".snakemake/slurm-gpu/logs").exists()
    # event logs older than --slurm-gpu-delete-logs-older-than (10 days) are removed at the end
    assert sorted(p.name for p in old_events.iterdir()) == ["recent.jsonl"]
