"""One trial of the sweep: a stand-in for a DDP training script that behaves like one towards Slurm
and slurm-gpu, without torch (hundreds of torch processes do not fit a laptop-sized test cluster).

- every rank joins the step's world through slurm-gpu's rendezvous (MASTER_ADDR/MASTER_PORT);
- each step the ranks all-reduce their partial gradients together with "did anyone get the requeue
  signal / SIGTERM", so they all stop at the same step boundary;
- rank 0 writes an atomic checkpoint every --checkpoint-every steps and at the requeue signal, then
  asks Slurm to requeue the job (slurm-gpu resubmits instead if Slurm does not);
- a requeued or resubmitted run resumes from the newest checkpoint and ends on exactly the floats of
  an uninterrupted run (see sweep.py);
- rank 0 holds an exclusive lock on the step's checkpoint directory while it runs: a second live run
  of the same step fails loudly instead of training beside the first.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import sys
import time
from pathlib import Path

from snakemake_executor_plugin_slurm_gpu.runtime import checkpoint_dir, signals

signals.install()  # first: a requeue signal during start-up must not kill the rank

from snakemake_executor_plugin_slurm_gpu import checkpoints, events  # noqa: E402
from snakemake_executor_plugin_slurm_gpu.contract import (INTERRUPTED_EXIT_CODE, CheckpointReason,  # noqa: E402
                                                          EventKind, StopReason, job_id)
from snakemake_executor_plugin_slurm_gpu.runtime import rendezvous  # noqa: E402
from snakemake_executor_plugin_slurm_gpu.runtime.boundary import Boundary  # noqa: E402
from snakemake_executor_plugin_slurm_gpu.runtime.requeue import Interrupted  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import sweep  # noqa: E402

STATE = "state-{:06d}.json"


def newest_state(directory: Path) -> dict | None:
    states = sorted(directory.glob("state-*.json"))
    return json.loads(states[-1].read_text()) if states else None


def save(directory: Path, state: dict, why: CheckpointReason) -> None:
    checkpoints.atomic_write_bytes(directory / STATE.format(state["step"]), json.dumps(state).encode())
    for old in sorted(directory.glob("state-*.json"))[:-2]:
        old.unlink()
    events.emit(EventKind.CHECKPOINT, global_step=state["step"], path=str(directory / STATE.format(state["step"])),
                why=why)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trial", required=True)
    ap.add_argument("--lr", type=float, required=True)
    ap.add_argument("--steps", type=int, required=True)
    ap.add_argument("--step-s", type=float, default=0.05)
    ap.add_argument("--checkpoint-every", type=int, default=10)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()

    directory = checkpoint_dir()
    world = rendezvous.join()
    rank, restart = world.rank, world.me.restart
    lock = None
    if rank == 0:
        lock = open(directory / "running.lock", "a")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"{args.trial}: another run of this step holds {directory}/running.lock", file=sys.stderr)
            return 1
    # rank 0 reads the checkpoint; the others get it through a sum with their zeros (exact)
    state = newest_state(directory) if rank == 0 else None
    start = world.allreduce([state["step"], state["w"], state["b"]] if state else [0.0, 0.0, 0.0])
    step, w, b = int(start[0]), start[1], start[2]
    runs = (state or {}).get("runs", [])
    if rank == 0 and state:
        events.emit(EventKind.RESUMED, from_step=step, path=str(directory / STATE.format(step)), restart=restart)
    print(f"{args.trial}: rank {rank}/{world.world_size} on {world.me.node}, restart {restart}, from step {step}",
          flush=True)
    this_run = {"restart": restart, "job_id": job_id(), "from_step": step,
                "world_size": world.world_size}
    # on SIGTERM no checkpoint (there is no time: the last periodic one resumes) and no interrupted marker
    boundary = Boundary(directory, rank0=rank == 0, restart=restart, mark_sigterm=False)

    loss = 0.0
    while step < args.steps:
        got = signals.received()
        summed = world.allreduce(sweep.partial_gradient(w, b, rank, world.world_size)
                                 + [float(got.requeue), float(got.terminate)])
        stop_requeue, stop_term = summed[3] > 0, summed[4] > 0
        if stop_requeue or stop_term:
            why = StopReason.REQUEUE_SIGNAL if stop_requeue else StopReason.SIGTERM
            if rank == 0:
                this_run.update(to_step=step, why=why)

            def save_state(at: int, reason: CheckpointReason) -> None:
                if rank == 0:
                    save(directory, {"step": at, "w": w, "b": b, "runs": runs + [this_run]}, reason)

            try:
                # the wait: nobody leaves before rank 0 is done (see runtime/boundary.py)
                boundary.stop(step, why, wait=lambda _: world.any(False), save=save_state if stop_requeue else None)
            except Interrupted:
                world.close()
                return INTERRUPTED_EXIT_CODE
        w, b, loss = sweep.update(w, b, summed[:3], args.lr)
        step += 1
        if rank == 0 and step % args.checkpoint_every == 0 and step < args.steps:
            save(directory, {"step": step, "w": w, "b": b,
                             "runs": runs + [{**this_run, "to_step": step, "why": "still running"}]},
                 CheckpointReason.PERIODIC)
        time.sleep(args.step_s)

    world.any(False)  # nobody leaves before the last reduction reached everyone
    if rank == 0:
        this_run.update(to_step=step, why="done")
        model = {"trial": args.trial, "lr": args.lr, "steps": step, "w": w, "b": b, "train_loss": loss,
                 "world_size": world.world_size, "runs": runs + [this_run]}
        checkpoints.atomic_write_bytes(args.out, json.dumps(model, indent=1).encode())
        events.emit(EventKind.TRAINING_DONE, global_step=step)
    world.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
