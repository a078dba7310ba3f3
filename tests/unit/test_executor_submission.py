"""The executor's own part of submission and status, without a Snakemake workflow around it: the
script goes to sbatch on standard input and the file kept is the same bytes, private; an unknown
Slurm state is said once per job and state. The methods are called on a stand-in `self` holding
just what they use."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

from fake_slurm import FakeSlurm
from snakemake_executor_plugin_slurm_gpu import slurm
from snakemake_executor_plugin_slurm_gpu.batch_script import JobOptions
from snakemake_executor_plugin_slurm_gpu.executor import Executor, SubmitError
from snakemake_executor_plugin_slurm_gpu.paths import StepPaths
from snakemake_executor_plugin_slurm_gpu.settings import ExecutorSettings
from snakemake_executor_plugin_slurm_gpu.slurm import JobRecord
from snakemake_executor_plugin_slurm_gpu.spec import build_spec
from snakemake_executor_plugin_slurm_gpu.status import classify


class Logger:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def info(self, text: str) -> None:
        self.lines.append(("info", text))

    def warning(self, text: str) -> None:
        self.lines.append(("warning", text))


def stand_in(root: Path, fake: FakeSlurm) -> SimpleNamespace:
    me = SimpleNamespace(root=root, _history={}, _live=set(), _live_lock=threading.Lock(), logger=Logger(),
                         options=JobOptions(), settings=ExecutorSettings(), _unknown_states=set(),
                         _state_base_checked=False)
    me._slurm = lambda argv, stdin=None: slurm.run(argv, timeout_s=30, runner=fake, stdin=stdin)
    me._inner_command = lambda job, paths: "python -m snakemake --target-jobs 'train:' --mode remote"
    me._state_base = lambda: Executor._state_base(me)
    me._private_dir = lambda path: Executor._private_dir(me, path)
    me._write_script = lambda paths, job, text: Executor._write_script(me, paths, job, text)
    me._cancel = lambda ids: None
    me._event = lambda paths, event, job_id, **fields: Executor._event(me, paths, event, job_id, **fields)
    me._event_log_warned = False
    return me


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / ".snakemake").mkdir()
    return tmp_path


def test_the_script_goes_to_sbatch_on_stdin_and_the_private_file_is_the_same_bytes(workdir: Path,
                                                                                   fake_slurm: FakeSlurm) -> None:
    fake_slurm.answer(["sbatch", "--parsable"], stdout="sbatch: warning: something odd\n4711\n")
    me = stand_in(workdir, fake_slurm)
    paths = StepPaths.of(workdir, "train", {})
    old = os.umask(0)
    try:
        job_id = Executor._submit(me, SimpleNamespace(attempt=1), build_spec("train", {"gpus": 2}), paths)
    finally:
        os.umask(old)
    assert job_id == "4711" and me._live == {"4711"}
    (script,) = paths.script_dir.glob("*.sh")
    assert fake_slurm.stdins == [script.read_text()]
    assert stat.S_IMODE(script.stat().st_mode) == 0o600
    for directory in (paths.script_dir, paths.log_dir, paths.state_dir):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700


def test_a_group_writable_script_directory_is_not_written_into(workdir: Path, fake_slurm: FakeSlurm) -> None:
    me = stand_in(workdir, fake_slurm)
    paths = StepPaths.of(workdir, "train", {})
    paths.script_dir.mkdir(parents=True)
    paths.script_dir.chmod(0o770)
    with pytest.raises(SubmitError, match="could not write its batch script: .* is writable by its group"):
        Executor._submit(me, SimpleNamespace(attempt=1), build_spec("train", {"gpus": 2}), paths)
    assert fake_slurm.calls == [] and list(paths.script_dir.iterdir()) == []


def test_an_unknown_state_is_said_once_per_job_and_state(workdir: Path, fake_slurm: FakeSlurm) -> None:
    me = stand_in(workdir, fake_slurm)
    paths = StepPaths.of(workdir, "train", {})
    for reason in ("a", "b"):  # the reason changing is not news
        Executor._note_unknown_state(me, "5", paths, classify(JobRecord("5", "WARPING", reason)))
    Executor._note_unknown_state(me, "5", paths, classify(JobRecord("5", "FOLDING")))
    Executor._note_unknown_state(me, "6", paths, classify(JobRecord("6", "WARPING")))
    warnings = [text for level, text in me.logger.lines if level == "warning"]
    assert len(warnings) == 3
    assert "Slurm job 5: state 'WARPING, reason a' is unknown to slurm-gpu; waiting up to 600 s" in warnings[0]
    assert "--slurm-gpu-missing-job-timeout-s" in warnings[0]


def test_a_world_writable_dot_snakemake_of_ours_loses_its_write_bits_once(workdir: Path,
                                                                          fake_slurm: FakeSlurm) -> None:
    # Snakemake made it under umask 0: anybody could otherwise swap .snakemake/slurm-gpu for their own
    (workdir / ".snakemake").chmod(0o777)
    fake_slurm.answer(["sbatch", "--parsable"], stdout="12\n", times=2)
    me = stand_in(workdir, fake_slurm)
    for model in ("a", "b"):
        Executor._submit(me, SimpleNamespace(attempt=1), build_spec("train", {"gpus": 2}),
                         StepPaths.of(workdir, "train", {"model": model}))
    assert stat.S_IMODE((workdir / ".snakemake").stat().st_mode) == 0o755
    warnings = [text for level, text in me.logger.lines if level == "warning"]
    assert len(warnings) == 1 and "(mode 0777); removed those write bits" in warnings[0]
