"""256-rank steps on a 32-node x 8-GPU cluster (the local launcher reshaped for these tests):
a `nodes=32, gpus=256` rule becomes one Slurm job whose 256 srun ranks all reach the one master
address and port the executor exported, from 32 nodes with 8 local ranks each; and after a
signalled requeue the world is formed again from fresh processes. The ranks use slurm-gpu's
torch-free rendezvous (256 torch processes do not fit this machine)."""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

from conftest import REPO, Background, copy_workflow, record_figure, runs_of, slurm, snakemake, write_workflow

from snakemake_executor_plugin_slurm_gpu import events

WORLD_RULE = """
rule world:
    output: "world.json"
    resources: nodes=32, gpus=256, cpus_per_task=1, mem_mb=100, runtime=10
    shell: "srun python -m snakemake_executor_plugin_slurm_gpu.runtime.rendezvous --report {output:q}"
"""

REQUEUE_RULE = """
rule world:
    output: "worlds.json"
    resources: nodes=32, gpus=256, cpus_per_task=1, mem_mb=100, runtime=10
    shell: "srun python %s {output:q} 300"
""" % (REPO / "tests" / "cluster" / "scale_ranks.py")


def job_of(workdir: Path, rule: str = "world") -> str:
    (job,) = [p.stem for p in (workdir / ".snakemake/slurm-gpu/logs" / rule / "all").glob("*.log")]
    return job


def step_events(workdir: Path, rule: str = "world") -> list[dict]:
    return events.read(workdir / ".snakemake/slurm-gpu/events" / rule / "all.jsonl")


def assert_one_whole_world(world: dict, job_id: str) -> None:
    """256 distinct ranks on 32 nodes, 8 local ranks 0-7 on each, every one told the same master:
    the job's first node at the executor's port for this job id."""
    members = world["members"]
    assert world["world_size"] == 256 and len(members) == 256
    assert sorted(m["rank"] for m in members) == list(range(256))
    per_node = Counter(m["node"] for m in members)
    assert len(per_node) == 32 and set(per_node.values()) == {8}
    for node in per_node:
        assert sorted(m["local_rank"] for m in members if m["node"] == node) == list(range(8))
    assert sorted({m["node_rank"] for m in members}) == list(range(32))
    # srun places ranks in blocks: node rank k holds ranks 8k..8k+7
    assert all(m["rank"] // 8 == m["node_rank"] and m["rank"] % 8 == m["local_rank"] for m in members)
    first_node = slurm("scontrol", "show", "hostnames", world["nodelist"]).split()[0]
    assert {m["master"] for m in members} == {f"{first_node}:{15000 + int(job_id[-4:])}"}
    rank0 = next(m for m in members if m["rank"] == 0)
    assert rank0["node"] == first_node
    assert len({(m["node"], m["pid"]) for m in members}) == 256


def job_record(job_id: str) -> dict[str, str]:
    fields = ("NNodes", "NTasks", "AllocTRES", "NodeList", "State")
    line = slurm("sacct", "-X", "--noheader", "--parsable2", f"--jobs={job_id}",
                 f"--format={','.join(fields)}").splitlines()[-1]
    return dict(zip(fields, line.split("|")))


def test_a_256_rank_step_on_32_nodes_meets_one_master(scale_cluster, tmp_path):
    workdir = write_workflow(tmp_path / "wf", WORLD_RULE)
    run = snakemake(workdir, "--jobs", "1", timeout_s=600)
    assert run.returncode == 0, run.output[-4000:]
    job_id = job_of(workdir)
    world = json.loads((workdir / "world.json").read_text())
    assert_one_whole_world(world, job_id)
    assert world["nodelist"] == "n[1-32]" and world["restart"] == 0

    record = job_record(job_id)  # one Slurm job for the whole step
    assert record["NNodes"] == "32" and record["NodeList"] == "n[1-32]" and record["State"] == "COMPLETED"
    assert "gres/gpu=256" in record["AllocTRES"]
    log = (workdir / ".snakemake/slurm-gpu/logs/world/all" / f"{job_id}.log").read_text()
    assert len(re.findall(r"^rank \d+/256 local \d node n\d+ master ", log, re.M)) == 256

    # every rank announced itself and joined: what the hang watchdog and `slurm-gpu status` read
    evs = step_events(workdir)
    assert sorted(e["rank"] for e in evs if e["event"] == "rank_ready") == list(range(256))
    submitted = next(e["ts"] for e in evs if e["event"] == "submitted")
    started = next(e["ts"] for e in evs if e["event"] == "started")
    joined = max(e["ts"] for e in evs if e["event"] == "rank_ready")
    record_figure("world_256_submit_to_all_joined_s", round(joined - submitted, 2))
    record_figure("world_256_start_to_all_joined_s", round(joined - started, 2))
    record_figure("world_256_rank0_rendezvous_s", world["joined_s"])
    record_figure("largest_nodelist", world["nodelist"])


def test_after_a_signalled_requeue_the_256_rank_world_is_formed_again(scale_cluster, tmp_path):
    workdir = write_workflow(tmp_path / "wf", REQUEUE_RULE)
    ckpt = workdir / ".snakemake/slurm-gpu/checkpoints/world/all"
    bg = Background(workdir, "--jobs", "1")
    try:
        end = time.monotonic() + 300
        while not (ckpt / "world-0.json").exists():
            assert bg.proc.poll() is None, bg.wait().output[-4000:]
            assert time.monotonic() < end, "the first run's world never formed"
            time.sleep(0.5)
        job_id = job_of(workdir)
        # an urgent job wants one CPU of a node the step fills: Slurm preempts the whole step, and
        # (preempt_send_user_signal) sends it the requeue signal first
        urgent = slurm("sbatch", "--parsable", "--partition=urgent", "--nodes=1", "--ntasks=1",
                       "--nodelist=n17", "--job-name=urgent", "--output=/dev/null", "--wrap=sleep 3").strip()
        run = bg.wait(timeout_s=600)
    finally:
        bg.kill()
    assert run.returncode == 0, run.output[-4000:]
    assert job_of(workdir) == job_id  # requeued in place, not resubmitted
    worlds = json.loads((workdir / "worlds.json").read_text())
    assert [w["restart"] for w in worlds] == [0, 1]
    for world in worlds:
        assert world["job_id"] == job_id
        assert_one_whole_world(world, job_id)
    first, second = ({(m["node"], m["pid"]) for m in w["members"]} for w in worlds)
    assert not first & second  # every rank of the second world is a new process

    assert job_record(urgent)["State"] == "COMPLETED"
    states = [line.split("|")[0] for line in slurm("sacct", "-X", "--noheader", "--parsable2", "--duplicates",
                                                   f"--jobs={job_id}", "--format=State").splitlines()]
    assert states[0] in ("REQUEUED", "PREEMPTED") and states[-1] == "COMPLETED", states
    evs = step_events(workdir)
    assert runs_of(evs) == [0, 1]
    # rank 0 took the signal at a step boundary and asked for the requeue. Its `scontrol requeue` usually
    # does it; when 256 ranks on 2 cores take the whole GraceTime (15 s) to agree, Slurm's own preemption
    # requeue comes first and the request finds the job already requeued. Either way it is the same job,
    # requeued in place (asserted above), and the world forms again (below).
    assert any(e["event"] == "requeue_requested" for e in evs)
    for restart in (0, 1):
        ready = [e["rank"] for e in evs if e["event"] == "rank_ready" and e["restart"] == restart]
        assert sorted(ready) == list(range(256))
    signal_ts = next(e["ts"] for e in evs if e["event"] == "signal")
    rejoined = max(e["ts"] for e in evs if e["event"] == "rank_ready" and e["restart"] == 1)
    record_figure("world_256_signal_to_rejoined_s", round(rejoined - signal_ts, 2))


# ---------------------------------------------------------------- a sweep of 200 trials

SWEEP_TRIALS = 200
# the same sweep with job arrays on: fewer trials in `make test` (the guarantees are the same), 200 in
# benchmarks/scale.py
SWEEP_ARRAY_TRIALS = int(os.environ.get("SLURM_GPU_SWEEP_ARRAY_TRIALS", "60"))


class LiveSteps(threading.Thread):
    """Every 0.5 s: the Slurm jobs of this workflow still in the queue, by step (the executor's
    `--comment`), and the running training jobs."""

    def __init__(self, workdir: Path) -> None:
        super().__init__(daemon=True)
        self.workdir = workdir
        self.most_live_jobs_of_one_step = 0
        self.doubled: dict[str, list[str]] = {}
        self.running_train: dict[str, str] = {}  # trial -> job id
        self.tasks: dict[str, str] = {}  # array task id -> step key
        self.lock = threading.Lock()
        self._halt = threading.Event()

    def step_of(self, job: str, comment: str) -> str | None:
        """A job's step: its comment names it; an array task's is in its step's submission record."""
        if "step=" in comment:
            return comment.split("step=", 1)[1]
        if "array=" not in comment:
            return None
        if job not in self.tasks:
            for record in (self.workdir / ".snakemake/slurm-gpu/submissions").glob("*/*.json"):
                try:
                    self.tasks[json.loads(record.read_text())["job_id"]] = f"{record.parent.name}/{record.stem}"
                except (OSError, ValueError, KeyError):
                    continue
        return self.tasks.get(job)

    def run(self) -> None:
        while not self._halt.is_set():
            # --array: one line per array task, pending ones too
            out = subprocess.run(["squeue", "--noheader", "--array", "--format=%i|%T|%k|%Z"], capture_output=True,
                                 text=True).stdout
            by_step: dict[str, list[str]] = {}
            running = {}
            for line in out.splitlines():
                job, state, comment, workdir = (line.split("|") + ["", "", "", ""])[:4]
                step = self.step_of(job, comment) if workdir == str(self.workdir) else None
                if step is None:
                    continue
                by_step.setdefault(step, []).append(job)
                if state == "RUNNING" and step.startswith("train/trial="):
                    running[step.split("=", 1)[1]] = job
            with self.lock:
                for step, jobs in by_step.items():
                    self.most_live_jobs_of_one_step = max(self.most_live_jobs_of_one_step, len(jobs))
                    if len(jobs) > 1:
                        self.doubled[step] = jobs
                self.running_train = running
            time.sleep(0.5)

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=10)


class Preempter(threading.Thread):
    """Stops `target` training trials, picked at random among those running and early in training
    (a checkpoint at step 10 or 20 of 60, so the stop lands before training ends): most by the
    requeue signal that Slurm's preemption sends, every tenth by `scontrol requeue` (SIGTERM, no
    warning)."""

    def __init__(self, workdir: Path, live: LiveSteps, target: int, seed: int = 7) -> None:
        super().__init__(daemon=True)
        self.workdir, self.live, self.target = workdir, live, target
        self.random = random.Random(seed)
        self.stopped: dict[str, tuple[str, str]] = {}  # trial -> (job id, how)
        self._halt = threading.Event()

    def early(self, trial: str) -> bool:
        ckpt = self.workdir / ".snakemake/slurm-gpu/checkpoints/train" / f"trial={trial}"
        steps = [int(p.stem.split("-")[1]) for p in ckpt.glob("state-*.json")] if ckpt.is_dir() else []
        return bool(steps) and max(steps) <= 20

    def run(self) -> None:
        while not self._halt.is_set() and len(self.stopped) < self.target:
            with self.live.lock:
                running = dict(self.live.running_train)
            candidates = sorted(t for t, job in running.items() if t not in self.stopped and self.early(t))
            if candidates:
                trial = self.random.choice(candidates)
                job = running[trial]
                how = "scontrol requeue" if len(self.stopped) % 10 == 9 else "requeue signal"
                argv = ["scontrol", "requeue", job] if how == "scontrol requeue" else \
                    ["scancel", "--signal=USR1", job]
                if subprocess.run(argv, capture_output=True).returncode == 0:
                    self.stopped[trial] = (job, how)
            time.sleep(self.random.uniform(0.2, 1.0))

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=10)


class ProcessWatch(threading.Thread):
    """Peak memory and CPU time of one process (the Snakemake that runs the executor), from /proc."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak_rss_kb = 0
        self.cpu_s = self.children_cpu_s = 0.0
        self._halt = threading.Event()

    def run(self) -> None:
        tick = os.sysconf("SC_CLK_TCK")
        while not self._halt.is_set():
            try:
                status = Path(f"/proc/{self.pid}/status").read_text()
                stat = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                return
            hwm = re.search(r"VmHWM:\s+(\d+)", status)
            if hwm:
                self.peak_rss_kb = max(self.peak_rss_kb, int(hwm.group(1)))
            self.cpu_s = (int(stat[11]) + int(stat[12])) / tick
            self.children_cpu_s = (int(stat[13]) + int(stat[14])) / tick
            time.sleep(1.0)

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=10)


def test_a_sweep_of_200_trials_survives_preempting_a_tenth_of_them(scale_cluster, tmp_path):
    run_sweep(tmp_path, SWEEP_TRIALS)


def test_the_sweep_with_job_arrays_keeps_every_guarantee(scale_cluster, tmp_path):
    """The same sweep, its steps submitted as job arrays: the stops land on single tasks (requeued
    in place under their task id), nothing runs twice, and the summary is exact."""
    run = run_sweep(tmp_path, SWEEP_ARRAY_TRIALS, "--slurm-gpu-array-jobs=all", figures="sweep_arrays")
    arrays = re.findall(r"(\d+) steps of rule (\w+) are Slurm job array", run.output)
    assert sum(int(n) for n, rule in arrays if rule == "train") > SWEEP_ARRAY_TRIALS // 2, arrays


def run_sweep(tmp_path: Path, trials: int, *args: str, figures: str = "sweep"):
    sys.path.insert(0, str(REPO / "workflows" / "sweep" / "scripts"))
    import sweep

    SWEEP_TRIALS = trials
    workdir = copy_workflow("sweep", tmp_path)
    env: dict[str, str] = {}
    shim = os.environ.get("SLURM_GPU_SCALE_SHIM")  # benchmarks/scale.py counts Slurm commands this way
    if shim:
        env["PATH"] = f"{shim}:{os.environ['PATH']}"
    live = LiveSteps(workdir)
    live.start()
    preempter = Preempter(workdir, live, target=SWEEP_TRIALS // 10)
    preempter.start()
    # 0.2 s steps: 60 steps take 12 s, so a trial picked at step 10-20 is still training when the
    # stop arrives, however slow scancel is on a loaded machine (the job-side Snakemakes of 60 live
    # jobs keep 2 cores busy)
    bg = Background(workdir, "--config", f"trials={SWEEP_TRIALS}", "step_s=0.2", "--jobs", "60", *args, env=env)
    watch = ProcessWatch(bg.proc.pid)
    watch.start()
    try:
        run = bg.wait(timeout_s=2400)
    finally:
        bg.kill()
        for thread in (preempter, live, watch):
            thread.stop()
    assert run.returncode == 0, run.output[-5000:]
    assert len(preempter.stopped) == SWEEP_TRIALS // 10, preempter.stopped

    # nothing ran twice at once: never two queued/running Slurm jobs for one step (and the training
    # script's lock on its checkpoint directory never refused a second run: the run succeeded)
    assert live.most_live_jobs_of_one_step == 1, live.doubled

    # the summary is the one an uninterrupted sweep computes, to the last bit
    names = sweep.trial_names(SWEEP_TRIALS)
    models = {t: json.loads((workdir / f"results/trials/{t}/model.json").read_text()) for t in names}
    for t in names:
        expected = sweep.expected_model(t, 60)
        assert (models[t]["w"], models[t]["b"], models[t]["steps"]) == (expected["w"], expected["b"], 60), t
        assert models[t]["world_size"] == sweep.hyper(t)["gpus"]
    summary = json.loads((workdir / "results/summary.json").read_text())
    want = sweep.summary({t: sweep.test_loss(**{k: sweep.expected_model(t, 60)[k] for k in ("w", "b")})
                          for t in names})
    assert {k: summary[k] for k in want} == want
    assert summary["interrupted_trials"] == sorted(preempter.stopped)

    # each stopped trial resumed: in place (the same Slurm job), from the step it stopped at when it
    # was signalled, from its last periodic checkpoint (at most one interval back) when it was not
    lost: dict[str, list[int]] = {"requeue signal": [], "scontrol requeue": []}
    for trial, (job, how) in preempter.stopped.items():
        runs = models[trial]["runs"]
        assert len(runs) == 2 and [r["job_id"] for r in runs] == [job, job], (trial, how, runs)
        first, second = runs
        if how == "requeue signal":
            assert first["why"] == "requeue signal" and second["from_step"] == first["to_step"], (trial, runs)
        else:
            assert first["why"] == "still running" and second["from_step"] % 10 == 0 and second["from_step"] > 0
        assert second["why"] == "done" and second["to_step"] == 60
        # steps lost: where rank 0 stopped training (its 'interrupted' event) minus where it resumed
        evs = events.read(workdir / ".snakemake/slurm-gpu/events/train" / f"trial={trial}.jsonl")
        stopped_at = [e["global_step"] for e in evs if e["event"] == "interrupted"]
        resumed_at = [e["from_step"] for e in evs if e["event"] == "resumed"]
        assert resumed_at == [second["from_step"]]
        lost[how] += [stopped_at[0] - resumed_at[0]] if stopped_at else []
        if how == "requeue signal":
            assert stopped_at == resumed_at  # nothing lost
    untouched = [t for t in names if t not in preempter.stopped]
    assert all(len(models[t]["runs"]) == 1 for t in untouched)

    record_figure(f"{figures}_trials", SWEEP_TRIALS)
    record_figure(f"{figures}_slurm_jobs", len(names) * 2 + 1)
    record_figure(f"{figures}_sbatch_calls", len(re.findall(r"steps of rule \w+ are Slurm job array|"
                                                            r"step \S+ is Slurm job \d+ \(", run.output)))
    record_figure(f"{figures}_wall_s", round(run.seconds, 1))
    record_figure(f"{figures}_stopped", {how: sum(1 for _, h in preempter.stopped.values() if h == how)
                                         for how in ("requeue signal", "scontrol requeue")})
    record_figure(f"{figures}_steps_redone_after_stops", lost)
    record_figure(f"{figures}_executor_peak_rss_mb" if figures != "sweep" else "executor_peak_rss_mb",
                  round(watch.peak_rss_kb / 1024, 1))
    record_figure(f"{figures}_executor_cpu_s" if figures != "sweep" else "executor_cpu_s", watch.cpu_s)
    record_figure(f"{figures}_executor_children_cpu_s" if figures != "sweep" else "executor_children_cpu_s",
                  watch.children_cpu_s)
    return run
