"""Unit-test fixtures. No test here may run a real Slurm command: every Slurm call goes through
FakeSlurm, which answers only the argv it was told about and fails the test on any other."""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import stat
import subprocess
from pathlib import Path
from typing import Any, Iterator

import pytest

from fake_slurm import FakeSlurm

DATA = Path(__file__).resolve().parents[1] / "data"
SLURM_COMMANDS = {"sbatch", "squeue", "sacct", "scancel", "sinfo", "scontrol", "srun", "salloc", "sacctmgr"}


class SlurmGuard:
    """What no_real_slurm lets through: only fake Slurm commands a test wrote itself and allowed."""

    def __init__(self) -> None:
        self.fakes: set[str] = set()

    def allow(self, fake: Path) -> None:
        """Let a Slurm command run when it resolves (by path, or through PATH) to exactly `fake`."""
        self.fakes.add(os.path.realpath(fake))

    def permits(self, program: str) -> bool:
        found = shutil.which(program)
        return found is not None and os.path.realpath(found) in self.fakes


@pytest.fixture(autouse=True)
def no_real_slurm(monkeypatch: pytest.MonkeyPatch) -> SlurmGuard:
    """Any real Slurm command a unit test would start is an error, whatever path reaches it."""
    real_run = subprocess.run
    guard = SlurmGuard()

    def guarded_run(args, *pargs, **kwargs):  # type: ignore[no-untyped-def]
        argv = [args] if isinstance(args, (str, bytes, os.PathLike)) else list(args)
        program = str(argv[0]).split()[0]
        if os.path.basename(program) in SLURM_COMMANDS and not guard.permits(program):
            raise AssertionError(f"a unit test tried to run Slurm: {argv!r}")
        return real_run(args, *pargs, **kwargs)

    monkeypatch.setattr(subprocess, "run", guarded_run)
    return guard


@pytest.fixture
def fake_slurm() -> FakeSlurm:
    return FakeSlurm()


@pytest.fixture
def data_dir() -> Path:
    return DATA


# every signal a test of the runtime may install a handler for or send to the test process
SANDBOXED_SIGNALS = [signal.SIGUSR1, signal.SIGUSR2, signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT,
                     signal.SIGALRM, signal.SIGURG, signal.SIGCONT]


@pytest.fixture
def signal_sandbox(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """runtime.signals as if this process had never called install(), with fresh flags; afterwards
    the previous handlers are back, so neither pytest nor the next test sees ours."""
    from snakemake_executor_plugin_slurm_gpu.runtime import signals

    saved = {signum: signal.getsignal(signum) for signum in SANDBOXED_SIGNALS}
    monkeypatch.setattr(signals, "_owner_pid", None)
    monkeypatch.delenv(signals.REQUEUE_SIGNAL_ENV, raising=False)
    signals.reset()
    try:
        yield
    finally:
        signals.reset()
        for signum, handler in saved.items():
            if handler is not None and signal.getsignal(signum) is not handler:
                signal.signal(signum, handler)
        assert {signum: signal.getsignal(signum) for signum in SANDBOXED_SIGNALS} == saved


# ---------------------------------------------------------------- training-process tests

@pytest.fixture
def ckpt_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, signal_sandbox: None) -> Iterator[Path]:
    """A step's checkpoint directory in tmp_path, and an environment without Slurm."""
    for name in list(os.environ):
        if name.startswith("SLURM_"):
            monkeypatch.delenv(name)
    directory = tmp_path / "ckpt"
    monkeypatch.setenv("SLURM_GPU_CHECKPOINT_DIR", str(directory))
    monkeypatch.chdir(tmp_path)
    yield directory
    assert not list(directory.glob(".tmp-*")), "a finished save leaves no temporary file"


@pytest.fixture
def fake_scontrol(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_real_slurm: Any) -> Path:
    """A `scontrol` first on PATH that appends its argv (one line) to the returned file and exits 0.
    The suite's guard against real Slurm lets this very file through, and nothing else."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "scontrol.calls"
    script = bin_dir / "scontrol"
    script.write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >> {shlex.quote(str(calls))}\nexit 0\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    no_real_slurm.allow(script)
    return calls
