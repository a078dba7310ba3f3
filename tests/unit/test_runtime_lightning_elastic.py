"""runtime.lightning_elastic with real Lightning DDP (gloo, one process per rank on this machine, each with
the environment srun gives a rank of an elastic step of 4 nodes x 1 GPU, min_nodes 1): the elastic
example's Lightning script (workflows/elastic/scripts/train_lightning.py), run on 4, 3, 2 or 1 ranks and
resumed from its checkpoint in another world, trains the model one process computing every global batch
trains (problem.train_alone), to float64 rounding.

The tolerance, 1e-10 absolute on weights of order 1: a world of W ranks sums the same micro-batch gradients
in another order (each rank's own, then DDP's all-reduce), which changes a float64 result by a few ulps
(~1e-16) per step; SGD with momentum over tens of steps on this smooth problem keeps that below 1e-12.
A real difference (a micro-batch counted twice or missed, a wrong weight) moves the weights by ~1e-3."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("lightning.pytorch")

SCRIPTS = Path(__file__).resolve().parents[2] / "workflows/elastic/scripts"
FULL = 4
# 96 samples in global batches of 4 x 4: 6 optimizer steps an epoch, so the runs below stop in the middle of an
# epoch and cross into the next ones
SAMPLES, MICRO, LR, STEPS = 96, 4, 0.05, 14


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rank_environment(rank: int, world: int, checkpoints: Path, restart: int) -> dict[str, str]:
    """What srun gives rank `rank` of a run on `world` of the step's 4 nodes (one rank each)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM", "MASTER_", "TORCHELASTIC", "PMI"))}
    env.update({
        "SLURM_JOB_ID": "4242", "SLURM_JOB_NAME": "sg-train", "SLURM_NTASKS": str(world),
        "SLURM_NNODES": str(world), "SLURM_NTASKS_PER_NODE": "1", "SLURM_TASKS_PER_NODE": f"1(x{world})",
        "SLURM_PROCID": str(rank), "SLURM_LOCALID": "0", "SLURM_NODEID": str(rank), "SLURM_NODELIST": "127.0.0.1",
        "SLURM_RESTART_COUNT": str(restart),
        "SLURM_GPU_STEP": "train", "SLURM_GPU_NODES": str(FULL), "SLURM_GPU_MIN_NODES": "1",
        "SLURM_GPU_TASKS_PER_NODE": "1", "SLURM_GPU_CHECKPOINT_DIR": str(checkpoints),
        "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(SCRIPTS), os.environ.get("PYTHONPATH")])),
    })
    return env


def run(world: int, steps: int, workdir: Path, restart: int = 0) -> list[dict]:
    """One run of the Lightning script on `world` ranks to global step `steps`, resuming from the newest
    checkpoint in workdir; the runs it recorded."""
    checkpoints = workdir / "checkpoints"
    checkpoints.mkdir(exist_ok=True)
    env0 = rank_environment(0, world, checkpoints, restart)
    argv = [sys.executable, str(SCRIPTS / "train_lightning.py"), "--steps", str(steps), "--micro-batch", str(MICRO),
            "--lr", str(LR), "--samples", str(SAMPLES), "--checkpoint-every", str(steps),
            "--out", str(workdir / "model.pt"), "--runs", str(workdir / "runs.json")]
    ranks = []
    for rank in range(world):
        env = rank_environment(rank, world, checkpoints, restart)
        env["MASTER_PORT"] = env0["MASTER_PORT"]
        ranks.append(subprocess.Popen(argv, env=env, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True))
    outputs = [r.communicate(timeout=240)[0] for r in ranks]
    assert [r.returncode for r in ranks] == [0] * world, outputs[0][-3000:]
    return json.loads((workdir / "runs.json").read_text())


@pytest.fixture(scope="module")
def reference() -> dict[str, torch.Tensor]:
    sys.path.insert(0, str(SCRIPTS))
    import problem

    return problem.train_alone(STEPS, MICRO, FULL, LR, samples=SAMPLES)


def assert_trains_the_reference(workdir: Path, reference: dict[str, torch.Tensor]) -> None:
    trained = torch.load(workdir / "model.pt", weights_only=True)
    assert trained.keys() == reference.keys()
    for key in reference:
        assert torch.allclose(trained[key], reference[key], rtol=0, atol=1e-10), (key, trained[key] - reference[key])


def test_the_full_world_trains_the_reference(reference, tmp_path: Path) -> None:
    runs = run(FULL, STEPS, tmp_path)
    assert [(r["world_size"], r["from_step"], r["to_step"]) for r in runs] == [(4, 0, STEPS)]
    assert_trains_the_reference(tmp_path, reference)
    sys.path.insert(0, str(SCRIPTS))
    import problem

    # the training moved the weights: the comparison is not between two untouched models
    assert not torch.allclose(reference["2.bias"], problem.model().state_dict()["2.bias"], atol=1e-3)


def test_resumed_on_three_of_four_ranks_where_shares_differ(reference, tmp_path: Path) -> None:
    # 4 global micro-batches on 3 ranks: rank 0 computes two, ranks 1 and 2 one each (the DDP hook weighs them)
    run(FULL, 9, tmp_path)
    runs = run(3, STEPS, tmp_path, restart=1)
    assert [(r["world_size"], r["from_step"], r["to_step"]) for r in runs] == [(4, 0, 9), (3, 9, STEPS)]
    assert_trains_the_reference(tmp_path, reference)


def test_resumed_mid_epoch_on_one_rank_then_two_then_all_four(reference, tmp_path: Path) -> None:
    # each run stops inside an epoch (6 steps), where the next world counts the epoch's batches done differently
    run(1, 7, tmp_path)
    run(2, 11, tmp_path, restart=1)
    runs = run(FULL, STEPS, tmp_path, restart=2)
    assert [(r["world_size"], r["from_step"], r["to_step"]) for r in runs] == [(1, 0, 7), (2, 7, 11), (4, 11, STEPS)]
    assert_trains_the_reference(tmp_path, reference)


# ---------------------------------------------------------------- in this process: the loader and the refusals

def elastic_world(world: int, rank: int = 0):
    from snakemake_executor_plugin_slurm_gpu.runtime import Geometry

    return Geometry(num_nodes=world, devices=1, world_size=world, rank=rank, local_rank=0, node_rank=rank,
                    master_addr=None, master_port=None, under_slurm=True, full_nodes=FULL)


def test_the_loader_gives_each_rank_its_lockstep_share_of_every_global_batch() -> None:
    from snakemake_executor_plugin_slurm_gpu.runtime.elastic import GlobalBatches
    from snakemake_executor_plugin_slurm_gpu.runtime.lightning_elastic import ElasticBatches

    dataset = torch.utils.data.TensorDataset(torch.arange(SAMPLES))
    plan = GlobalBatches(SAMPLES, MICRO, FULL, seed=5)
    per_rank = []
    for rank in range(3):
        elastic = ElasticBatches(MICRO, seed=5, world=elastic_world(3, rank))
        loader = elastic.loader(dataset)
        assert elastic.accumulation == 2 and len(loader) == 2 * plan.per_epoch
        per_rank.append([b[0].tolist() for b in loader])
    # global batch 0: parts 0 and 3 on rank 0, part 1 and its repeat on rank 1, part 2 and its repeat on rank 2
    assert per_rank[0][:2] == [plan.micro_batch(0, 0), plan.micro_batch(0, 3)]
    assert per_rank[1][:2] == [plan.micro_batch(0, 1)] * 2
    assert per_rank[2][:2] == [plan.micro_batch(0, 2)] * 2
    assert per_rank[0][2] == plan.micro_batch(1, 0)  # then the next global batch


def test_the_loader_chooses_the_samples_itself() -> None:
    from snakemake_executor_plugin_slurm_gpu.runtime.lightning_elastic import ElasticBatches

    elastic = ElasticBatches(MICRO, world=elastic_world(2))
    with pytest.raises(ValueError, match="drop batch_size, shuffle"):
        elastic.loader(torch.utils.data.TensorDataset(torch.arange(SAMPLES)), batch_size=8, shuffle=True)


def test_a_trainer_with_its_own_accumulation_is_refused_before_training(tmp_path: Path) -> None:
    import lightning.pytorch as L

    from snakemake_executor_plugin_slurm_gpu.runtime import GeometryError
    from snakemake_executor_plugin_slurm_gpu.runtime.lightning_elastic import ElasticBatches

    elastic = ElasticBatches(MICRO, world=elastic_world(1))
    trainer = L.Trainer(max_steps=2, accumulate_grad_batches=4, callbacks=[elastic], accelerator="cpu", devices=1,
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=tmp_path)
    model = _linear()
    with pytest.raises(GeometryError, match="accumulate_grad_batches=4 is set: an elastic step sets it itself"):
        trainer.fit(model, elastic.loader(torch.utils.data.TensorDataset(*_data())))


def _data():
    sys.path.insert(0, str(SCRIPTS))
    import problem

    return problem.data(SAMPLES)


def _linear():
    import lightning.pytorch as L

    class Linear(L.LightningModule):  # not the example's module: importing its script installs signal handlers
        def __init__(self) -> None:
            super().__init__()
            self.net = torch.nn.Linear(8, 1).double()

        def training_step(self, batch, batch_idx):
            return torch.nn.functional.mse_loss(self.net(batch[0]), batch[1])

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=LR)

    return Linear()


@pytest.mark.parametrize("elastic", [False, True])
def test_a_smaller_run_without_elastic_batches_is_told_its_global_batch_shrinks(
        elastic: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
        signal_sandbox: None) -> None:
    import lightning.pytorch as L
    from lightning_utilities.core.rank_zero import rank_zero_only

    from snakemake_executor_plugin_slurm_gpu.runtime import trainer_kwargs
    from snakemake_executor_plugin_slurm_gpu.runtime.lightning import Resumable
    from snakemake_executor_plugin_slurm_gpu.runtime.lightning_elastic import ElasticBatches

    monkeypatch.setattr(rank_zero_only, "rank", getattr(rank_zero_only, "rank", 0))
    for name, value in rank_environment(0, 1, tmp_path, restart=1).items():  # 1 of the step's 4 nodes
        monkeypatch.setenv(name, value)
    resumable, batches = Resumable(every_n_steps=None), ElasticBatches(MICRO)
    trainer = L.Trainer(max_steps=2, callbacks=[resumable, batches] if elastic else [resumable], logger=False,
                        enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, **trainer_kwargs(accelerator="cpu"))
    dataset = torch.utils.data.TensorDataset(*_data())
    loader = batches.loader(dataset) if elastic else torch.utils.data.DataLoader(dataset, batch_size=MICRO)
    with caplog.at_level("WARNING"):
        trainer.fit(_linear(), loader)
    warned = [r.getMessage() for r in caplog.records if "no ElasticBatches callback" in r.getMessage()]
    assert warned == ([] if elastic else [
        "slurm-gpu: this run of an elastic step (min_nodes) has 1 of its 4 ranks, and no ElasticBatches callback "
        "keeps its global batch: each optimizer step takes 1/4 of the samples of a full-size step (see the README's "
        "Elastic steps)"])
