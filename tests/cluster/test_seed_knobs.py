"""The seed page's remaining knobs on the real cluster: requeue off, the debugging flags, and the site's
set-up lines before `srun`."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import Background, slurm, snakemake, wait_for, write_workflow

# first run: says so and waits to be stopped; a later run (requeued, or resubmitted) finishes
RANKS = r'''
import os, sys, time
from pathlib import Path
restart = os.environ.get("SLURM_RESTART_COUNT", "0")
print("rank", os.environ["SLURM_PROCID"], "restart", restart, "site", os.environ.get("SITE_MARK"),
      "rule", os.environ.get("RULE_MARK"), "nccl", os.environ.get("NCCL_DEBUG"), flush=True)
first = Path("started-" + os.environ["SLURM_PROCID"])
if not first.exists() and os.environ.get("WAIT_FIRST") == "1":
    first.write_text(os.environ["SLURM_JOB_ID"])
    time.sleep(300)
'''


def _workflow(tmp_path: Path, resources: str, *, wait_first: bool) -> Path:
    workdir = tmp_path / "wf"
    workdir.mkdir()
    (workdir / "ranks.py").write_text(RANKS)
    env = "WAIT_FIRST=1 " if wait_first else ""
    return write_workflow(workdir, f'''
rule train:
    output: "done.txt"
    resources: {resources}
    shell: "{env}srun python ranks.py >> ranks.log && echo done > {{output}}"
''')


def _lines(workdir: Path) -> list[list[str]]:
    return [line.split() for line in (workdir / "ranks.log").read_text().splitlines() if line.startswith("rank ")]


def test_a_step_with_requeue_off_is_failed_by_a_preemption_not_restarted(cluster, tmp_path):
    workdir = _workflow(tmp_path, "nodes=2, gpus=4, runtime=10, requeue=0", wait_first=True)
    bg = Background(workdir)
    try:
        job = wait_for(lambda: (workdir / "started-0").exists() and (workdir / "started-0").read_text(), 240,
                       "the first run")
        script = slurm("scontrol", "show", "job", job)
        assert "Requeue=0" in script, script
        # the urgent partition's job needs every CPU of both nodes: Slurm preempts the step, and since
        # it may not requeue it, cancels it
        slurm("sbatch", "--partition=urgent", "--nodes=2", "--ntasks-per-node=4", "--job-name=urgent",
              "--output=/dev/null", "--wrap=sleep 3")
        run = bg.wait()
    finally:
        bg.kill()
    assert run.returncode != 0
    assert "requeue is off for this step (resource requeue=0)" in run.output, run.output[-3000:]
    assert "requeue=1" in run.output
    logs = sorted((workdir / ".snakemake/slurm-gpu/logs/train/all").glob("*.log"))
    assert [p.stem for p in logs] == [job]  # never resubmitted
    events = [json.loads(line) for line in
              (workdir / ".snakemake/slurm-gpu/events/train/all.jsonl").read_text().splitlines()]
    assert not [e for e in events if e["event"] in ("resubmitted", "requeued")]
    assert {line[3] for line in _lines(workdir)} == {"0"}  # no restart of the job either


def test_debug_ranks_see_nccl_debug(cluster, tmp_path):
    workdir = _workflow(tmp_path, "nodes=2, gpus=4, runtime=10", wait_first=False)
    run = snakemake(workdir, "--slurm-gpu-debug")
    assert run.returncode == 0, run.output
    assert sorted((line[1], line[9]) for line in _lines(workdir)) == [(r, "INFO") for r in "0123"]


def test_set_up_lines_run_in_every_job_of_the_step_after_a_requeue_too(cluster, tmp_path):
    workdir = _workflow(tmp_path, 'gpus=1, runtime=10, slurm_setup="export RULE_MARK=rule-after-$SITE_MARK"',
                        wait_first=True)
    bg = Background(workdir, "--slurm-gpu-setup", "export SITE_MARK=site")
    try:
        job = wait_for(lambda: (workdir / "started-0").exists() and (workdir / "started-0").read_text(), 240,
                       "the first run")
        slurm("scontrol", "requeue", job)
        run = bg.wait()
    finally:
        bg.kill()
    assert run.returncode == 0, run.output
    seen = [(line[3], line[5], line[7]) for line in _lines(workdir)]
    assert seen == [("0", "site", "rule-after-site"), ("1", "site", "rule-after-site")], seen
