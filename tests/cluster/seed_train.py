"""A seed-style Lightning DDP script that knows nothing of slurm-gpu beyond the checkpoint directory:
geometry from SLURM_NNODES / SLURM_NTASKS_PER_NODE, Lightning's own SLURMEnvironment auto-requeue,
default_root_dir = $SLURM_GPU_CHECKPOINT_DIR. Knobs: MAX_STEPS, STEP_SLEEP (seconds per step),
AFTER_FIT_SLEEP (seconds between the end of fit() and the output: writing results, evaluating)."""

import os
import time

import lightning as L
import torch
from lightning.pytorch.plugins.environments import SLURMEnvironment
from torch.utils.data import DataLoader, TensorDataset

MAX_STEPS = int(os.environ.get("MAX_STEPS", "300"))
STEP_SLEEP = float(os.environ.get("STEP_SLEEP", "0"))
AFTER_FIT_SLEEP = float(os.environ.get("AFTER_FIT_SLEEP", "0"))


class LinearRegression(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(8, 1)

    def training_step(self, batch, batch_idx):
        if STEP_SLEEP:
            time.sleep(STEP_SLEEP)
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.lin(x), y)
        if self.global_step % 50 == 0 and self.global_rank == 0:
            print(f"global_step={self.global_step} loss={loss.item():.4f}", flush=True)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05)

    def on_load_checkpoint(self, checkpoint) -> None:
        if self.global_rank == 0:
            print(f"resuming from global_step={checkpoint.get('global_step')}", flush=True)


def main() -> None:
    torch.manual_seed(0)
    x = torch.randn(4096, 8)
    y = x @ torch.arange(1.0, 9.0).unsqueeze(1) + 0.1 * torch.randn(4096, 1)
    trainer = L.Trainer(
        accelerator="cpu",
        devices=int(os.environ["SLURM_NTASKS_PER_NODE"]),
        num_nodes=int(os.environ["SLURM_NNODES"]),
        strategy="ddp",
        max_steps=MAX_STEPS,
        default_root_dir=os.environ["SLURM_GPU_CHECKPOINT_DIR"],
        plugins=[SLURMEnvironment(auto_requeue=True)],
        enable_progress_bar=False, enable_model_summary=False, logger=False, enable_checkpointing=False,
    )
    trainer.fit(LinearRegression(), DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True))
    if AFTER_FIT_SLEEP:
        print(f"FIT_RETURNED rank={trainer.global_rank}", flush=True)
        time.sleep(AFTER_FIT_SLEEP)
    if trainer.global_rank == 0 and trainer.global_step >= MAX_STEPS:
        print(f"DONE global_step={trainer.global_step}", flush=True)
        with open("done.txt", "w") as f:
            f.write(f"{trainer.global_step}\n")


if __name__ == "__main__":
    main()
