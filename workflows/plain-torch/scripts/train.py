"""Plain torch.distributed (DDP) training of the digit classifier: no Lightning, the same guarantees.

Started once per GPU by srun (launcher "srun") or once per GPU by torchrun, itself started once per
node by srun (launcher "torchrun"); slurm-gpu's Session reads whichever world it is in. Checkpoints go
to SLURM_GPU_CHECKPOINT_DIR every --checkpoint-every steps and at the requeue signal; a requeued or
resubmitted run resumes from the newest that verifies. Each step's batches are a function of the
step number, so a resumed run trains on exactly the batches an uninterrupted one would have.
"""

# before torch: a requeue signal during the imports must be recorded, not kill the process
from snakemake_executor_plugin_slurm_gpu.runtime import signals

signals.install()

import argparse  # noqa: E402
import os  # noqa: E402
import socket  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.nn.parallel import DistributedDataParallel  # noqa: E402

from snakemake_executor_plugin_slurm_gpu.runtime.distributed import Session  # noqa: E402

STEP_SLEEP_S = float(os.environ.get("TRAIN_STEP_SLEEP_S", "0"))  # stretch steps (tests)
BATCH = 32

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "train-eval" / "scripts"))
from model import build_model  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--max-steps", type=int, default=200)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--checkpoint-every", type=int, default=25)
    args = ap.parse_args()

    session = Session(every_n_steps=args.checkpoint_every)
    torch.manual_seed(0)
    net = build_model().to(session.device)
    model = DistributedDataParallel(net) if session.distributed else net
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
    step = 0
    state = session.resume()
    if state is not None:
        net.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step = state["step"]
        if session.rank == 0:
            print(f"resumed_from global_step={step}", flush=True)
    launcher = "torchrun" if "TORCHELASTIC_RUN_ID" in os.environ else "srun"
    print(f"rank_joined rank={session.rank} world_size={session.world_size} host={socket.gethostname()} "
          f"launcher={launcher} backend={torch.distributed.get_backend() if session.distributed else 'none'}",
          flush=True)

    data = np.load(args.data)
    x, y = torch.from_numpy(data["x"]).to(session.device), torch.from_numpy(data["y"]).to(session.device)
    while step < args.max_steps:
        step += 1
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(step))
        mine = order[session.rank * BATCH:(session.rank + 1) * BATCH].to(session.device)
        loss = torch.nn.functional.cross_entropy(model(x[mine]), y[mine])
        optimizer.zero_grad()
        loss.backward()  # DDP averages the gradients over all ranks
        optimizer.step()
        if STEP_SLEEP_S:
            time.sleep(STEP_SLEEP_S)
        if step % 50 == 0 and session.rank == 0:
            print(f"global_step={step} loss={loss.item():.4f}", flush=True)
        session.step_done(step, lambda: {"step": step, "model": net.state_dict(),
                                         "optimizer": optimizer.state_dict()})
    session.finish(step)
    if session.rank == 0:
        tmp = f"{args.out}.tmp-{os.getpid()}"  # written whole, then renamed: never half a model
        torch.save(net.state_dict(), tmp)
        os.replace(tmp, args.out)
        print(f"training_done global_step={step} model={args.out}", flush=True)


if __name__ == "__main__":
    main()
