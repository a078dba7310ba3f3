"""runtime/boundary.py, one rank's view with a fake world (no torch, no process group): what is saved
when, the events and the marker of each stop in their order, exit 143, and the wait of every rank
for rank 0 before any leaves (with SLURM_KILL_BAD_EXIT=1 an early exit kills rank 0 mid-request)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import pytest

from snakemake_executor_plugin_slurm_gpu import contract, events
from snakemake_executor_plugin_slurm_gpu.contract import CheckpointReason, StopReason
from snakemake_executor_plugin_slurm_gpu.runtime import boundary as boundary_module
from snakemake_executor_plugin_slurm_gpu.runtime import signals
from snakemake_executor_plugin_slurm_gpu.runtime.boundary import Boundary
from snakemake_executor_plugin_slurm_gpu.runtime.requeue import Interrupted


class FakeWorld:
    """Records, in one list, what the boundary asks of this rank: saves, waits, and (through the
    event log and a fake scontrol) what rank 0 writes."""

    def __init__(self, requeue: bool = False, terminate: bool = False, timed: bool | None = None) -> None:
        self.flags = (requeue, terminate)
        self.timed = timed   # what the other ranks' vote makes of this rank's timed flag (None: as given)
        self.calls: list[tuple[Any, ...]] = []

    def agree(self, timed: bool) -> tuple[bool, bool, bool]:
        self.calls.append(("agree", timed))
        return self.flags[0], timed if self.timed is None else self.timed, self.flags[1]

    def save(self, step: int, why: CheckpointReason) -> None:
        self.calls.append(("save", step, str(why)))

    def wait(self, name: str) -> None:
        self.calls.append(("wait", name))


@pytest.fixture
def job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_scontrol: Path) -> Iterator[Path]:
    """An event log, a job id, conftest's recording `scontrol` (scontrol.calls); signals cleared."""
    monkeypatch.setenv(events.ENV_VAR, str(tmp_path / "events.jsonl"))
    monkeypatch.setenv("SLURM_GPU_STEP", "train/all")
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    for name in ("SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_RESTART_COUNT", contract.Env.MAX_REQUEUES,
                 contract.Env.CHECKPOINT_ON_TERM):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "ckpt").mkdir()
    signals.reset()
    yield tmp_path
    signals.reset()


def logged(job: Path) -> list[tuple[Any, ...]]:
    out = []
    for e in events.read(job / "events.jsonl"):
        fields = {k: v for k, v in e.items() if k not in ("ts", "event", "step", "source", "job_id")}
        out.append((e["event"], fields))
    return out


def make(job: Path, rank0: bool = True, **kwargs: Any) -> Boundary:
    return Boundary(job / "ckpt", rank0=rank0, restart=2, **kwargs)


# ---------------------------------------------------------------- no stop

def test_periodic_checkpoints_every_n_steps_and_never_twice_for_one_step(job: Path) -> None:
    b, world = make(job, every_n_steps=5), FakeWorld()
    for step in (4, 5, 6, 10):
        b.reached(step, world.agree, world.save, world.wait)
        if step == 5:
            b.saved(5)
    b.reached(5, world.agree, world.save, world.wait)  # the same step again (Lightning's last batch)
    assert [c for c in world.calls if c[0] == "save"] == [("save", 5, "periodic"), ("save", 10, "periodic")]
    assert not (job / "events.jsonl").exists()


def test_timed_checkpoints_follow_rank_0s_clock_as_the_ranks_agreed(job: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [1000.0]
    monkeypatch.setattr(boundary_module.time, "monotonic", lambda: clock[0])
    rank0, other = make(job, every_s=60.0), make(job, rank0=False, every_s=60.0)
    world0, world1 = FakeWorld(), FakeWorld(timed=True)  # rank 1 learns rank 0's verdict from the vote
    clock[0] += 61
    rank0.reached(3, world0.agree, world0.save, world0.wait)
    other.reached(3, world1.agree, world1.save, world1.wait)
    assert world0.calls == [("agree", True), ("save", 3, "timed")]
    assert world1.calls == [("agree", False), ("save", 3, "timed")]  # only rank 0's clock counts
    rank0.saved(3)
    clock[0] += 30
    rank0.reached(4, world0.agree, world0.save, world0.wait)
    assert world0.calls[-1] == ("agree", False)
    rank0.start_clock()
    assert rank0.interrupted is None


# ---------------------------------------------------------------- the requeue signal

def test_the_requeue_signal_saves_writes_its_events_asks_slurm_and_waits_before_143(job: Path) -> None:
    signals.received().names.append("SIGUSR1")
    b, world = make(job, every_n_steps=5), FakeWorld(requeue=True)
    with pytest.raises(Interrupted) as stopped:
        b.reached(7, world.agree, world.save, world.wait)
    assert stopped.value.code == contract.INTERRUPTED_EXIT_CODE == 143
    assert b.interrupted == StopReason.REQUEUE_SIGNAL == "requeue signal"
    assert world.calls == [("agree", False), ("save", 7, "signal"), ("wait", "slurm-gpu requeue")]
    assert logged(job) == [("signal", {"signal": "SIGUSR1", "global_step": 7, "restart": 2}),
                           ("interrupted", {"global_step": 7, "why": "requeue signal"}),
                           ("requeue_requested", {"global_step": 7, "requeued": True})]
    assert (job / "scontrol.calls").read_text() == "requeue 4242\n"
    marker = contract.read_interrupted_marker(job / "ckpt")
    assert marker is not None and (marker["job_id"], marker["step"], marker["signals"], marker["requeued"]) == \
        ("4242", 7, ["SIGUSR1"], True)


def test_a_step_already_saved_is_not_saved_again_on_the_signal(job: Path) -> None:
    b, world = make(job, every_n_steps=5), FakeWorld(requeue=True)
    b.saved(5)
    with pytest.raises(Interrupted):
        b.reached(5, world.agree, world.save, world.wait)
    assert [c[0] for c in world.calls] == ["agree", "wait"]


def test_other_ranks_save_and_wait_but_write_nothing(job: Path) -> None:
    b, world = make(job, rank0=False), FakeWorld(requeue=True)
    with pytest.raises(Interrupted):
        b.reached(7, world.agree, world.save, world.wait)
    assert world.calls == [("agree", False), ("save", 7, "signal"), ("wait", "slurm-gpu requeue")]
    assert not (job / "events.jsonl").exists() and not (job / "scontrol.calls").exists()
    assert contract.read_interrupted_marker(job / "ckpt") is None


def test_rank_0_writes_everything_before_any_rank_may_leave(job: Path) -> None:
    # the order that matters with kill-on-bad-exit: the wait comes after rank 0's request and marker
    b = make(job)
    seen_at_wait: list[Any] = []

    def wait(name: str) -> None:
        seen_at_wait.append((name, contract.read_interrupted_marker(job / "ckpt") is not None,
                             (job / "scontrol.calls").exists(), [e for e, _ in logged(job)]))

    with pytest.raises(Interrupted):
        b.stop(3, StopReason.REQUEUE_SIGNAL, wait)
    assert seen_at_wait == [("slurm-gpu requeue", True, True, ["signal", "interrupted", "requeue_requested"])]


def test_no_requeue_request_when_requeue_is_off_or_the_limit_is_reached(job: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    world = FakeWorld()
    with pytest.raises(Interrupted):
        make(job, requeue=False).stop(3, StopReason.REQUEUE_SIGNAL, world.wait)
    monkeypatch.setenv(contract.Env.MAX_REQUEUES, "2")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "2")
    with pytest.raises(Interrupted):
        make(job).stop(4, StopReason.REQUEUE_SIGNAL, world.wait)
    assert not (job / "scontrol.calls").exists()
    assert [f["requeued"] for e, f in logged(job) if e == "requeue_requested"] == [False, False]
    assert contract.interrupted_for_requeue(job / "ckpt", "4242")  # the executor resubmits instead


# ---------------------------------------------------------------- SIGTERM

def test_sigterm_stops_without_a_checkpoint_leaves_the_marker_and_asks_for_no_requeue(job: Path) -> None:
    signals.received().names.append("SIGTERM")
    b, world = make(job, every_n_steps=5), FakeWorld(terminate=True)
    with pytest.raises(Interrupted) as stopped:
        b.reached(5, world.agree, world.save, world.wait)  # a periodic step too: the stop comes first
    assert stopped.value.code == 143 and b.interrupted == "SIGTERM"
    assert world.calls == [("agree", False), ("wait", "slurm-gpu stop")]
    assert logged(job) == [("interrupted", {"global_step": 5, "why": "SIGTERM"})]
    assert not (job / "scontrol.calls").exists()
    marker = contract.read_interrupted_marker(job / "ckpt")
    assert marker is not None and (marker["requeued"], marker["signals"]) == (False, ["SIGTERM"])


def test_sigterm_with_checkpoint_on_sigterm_saves_first(job: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(contract.Env.CHECKPOINT_ON_TERM, "1")
    b, world = make(job), FakeWorld(terminate=True)
    with pytest.raises(Interrupted):
        b.reached(6, world.agree, world.save, world.wait)
    assert world.calls == [("agree", False), ("save", 6, "sigterm"), ("wait", "slurm-gpu stop")]


def test_sigterm_without_the_marker_for_callers_that_never_left_one(job: Path) -> None:
    b, world = make(job, mark_sigterm=False), FakeWorld()
    with pytest.raises(Interrupted):
        b.stop(6, StopReason.SIGTERM, world.wait)
    assert logged(job) == [("interrupted", {"global_step": 6, "why": "SIGTERM"})]
    assert contract.read_interrupted_marker(job / "ckpt") is None


def test_the_requeue_signal_wins_over_sigterm(job: Path) -> None:
    b, world = make(job), FakeWorld(requeue=True, terminate=True)
    with pytest.raises(Interrupted):
        b.reached(8, world.agree, world.save, world.wait)
    assert b.interrupted == "requeue signal" and world.calls[-1] == ("wait", "slurm-gpu requeue")
