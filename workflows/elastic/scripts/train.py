"""The elastic example's training step: plain torch.distributed with slurm-gpu's Session.

Whatever number of nodes Slurm gave this run (the rule's min_nodes..nodes), every optimizer step takes the
step's whole global batch: this rank computes its share of the micro-batches (Session.share), scales their
losses and all-reduces once (Session.accumulate). Checkpoints hold the step, the model, the optimizer and
the runs so far (world size, first and last step), which go to --runs at the end.
"""

# before torch: a requeue signal during the imports must be recorded, not kill the process
from snakemake_executor_plugin_slurm_gpu.runtime import signals

signals.install()

import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from torch.nn.parallel import DistributedDataParallel  # noqa: E402

from snakemake_executor_plugin_slurm_gpu.runtime.distributed import Session  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import problem  # noqa: E402


def main() -> None:
    args = problem.arguments()

    session = Session(every_n_steps=args.checkpoint_every)
    full = session.world.full_world_size
    net = problem.model().to(session.device)
    model = DistributedDataParallel(net) if session.distributed else net
    optimizer = problem.optimizer(net, args.lr)
    step, runs = 0, []
    state = session.resume()
    if state is not None:
        net.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step, runs = state["step"], state["runs"]
    this_run = {"world_size": session.world_size, "full_world_size": full, "from_step": step}
    if session.rank == 0:
        print(f"elastic: {session.world_size} of {full} ranks, from step {step}, "
              f"{session.share.accumulation} micro-batch(es) per optimizer step on rank 0", flush=True)

    x, y = problem.data(args.samples)
    x, y = x.to(session.device), y.to(session.device)
    plan = problem.batches(args.micro_batch, full, args.samples)
    while step < args.steps:
        optimizer.zero_grad()
        for indices, scale in session.accumulate(model, plan.for_rank(step, session.world_size, session.rank)):
            (problem.loss(model, x[indices], y[indices]) * scale).backward()
            if args.step_s:
                time.sleep(args.step_s)  # a micro-batch's compute: a smaller world takes longer per step
        optimizer.step()
        step += 1
        session.step_done(step, lambda: {"step": step, "model": net.state_dict(), "optimizer": optimizer.state_dict(),
                                         "runs": runs + [{**this_run, "to_step": step}]})
    session.finish(step)
    if session.rank == 0:
        problem.write_results(args.out, net.state_dict(), args.runs, runs + [{**this_run, "to_step": step}])
        print(f"training_done global_step={step}", flush=True)


if __name__ == "__main__":
    main()
