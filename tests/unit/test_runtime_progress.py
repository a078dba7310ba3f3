"""A rank's heartbeat (runtime/progress.py, heartbeat.py) and the observer that Lightning adds to every
Trainer of a slurm-gpu step through the plugin's entry point (runtime/observer.py)."""

from __future__ import annotations

import signal
import time

import pytest

from snakemake_executor_plugin_slurm_gpu import heartbeat
from snakemake_executor_plugin_slurm_gpu.runtime import signals
from snakemake_executor_plugin_slurm_gpu.runtime.progress import Progress


def test_a_rank_beats_with_its_progress_pace_and_where_its_main_thread_is(tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    monkeypatch.setenv("SLURMD_NODENAME", "n2")
    progress = Progress(rank=3, directory=tmp_path, interval_s=0.05)
    progress.start()
    progress.advance(1)
    time.sleep(0.2)
    progress.advance(2)
    time.sleep(0.2)
    [beat] = heartbeat.read_all(tmp_path)
    assert (beat["rank"], beat["node"], beat["job_id"], beat["progress"], beat["global_step"]) == (3, "n2", "42", 2, 2)
    assert beat["max_gap_s"] >= 0.2 and beat["state"] == "running"
    assert any("test_a_rank_beats_with_its_progress" in frame for frame in beat["stack"]), beat["stack"]
    progress.done()
    [beat] = heartbeat.read_all(tmp_path)
    assert beat["state"] == "done" and beat["stack"] == []


def test_without_a_heartbeat_directory_nothing_is_written(tmp_path, monkeypatch):
    monkeypatch.delenv(heartbeat.DIR_ENV, raising=False)
    progress = Progress(rank=0)
    progress.start()
    progress.advance(1)
    progress.done()
    assert not progress.enabled


def test_unreadable_heartbeat_files_are_skipped(tmp_path):
    (tmp_path / "rank-0.json").write_text("{half")
    heartbeat.write(tmp_path, {"rank": 1, "ts": 1.0})
    assert [b["rank"] for b in heartbeat.read_all(tmp_path)] == [1]


# ---------------------------------------------------------------- the observer (imports lightning)

def test_outside_a_slurm_gpu_step_lightning_gets_no_observer(monkeypatch):
    pytest.importorskip("lightning")
    from snakemake_executor_plugin_slurm_gpu.runtime import observer

    monkeypatch.delenv("SLURM_GPU_STEP", raising=False)
    assert observer.callbacks() == []


def test_the_entry_point_gives_every_trainer_of_a_step_an_observer(tmp_path, monkeypatch):
    L = pytest.importorskip("lightning")
    from snakemake_executor_plugin_slurm_gpu.runtime.observer import StepObserver

    monkeypatch.setenv("SLURM_GPU_STEP", "train/all")
    monkeypatch.setenv(heartbeat.DIR_ENV, str(tmp_path))
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False)
    assert [type(c) for c in trainer.callbacks if isinstance(c, StepObserver)] == [StepObserver]


def test_after_fit_the_requeue_signal_is_ignored_until_the_next_fit(tmp_path, monkeypatch):
    """Lightning puts SIGUSR1's default action (terminate) back when fit() ends; a time-limit warning
    while the script writes its results would kill a finished training."""
    L = pytest.importorskip("lightning")
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    monkeypatch.setenv("SLURM_GPU_STEP", "train/all")
    monkeypatch.setenv(heartbeat.DIR_ENV, str(tmp_path))
    monkeypatch.setattr(signals, "_owner_pid", None)  # no Resumable recorder in this process

    class Tiny(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(2, 1)

        def training_step(self, batch, batch_idx):
            return self.lin(batch[0]).sum()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01)

    before = signal.getsignal(signal.SIGUSR1)
    signal.signal(signal.SIGUSR1, signal.SIG_DFL)
    try:
        trainer = L.Trainer(accelerator="cpu", max_steps=3, logger=False, enable_checkpointing=False,
                            enable_progress_bar=False, enable_model_summary=False)
        loader = DataLoader(TensorDataset(torch.randn(8, 2)), batch_size=2)
        trainer.fit(Tiny(), loader)
        assert signal.getsignal(signal.SIGUSR1) == signal.SIG_IGN
        [beat] = heartbeat.read_all(tmp_path)
        assert beat["state"] == "done" and beat["progress"] == 3 and beat["global_step"] == 3
        observer = next(c for c in trainer.callbacks if type(c).__name__ == "StepObserver")
        observer.setup(trainer, trainer.lightning_module, "fit")  # what the next fit() calls first
        assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL
        observer.teardown(trainer, trainer.lightning_module, "fit")
    finally:
        signal.signal(signal.SIGUSR1, before)


def test_with_debug_each_rank_says_where_it_thinks_it_is():
    from snakemake_executor_plugin_slurm_gpu.runtime.environment import world_view

    env = {"SLURM_GPU_DEBUG": "1", "SLURMD_NODENAME": "n2", "MASTER_ADDR": "n1", "MASTER_PORT": "18074",
           "CUDA_VISIBLE_DEVICES": "0,1", "SLURM_JOB_ID": "42", "SLURM_STEP_ID": "0"}
    assert world_view(3, 1, 4, env) == ("[slurm-gpu debug] rank 3 of 4, local rank 1, node n2, master n1:18074, "
                                        "CUDA_VISIBLE_DEVICES=0,1, NCCL_SOCKET_IFNAME=None, job 42 step 0")
    assert world_view(3, 1, 4, {**env, "SLURM_GPU_DEBUG": "0"}) is None
