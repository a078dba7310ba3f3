"""Fixtures for tests that run `snakemake --executor slurm-gpu` against the real local cluster
(`make cluster-up`). They fail, not skip, when Slurm is not there."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
PROFILE = REPO / "profiles" / "slurm-gpu"


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{VENV_BIN}:{env.get('PATH', '/usr/bin:/bin')}"
    env.update(extra or {})
    return env


def slurm(*argv: str) -> str:
    return subprocess.run(list(argv), capture_output=True, text=True, check=True, timeout=60).stdout


@pytest.fixture(scope="session")
def cluster() -> None:
    try:
        ping = slurm("scontrol", "ping")
        nodes = slurm("sinfo", "--noheader", "--Node", "--format=%N|%T").split()
    except (OSError, subprocess.SubprocessError) as e:
        pytest.fail(f"the local Slurm cluster is not reachable ({e}); start it with `make cluster-up`")
    ready = {line.split("|")[0] for line in nodes if line.split("|")[1].rstrip("*") in ("idle", "mixed", "allocated", "completing")}
    if "UP" not in ping or len(ready) < 2:
        pytest.fail(f"the local Slurm cluster is not ready (ping: {ping.strip()!r}, nodes: {nodes}); "
                    "start it with `make cluster-up`")


@dataclass
class Run:
    returncode: int
    output: str
    workdir: Path
    seconds: float

    def jobs(self, rule: str, wildcards: str = "all") -> list[str]:
        """Slurm job ids of a step, from the per-job log files Slurm wrote."""
        log_dir = self.workdir / ".snakemake" / "slurm-gpu" / "logs" / rule / wildcards
        return sorted((p.stem for p in log_dir.glob("*.log")), key=int) if log_dir.is_dir() else []


# the tests read the Slurm logs and scripts of steps that succeeded, which slurm-gpu removes by default
KEEP_LOGS = "--slurm-gpu-keep-successful-logs"


def snakemake(workdir: Path, *args: str, timeout_s: float = 600, env: dict[str, str] | None = None) -> Run:
    argv = [str(VENV_BIN / "snakemake"), "--profile", str(PROFILE), "--jobs", "8", KEEP_LOGS, *args]
    start = time.monotonic()
    proc = subprocess.run(argv, cwd=workdir, env=_env(env), capture_output=True, text=True, timeout=timeout_s)
    return Run(proc.returncode, proc.stdout + proc.stderr, workdir, time.monotonic() - start)


class Background:
    """`snakemake` running while the test acts on its jobs."""

    def __init__(self, workdir: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.workdir = workdir
        self.log = workdir / "snakemake-test-output.txt"
        argv = [str(VENV_BIN / "snakemake"), "--profile", str(PROFILE), "--jobs", "8", KEEP_LOGS, *args]
        self._out = open(self.log, "w")
        self._start = time.monotonic()
        self.proc = subprocess.Popen(argv, cwd=workdir, env=_env(env), stdout=self._out, stderr=subprocess.STDOUT)

    def wait(self, timeout_s: float = 600) -> Run:
        try:
            self.proc.wait(timeout=timeout_s)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self._out.close()
        return Run(self.proc.returncode, self.log.read_text(), self.workdir, time.monotonic() - self._start)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._out.close()


def wait_for(predicate, timeout_s: float = 60.0, what: str = "condition"):
    """predicate()'s first true value, polled every 0.3 s for at most timeout_s."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def jobs_from(workdir: Path, since: str) -> list[dict[str, str]]:
    """Every Slurm job whose working directory is `workdir`, submitted since `since` (sacct)."""
    out = slurm("sacct", "--allusers", "-X", "--noheader", "--parsable2", f"--starttime={since}",
                "--format=JobID,WorkDir,State,JobName")
    rows = [dict(zip(("id", "workdir", "state", "name"), line.split("|"))) for line in out.splitlines()]
    # squeue too: sacct learns of a job from slurmctld a moment after submission
    live = slurm("squeue", "--noheader", "--states=all", "--format=%i|%Z|%T|%j").splitlines()
    rows += [dict(zip(("id", "workdir", "state", "name"), line.split("|"))) for line in live]
    return [r for r in rows if r.get("workdir") == str(workdir)]


def copy_workflow(name: str, dest: Path) -> Path:
    src = REPO / "workflows" / name
    target = dest / name
    shutil.copytree(src, target, ignore=shutil.ignore_patterns(".snakemake", "results", "data", "__pycache__"))
    return target


def write_workflow(dest: Path, snakefile: str) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "Snakefile").write_text(snakefile)
    return dest


# ---------------------------------------------------------------- the 32 x 8 cluster of the scale tests

SCALE_SHAPE = {"NODES": "32", "GPUS": "8", "CPUS": "8", "TASK_PLUGIN": "task/none"}
# Slurm binds each task to CPUs (task/affinity), which must then exist: as many CPUs per node as this
# machine has cores (2 in CI), every node on the same cores
AFFINITY_SHAPE = {"NODES": "2", "GPUS": "2", "CPUS": str(min(os.cpu_count() or 1, 2)), "TASK_PLUGIN": "task/affinity"}


def cluster_shape() -> dict[str, str]:
    """NODES/GPUS/CPUS of the running cluster, as cluster/up.sh takes them."""
    rows = [line.split("|") for line in slurm("sinfo", "--noheader", "--Node", "--format=%N|%c|%G").split()]
    gpus = max((int(g.rsplit(":", 1)[1].split("(")[0]) for _, _, g in rows if g.startswith("gpu")), default=0)
    plugin = next((line.split("=", 1)[1].strip() for line in slurm("scontrol", "show", "config").splitlines()
                   if line.startswith("TaskPlugin ")), "task/none")
    return {"NODES": str(len({n for n, _, _ in rows})), "GPUS": str(gpus), "CPUS": str(max(int(c) for _, c, _ in rows)),
            "TASK_PLUGIN": plugin}


def reshape_cluster(shape: dict[str, str]) -> None:
    proc = subprocess.run(["bash", str(REPO / "cluster" / "up.sh")], env=_env(shape), capture_output=True,
                          text=True, timeout=600)
    if proc.returncode:
        pytest.fail(f"cluster/up.sh {shape} failed:\n{proc.stdout}\n{proc.stderr}")
    # exactly the asked-for nodes are left: no slurmd or namespace of a bigger shape lingers
    assert cluster_shape() == shape
    daemons = sorted(p.name for p in Path("/run").glob("slurmd-n*.pid"))
    namespaces = sorted(p.name for p in Path("/run/netns").glob("sgns*")) if Path("/run/netns").is_dir() else []
    nodes = int(shape["NODES"])
    assert daemons == sorted(f"slurmd-n{i}.pid" for i in range(1, nodes + 1)), daemons
    assert namespaces == sorted(f"sgns{i}" for i in range(1, nodes + 1)), namespaces


@pytest.fixture(scope="session")
def scale_cluster(cluster) -> dict[str, str]:
    """The local cluster as 32 nodes x 8 GPUs x 8 CPUs for the tests that use it (they run last, see
    pytest_collection_modifyitems), then back to the shape it had."""
    before = cluster_shape()
    if before != SCALE_SHAPE:
        reshape_cluster(SCALE_SHAPE)
    yield SCALE_SHAPE
    if before != SCALE_SHAPE:
        reshape_cluster(before)


@pytest.fixture(scope="module")
def affinity_cluster(cluster) -> dict[str, str]:
    """The local cluster binding tasks to CPUs (AFFINITY_SHAPE) for one test module, then back."""
    before = cluster_shape()
    if before != AFFINITY_SHAPE:
        reshape_cluster(AFFINITY_SHAPE)
    yield AFFINITY_SHAPE
    if before != AFFINITY_SHAPE:
        reshape_cluster(before)


def pytest_collection_modifyitems(config, items):
    # reshaping the cluster restarts every Slurm daemon: do it once per shape, after every other test
    def shape(item) -> int:
        names = getattr(item, "fixturenames", ())
        return 2 if "scale_cluster" in names else 1 if "affinity_cluster" in names else 0
    items.sort(key=shape)


def record_figure(name: str, value: object) -> None:
    """A figure for benchmarks/scale.py (SLURM_GPU_SCALE_FIGURES names the JSON file); nothing is
    asserted on it."""
    path = os.environ.get("SLURM_GPU_SCALE_FIGURES")
    if not path:
        return
    figures = json.loads(Path(path).read_text()) if Path(path).exists() else {}
    figures[name] = value
    Path(path).write_text(json.dumps(figures, indent=1))
