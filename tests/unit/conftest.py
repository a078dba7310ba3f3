"""Unit-test fixtures. No test here may run a real Slurm command: every Slurm call goes through
FakeSlurm, which answers only the argv it was told about and fails the test on any other."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from fake_slurm import FakeSlurm

DATA = Path(__file__).resolve().parents[1] / "data"
SLURM_COMMANDS = {"sbatch", "squeue", "sacct", "scancel", "sinfo", "scontrol", "srun", "salloc", "sacctmgr"}


@pytest.fixture(autouse=True)
def no_real_slurm(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any real Slurm command a unit test would start is an error, whatever path reaches it."""
    real_run = subprocess.run

    def guarded_run(args, *pargs, **kwargs):  # type: ignore[no-untyped-def]
        argv = [args] if isinstance(args, (str, bytes, os.PathLike)) else list(args)
        if os.path.basename(str(argv[0]).split()[0]) in SLURM_COMMANDS:
            raise AssertionError(f"a unit test tried to run Slurm: {argv!r}")
        return real_run(args, *pargs, **kwargs)

    monkeypatch.setattr(subprocess, "run", guarded_run)


@pytest.fixture
def fake_slurm() -> FakeSlurm:
    return FakeSlurm()


@pytest.fixture
def data_dir() -> Path:
    return DATA
