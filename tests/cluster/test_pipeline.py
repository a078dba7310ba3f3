"""The example train-then-evaluate pipeline, end to end on the local cluster."""

import json
import re

from conftest import copy_workflow, jobs_from, slurm, snakemake

# 10 classes: chance is 0.10 and an untrained network scores about that. A nearest-centroid
# classifier already reaches ~0.90 on these digits; 300 DDP steps of the MLP reach ~0.97. Above
# 0.90 therefore means the four ranks really trained one model together.
MIN_ACCURACY = 0.90


def test_train_eval_pipeline_runs_train_as_one_two_node_job(cluster, slurm_release, tmp_path):
    workdir = copy_workflow("train-eval", tmp_path)
    run = snakemake(workdir)
    assert run.returncode == 0, run.output

    # one Slurm job for the training step, 2 nodes x 2 tasks, one GPU per task
    (train_job,) = run.jobs("train")
    names = [j["name"] for j in jobs_from(workdir, "now-1hours") if j["id"] == train_job]
    assert names and set(names) == {"sg-train"}
    job = dict(kv.split("=", 1) for kv in slurm("scontrol", "show", "job", "-o", train_job).split() if "=" in kv)
    assert job["NumNodes"] == "2"
    assert job["NumTasks"] == "4"
    assert "gres/gpu=4" in job.get("AllocTRES", job.get("TRES", ""))  # TRES= until 22.05, AllocTRES= since 23.02
    assert job["NtasksPerN:B:S:C"].startswith("2:")

    # every rank joined the same world, two per node, from the job's own output
    joined = re.findall(r"rank_joined rank=(\d) world_size=(\d) node_rank=(\d) local_rank=(\d) host=(\S+) "
                        r"master=(\S+)", (workdir / "results/logs/train.log").read_text())
    assert sorted(int(r[0]) for r in joined) == [0, 1, 2, 3]
    assert {r[1] for r in joined} == {"4"}
    assert sorted(r[4] for r in joined) == ["n1", "n1", "n2", "n2"]
    masters = {r[5] for r in joined}
    port = 15000 + int(train_job[-4:])
    assert masters == {f"n1:{port}"}

    # evaluate and report ran as their own (one-task) Slurm jobs after training
    assert len(run.jobs("evaluate")) == 1 and int(run.jobs("evaluate")[0]) > int(train_job)
    assert len(run.jobs("report")) == 1
    metrics = json.loads((workdir / "results/metrics.json").read_text())
    assert metrics["accuracy"] > MIN_ACCURACY, metrics
    assert "Held-out accuracy" in (workdir / "results/report.md").read_text()
    assert (workdir / ".snakemake/slurm-gpu/checkpoints/train/all").is_dir()
