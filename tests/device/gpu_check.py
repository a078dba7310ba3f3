"""The training runtime on a real GPU (no Slurm there): run by hand on a machine with a CUDA device,
never by CI (no GPU there) and never collected by pytest (the name does not start with test_).

    PYTHONPATH=executor python3 tests/device/gpu_check.py [--out results.json]

What it checks, each in a fresh process under the environment srun gives a 1-node x 1-GPU step:
  1. nccl_agree: collective.agree over a real NCCL process group (NCCL reduces only device tensors:
     the step-boundary flags must be moved to the GPU), with and without a requeue signal received.
  2. lightning: the example's train.py on the GPU (accelerator from trainer_kwargs(), the Resumable
     callback); SIGUSR1 mid-run must give a checkpoint at that step and exit 143; the rerun must resume
     from exactly that step on the GPU and finish with the model written.
  3. plain_torch: the same for the plain-torch example's train.py (Session, torch.save/torch.load of
     CUDA tensors).
Prints one line per check and a JSON summary; exit status 0 only if every check passed.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def slurm_env(tmp: Path, port: int) -> dict[str, str]:
    """What srun sets for the one task of a 1 x 1 step, plus what slurm-gpu's batch script exports."""
    return {**os.environ, "PYTHONPATH": str(REPO / "executor"), "PYTHONUNBUFFERED": "1",
            "SLURM_JOB_ID": "4242", "SLURM_JOB_NAME": "sg-train", "SLURM_NTASKS": "1", "SLURM_NNODES": "1",
            "SLURM_JOB_NUM_NODES": "1", "SLURM_NTASKS_PER_NODE": "1", "SLURM_TASKS_PER_NODE": "1",
            "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NODEID": "0", "SLURM_NODELIST": "localhost",
            "SLURM_JOB_NODELIST": "localhost", "SLURM_GPU_STEP": "train/all", "SLURM_GPU_NODES": "1",
            "SLURM_GPU_GPUS_PER_NODE": "1", "SLURM_GPU_TASKS_PER_NODE": "1",
            "SLURM_GPU_CHECKPOINT_DIR": str(tmp / "ckpt"), "SLURM_GPU_EVENT_LOG": str(tmp / "events.jsonl"),
            "SLURM_GPU_REQUEUE_SIGNAL": "USR1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}


NCCL_AGREE = textwrap.dedent("""
    import os, signal, json, torch, torch.distributed as dist
    from snakemake_executor_plugin_slurm_gpu.runtime import collective, signals
    signals.install()
    torch.cuda.set_device(0)
    dist.init_process_group("nccl", init_method="env://", rank=0, world_size=1)
    quiet = collective.agree(False, torch.device("cuda:0"), True)
    timed = collective.agree(True, torch.device("cuda:0"), True)
    os.kill(os.getpid(), signal.SIGUSR1)
    signalled = collective.agree(False, torch.device("cuda:0"), True)
    print(json.dumps({"backend": dist.get_backend(), "nccl": ".".join(map(str, torch.cuda.nccl.version())),
                      "quiet": quiet, "timed": timed, "signalled": signalled}))
    dist.destroy_process_group()
""")


def check_nccl_agree(tmp: Path) -> dict:
    env = {**slurm_env(tmp, 29511), "RANK": "0", "WORLD_SIZE": "1"}
    done = subprocess.run([sys.executable, "-c", NCCL_AGREE], env=env, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        return {"ok": False, "stderr": done.stderr[-3000:]}
    got = json.loads(done.stdout.strip().splitlines()[-1])
    ok = (got["backend"] == "nccl" and got["quiet"] == [False, False, False] and got["timed"] == [False, True, False]
          and got["signalled"] == [True, False, False])
    return {"ok": ok, **got}


def interrupted_then_resumed(tmp: Path, argv: list[str], env: dict[str, str], signal_at: str,
                             cwd: Path) -> dict:
    """Run `argv`, send SIGUSR1 when a progress line matching `signal_at` shows, expect exit 143 and a
    checkpoint at the signal's step; run again, expect the resume from that step and the end."""
    first = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines, sent_at = [], None
    assert first.stdout is not None
    for line in first.stdout:
        lines.append(line.rstrip())
        if sent_at is None and re.search(signal_at, line):
            first.send_signal(signal.SIGUSR1)
            sent_at = time.time()
    first.wait(timeout=600)
    ckpts = sorted(p.name for p in (tmp / "ckpt").glob("step-*.ckpt"))
    marker_file = tmp / "ckpt" / "interrupted.json"  # the rerun removes it: read it now
    marker = json.loads(marker_file.read_text()) if marker_file.exists() else None
    second = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    out2 = second.stdout + second.stderr
    resumed = re.findall(r"resumed_from global_step=(\d+)", out2)
    done = re.findall(r"training_done global_step=(\d+)", out2)
    last_ckpt = int(re.search(r"\d+", ckpts[-1]).group()) if ckpts else None
    devices = sorted(set(re.findall(r"(cuda:\d|GPU available: \w+.*)", "\n".join(lines) + out2)))
    result = {"first_exit": first.returncode, "signal_sent": sent_at is not None, "checkpoints": ckpts,
              "marker": marker,
              "second_exit": second.returncode, "resumed_from": resumed, "training_done": done,
              "devices_seen": devices}
    result["ok"] = (first.returncode == 143 and sent_at is not None and last_ckpt is not None
                    and marker is not None and marker["step"] == last_ckpt
                    and resumed == [str(last_ckpt)] and second.returncode == 0 and len(done) == 1)
    if not result["ok"]:
        result["first_tail"], result["second_tail"] = lines[-40:], out2[-4000:]
    return result


def data(tmp: Path) -> Path:
    subprocess.run([sys.executable, str(REPO / "workflows/train-eval/scripts/prepare.py"), "--train",
                    str(tmp / "train.npz"), "--test", str(tmp / "test.npz"), "--seed", "0"], check=True)
    return tmp / "train.npz"


def check_example(workflow: str, port: int, tmp: Path) -> dict:
    """An example's train.py stopped by SIGUSR1 at step 500, then run again to the end."""
    env = {**slurm_env(tmp, port), "TRAIN_STEP_SLEEP_S": "0.004"}
    argv = [sys.executable, str(REPO / f"workflows/{workflow}/scripts/train.py"), "--data", str(data(tmp)),
            "--out", str(tmp / "model.pt"), "--max-steps", "1500", "--checkpoint-every", "200"]
    result = interrupted_then_resumed(tmp, argv, env, r"global_step=500 ", cwd=tmp)
    result["model_written"] = (tmp / "model.pt").exists()
    result["ok"] = result["ok"] and result["model_written"]
    return result


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    import torch  # here, not at import: the module docstring is read without a GPU
    summary: dict = {"torch": torch.__version__, "cuda": torch.cuda.is_available(),
                     "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    for name, check in (("nccl_agree", check_nccl_agree),
                        ("lightning", functools.partial(check_example, "train-eval", 29512)),
                        ("plain_torch", functools.partial(check_example, "plain-torch", 29513))):
        with tempfile.TemporaryDirectory(prefix=f"gpu-check-{name}-") as tmp:
            started = time.monotonic()
            try:
                summary[name] = check(Path(tmp))
            except Exception as e:  # noqa: BLE001 - report and go on to the next check
                summary[name] = {"ok": False, "error": repr(e)}
            summary[name]["seconds"] = round(time.monotonic() - started, 1)
        print(f"{name}: {'ok' if summary[name]['ok'] else 'FAILED'} ({summary[name]['seconds']} s)", flush=True)
    text = json.dumps(summary, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0 if all(summary[n]["ok"] for n in ("nccl_agree", "lightning", "plain_torch")) else 1


if __name__ == "__main__":
    sys.exit(main())
