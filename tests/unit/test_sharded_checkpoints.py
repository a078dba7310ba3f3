"""Sharded checkpoints (a directory written by every rank: Lightning's FSDP with
state_dict_type="sharded", DeepSpeed) through the Lightning callback: Resumable._save with a trainer
whose save_checkpoint writes a directory, and a real Lightning run whose strategy saves and loads
the way FSDPStrategy does (torch.distributed.checkpoint plus meta.pt). Plain torch's Session:
test_sharded_checkpoints_dcp.py.

No Slurm, no GPU: SLURM_* is cleared (ckpt_dir)."""

from __future__ import annotations

import errno
import json
import os
import stat
from pathlib import Path
from typing import Any, Iterator

import pytest

torch = pytest.importorskip("torch")
L = pytest.importorskip("lightning.pytorch")
dcp = pytest.importorskip("torch.distributed.checkpoint")

from lightning.pytorch.strategies import SingleDeviceStrategy  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

from snakemake_executor_plugin_slurm_gpu import checkpoints  # noqa: E402
from snakemake_executor_plugin_slurm_gpu.checkpoints import (  # noqa: E402
    VerifiedBy,
    find_resumable,
    manifest_path,
    remove_leftovers,
    verify_checkpoint,
)
from snakemake_executor_plugin_slurm_gpu.runtime.lightning import Resumable  # noqa: E402

pytestmark = [
    pytest.mark.filterwarnings("ignore:The `srun` command is available:UserWarning"),
    pytest.mark.filterwarnings("ignore:You're resuming from a checkpoint that ended before the epoch ended"),
    pytest.mark.filterwarnings("ignore:`isinstance\\(treespec, LeafSpec\\)` is deprecated"),
    # DCP without a process group says so; that is the single-process case on purpose
    pytest.mark.filterwarnings("ignore::UserWarning:torch.distributed.checkpoint"),
]


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


@pytest.fixture
def lax_umask() -> Iterator[None]:
    """Files a strategy writes come out group-writable unless the save tightens them."""
    previous = os.umask(0o002)
    yield
    os.umask(previous)


# ---------------------------------------------------------------- Resumable._save, one rank's view

class FakeStrategy:
    """The collectives _save uses. Rank 0 broadcasts what it has; another rank gets `from_rank0`."""

    def __init__(self, from_rank0: list[Any] | None = None) -> None:
        self.from_rank0 = from_rank0
        self.calls: list[tuple[str, Any]] = []

    def broadcast(self, obj: Any, src: int = 0) -> Any:
        self.calls.append(("broadcast", obj))
        return obj if self.from_rank0 is None else self.from_rank0.pop(0)

    def barrier(self, name: str | None = None) -> None:
        self.calls.append(("barrier", name))


class ShardingTrainer:
    """Trainer.save_checkpoint under FSDP(state_dict_type="sharded") as one rank of two sees it:
    every rank writes its shard into the directory, rank 0 also DCP's .metadata and meta.pt."""

    def __init__(self, rank: int = 0, from_rank0: list[Any] | None = None) -> None:
        self.global_rank, self.is_global_zero = rank, rank == 0
        self.strategy = FakeStrategy(from_rank0)

    def save_checkpoint(self, filepath: str | Path, weights_only: bool | None = None) -> None:
        path = Path(filepath)
        path.mkdir(exist_ok=True)
        (path / f"__{self.global_rank}_0.distcp").write_bytes(os.urandom(2048))
        if self.is_global_zero:
            (path / "__1_0.distcp").write_bytes(os.urandom(2048))  # rank 1's, on the shared filesystem
            (path / ".metadata").write_bytes(b"dcp index")
            torch.save({"global_step": 0, "loops": {}}, path / "meta.pt")


def test_resumable_publishes_a_directory_checkpoint_written_by_every_rank(ckpt_dir: Path, lax_umask: None) -> None:
    ckpt_dir.mkdir(mode=0o700)  # as the executor makes it; the lax umask is for what the strategy writes
    resumable = Resumable(every_n_steps=5, keep=2)
    trainer = ShardingTrainer()
    resumable._save(trainer, 5)  # type: ignore[arg-type]
    final = ckpt(ckpt_dir, 5)
    assert final.is_dir() and sorted(p.name for p in final.iterdir()) == [
        ".metadata", "__0_0.distcp", "__1_0.distcp", "meta.pt"]
    assert_sharded(ckpt_dir, 5)
    assert_private(final)
    assert sorted(json.loads(manifest_path(final).read_text())["files"]) == [
        ".metadata", "__0_0.distcp", "__1_0.distcp", "meta.pt"]
    # the same fresh temporary name on every rank (rank 0's), all shards written before rank 0 looks,
    # then rank 0's outcome (None: published) in place of a bare barrier
    (_, name), barrier, outcome = trainer.strategy.calls
    assert name.startswith(".tmp-step-000000005.ckpt.") and barrier == ("barrier", "slurm-gpu checkpoint written")
    assert outcome == ("broadcast", None)
    assert resumable.resume_path() == str(final)


def test_resumable_prunes_directories_and_what_killed_saves_left(ckpt_dir: Path) -> None:
    resumable = Resumable(every_n_steps=5, keep=2)
    killed = ckpt_dir / ".tmp-step-000000005.ckpt.0123456789ab"  # a save killed mid-write, earlier
    killed.mkdir()
    (killed / "__0_0.distcp").write_bytes(b"half")
    for step in (5, 10, 15):
        resumable._save(ShardingTrainer(), step)  # type: ignore[arg-type]
    assert saved_steps(ckpt_dir) == [10, 15]
    assert not manifest_path(ckpt(ckpt_dir, 5)).exists() and not killed.exists()
    assert find_resumable(ckpt_dir) == ckpt(ckpt_dir, 15)


def test_a_failure_on_rank_0_reaches_the_other_ranks_instead_of_leaving_them_waiting(
        ckpt_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def full_disk(*args: Any, **kwargs: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoints, "publish_directory", full_disk)
    resumable = Resumable(every_n_steps=5)
    rank0 = ShardingTrainer()
    with pytest.raises(OSError, match="No space left"):
        resumable._save(rank0, 5)  # type: ignore[arg-type]
    # rank 0 raised only after telling the others, in the collective where they wait
    assert rank0.strategy.calls[-1] == ("broadcast", "OSError: [Errno 28] No space left on device")
    name = rank0.strategy.calls[0][1]
    rank1 = ShardingTrainer(rank=1, from_rank0=[name, rank0.strategy.calls[-1][1]])
    with pytest.raises(RuntimeError, match="rank 0 could not finish checkpoint .*step-000000005.ckpt: OSError"):
        resumable._save(rank1, 5)  # type: ignore[arg-type]
    assert saved_steps(ckpt_dir) == []
    remove_leftovers(ckpt_dir)  # what the next successful save's pruning would do


# ---------------------------------------------------------------- a real Lightning run, FSDP's layout

class ShardedLikeFSDP(SingleDeviceStrategy):
    """Saves and loads as Lightning's FSDPStrategy(state_dict_type="sharded") does, on one CPU: the
    module's tensors through torch.distributed.checkpoint into the directory, the rest in meta.pt."""

    def save_checkpoint(self, checkpoint: dict[str, Any], filepath: Any, storage_options: Any = None) -> None:
        path = Path(filepath)
        path.mkdir(parents=True, exist_ok=True)
        dcp.save({"model": checkpoint.pop("state_dict")}, checkpoint_id=path)
        torch.save(checkpoint, path / "meta.pt")

    def load_checkpoint(self, checkpoint_path: Any, weights_only: bool | None = None) -> dict[str, Any]:
        path = Path(checkpoint_path)
        state = {"model": self.lightning_module.state_dict()}
        dcp.load(state, checkpoint_id=path)
        checkpoint = torch.load(path / "meta.pt", weights_only=False)
        checkpoint["state_dict"] = state["model"]
        return checkpoint


class TinyModel(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.layer = torch.nn.Linear(4, 1)
        self.steps_run: list[int] = []

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        self.steps_run.append(self.global_step + 1)
        x, y = batch
        return torch.nn.functional.mse_loss(self.layer(x), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)


def fit(root: Path, max_steps: int, *callbacks: L.Callback, ckpt_path: str | None = None) -> TinyModel:
    x = torch.randn(20, 4, generator=torch.Generator().manual_seed(0))  # 5 batches: saves end an epoch
    loader = DataLoader(TensorDataset(x, x.sum(dim=1, keepdim=True)), batch_size=4, shuffle=False)
    model = TinyModel()
    L.Trainer(strategy=ShardedLikeFSDP(device=torch.device("cpu")), accelerator="cpu", max_steps=max_steps,
              callbacks=list(callbacks), default_root_dir=str(root), logger=False, enable_checkpointing=False,
              enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
              ).fit(model, loader, ckpt_path=ckpt_path)
    return model


def test_a_lightning_run_with_directory_checkpoints_resumes_past_a_damaged_one(ckpt_dir: Path,
                                                                              tmp_path: Path) -> None:
    reference = fit(tmp_path / "reference", 20)
    first = Resumable(every_n_steps=5, keep=2)
    fit(tmp_path, 15, first, ckpt_path=first.resume_path())
    assert saved_steps(ckpt_dir) == [10, 15]
    for step in (10, 15):
        assert_sharded(ckpt_dir, step)
        assert_private(ckpt(ckpt_dir, step))
    shard = next(ckpt(ckpt_dir, 15).glob("*.distcp"))
    os.truncate(shard, shard.stat().st_size - 1)  # the newest is damaged: resume from step 10
    second = Resumable(every_n_steps=5, keep=2)
    resume_from = second.resume_path()
    assert resume_from == str(ckpt(ckpt_dir, 10))
    resumed = fit(tmp_path, 20, second, ckpt_path=resume_from)
    assert resumed.steps_run == list(range(11, 21))
    assert saved_steps(ckpt_dir) == [15, 20]  # step 15 written anew in place of the damaged one
    assert_sharded(ckpt_dir, 15)
    # the weights came back from the shards: the same floats as a run never interrupted
    assert torch.equal(resumed.layer.weight, reference.layer.weight)
