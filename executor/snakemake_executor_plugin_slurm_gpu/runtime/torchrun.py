"""`srun python -m snakemake_executor_plugin_slurm_gpu.runtime.torchrun train.py [args]`: torchrun,
set up from the allocation, in each Slurm task (one per node, launcher="torchrun").

Every number comes from the environment the batch script and srun set (nodes, GPUs per node, this
node's index, MASTER_ADDR/MASTER_PORT), so torchrun cannot start a world other than the submitted
one. torchrun is also told to pass the requeue signal on to its processes: by default it would
die of it (SIGUSR1's default action) and the ranks would never checkpoint.
"""

from __future__ import annotations

import os
import sys
from typing import Mapping, Sequence

from ..contract import Env
from .environment import settle_master
from .signals import requeue_signal

# torchrun's own default list, plus the requeue signal
_HANDLED = ("SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT")
SHUTDOWN_TIMEOUT_S = 600


def torchrun_argv(script_args: Sequence[str], environ: Mapping[str, str] | None = None,
                  python: str = sys.executable) -> list[str]:
    env = os.environ if environ is None else environ
    missing = [name for name in (Env.NODES, Env.GPUS_PER_NODE, "SLURM_NODEID", "MASTER_ADDR",
                                 "MASTER_PORT") if not env.get(name)]
    if missing:
        raise SystemExit(f"slurm-gpu torchrun: {', '.join(missing)} not set: run this with srun inside a "
                         "slurm-gpu step whose rule sets launcher=\"torchrun\" and gpus")
    if not script_args:
        raise SystemExit("slurm-gpu torchrun: name the training script, e.g. "
                         "srun python -m snakemake_executor_plugin_slurm_gpu.runtime.torchrun train.py")
    signals = list(_HANDLED)
    if env.get(Env.REQUEUE_SIGNAL):
        signals.append(requeue_signal(dict(env)).name)
    # the nodes this run got (an elastic step's may be fewer than it was submitted for)
    nodes = env.get("SLURM_NNODES") or env.get("SLURM_JOB_NUM_NODES") or env[Env.NODES]
    return [python, "-m", "torch.distributed.run",
            f"--nnodes={nodes}", f"--nproc-per-node={env['SLURM_GPU_GPUS_PER_NODE']}",
            f"--node-rank={env['SLURM_NODEID']}", f"--master-addr={env['MASTER_ADDR']}",
            f"--master-port={env['MASTER_PORT']}",
            # a failed rank fails the step (Slurm and slurm-gpu restart it, from a checkpoint)
            "--max-restarts=0",
            f"--signals-to-handle={','.join(signals)}",
            # after passing a signal on, torchrun SIGKILLs its processes after this long (30 s by
            # default): a checkpoint at the requeue signal may take longer. Slurm's own kill still
            # comes at the time limit or the preemption grace time, whichever this is
            f"--shutdown-timeout={env.get('TORCH_ELASTIC_SHUTDOWN_TIMEOUT') or SHUTDOWN_TIMEOUT_S}",
            *script_args]


def main(argv: Sequence[str] | None = None) -> None:
    settle_master()
    args = list(sys.argv[1:] if argv is None else argv)
    command = torchrun_argv(args)
    os.execv(command[0], command)


if __name__ == "__main__":
    main()
