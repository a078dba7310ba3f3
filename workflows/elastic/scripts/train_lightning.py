"""The elastic example's training step in PyTorch Lightning: the same problem as train.py (problem.py), so
the same model, whatever node count each run got.

What makes a Lightning script elastic: Trainer(**trainer_kwargs()) (the world Slurm started, not a
hard-coded num_nodes), and ElasticBatches, a callback that makes the training loader (this rank's share
of each global batch) and sets gradient accumulation to match; Resumable checkpoints and resumes. The
model is a float64 one (precision="64-true") so that the tests can compare it with the reference to
float64 rounding. Checkpoints carry the runs so far (world size, first and last step): --runs at the end.
"""

# before torch: a requeue signal during the imports must be recorded, not kill the process
from snakemake_executor_plugin_slurm_gpu.runtime import signals

signals.install()

import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import lightning as L  # noqa: E402
from torch.utils.data import TensorDataset  # noqa: E402

from snakemake_executor_plugin_slurm_gpu.runtime import geometry, trainer_kwargs  # noqa: E402
from snakemake_executor_plugin_slurm_gpu.runtime.lightning import Resumable  # noqa: E402
from snakemake_executor_plugin_slurm_gpu.runtime.lightning_elastic import ElasticBatches  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import problem  # noqa: E402


class Regression(L.LightningModule):
    def __init__(self, lr: float, step_s: float, this_run: dict) -> None:
        super().__init__()
        self.net, self.lr, self.step_s = problem.model(), lr, step_s
        self.runs: list[dict] = []
        self.this_run = this_run

    def training_step(self, batch, batch_idx):
        if self.step_s:
            time.sleep(self.step_s)  # a micro-batch's compute: a smaller world takes longer per step
        x, y = batch
        return problem.loss(self.net, x, y)

    def configure_optimizers(self):
        return problem.optimizer(self.net, self.lr)

    def on_train_start(self) -> None:
        self.this_run["from_step"] = self.global_step

    def runs_so_far(self) -> list[dict]:
        return self.runs + [{**self.this_run, "to_step": self.global_step}]

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["elastic_runs"] = self.runs_so_far()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.runs = checkpoint["elastic_runs"]


def main() -> None:
    args = problem.arguments()

    resumable = Resumable(every_n_steps=args.checkpoint_every)
    elastic = ElasticBatches(micro_batch_size=args.micro_batch, seed=problem.SEED)
    world = geometry()
    model = Regression(args.lr, args.step_s, {"world_size": world.world_size,
                                              "full_world_size": world.full_world_size})
    trainer = L.Trainer(max_steps=args.steps, max_epochs=-1, precision="64-true",
                        callbacks=[resumable, elastic],
                        plugins=[resumable.environment()] if world.under_slurm else None,
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, **trainer_kwargs())
    if trainer.global_rank == 0:
        print(f"elastic: {world.world_size} of {world.full_world_size} ranks, {elastic.accumulation} micro-batch(es) "
              "per optimizer step on rank 0", flush=True)
    x, y = problem.data(args.samples)
    trainer.fit(model, elastic.loader(TensorDataset(x, y)), ckpt_path=resumable.resume_path())
    if not resumable.finished(trainer):
        sys.exit(143)
    if trainer.global_rank == 0:
        problem.write_results(args.out, model.net.state_dict(), args.runs, model.runs_so_far())
        print(f"training_done global_step={trainer.global_step}", flush=True)


if __name__ == "__main__":
    main()
