"""Plain torch's Session saving sharded state with torch.distributed.checkpoint (DCP) into a
directory checkpoint and resuming it into a template: in one process, and in two processes over
Gloo on the CPU with a DTensor really split between them (each rank writes its own shard; the load
reshards), including a save that rank 0 fails to publish.

This module imports no Lightning: the two spawned ranks import it, and start in a few seconds."""

from __future__ import annotations

import errno
import json
import os
import socket
import stat
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torch.distributed.checkpoint")

import torch.multiprocessing as mp  # noqa: E402

from snakemake_executor_plugin_slurm_gpu import checkpoints  # noqa: E402
from snakemake_executor_plugin_slurm_gpu.checkpoints import VerifiedBy, remove_leftovers, verify_checkpoint  # noqa: E402
from snakemake_executor_plugin_slurm_gpu.runtime.distributed import Session  # noqa: E402

# DCP without a process group warns that it runs without one: the single-process case, on purpose
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:torch.distributed.checkpoint")


def ckpt(directory: Path, step: int) -> Path:
    return directory / f"step-{step:09d}.ckpt"


def saved_steps(directory: Path) -> list[int]:
    return sorted(int(p.name[len("step-"):-len(".ckpt")]) for p in directory.glob("step-*.ckpt"))


def assert_private(tree: Path) -> None:
    for path in [tree, *tree.rglob("*")]:
        mode = stat.S_IMODE(path.lstat().st_mode)
        assert mode == (0o700 if path.is_dir() else 0o600), f"{path}: mode {mode:04o}"


def assert_sharded(directory: Path, step: int) -> None:
    info = verify_checkpoint(ckpt(directory, step))
    assert info is not None, f"{ckpt(directory, step)} does not verify"
    assert (info.sharded, info.verified_by, info.global_step) == (True, VerifiedBy.MANIFEST, step)


# ---------------------------------------------------------------- Session, one process

def test_session_saves_sharded_state_with_dcp_and_resumes_it_into_a_template(ckpt_dir: Path) -> None:
    session = Session(every_n_steps=5, keep=2)
    torch.manual_seed(1)
    net = torch.nn.Linear(4, 2)
    for step in (5, 10, 15):
        session.step_done(step, Session.sharded(lambda: {"model": net.state_dict(), "step": step}))
    assert saved_steps(ckpt_dir) == [10, 15]
    assert_sharded(ckpt_dir, 15)
    assert_private(ckpt(ckpt_dir, 15))
    assert (ckpt(ckpt_dir, 15) / ".metadata").is_file()
    with pytest.raises(ValueError, match="is sharded .*HINT: pass the state dict to load it into"):
        session.resume()
    fresh = torch.nn.Linear(4, 2)
    state = session.resume(template=lambda: {"model": fresh.state_dict(), "step": 0})
    assert state["step"] == 15 and torch.equal(fresh.weight, net.weight) and torch.equal(fresh.bias, net.bias)
    # the newest checkpoint wins whatever its kind: a file saved after is loaded as a file
    session.save(16, lambda: {"step": 16})
    assert session.resume(template={"step": 0}) == {"step": 16}
    session.save(20, lambda: {"step": 20, "model": net.state_dict()}, sharded=True)
    assert saved_steps(ckpt_dir) == [16, 20] and ckpt(ckpt_dir, 20).is_dir() and ckpt(ckpt_dir, 16).is_file()
    assert session.finish(20)


# ---------------------------------------------------------------- Session, two processes over Gloo

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_ranks(rank: int, port: int, directory: str, out: str) -> None:
    """One of two ranks (spawned): a DTensor split in two, saved sharded, resumed replicated; then a
    save that rank 0 fails to publish."""
    os.environ.update({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "2", "SLURM_NNODES": "1", "SLURM_NTASKS_PER_NODE": "2",
                       "SLURM_PROCID": str(rank), "SLURM_LOCALID": str(rank), "SLURM_NODEID": "0",
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "CUDA_VISIBLE_DEVICES": ""})
    torch.cuda.is_available = lambda: False  # Gloo on the CPU even where a GPU is
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Replicate, Shard, distribute_tensor

    session = Session(every_n_steps=None, directory=directory, backend="gloo", timeout_s=60)
    mesh = init_device_mesh("cpu", (2,))
    full = torch.arange(32, dtype=torch.float32).reshape(8, 4)
    weight = distribute_tensor(full, mesh, [Shard(0)])  # rows 0-3 on rank 0, 4-7 on rank 1
    session.save(7, Session.sharded(lambda: {"weight": weight, "step": 7}))
    template = {"weight": distribute_tensor(torch.zeros(8, 4), mesh, [Replicate()]), "step": 0}
    state = session.resume(template=template)
    result: dict[str, Any] = {"step": state["step"], "restored": torch.equal(state["weight"].to_local(), full),
                              "own_rows": weight.to_local()[:, 0].tolist()}
    if rank == 0:
        def full_disk(*args: Any, **kwargs: Any) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")
        checkpoints.publish_directory = full_disk  # type: ignore[assignment]
    try:
        session.save(8, Session.sharded(lambda: {"weight": weight, "step": 8}))
    except Exception as error:  # noqa: BLE001 - what each rank raised is the result
        result["failure"] = f"{type(error).__name__}: {error}"
    Path(out, f"rank{rank}.json").write_text(json.dumps(result))
    session.finish(8)


def test_two_ranks_save_their_shards_with_dcp_and_load_them_back_resharded(ckpt_dir: Path, tmp_path: Path) -> None:
    ckpt_dir.mkdir(mode=0o700)
    mp.spawn(_two_ranks, args=(_free_port(), str(ckpt_dir), str(tmp_path)), nprocs=2, join=True)
    results = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    assert [r["own_rows"] for r in results] == [[0.0, 4.0, 8.0, 12.0], [16.0, 20.0, 24.0, 28.0]]
    assert all(r["step"] == 7 and r["restored"] for r in results)
    # rank 0 could not publish step 8: it raised its own error, rank 1 learned it instead of waiting
    assert results[0]["failure"] == "OSError: [Errno 28] No space left on device"
    assert results[1]["failure"].startswith("RuntimeError: slurm-gpu: rank 0 could not write checkpoint")
    final = ckpt(ckpt_dir, 7)
    assert sorted(p.name for p in final.iterdir()) == [".metadata", "__0_0.distcp", "__1_0.distcp"]
    assert_sharded(ckpt_dir, 7)
    assert_private(final)
    assert saved_steps(ckpt_dir) == [7]
    remove_leftovers(ckpt_dir)  # step 8's unpublished directory
