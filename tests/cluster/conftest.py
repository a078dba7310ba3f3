"""Fixtures for tests that run `snakemake --executor slurm-gpu` against the real local cluster
(`make cluster-up`). They fail, not skip, when Slurm is not there."""

from __future__ import annotations

import json
import os
import signal
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
STATE_DIR = Path(os.environ.get("CLUSTER_STATE_DIR", "/var/lib/slurm-gpu-cluster"))


def running_release() -> str:
    """The Slurm release the local cluster runs (cluster/up.sh SLURM=...): 22.05 is the host's own."""
    path = STATE_DIR / "release"
    return path.read_text().strip() if path.exists() else "22.05"


def release_root() -> Path:
    """Where that release's daemons see "/": their pid files, logs and slurm.conf are under it."""
    release = running_release()
    return Path("/") if release == "22.05" else STATE_DIR / "releases" / release / "root"


# the release's own clients first, for this process and everything it starts (as `. cluster/env.sh`)
_RELEASE_BIN = STATE_DIR / "releases" / running_release() / "bin"
if running_release() != "22.05" and str(_RELEASE_BIN) not in os.environ.get("PATH", "").split(":"):
    os.environ["PATH"] = f"{_RELEASE_BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}"


def daemon_pid(name: str) -> int:
    """The pid of slurmctld, slurmdbd or slurmd-nI, whichever release runs."""
    return int(subprocess.run(["bash", str(REPO / "cluster" / "daemon.sh"), "pid", name], capture_output=True,
                              text=True, check=True, timeout=30).stdout)


def start_daemon(name: str) -> None:
    """Start a daemon the test stopped, as cluster/up.sh does, and wait until it answers."""
    subprocess.run(["bash", str(REPO / "cluster" / "daemon.sh"), "start", name], check=True, timeout=120)


def cluster_up(check: bool = True, release: str | None = None, **shape: str) -> None:
    """cluster/up.sh: on `release` (default: the running one, so no test switches by accident), in
    `shape` (NODES, GPUS, CPUS, TASK_PLUGIN; up.sh's defaults for what is not given)."""
    proc = subprocess.run(["bash", str(REPO / "cluster" / "up.sh")],
                          env=_env({**shape, "SLURM": release or running_release()}),
                          capture_output=True, text=True, timeout=900)
    if check and proc.returncode:
        pytest.fail(f"cluster/up.sh {release or ''} {shape} failed:\n{proc.stdout}\n{proc.stderr}")


def restore_cluster(check: bool = False) -> None:
    """cluster/up.sh again, on the running release: brings back a daemon a test killed, and its node."""
    cluster_up(check=check)


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
        # an array task's log is <array id>_<task id>.log
        return (sorted((p.stem for p in log_dir.glob("*.log")), key=lambda s: [int(x) for x in s.split("_")])
                if log_dir.is_dir() else [])


# the tests read the Slurm logs and scripts of steps that succeeded, which slurm-gpu removes by default
KEEP_LOGS = "--slurm-gpu-keep-successful-logs"


def snakemake(workdir: Path, *args: str, timeout_s: float = 600, env: dict[str, str] | None = None) -> Run:
    argv = [str(VENV_BIN / "snakemake"), "--profile", str(PROFILE), "--jobs", "8", KEEP_LOGS, *args]
    start = time.monotonic()
    proc = subprocess.run(argv, cwd=workdir, env=_env(env), capture_output=True, text=True, timeout=timeout_s)
    return Run(proc.returncode, proc.stdout + proc.stderr, workdir, time.monotonic() - start)


def default_sigint() -> None:
    # a shell runs a background command (`make test &`, a CI runner's) with SIGINT ignored, and the
    # child inherits that: Python then installs no KeyboardInterrupt handler and Snakemake would never
    # see a Ctrl-C. A terminal's Ctrl-C meets the default disposition; so must a test's.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Background:
    """`snakemake` running while the test acts on its jobs."""

    def __init__(self, workdir: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.workdir = workdir
        self.log = workdir / "snakemake-test-output.txt"
        argv = [str(VENV_BIN / "snakemake"), "--profile", str(PROFILE), "--jobs", "8", KEEP_LOGS, *args]
        self._out = open(self.log, "w")
        self._start = time.monotonic()
        self.proc = subprocess.Popen(argv, cwd=workdir, env=_env(env), stdout=self._out, stderr=subprocess.STDOUT,
                                     preexec_fn=default_sigint)

    def interrupt(self) -> None:
        """Ctrl-C, as a terminal sends it."""
        self.proc.send_signal(signal.SIGINT)

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
    plugin = "task/none" if plugin in ("", "(null)") else plugin  # 24.11 and later say "(null)" for task/none
    return {"NODES": str(len({n for n, _, _ in rows})), "GPUS": str(gpus), "CPUS": str(max(int(c) for _, c, _ in rows)),
            "TASK_PLUGIN": plugin}


def reshape_cluster(shape: dict[str, str]) -> None:
    cluster_up(**shape)
    # exactly the asked-for nodes are left: no slurmd or namespace of a bigger shape lingers
    assert cluster_shape() == shape
    daemons = sorted(p.name for p in (release_root() / "run").glob("slurmd-n*.pid"))
    namespaces = sorted(p.name for p in Path("/run/netns").glob("sgns*")) if Path("/run/netns").is_dir() else []
    nodes = int(shape["NODES"])
    assert daemons == sorted(f"slurmd-n{i}.pid" for i in range(1, nodes + 1)), daemons
    assert namespaces == sorted(f"sgns{i}" for i in range(1, nodes + 1)), namespaces


def _reshaped(shape: dict[str, str]):
    before = cluster_shape()
    if before != shape:
        reshape_cluster(shape)
    yield shape
    if before != shape:
        reshape_cluster(before)


@pytest.fixture(scope="module")
def scale_cluster(cluster) -> dict[str, str]:
    """The local cluster as 32 nodes x 8 GPUs x 8 CPUs for the tests that use it (they run last, see
    pytest_collection_modifyitems), then back to the shape it had."""
    yield from _reshaped(SCALE_SHAPE)


@pytest.fixture(scope="module")
def four_node_cluster(cluster) -> dict[str, str]:
    """The local cluster with 4 nodes of the running shape's GPUs and CPUs (the elastic example's), then back.
    Its tests are marked four_nodes and left to `make test-elastic`."""
    yield from _reshaped({**cluster_shape(), "NODES": "4"})


@pytest.fixture(scope="module")
def affinity_cluster(cluster) -> dict[str, str]:
    """The local cluster binding tasks to CPUs (AFFINITY_SHAPE) for one test module, then back."""
    yield from _reshaped(AFFINITY_SHAPE)


# ---------------------------------------------------------------- other Slurm releases
# The suite runs on the release the cluster runs when it starts (`make test SLURM=...`); the tests that
# take the fixture `slurm_release` (the smoke set: the example pipeline, a signalled preemption, a hard
# requeue, a node failure, allocation mode) run again on each other release, last, each release
# started once (cluster/up.sh SLURM=..., its root filesystem built once). SLURM_GPU_SMOKE_RELEASES
# (space- or comma-separated, "" for none) narrows them.
RELEASES = ("22.05", "24.11", "26.05")
HOME_RELEASE = running_release()


def smoke_releases() -> list[str]:
    raw = os.environ.get("SLURM_GPU_SMOKE_RELEASES")
    wanted = RELEASES if raw is None else tuple(raw.replace(",", " ").split())
    unknown = set(wanted) - set(RELEASES)
    if unknown:
        raise pytest.UsageError(f"SLURM_GPU_SMOKE_RELEASES: no such release {sorted(unknown)} (known: {RELEASES})")
    return [r for r in RELEASES if r in wanted and r != HOME_RELEASE]


def pytest_generate_tests(metafunc):
    if "slurm_release" in metafunc.fixturenames:
        # marked release_smoke, for `make test-smoke` (-m release_smoke)
        metafunc.parametrize("slurm_release", [pytest.param(r, marks=pytest.mark.release_smoke)
                                               for r in (HOME_RELEASE, *smoke_releases())],
                             indirect=True, scope="session")


def switch_release(release: str, shape: dict[str, str]) -> None:
    """The cluster on `release`, in `shape`, and that release's clients first on PATH for this process
    and all it starts."""
    cluster_up(release=release, **shape)
    releases = str(STATE_DIR / "releases")
    path = [d for d in os.environ.get("PATH", "").split(":") if not d.startswith(releases + "/")]
    if release != "22.05":
        path.insert(0, str(STATE_DIR / "releases" / release / "bin"))
    os.environ["PATH"] = ":".join(path)
    assert running_release() == release
    # the clients on PATH are that release's own (a 22.05 client must never talk to a newer controller)
    assert slurm("sinfo", "-V").split()[-1].startswith(release + "."), slurm("sinfo", "-V")


@pytest.fixture(scope="session")
def _home_release(cluster) -> str:
    """The release and shape the session started on, restored at its end."""
    shape = cluster_shape()
    yield shape
    if running_release() != HOME_RELEASE:
        switch_release(HOME_RELEASE, shape)


@pytest.fixture(scope="session")
def slurm_release(request, _home_release) -> str:
    if running_release() != request.param:
        switch_release(request.param, _home_release)
    return request.param


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items):
    # a reshape or a release switch restarts every Slurm daemon: once per shape, after every other
    # test, and once per other release, after that
    def order(item) -> tuple[int, int]:
        names = getattr(item, "fixturenames", ())
        callspec = getattr(item, "callspec", None)
        release = callspec.params.get("slurm_release", HOME_RELEASE) if callspec else HOME_RELEASE
        shape = 3 if "scale_cluster" in names else 2 if "four_node_cluster" in names else \
            1 if "affinity_cluster" in names else 0
        return (0 if release == HOME_RELEASE else 1 + RELEASES.index(release), shape)
    items.sort(key=order)


def runs_of(evs: list[dict]) -> list[int]:
    """The restarts of a job that ran its step, from its event log: without a run that found the step
    finished by an earlier one and ran nothing (`already_finished`; Slurm 24.05 and later requeue a job
    once preempted at its next end, a successful one too)."""
    skipped = {e["restart"] for e in evs if e["event"] == "already_finished"}
    return [e["restart"] for e in evs if e["event"] == "started" and e["restart"] not in skipped]


def record_figure(name: str, value: object) -> None:
    """A figure for benchmarks/scale.py (SLURM_GPU_SCALE_FIGURES names the JSON file); nothing is
    asserted on it."""
    path = os.environ.get("SLURM_GPU_SCALE_FIGURES")
    if not path:
        return
    figures = json.loads(Path(path).read_text()) if Path(path).exists() else {}
    figures[name] = value
    Path(path).write_text(json.dumps(figures, indent=1))
