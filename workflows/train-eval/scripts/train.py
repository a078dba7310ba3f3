"""Lightning DDP training of a small digit classifier, one rank per GPU, launched by `srun`.

num_nodes/devices come from slurm-gpu's runtime helper, i.e. from the allocation the executor
requested. Checkpoints go to the step's SLURM_GPU_CHECKPOINT_DIR every --checkpoint-every steps and
whenever Slurm sends the requeue signal (time limit near, preemption); a requeued or resubmitted run
resumes from the newest valid one. The model file is written only when training really finished.
"""

# before torch: importing it takes seconds, and a requeue signal arriving then must be recorded,
# not kill the process (SIGUSR1's default action)
from snakemake_executor_plugin_slurm_gpu.runtime import signals

signals.install()

import argparse  # noqa: E402
import os  # noqa: E402
import socket  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from snakemake_executor_plugin_slurm_gpu.runtime import geometry, trainer_kwargs
from snakemake_executor_plugin_slurm_gpu.runtime.lightning import Resumable

# fault-injection knobs for the resume tests: stretch each step, or raise at a given step
STEP_SLEEP_S = float(os.environ.get("TRAIN_STEP_SLEEP_S", "0"))
FAIL_AT_STEP = int(os.environ.get("TRAIN_FAIL_AT_STEP", "-1"))
PROGRESS_EVERY = int(os.environ.get("TRAIN_PROGRESS_EVERY", "0"))  # timestamped progress lines (benchmarks)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from model import build_model  # noqa: E402


class DigitClassifier(L.LightningModule):
    def __init__(self, lr: float) -> None:
        super().__init__()
        self.net = build_model()
        self.lr = lr

    def training_step(self, batch, batch_idx):
        if STEP_SLEEP_S:
            time.sleep(STEP_SLEEP_S)
        if self.global_step == FAIL_AT_STEP:
            raise RuntimeError(f"injected failure at global_step={self.global_step}")
        x, y = batch
        loss = torch.nn.functional.cross_entropy(self.net(x), y)
        if self.global_step % 100 == 0 and self.global_rank == 0:
            print(f"global_step={self.global_step} loss={loss.item():.4f}", flush=True)
        if PROGRESS_EVERY and self.global_step % PROGRESS_EVERY == 0 and self.global_rank == 0:
            print(f"progress global_step={self.global_step} t={time.time():.3f}", flush=True)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr, momentum=0.9)

    def on_load_checkpoint(self, checkpoint) -> None:
        if self.global_rank == 0:
            print(f"resumed_from global_step={checkpoint.get('global_step')} t={time.time():.3f}", flush=True)

    def on_train_start(self) -> None:
        # one line per rank: the proof that every rank joined the same world
        print(f"rank_joined rank={self.global_rank} world_size={self.trainer.world_size} "
              f"node_rank={self.trainer.node_rank} local_rank={self.local_rank} host={socket.gethostname()} "
              f"master={os.environ.get('MASTER_ADDR')}:{os.environ.get('MASTER_PORT')} "
              f"backend={torch.distributed.get_backend() if torch.distributed.is_initialized() else 'none'}",
              flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--max-steps", type=int, default=300)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--checkpoint-every", type=int, default=50)
    args = ap.parse_args()

    resumable = Resumable(every_n_steps=args.checkpoint_every)  # first: it installs the signal handlers
    world = geometry()
    torch.manual_seed(0)
    data = np.load(args.data)
    dataset = TensorDataset(torch.from_numpy(data["x"]), torch.from_numpy(data["y"]))
    loader = DataLoader(dataset, batch_size=32, shuffle=True)
    model = DigitClassifier(args.lr)
    trainer = L.Trainer(
        max_steps=args.max_steps,
        plugins=[resumable.environment()] if world.under_slurm else None,
        callbacks=[resumable],
        enable_progress_bar=False,
        enable_model_summary=False,
        logger=False,
        enable_checkpointing=False,
        **trainer_kwargs(),
    )
    trainer.fit(model, loader, ckpt_path=resumable.resume_path())
    if not resumable.finished(trainer):
        sys.exit(143)
    if trainer.global_rank == 0:
        # written once, whole: a reader never sees a half-written model
        tmp = f"{args.out}.tmp-{os.getpid()}"
        torch.save(model.net.state_dict(), tmp)
        os.replace(tmp, args.out)
        print(f"training_done global_step={trainer.global_step} model={args.out}", flush=True)


if __name__ == "__main__":
    main()
