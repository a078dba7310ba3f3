"""Job arrays (setting array-jobs): which steps share one `sbatch --array`, the array's batch script
(run here with bash as Slurm would run each task), and their submission through the batch backend
with a scripted Slurm: one sbatch for many steps, each step followed as `<array id>_<task id>`, and
every step refused with the reason when the array's sbatch fails."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

from backend_host import Host, batch_jobs
from fake_slurm import FakeSlurm
from snakemake_executor_plugin_slurm_gpu import arrays, attach, contract, events, slurm
from snakemake_executor_plugin_slurm_gpu.array_jobs import ArraySubmitter, ReadyStep
from snakemake_executor_plugin_slurm_gpu.arrays import Task, arrays_of, render_array_script, shared_directives
from snakemake_executor_plugin_slurm_gpu.paths import StepPaths
from snakemake_executor_plugin_slurm_gpu.spec import build_spec


# ---------------------------------------------------------------- which rules, which steps

def test_the_setting_names_all_rules_or_some_and_refuses_a_name_that_is_no_rule() -> None:
    assert arrays.selection(None) == frozenset() and arrays.selection("") == frozenset()
    assert arrays.selection("all", ["a"]) == {"all"}
    assert arrays.selection(" count, sweep ;train", ["count", "sweep", "train"]) == {"count", "sweep", "train"}
    with pytest.raises(arrays.ArraySettingError, match="'trian', which is not a rule.*the workflow's rules: count, train"):
        arrays.selection("count,trian", ["count", "train"])


def test_group_jobs_never_go_in_an_array() -> None:
    assert arrays.wanted(frozenset({"all"}), "count", is_group=False)
    assert arrays.wanted(frozenset({"count"}), "count", is_group=False)
    assert not arrays.wanted(frozenset({"count"}), "train", is_group=False)
    assert not arrays.wanted(frozenset({"all"}), "count", is_group=True)


def script(key: str, *directives: str, body: str = "echo hi") -> str:
    return "\n".join(["#!/bin/bash", f"# slurm-gpu: step {key}", "#SBATCH --job-name=sg-count",
                      f"#SBATCH --output=/logs/{key}/%j.log", *directives,
                      f'#SBATCH --comment="slurm-gpu step={key}"', "", body, ""])


def test_steps_share_an_array_when_all_but_their_log_and_comment_are_equal() -> None:
    a, b = script("count/a", "#SBATCH --time=10"), script("count/b", "#SBATCH --time=10")
    assert shared_directives(a) == shared_directives(b) == ("#SBATCH --job-name=sg-count", "#SBATCH --time=10")
    groups, alone = arrays_of(["a", "b", "c", "d"], [a, b, script("count/c", "#SBATCH --time=20"), a], max_tasks=10)
    assert groups == [["a", "b", "d"]] and alone == ["c"]  # c asks for another time limit: alone


def test_arrays_are_cut_at_the_task_limit_and_the_script_size() -> None:
    scripts = [script(f"count/{i}") for i in range(7)]
    groups, alone = arrays_of(list(range(7)), scripts, max_tasks=3)
    assert groups == [[0, 1, 2], [3, 4, 5]] and alone == [6]
    size = len(scripts[0].encode())
    groups, alone = arrays_of(list(range(7)), scripts, max_tasks=100, max_bytes=2 * size)
    assert groups == [[0, 1], [2, 3], [4, 5]] and alone == [6]


def test_a_script_too_long_for_one_argument_goes_alone() -> None:
    big = script("count/big", body="echo " + "x" * arrays.MAX_TASK_SCRIPT_BYTES)
    groups, alone = arrays_of(["a", "big", "b"], [script("count/a"), big, script("count/b")], max_tasks=10)
    assert groups == [["a", "b"]] and alone == ["big"]


# ---------------------------------------------------------------- the array's batch script

HOSTILE = r"""#!/bin/bash
#SBATCH --job-name=sg-count
echo "quotes ' \" and a backslash \\ and \$HOME kept"
cat <<'EOF'
a here-document of the step's own
EOF
printf '%s\n' "task's own job id: $SLURM_GPU_JOB_ID" "stdin: $(cat)"
exit 3
"""


def test_the_array_script_shares_the_directives_and_adds_the_range_the_limit_and_its_own_log(tmp_path: Path) -> None:
    tasks = [Task("count/a", script("count/a"), tmp_path / "a"), Task("count/b", script("count/b"), tmp_path / "b")]
    text = render_array_script("count", tasks, tmp_path / ".arrays", concurrency=4, token="T")
    directives = [line for line in text.splitlines() if line.startswith("#SBATCH")]
    assert directives[:4] == ["#SBATCH --job-name=sg-count", "#SBATCH --array=0-1%4",
                              f"#SBATCH --output={tmp_path}/.arrays/%A_%a.log", '#SBATCH --comment="slurm-gpu array=count/a"']
    # sbatch reads #SBATCH lines up to the first command: the array's come before it, the tasks' own
    # (their --output, --comment) after it, where sbatch no longer reads them
    lines = text.splitlines()
    first_command = next(i for i, line in enumerate(lines) if line and not line.startswith("#"))
    assert set(directives[:4]) <= set(lines[:first_command])
    assert not any("--output=/logs" in line or "step=count" in line for line in lines[:first_command])


def test_the_array_script_refuses_steps_that_ask_for_different_resources(tmp_path: Path) -> None:
    tasks = [Task("count/a", script("count/a", "#SBATCH --time=1"), tmp_path),
             Task("count/b", script("count/b", "#SBATCH --time=2"), tmp_path)]
    with pytest.raises(ValueError, match="share"):
        render_array_script("count", tasks, tmp_path)


@pytest.mark.parametrize("task", [0, 1])
def test_each_task_runs_exactly_its_own_steps_script_with_its_output_in_its_steps_log(tmp_path: Path,
                                                                                        task: int) -> None:
    other = script("count/a", body='echo "task 0 ran"')
    tasks = [Task("count/a", other, tmp_path / "a"), Task("count/b", HOSTILE, tmp_path / "b")]
    for t in tasks:
        t.log_dir.mkdir()
    text = render_array_script("count", tasks, tmp_path / ".arrays")
    env = {"PATH": os.environ["PATH"], "SLURM_ARRAY_JOB_ID": "77", "SLURM_ARRAY_TASK_ID": str(task),
           "SLURM_JOB_ID": "80", "SLURM_GPU_JOB_ID": "77_1"}
    done = subprocess.run(["bash", "-c", text], env=env, input="from stdin", capture_output=True, text=True, timeout=30)
    log = (tmp_path / ("a" if task == 0 else "b") / f"77_{task}.log").read_text()
    assert done.stdout == "" and done.stderr == ""  # all of it went to the step's log
    if task == 0:
        assert (done.returncode, log) == (0, "task 0 ran\n")
    else:
        assert done.returncode == 3
        assert log == ("quotes ' \" and a backslash \\ and $HOME kept\na here-document of the step's own\n"
                       "task's own job id: 77_1\nstdin: from stdin\n")


def test_a_task_id_without_a_step_fails_loudly(tmp_path: Path) -> None:
    tasks = [Task("count/a", script("count/a"), tmp_path), Task("count/b", script("count/b"), tmp_path)]
    text = render_array_script("count", tasks, tmp_path)
    done = subprocess.run(["bash", "-c", text], env={"PATH": os.environ["PATH"], "SLURM_ARRAY_TASK_ID": "2"},
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 1 and "array task 2 has no step" in done.stderr


# ---------------------------------------------------------------- ids

def test_a_tasks_job_id_is_the_array_form_everywhere() -> None:
    assert contract.job_id({"SLURM_JOB_ID": "80", "SLURM_ARRAY_JOB_ID": "77", "SLURM_ARRAY_TASK_ID": "3"}) == "77_3"
    assert contract.job_id({"SLURM_JOB_ID": "80"}) == "80"
    assert contract.job_id({"SLURM_GPU_JOB_ID": "77_3", "SLURM_JOB_ID": "80"}) == "77_3"
    assert contract.job_id({}) is None
    assert sorted(["12_10", "9", "12_2", "11", "12"], key=slurm.id_order) == ["9", "11", "12", "12_2", "12_10"]


def test_array_tasks_are_found_by_their_comment_and_claimed_by_their_steps_records(tmp_path: Path) -> None:
    listing = slurm.parse_step_jobs(
        f"77_0|RUNNING|2026-12-05T10:00:00|{tmp_path}|slurm-gpu array=count/a\n"
        f"77_1|PENDING|2026-12-05T10:00:00|{tmp_path}|slurm-gpu array=count/a\n"
        f"77_2|PENDING|2026-12-05T10:00:00|{tmp_path}|slurm-gpu array=count/a\n"
        f"78|RUNNING|2026-12-05T10:00:00|{tmp_path}|slurm-gpu step=train/all\n")
    assert [(j.job_id, j.array, j.array_id) for j in listing] == [("77_0", True, "77"), ("77_1", True, "77"),
                                                                   ("77_2", True, "77"), ("78", False, "78")]
    records = tmp_path / "submissions"
    (records / "count").mkdir(parents=True)
    attach.write_record(records / "count" / "a.json", attach.Submission("p", 1.0, "77_0"))
    attach.write_record(records / "count" / "b.json", attach.Submission("p", 1.0, "77_1"))
    found = attach.live_by_step(listing, tmp_path, records)
    assert {k: [(j.job_id, j.step) for j in v] for k, v in found.items()} == {
        "train/all": [("78", "train/all")], "count/a": [("77_0", "count/a")], "count/b": [("77_1", "count/b")]}
    assert attach.unclaimed_tasks(listing, tmp_path, found) == ["77_2"]
    # a lost sbatch reply: the array it made is found by its first step, and named by the array's id
    assert attach.lost_submission(listing, tmp_path, "count/a", 0.0, known=[]) == "77"


def test_the_config_value_is_read_from_scontrol_show_config() -> None:
    text = "Configuration data as of 2026-12-05T10:00:00\nMaxArraySize            = 1001\nMaxJobCount = 10000\n"
    assert slurm.parse_config_value(text, "MaxArraySize") == "1001"
    assert slurm.parse_config_value(text, "MaxStepCount") is None


# ---------------------------------------------------------------- submission through the backend

def step_job(name: str) -> SimpleNamespace:
    return SimpleNamespace(attempt=1, is_group=lambda: False, input=[], params=None, shellcmd="wc -l x",
                           rule=SimpleNamespace(shellcmd="wc -l x", script=None), name="count",
                           wildcards={"sample": name}, register=lambda external_jobid: None)


def ready(workdir: Path, name: str, resources: dict | None = None) -> ReadyStep:
    return ReadyStep(step_job(name), build_spec("count", resources or {}), StepPaths.of(workdir, "count", {"sample": name}),
                     "digest")


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / ".snakemake").mkdir()
    return tmp_path


def test_ready_steps_of_equal_resources_are_one_sbatch_and_each_is_followed_as_its_task(workdir: Path,
                                                                                      fake_slurm: FakeSlurm) -> None:
    host = Host()
    backend = batch_jobs(workdir, fake_slurm, host)
    fake_slurm.answer(slurm.config_argv(), stdout="MaxArraySize = 1001\n")
    fake_slurm.answer(["sbatch", "--parsable"], stdout="78\n")  # d, alone with its longer time limit
    fake_slurm.answer(["sbatch", "--parsable"], stdout="77\n")  # the array of a, b, c
    steps = [ready(workdir, n) for n in "abc"] + [ready(workdir, "d", {"runtime": 99})]
    ArraySubmitter(backend, concurrency=2).start(steps)
    assert fake_slurm.commands() == ["scontrol", "sbatch", "sbatch"]
    alone_script, array_script = fake_slurm.stdins[1], fake_slurm.stdins[2]
    assert "#SBATCH --array=0-2%2" in array_script and "--array" not in alone_script
    assert [(j.wildcards["sample"], i) for j, i in host.submitted] == [("d", "78"), ("a", "77_0"), ("b", "77_1"),
                                                                       ("c", "77_2")]
    for step, job_id in zip(steps[:3], ["77_0", "77_1", "77_2"]):
        # each task's part of the array script is the step's own script, as a single job would have sent it
        own = step.paths.script_dir.glob("*.sh")
        assert next(own).read_text().rstrip("\n") in array_script
        assert attach.read_record(step.paths.submission_record).job_id == job_id
        assert backend.lives[step.paths.key].job_id == job_id
        assert [(e["event"], e["job_id"]) for e in events.read(step.paths.event_log)] == [("submitted", job_id)]
    assert any("3 steps of rule count are Slurm job array 77 (tasks 0-2, at most 2 at a time)" in line
               for line in host.logger.said("info"))


def test_a_refused_array_refuses_each_of_its_steps_with_slurms_reason(workdir: Path, fake_slurm: FakeSlurm) -> None:
    host = Host()
    backend = batch_jobs(workdir, fake_slurm, host)
    fake_slurm.answer(slurm.config_argv(), stdout="MaxArraySize = 1001\n")
    fake_slurm.answer(["sbatch", "--parsable"], returncode=1,
                      stderr="sbatch: error: Batch job submission failed: Invalid job array specification")
    steps = [ready(workdir, n) for n in "ab"]
    ArraySubmitter(backend, concurrency=None).start(steps)
    assert host.submitted == [] and len(host.errors) == 2
    assert all("in a job array of 2 steps" in msg and "Invalid job array specification" in msg for _, msg in host.errors)
    assert not any(s.paths.submission_record.exists() for s in steps)


def test_the_clusters_max_array_size_caps_an_array(workdir: Path, fake_slurm: FakeSlurm) -> None:
    host = Host()
    backend = batch_jobs(workdir, fake_slurm, host)
    fake_slurm.answer(slurm.config_argv(), stdout="MaxArraySize = 2\n")
    fake_slurm.answer(["sbatch", "--parsable"], stdout="90\n")
    fake_slurm.answer(["sbatch", "--parsable"], stdout="91\n")
    ArraySubmitter(backend, concurrency=None).start([ready(workdir, n) for n in "abc"])
    assert [i for _, i in host.submitted] == ["90", "91_0", "91_1"]  # c alone (first): the array was full


def test_one_ready_step_is_a_job_of_its_own_without_asking_the_cluster(workdir: Path, fake_slurm: FakeSlurm) -> None:
    host = Host()
    backend = batch_jobs(workdir, fake_slurm, host)
    fake_slurm.answer(["sbatch", "--parsable"], stdout="95\n")
    ArraySubmitter(backend, concurrency=None).start([ready(workdir, "a")])
    assert fake_slurm.commands() == ["sbatch"] and [i for _, i in host.submitted] == ["95"]


# ---------------------------------------------------------------- a task's life after submission

def array_of_two(workdir: Path, fake: FakeSlurm, host: Host, resources: dict):  # type: ignore[no-untyped-def]
    from snakemake_interface_executor_plugins.executors.base import SubmittedJobInfo

    backend = batch_jobs(workdir, fake, host)
    fake.answer(slurm.config_argv(), stdout="MaxArraySize = 1001\n")
    fake.answer(["sbatch", "--parsable"], stdout="77\n")
    steps = [ReadyStep(step_job(n), build_spec("count", resources), StepPaths.of(workdir, "count", {"sample": n}),
                       "digest") for n in "ab"]
    ArraySubmitter(backend, concurrency=None).start(steps)
    infos = [SubmittedJobInfo(s.job, external_jobid=job_id, aux={"paths": s.paths, "spec": s.spec})
             for s, (_, job_id) in zip(steps, host.submitted)]
    return backend, infos


def test_a_timed_out_task_is_resubmitted_alone_as_a_job_of_its_own(workdir: Path, fake_slurm: FakeSlurm) -> None:
    from test_batch_jobs import check

    host = Host()
    backend, (a, b) = array_of_two(workdir, fake_slurm, host, {"gpus": 1, "runtime": 10})
    fake_slurm.answer(slurm.squeue_argv(["77_0", "77_1"]), stdout="77_0|TIMEOUT|TimeLimit|n1\n77_1|RUNNING|None|n2\n")
    fake_slurm.answer(slurm.sacct_argv(["77_0"]), stdout="77_0|TIMEOUT|None|0:0|n1\n")
    fake_slurm.answer(slurm.scancel_argv(["77_0"]))
    fake_slurm.answer(["sbatch", "--parsable"], stdout="80\n")
    follow = check(backend, [a, b])
    assert [f.external_jobid for f in follow] == ["80", "77_1"]  # the sibling runs on, untouched
    assert "--array" not in fake_slurm.stdins[-1]
    assert backend.lives[a.aux["paths"].key].job_ids == ("77_0", "80")
    kinds = [(e["event"], e.get("job_id")) for e in events.read(a.aux["paths"].event_log)]
    assert kinds == [("submitted", "77_0"), ("resubmitted", "77_0"), ("submitted", "80")]


def test_a_ctrl_c_cancels_the_tasks(workdir: Path, fake_slurm: FakeSlurm) -> None:
    host = Host()
    backend, _ = array_of_two(workdir, fake_slurm, host, {})
    fake_slurm.answer(slurm.scancel_argv(["77_0", "77_1"]))
    backend.cancel([])
    assert fake_slurm.argvs()[-1] == ["scancel", "77_0", "77_1"]
