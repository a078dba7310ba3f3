"""Lightning with launcher="torchrun" on the real cluster: one Slurm task per node, torchrun starts the
node's two processes, and a Lightning script with Resumable + trainer_kwargs() (CPU, Gloo) forms one
world of 4 ranks on 2 nodes, checkpoints and writes its output. The same script given its own
SLURMEnvironment (ranks from SLURM_PROCID: one per node) is refused before any process group forms."""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from conftest import snakemake, write_workflow

SNAKEFILE = r'''
rule train:
    output: "results/model.pt"
    log: "results/train.log"
    resources: nodes=2, gpus=4, launcher="torchrun", cpus_per_task=1, runtime=10
    shell:
        "srun python -m snakemake_executor_plugin_slurm_gpu.runtime.torchrun train.py {output:q} 100"
        " 2>&1 | tee {log:q}"

# the same script with a SLURMEnvironment of its own, as scripts written for launcher="srun" pass
rule refused:
    output: "results/refused.pt"
    log: "results/refused.log"
    resources: nodes=2, gpus=4, launcher="torchrun", cpus_per_task=1, runtime=10
    shell:
        "srun python -m snakemake_executor_plugin_slurm_gpu.runtime.torchrun train.py {output:q} 100 slurm"
        " 2>&1 | tee {log:q}"
'''

TRAIN = r'''
from snakemake_executor_plugin_slurm_gpu.runtime import signals
signals.install()  # first, before importing torch

import os
import sys

import lightning.pytorch as L
import torch
from lightning.pytorch.plugins.environments import SLURMEnvironment
from torch.utils.data import DataLoader, TensorDataset

from snakemake_executor_plugin_slurm_gpu.runtime import trainer_kwargs
from snakemake_executor_plugin_slurm_gpu.runtime.lightning import Resumable


class Tiny(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(8, 1)

    def setup(self, stage):
        t = self.trainer
        print(f"rank_joined rank={t.global_rank} world_size={t.world_size} local_rank={t.local_rank} "
              f"node_rank={t.node_rank} env={type(t.strategy.cluster_environment).__name__} "
              f"torchrun_rank={os.environ['RANK']} host={os.uname().nodename}", flush=True)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.mse_loss(self.layer(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05)


out, max_steps = sys.argv[1], int(sys.argv[2])
resumable = Resumable(every_n_steps=25)
environment = SLURMEnvironment(auto_requeue=False) if sys.argv[3:] == ["slurm"] else resumable.environment()
torch.manual_seed(0)
x = torch.randn(512, 8)
loader = DataLoader(TensorDataset(x, x.sum(dim=1, keepdim=True)), batch_size=4)
model = Tiny()
trainer = L.Trainer(max_steps=max_steps, callbacks=[resumable], plugins=[environment], logger=False,
                    enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                    **trainer_kwargs(accelerator="cpu"))
trainer.fit(model, loader, ckpt_path=resumable.resume_path())
if not resumable.finished(trainer):
    sys.exit(143)
if trainer.is_global_zero:
    torch.save(model.state_dict(), out)
    print(f"training_done global_step={trainer.global_step}", flush=True)
'''


def events(workdir: Path, rule: str) -> list[dict]:
    return [json.loads(line) for path in sorted((workdir / ".snakemake/slurm-gpu/events" / rule).glob("*.jsonl"))
            for line in path.read_text().splitlines()]


def test_lightning_under_torchrun_forms_the_4_rank_world_and_refuses_a_slurm_environment(cluster, tmp_path):
    workdir = write_workflow(tmp_path / "wf", SNAKEFILE)
    (workdir / "train.py").write_text(TRAIN)

    run = snakemake(workdir, "results/model.pt", timeout_s=300)
    assert run.returncode == 0, run.output
    log = (workdir / "results/train.log").read_text()
    joined = re.findall(r"rank_joined rank=(\d+) world_size=(\d+) local_rank=(\d+) node_rank=(\d+) env=(\S+) "
                        r"torchrun_rank=(\d+) host=(n\d+)", log)  # two processes share the output: lines may run together
    # one world of 4: Lightning's ranks are torchrun's, two processes on each node
    assert sorted(int(rank) for rank, *_ in joined) == [0, 1, 2, 3], log
    for rank, world, local, node, env, torchrun_rank, _ in joined:
        assert (world, env, torchrun_rank) == ("4", "TorchElasticEnvironment", rank), log
        assert int(rank) == 2 * int(node) + int(local), log
    assert sorted(host for *_, host in joined) == ["n1", "n1", "n2", "n2"], log
    assert "training_done global_step=100" in log
    assert set(torch.load(workdir / "results/model.pt", weights_only=True)) == {"layer.weight", "layer.bias"}
    found = events(workdir, "train")
    assert sorted(e["rank"] for e in found if e["event"] == "rank_ready") == [0, 1, 2, 3]
    assert {e["world_size"] for e in found if e["event"] == "rank_ready"} == {4}
    # rank 0 alone writes, every 25 steps
    assert [e["global_step"] for e in found if e["event"] == "checkpoint"] == [25, 50, 75, 100]
    assert [e["global_step"] for e in found if e["event"] == "training_done"] == [100]

    refused = snakemake(workdir, "results/refused.pt", timeout_s=300)
    assert refused.returncode != 0, refused.output
    log = (workdir / "results/refused.log").read_text()
    assert "GeometryError" in log and "HINT:" in log, log
    # what each process is and what Lightning would have made of it (torchrun and srun's kill-on-bad-exit
    # may end the others before they print theirs); no process group formed
    claims = re.findall(r"started this process as rank (\d) of 4 \(2 node\(s\) x 2 process\(es\)\), but "
                        r"Lightning's Trainer counts it as rank (\d) of 2 \(cluster environment SLURMEnvironment\)",
                        log)
    assert claims and all(int(slurm) == int(rank) // 2 for rank, slurm in claims), log
    assert "rank_joined" not in log
    assert not (workdir / "results/refused.pt").exists()
