"""A stand-in for a training command on a 256-rank step, without torch (256 torch processes do not
fit this machine): every run of the job forms its world through slurm-gpu's rendezvous and rank 0
records the roster as world-<restart>.json in the step's checkpoint directory. The first run then
waits, with all ranks polling together at a step boundary, for the requeue signal; on it rank 0 asks
Slurm to requeue the job and, once it has, every rank exits 143. A later run has nothing left to do and writes the
step's output: the rosters of every run."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from snakemake_executor_plugin_slurm_gpu.runtime import checkpoint_dir, signals

signals.install()  # before anything slow: a signal that comes first must not kill the rank

from snakemake_executor_plugin_slurm_gpu import checkpoints  # noqa: E402
from snakemake_executor_plugin_slurm_gpu.contract import StopReason  # noqa: E402
from snakemake_executor_plugin_slurm_gpu.runtime import rendezvous  # noqa: E402
from snakemake_executor_plugin_slurm_gpu.runtime.boundary import Boundary  # noqa: E402
from snakemake_executor_plugin_slurm_gpu.runtime.requeue import Interrupted  # noqa: E402

out = Path(sys.argv[1])
wait_s = float(sys.argv[2]) if len(sys.argv) > 2 else 300.0
directory = checkpoint_dir()
world = rendezvous.join()
restart = world.me.restart
if world.rank == 0:
    checkpoints.atomic_write_bytes(directory / f"world-{restart}.json", json.dumps(world.report()).encode())
print(f"rank {world.rank}/{world.world_size} on {world.me.node} (local {world.me.local_rank}), "
      f"master {world.me.master}, restart {restart}", flush=True)

if restart == 0:
    end = time.monotonic() + wait_s
    polls = 0
    boundary = Boundary(directory, rank0=world.rank == 0, restart=restart)
    while time.monotonic() < end:
        polls += 1
        if world.any(signals.received().requeue):
            try:
                # nothing to save; the wait keeps every rank until rank 0's request is done (otherwise
                # the job ends FAILED and the executor resubmits it instead of Slurm requeueing it in place)
                boundary.stop(polls, StopReason.REQUEUE_SIGNAL, wait=lambda _: world.any(False))
            except Interrupted:
                world.close()
                raise  # exit 143
        time.sleep(0.2)
    world.close()
    sys.exit(f"rank {world.rank}: no requeue signal within {wait_s:.0f} s")

world.any(False)  # every rank has written its line before rank 0 writes the output
if world.rank == 0:
    runs = sorted(directory.glob("world-*.json"), key=lambda p: int(p.stem.split("-")[1]))
    checkpoints.atomic_write_bytes(out, json.dumps([json.loads(p.read_text()) for p in runs]).encode())
world.close()
