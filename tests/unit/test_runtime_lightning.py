"""runtime.lightning.Resumable in real single-process Lightning runs on the CPU: periodic checkpoints
with manifests and pruning, a checkpoint + `scontrol requeue` + exit 143 on the requeue signal, a
stop without saving on SIGTERM, and a resumed run that finishes where the first one would have.

No Slurm: SLURM_* is cleared, and the one requeue test puts a fake `scontrol` first on PATH that
only records its argv. Signals go to the test process itself inside `signal_sandbox`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
L = pytest.importorskip("lightning.pytorch")

from lightning.pytorch.trainer.states import TrainerStatus  # noqa: E402
from lightning.pytorch.utilities.exceptions import SIGTERMException  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

from snakemake_executor_plugin_slurm_gpu.checkpoints import (  # noqa: E402
    INTERRUPTED_MARKER,
    VerifiedBy,
    find_resumable,
    manifest_path,
    verify_checkpoint,
)
from snakemake_executor_plugin_slurm_gpu.runtime import signals  # noqa: E402
from snakemake_executor_plugin_slurm_gpu.runtime.lightning import (  # noqa: E402
    INTERRUPTED_EXIT_CODE,
    Interrupted,
    Resumable,
)

pytestmark = [
    # this machine may have srun on PATH; these runs are deliberately not under Slurm
    pytest.mark.filterwarnings("ignore:The `srun` command is available:UserWarning"),
    # resuming mid-epoch with a plain DataLoader is what a requeue does; the step count is what we check
    pytest.mark.filterwarnings("ignore:You're resuming from a checkpoint that ended before the epoch ended"),
    pytest.mark.filterwarnings("ignore:`isinstance\\(treespec, LeafSpec\\)` is deprecated"),
]

MAX_STEPS = 20
EVERY = 5
BATCHES_PER_EPOCH = 8  # MAX_STEPS spans epochs: resuming mid-epoch and crossing an epoch are both covered


class TinyModel(L.LightningModule):
    """One linear layer; `signal_at` sends a signal to this process from inside training_step, so
    that it arrives mid-step and the batch that makes global_step == signal_at[0] is the one it
    interrupts."""

    def __init__(self, signal_at: tuple[int, int] | None = None) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)
        self.signal_at = signal_at
        self.steps_run: list[int] = []  # global_step (after this batch's optimizer step) of every batch run

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        self.steps_run.append(self.global_step + 1)
        if self.signal_at is not None and self.global_step + 1 == self.signal_at[0]:
            os.kill(os.getpid(), self.signal_at[1])
        x, y = batch
        return torch.nn.functional.mse_loss(self.layer(x), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)


class SignalAfterBatchEnd(L.Callback):
    """Sends `signum` once global_step == `step`, after every earlier callback's on_train_batch_end:
    Lightning's own SIGTERM check (end of the batch) then fires before Resumable sees the flag."""

    def __init__(self, step: int, signum: int) -> None:
        self.step, self.signum = step, signum

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), self.signum)


def loader() -> DataLoader:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(BATCHES_PER_EPOCH * 4, 4, generator=generator)
    return DataLoader(TensorDataset(x, x.sum(dim=1, keepdim=True)), batch_size=4, shuffle=False, num_workers=0)


def trainer(root: Path, *callbacks: L.Callback, max_steps: int = MAX_STEPS) -> L.Trainer:
    return L.Trainer(accelerator="cpu", devices=1, max_steps=max_steps, callbacks=list(callbacks),
                     default_root_dir=str(root), logger=False, enable_checkpointing=False,
                     enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)


def ckpt(directory: Path, step: int) -> Path:
    return directory / f"step-{step:09d}.ckpt"


def saved_steps(directory: Path) -> list[int]:
    return sorted(int(p.name[len("step-"):-len(".ckpt")]) for p in directory.glob("step-*.ckpt"))


def assert_verified(directory: Path, step: int) -> None:
    path = ckpt(directory, step)
    info = verify_checkpoint(path)
    assert info is not None, f"{path} does not verify"
    assert (info.verified_by, info.global_step) == (VerifiedBy.MANIFEST, step)
    manifest = json.loads(manifest_path(path).read_text())
    assert (manifest["file"], manifest["global_step"], manifest["size_bytes"]) == (
        path.name, step, path.stat().st_size)
    # what Lightning wrote is a loadable checkpoint of that step
    assert torch.load(path, map_location="cpu", weights_only=False)["global_step"] == step


# ---------------------------------------------------------------- periodic checkpoints

def test_periodic_checkpoints_with_manifests_and_pruning(ckpt_dir: Path) -> None:
    resumable = Resumable(every_n_steps=EVERY, keep=2)
    assert resumable.directory == ckpt_dir and ckpt_dir.is_dir()
    assert resumable.resume_path() is None  # nothing yet: a fresh start
    run = trainer(ckpt_dir.parent, resumable)
    model = TinyModel()
    run.fit(model, loader(), ckpt_path=resumable.resume_path())
    assert run.global_step == MAX_STEPS
    assert resumable.finished(run)
    assert resumable.interrupted is None
    # saved at 5, 10, 15, 20; keep=2 pruned 5 and 10 together with their manifests
    assert saved_steps(ckpt_dir) == [15, 20]
    assert sorted(p.name for p in ckpt_dir.glob("*.json")) == [
        "step-000000015.ckpt.json", "step-000000020.ckpt.json"]
    for step in (15, 20):
        assert_verified(ckpt_dir, step)
    assert not (ckpt_dir / INTERRUPTED_MARKER).exists()
    assert find_resumable(ckpt_dir) == ckpt(ckpt_dir, 20)
    assert resumable.resume_path() == str(ckpt(ckpt_dir, 20))


def test_keep_one_and_a_damaged_newest_checkpoint(ckpt_dir: Path) -> None:
    resumable = Resumable(every_n_steps=EVERY, keep=1)
    run = trainer(ckpt_dir.parent, resumable, max_steps=10)
    run.fit(TinyModel(), loader())
    assert saved_steps(ckpt_dir) == [10]
    assert_verified(ckpt_dir, 10)
    # keep is at least 1: keep=0 would otherwise delete the checkpoint it just wrote
    assert Resumable(every_n_steps=EVERY, keep=0).keep == 1
    # a newest file that fails its manifest is skipped, not loaded
    data = bytearray(ckpt(ckpt_dir, 10).read_bytes())
    data[len(data) // 2] ^= 0xFF
    ckpt(ckpt_dir, 10).write_bytes(bytes(data))
    assert resumable.resume_path() is None


def test_timed_checkpoints(ckpt_dir: Path) -> None:
    # every_minutes=0: every step is due; keep=2 leaves the last two
    resumable = Resumable(every_n_steps=None, every_minutes=0, keep=2)
    run = trainer(ckpt_dir.parent, resumable, max_steps=4)
    run.fit(TinyModel(), loader())
    assert saved_steps(ckpt_dir) == [3, 4]
    assert_verified(ckpt_dir, 4)
    assert resumable.finished(run)


# ---------------------------------------------------------------- the requeue signal, then resuming

def test_requeue_signal_checkpoints_requeues_and_resumes(ckpt_dir: Path, fake_scontrol: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLURM_JOB_ID", "123")
    resumable = Resumable(every_n_steps=EVERY, keep=2)
    first = trainer(ckpt_dir.parent, resumable)
    model = TinyModel(signal_at=(7, signal.SIGUSR1))
    with pytest.raises(Interrupted) as excinfo:
        first.fit(model, loader())
    # the process would exit 143: never 0, so nothing mistakes it for a finished run
    assert isinstance(excinfo.value, SystemExit)
    assert excinfo.value.code == INTERRUPTED_EXIT_CODE == 143
    assert "step 7" in excinfo.value.reason
    assert first.global_step == 7 and model.steps_run == list(range(1, 8))
    assert first.state.status is TrainerStatus.INTERRUPTED
    assert not resumable.finished(first)
    assert resumable.interrupted == "requeue signal"
    # checkpointed at the step boundary of the step the signal arrived in, next to the periodic one
    assert saved_steps(ckpt_dir) == [5, 7]
    assert_verified(ckpt_dir, 5)
    assert_verified(ckpt_dir, 7)
    # rank 0 asked Slurm to requeue this job, exactly once
    assert fake_scontrol.read_text().splitlines() == ["requeue 123"]
    marker = json.loads((ckpt_dir / INTERRUPTED_MARKER).read_text())
    assert marker["job_id"] == "123"
    assert marker["step"] == 7
    assert marker["signals"] == ["SIGUSR1"]
    assert marker["requeued"] is True
    # Lightning put back the handlers it found: ours, so a second signal is still only recorded
    assert signal.getsignal(signal.SIGUSR1) is signals._record

    # ---- the requeued job: a new process (fresh flags), same checkpoint directory
    signals.reset()
    resumed = Resumable(every_n_steps=EVERY, keep=2)
    path = resumed.resume_path()
    assert path == str(ckpt(ckpt_dir, 7))
    second = trainer(ckpt_dir.parent, resumed)
    model2 = TinyModel()
    second.fit(model2, loader(), ckpt_path=path)
    assert second.global_step == MAX_STEPS
    assert model2.steps_run == list(range(8, MAX_STEPS + 1)), "every step once: none repeated, none skipped"
    assert resumed.finished(second)
    assert second.state.status is TrainerStatus.FINISHED
    assert not (ckpt_dir / INTERRUPTED_MARKER).exists(), "the new run's start removes the old run's marker"
    assert saved_steps(ckpt_dir) == [15, 20]
    assert_verified(ckpt_dir, 20)
    assert fake_scontrol.read_text().splitlines() == ["requeue 123"], "no further requeue"


def test_requeue_signal_outside_slurm_checkpoints_without_scontrol(ckpt_dir: Path) -> None:
    # no SLURM_JOB_ID: nothing to requeue (and the suite's guard fails any scontrol call)
    resumable = Resumable(every_n_steps=None)
    run = trainer(ckpt_dir.parent, resumable)
    with pytest.raises(Interrupted) as excinfo:
        run.fit(TinyModel(signal_at=(3, signal.SIGUSR1)), loader())
    assert excinfo.value.code == 143
    assert saved_steps(ckpt_dir) == [3]
    assert_verified(ckpt_dir, 3)
    marker = json.loads((ckpt_dir / INTERRUPTED_MARKER).read_text())
    assert (marker["job_id"], marker["step"], marker["requeued"]) == (None, 3, False)
    assert not resumable.finished(run)


# ---------------------------------------------------------------- SIGTERM

def test_sigterm_stops_without_saving(ckpt_dir: Path) -> None:
    resumable = Resumable(every_n_steps=EVERY)
    run = trainer(ckpt_dir.parent, resumable)
    with pytest.raises(Interrupted) as excinfo:
        run.fit(TinyModel(signal_at=(7, signal.SIGTERM)), loader())
    assert excinfo.value.code == 143
    assert run.global_step == 7
    assert resumable.interrupted == "SIGTERM"
    assert not resumable.finished(run)
    # no time for a checkpoint: the last periodic one is what the next run resumes from
    assert saved_steps(ckpt_dir) == [5]
    # the marker tells the executor that a FAILED end (the batch script ended within a preemption's
    # grace time, before Slurm's requeue) was a stop from outside; nothing asked Slurm to requeue
    marker = json.loads((ckpt_dir / INTERRUPTED_MARKER).read_text())
    assert marker["requeued"] is False and marker["step"] == 7 and marker["signals"] == ["SIGTERM"]
    assert resumable.resume_path() == str(ckpt(ckpt_dir, 5))


class HandlersDuringTraining(L.Callback):
    """The SIGTERM and SIGUSR1 handlers in force while batches run."""

    def __init__(self) -> None:
        self.seen: set[tuple[Any, Any]] = set()

    def on_train_batch_start(self, *args: Any) -> None:
        self.seen.add((signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGUSR1)))


def test_while_training_the_signals_reach_only_the_recording_handlers(ckpt_dir: Path) -> None:
    # Lightning's fit() wraps the SIGTERM handler it finds in its own, which (2.5.2 and later) runs a
    # dist.broadcast inside the handler: a collective between any two bytecodes, e.g. while rank 0
    # waits for `scontrol requeue`, whose kill has already stopped the other ranks
    watch = HandlersDuringTraining()
    run = trainer(ckpt_dir.parent, Resumable(every_n_steps=EVERY), watch, max_steps=3)
    run.fit(TinyModel(), loader())
    assert watch.seen == {(signals._record, signals._record)}


def test_a_sigterm_after_the_batch_end_hook_stops_at_the_next_boundary_with_143(ckpt_dir: Path) -> None:
    # the SIGTERM arrives after Resumable's batch-end hook of step 6: Lightning's own check would
    # raise its SIGTERMException (a SystemExit without a code, exit 0) but its handler is not in
    # force during training, so Resumable stops at the end of step 7, without a checkpoint
    resumable = Resumable(every_n_steps=EVERY)
    run = trainer(ckpt_dir.parent, resumable, SignalAfterBatchEnd(6, signal.SIGTERM))
    with pytest.raises(Interrupted) as excinfo:
        run.fit(TinyModel(), loader())
    assert excinfo.value.code == INTERRUPTED_EXIT_CODE
    assert resumable.interrupted == "SIGTERM"
    assert run.global_step == 7
    assert not resumable.finished(run)
    assert saved_steps(ckpt_dir) == [5]


@pytest.mark.parametrize(
    ("exception", "code"),
    [
        pytest.param(SystemExit(), 143, id="exit-none"),
        pytest.param(SystemExit(0), 143, id="exit-0"),
        pytest.param(SIGTERMException(), 143, id="sigterm-exception"),
        pytest.param(SystemExit(1), 1, id="exit-1-kept"),
        pytest.param(SystemExit("message"), "message", id="exit-message-kept"),
        pytest.param(Interrupted("x"), 143, id="interrupted"),
    ],
)
def test_on_exception_exit_codes(exception: SystemExit, code: object, ckpt_dir: Path) -> None:
    resumable = Resumable(every_n_steps=None)
    resumable.on_exception(None, None, exception)  # type: ignore[arg-type]
    assert exception.code == code
    assert (resumable.interrupted is not None) is (code == 143 and not isinstance(exception, Interrupted))


@pytest.mark.parametrize("exception", [KeyboardInterrupt(), ValueError("x")], ids=["keyboard", "error"])
def test_on_exception_leaves_other_exceptions_alone(exception: BaseException, ckpt_dir: Path) -> None:
    resumable = Resumable(every_n_steps=None)
    resumable.on_exception(None, None, exception)  # type: ignore[arg-type]
    assert not hasattr(exception, "code")
    assert resumable.interrupted is None


def test_a_rewritten_exit_code_is_the_process_exit_status() -> None:
    # what on_exception relies on: the interpreter reads .code when the SystemExit reaches the top
    code = "e = SystemExit(); e.code = 143; raise e"
    assert subprocess.run([sys.executable, "-c", code], timeout=30).returncode == 143


# ---------------------------------------------------------------- the step's event log

def test_a_requeue_and_resume_leave_their_events_in_the_step_log(ckpt_dir: Path, fake_scontrol: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from snakemake_executor_plugin_slurm_gpu import events

    log = ckpt_dir.parent / "events.jsonl"
    for name, value in {"SLURM_JOB_ID": "123", "SLURM_GPU_EVENT_LOG": str(log), "SLURM_GPU_STEP": "train/all",
                        "MASTER_ADDR": "no-such-host.invalid"}.items():
        monkeypatch.setenv(name, value)
    resumable = Resumable(every_n_steps=EVERY, keep=2)
    with pytest.raises(Interrupted):
        trainer(ckpt_dir.parent, resumable).fit(TinyModel(signal_at=(7, signal.SIGUSR1)), loader())
    signals.reset()
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    monkeypatch.setenv("MASTER_ADDR", "localhost")
    resumed = Resumable(every_n_steps=EVERY, keep=2)
    trainer(ckpt_dir.parent, resumed).fit(TinyModel(), loader(), ckpt_path=resumed.resume_path())

    entries = events.read(log)
    assert {(e["step"], e["job_id"], e["source"]) for e in entries} == {("train/all", "123", "rank")}
    assert [(e["event"], e.get("global_step", e.get("from_step"))) for e in entries
            if e["event"] not in ("rank_started", "rank_ready")] == [
        ("checkpoint", 5), ("signal", 7), ("checkpoint", 7), ("interrupted", 7), ("requeue_requested", 7),
        ("resumed", 7), ("checkpoint", 10), ("checkpoint", 15), ("checkpoint", 20), ("training_done", 20)]
    started = [e for e in entries if e["event"] == "rank_started"]
    assert [e["restart"] for e in started] == [0, 1]
    assert started[0]["master_error"] and started[1]["master_error"] is None  # the watchdog's evidence
    assert [e["event"] for e in entries].count("rank_ready") == 2
    why = [e["why"] for e in entries if e["event"] == "checkpoint"]
    assert why == ["periodic", "signal", "periodic", "periodic", "periodic"]


# ---------------------------------------------------------------- launcher="torchrun"

# the second process of the second node of a 2 nodes x 2 GPUs step with launcher="torchrun": srun
# started one task per node (SLURM_PROCID=1 of SLURM_NTASKS=2), torchrun the node's two processes
# (RANK=3 of WORLD_SIZE=4)
TORCHRUN_2X2 = {
    "SLURM_JOB_ID": "4244", "SLURM_JOB_NAME": "sg-train", "SLURM_NTASKS": "2", "SLURM_NNODES": "2",
    "SLURM_NTASKS_PER_NODE": "1", "SLURM_TASKS_PER_NODE": "1(x2)", "SLURM_PROCID": "1", "SLURM_LOCALID": "0",
    "SLURM_NODEID": "1", "SLURM_NODELIST": "n[1-2]",
    "SLURM_GPU_NODES": "2", "SLURM_GPU_TASKS_PER_NODE": "1", "SLURM_GPU_GPUS_PER_NODE": "2",
    "SLURM_GPU_LAUNCHER": "torchrun", "SLURM_GPU_STEP": "train/model=elastic",
    "TORCHELASTIC_RUN_ID": "none", "RANK": "3", "LOCAL_RANK": "1", "WORLD_SIZE": "4", "LOCAL_WORLD_SIZE": "2",
    "GROUP_RANK": "1", "ROLE_RANK": "3", "GROUP_WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "19244",
}
TORCH_VARIABLES = ("TORCHELASTIC_RUN_ID", "RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK",
                   "ROLE_RANK", "GROUP_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


@pytest.fixture
def torchrun_2x2(ckpt_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """This test process as that rank. Building a DDP Trainer sets Lightning's global rank_zero_only
    rank: it is put back afterwards, or later tests would log as rank 3."""
    from lightning_utilities.core.rank_zero import rank_zero_only

    monkeypatch.setattr(rank_zero_only, "rank", getattr(rank_zero_only, "rank", 0))
    for name in TORCH_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    for name, value in TORCHRUN_2X2.items():
        monkeypatch.setenv(name, value)
    return ckpt_dir


def world(t: L.Trainer) -> tuple[str, int, int, int, int, int]:
    return (type(t.strategy.cluster_environment).__name__, t.world_size, t.global_rank, t.local_rank, t.node_rank,
            t.num_nodes)


def unfitted(**kwargs: Any) -> L.Trainer:
    return L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False,
                     enable_model_summary=False, **kwargs)


def test_under_torchrun_trainer_kwargs_give_torchruns_world(torchrun_2x2: Path) -> None:
    from snakemake_executor_plugin_slurm_gpu.runtime import TORCHRUN_STRATEGY, trainer_kwargs

    kwargs = trainer_kwargs(accelerator="cpu")
    assert kwargs == {"num_nodes": 2, "devices": 2, "accelerator": "cpu", "strategy": TORCHRUN_STRATEGY,
                      "default_root_dir": str(torchrun_2x2)}
    # rank 3 of 4, the second of its node's two processes, on the second node: torchrun's numbers,
    # not Slurm's (rank 1 of 2, local rank 0)
    assert world(unfitted(**kwargs)) == ("TorchElasticEnvironment", 4, 3, 1, 1, 2)
    # a name like "ddp", not a strategy instance: the same kwargs serve a second Trainer
    assert world(unfitted(**kwargs)) == ("TorchElasticEnvironment", 4, 3, 1, 1, 2)


def test_under_torchrun_the_documented_script_forms_torchruns_world(torchrun_2x2: Path) -> None:
    from snakemake_executor_plugin_slurm_gpu.runtime import trainer_kwargs

    # the README's Trainer line, unchanged from launcher="srun"
    resumable = Resumable(every_n_steps=EVERY)
    trainer = unfitted(max_steps=10, callbacks=[resumable], plugins=[resumable.environment()],
                       **trainer_kwargs(accelerator="cpu"))
    assert world(trainer) == ("TorchElasticEnvironment", 4, 3, 1, 1, 2)
    assert resumable._rank == 3  # torchrun's RANK: only rank 0 reports a resume, not one process per node
    assert not trainer.is_global_zero


def test_resumable_environment_follows_the_launcher(ckpt_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lightning.pytorch.plugins.environments import SLURMEnvironment, TorchElasticEnvironment

    for name in TORCH_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    resumable = Resumable(every_n_steps=EVERY)
    srun = resumable.environment()  # launcher="srun": Slurm's task ids are the ranks
    assert type(srun) is SLURMEnvironment and not srun.auto_requeue  # Resumable requeues, not Lightning
    for name, value in TORCHRUN_2X2.items():
        monkeypatch.setenv(name, value)
    assert type(resumable.environment()) is TorchElasticEnvironment


def test_a_slurm_environment_under_torchrun_is_refused_when_the_trainer_is_built(torchrun_2x2: Path) -> None:
    from lightning.pytorch.plugins.environments import SLURMEnvironment

    from snakemake_executor_plugin_slurm_gpu.runtime import GeometryError, trainer_kwargs

    # an older script's own SLURMEnvironment: rank SLURM_PROCID=1 of SLURM_NTASKS=2, for two processes
    # of each node at once. Refused before fit(), before any process group could form with duplicate ranks
    with pytest.raises(GeometryError) as excinfo:
        unfitted(plugins=[SLURMEnvironment(auto_requeue=False)], **trainer_kwargs(accelerator="cpu"))
    message = str(excinfo.value)
    assert "started this process as rank 3 of 4" in message
    assert "counts it as rank 1 of 2 (cluster environment SLURMEnvironment)" in message
    assert "HINT:" in message and 'launcher="srun"' in message


def test_a_plain_lightning_script_under_torchrun(torchrun_2x2: Path) -> None:
    from snakemake_executor_plugin_slurm_gpu.runtime import check_lightning_world

    # nothing of slurm-gpu, but the right numbers: Lightning (2.1 and later) picks TorchElasticEnvironment
    # before SLURMEnvironment by itself
    assert world(unfitted(accelerator="cpu", devices=2, num_nodes=2, strategy="ddp")) == (
        "TorchElasticEnvironment", 4, 3, 1, 1, 2)
    # Lightning's defaults: one process, a model of its own on each of torchrun's. What the observer's
    # check (at setup, where Lightning's own checks do not look) makes of it
    alone = unfitted(accelerator="cpu")
    assert (alone.world_size, alone.global_rank) == (1, 0)
    message = check_lightning_world(alone.world_size, alone.global_rank)
    assert message is not None and "built for a single process" in message
