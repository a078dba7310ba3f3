"""The batch script of every step shape, pinned by golden files in tests/golden/.

After an intended change, rewrite them with `UPDATE_GOLDEN=1 pytest tests/unit/test_batch_script.py`
and review the diff like code: it is what sbatch will read.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import NamedTuple

import pytest

from snakemake_executor_plugin_slurm_gpu import direct, events
from snakemake_executor_plugin_slurm_gpu.batch_script import (
    JobOptions,
    StepCommand,
    _directive,
    _extra_directive,
    render_batch_script,
    render_directives,
)
from snakemake_executor_plugin_slurm_gpu.paths import StepPaths
from snakemake_executor_plugin_slurm_gpu.spec import StepSpec, build_spec, check_launch, launch_warning

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
ROOT = Path("/work/wf")  # absolute, so the scripts are the same on every machine
COMMAND = ("python -m snakemake --snakefile /work/wf/Snakefile --target-jobs 'STEP' --cores all "
           "--mode remote --executor local")


class Case(NamedTuple):
    spec: StepSpec
    paths: StepPaths
    options: JobOptions = JobOptions()
    command: StepCommand = StepCommand(COMMAND)


CASES: dict[str, Case] = {
    "cpu": Case(
        build_spec("prepare", {"mem_mb": 4000, "runtime": 30}, threads=4),
        StepPaths.of(ROOT, "prepare", {"sample": "a"}),
    ),
    # a plain shell rule: its own command, no job-side Snakemake, and Slurm must not rerun it in place
    "cpu_direct": Case(
        build_spec("count", {"runtime": 10}, threads=2),
        StepPaths.of(ROOT, "count", {"sample": "a b"}),
        command=StepCommand(direct.render(direct.DirectShell(
            executable="/usr/bin/bash", command="set -euo pipefail;  wc -l 'data/a b.txt' > 'counts/a b.txt'",
            threads=2, tmpdir="/scratch/tmp", wait_for=("data/a b.txt", "data/$(touch x)"), latency_wait_s=5)),
            direct=True),
    ),
    "gpu_1x1": Case(
        build_spec("finetune", {"gpus": 1, "runtime": 60, "slurm_partition": "gpu"}),
        StepPaths.of(ROOT, "finetune", {}, checkpoint_root=Path("/scratch/ckpt")),
    ),
    "gpu_2x2": Case(
        build_spec("train", {"gpus": 4, "nodes": 2, "gpu_model": "a100", "cpus_per_task": 8, "mem_mb": 64000,
                             "runtime": 240, "slurm_partition": "gpu", "slurm_account": "proj",
                             "constraint": "ib", "qos": "high"}),
        StepPaths.of(ROOT, "train", {"model": "resnet"}),
    ),
    "elastic_2_to_4": Case(
        build_spec("train", {"gpus": 8, "nodes": 4, "min_nodes": 2, "cpus_per_task": 4, "runtime": 120}),
        StepPaths.of(ROOT, "train", {"model": "elastic"}),
    ),
    "torchrun_2x4": Case(
        build_spec("train", {"gpus": 8, "nodes": 2, "cpus_per_task": 4, "launcher": "torchrun", "runtime": 120}),
        StepPaths.of(ROOT, "train", {"model": "elastic"}),
    ),
    "slurm_extra": Case(
        build_spec("train", {"gpus": 2, "slurm_extra": "--exclusive --reservation='maint window' -x n3",
                             "mem_mb_per_cpu": 2000}),
        StepPaths.of(ROOT, "train", {"model": "vit"}),
    ),
    "socket_ifname": Case(
        build_spec("train", {"gpus": 4, "nodes": 2}),
        StepPaths.of(ROOT, "train", {"model": "resnet"}),
        JobOptions(socket_ifname="ib0"),
    ),
    # a profile written for the official plugin: an MPI rule's tasks spread by Slurm, other gres, another
    # cluster, a list of partitions; executor-wide prefix, qos and reservation
    "official_names": Case(
        build_spec("mpi", {"tasks": 8, "mpi": "srun", "cpus_per_task": 2, "gres": "tmpspace:10G",
                           "clusters": "hpc2", "slurm_partition": "short,long", "mem_mb_per_cpu": 1000}),
        StepPaths.of(ROOT, "mpi", {"sample": "a"}),
        JobOptions(job_name_prefix="proj", qos="normal", reservation="maint"),
    ),
    # a GPU step from gres, resubmitted after its node failed: the node is excluded
    "gres_excluded": Case(
        dataclasses.replace(build_spec("train", {"gres": "gpu:a100:2", "nodes": 2, "cpus_per_gpu": 4}),
                            exclude=("n3",)),
        StepPaths.of(ROOT, "train", {}),
    ),
    # a GPU step that opted out of the warning signal: still requeueable, no --signal line
    "gpu_no_signal": Case(
        build_spec("finetune", {"gpus": 1, "runtime": 60, "signal_lead_s": 0}),
        StepPaths.of(ROOT, "finetune", {}, checkpoint_root=Path("/scratch/ckpt")),
    ),
    # requeue off (resource requeue=0), the site's set-up lines, and the debugging knobs
    "no_requeue_setup_debug": Case(
        build_spec("train", {"gpus": 4, "nodes": 2, "runtime": 60, "requeue": 0,
                             "slurm_setup": "source ~/envs/train/bin/activate"},
                   setup="module load cuda/12.4\nmodule load nccl"),
        StepPaths.of(ROOT, "train", {}),
        options=JobOptions(debug=True),
    ),
    "hostile_wildcards": Case(
        build_spec("train", {"gpus": 2, "nodes": 2}),
        StepPaths.of(ROOT, "train", {"sample": "../../etc", "cmd": "$(touch x)", "path": "a/b"},
                     checkpoint_root=Path("ckpt")),
    ),
}
GPU_CASES = [name for name, case in CASES.items() if case.spec.uses_gpus]


def render(name: str) -> str:
    case = CASES[name]
    return render_batch_script(case.spec, case.paths, case.command, case.options)


# ---------------------------------------------------------------- what sbatch reads

def _sbatch_words(line: str) -> list[str]:
    """The words sbatch takes from the text after '#SBATCH', as Slurm's _get_argument
    (src/sbatch/opt.c) splits them: backslash escapes anywhere, ' and " group, an unquoted # ends
    the line, and a word with no characters at all ends it too (the C function returns NULL)."""
    words: list[str] = []
    i, n = 0, len(line)
    while True:
        while i < n and line[i].isspace():
            i += 1
        word: list[str] = []
        quote, escaped, comment = "", False, False
        while i < n and (quote or not line[i].isspace()):
            c = line[i]
            if escaped:
                escaped = False
            elif c == "\\":
                escaped, i = True, i + 1
                continue
            elif quote:
                if c == quote:
                    quote, i = "", i + 1
                    continue
            elif c in "'\"":
                quote, i = c, i + 1
                continue
            elif c == "#":
                comment = True
                break
            word.append(c)
            i += 1
        if quote:
            raise ValueError(f"sbatch: unmatched {quote} in {line!r}")
        if not word:
            return words
        words.append("".join(word))
        if comment:
            return words


def sbatch_options(script: str) -> list[str]:
    """The argv sbatch builds from a script's #SBATCH lines: it stops at the first command line."""
    argv: list[str] = []
    for line in script.splitlines():
        if line.startswith("#SBATCH"):
            argv += _sbatch_words(line[len("#SBATCH"):])
        elif line.strip() and not line.strip().startswith("#"):
            break
    return argv


def test_sbatch_words_model() -> None:
    # the model of sbatch's parser used below, on the cases its C source spells out
    assert _sbatch_words(' --comment="a b" --x=1') == ["--comment=a b", "--x=1"]
    assert _sbatch_words(" --x=a#b") == ["--x=a"]
    assert _sbatch_words(" --x='a#b'") == ["--x=a#b"]
    assert _sbatch_words(r' --x="a\"b"') == ['--x=a"b']
    assert _sbatch_words(r" --x=a\ b") == ["--x=a", "b"]  # an escaped blank still ends the word
    assert _sbatch_words(" # --not-an-option") == []


# ---------------------------------------------------------------- golden files

@pytest.mark.parametrize("name", list(CASES))
def test_golden(name: str) -> None:
    text = render(name)
    golden = GOLDEN / f"{name}.sh"
    if os.environ.get("UPDATE_GOLDEN") == "1":
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(text)
        return
    if not golden.exists():
        pytest.fail(f"{golden} does not exist; create it with UPDATE_GOLDEN=1 and review it")
    expected = golden.read_text()
    if text != expected:
        diff = "".join(difflib.unified_diff(
            expected.splitlines(keepends=True), text.splitlines(keepends=True),
            fromfile=f"golden/{name}.sh", tofile="rendered"))
        pytest.fail(f"batch script {name} differs from its golden file "
                    f"(UPDATE_GOLDEN=1 rewrites it after review):\n{diff}", pytrace=False)


def test_every_golden_file_has_a_case() -> None:
    # a stale golden file would pin nothing
    assert sorted(p.stem for p in GOLDEN.glob("*.sh")) == sorted(CASES)


# ---------------------------------------------------------------- shape of every script

@pytest.mark.parametrize("name", list(CASES))
def test_script_shape(name: str) -> None:
    text = render(name)
    lines = text.splitlines()
    assert lines[0] == "#!/bin/bash"
    # the inner Snakemake, then its exit status recorded and passed on as the script's own; a job
    # Slurm may requeue runs it only while no earlier run of the job finished it
    command_lines = CASES[name].command.text.splitlines()
    spec = CASES[name].spec
    if spec.requeue and spec.resumable:
        assert lines[-12].startswith("finished=") and lines[-11] == 'if [ -e "$finished" ]; then'
        assert '"already_finished"' in lines[-9] and lines[-8:-5] == ["  rc=0", "else", f"  {command_lines[0]}"]
        assert lines[-5] == "  rc=$?" and lines[-4].startswith('  if [ "$rc" = 0 ]') and lines[-3] == "fi"
    else:
        assert lines[-3 - len(command_lines):-1] == [*command_lines, "rc=$?", lines[-2]]
    assert lines[-2].startswith("printf") and '"ended"' in lines[-2] and lines[-1] == "exit $rc"
    # sbatch stops reading #SBATCH lines at the first command: all of them must come before it
    first_command = next(i for i, line in enumerate(lines) if line.strip() and not line.startswith("#"))
    assert all(i < first_command for i, line in enumerate(lines) if line.startswith("#SBATCH"))
    # one task count: per node, or (a CPU rule's tasks, spread by Slurm) in all
    task_lines = [line for line in lines if line.startswith(("#SBATCH --ntasks-per-node=", "#SBATCH --ntasks="))]
    assert task_lines == ([f"#SBATCH --ntasks={spec.ntasks}"] if spec.ntasks is not None
                          else [f"#SBATCH --ntasks-per-node={spec.tasks_per_node}"])
    assert spec.ntasks is None or not spec.uses_gpus
    # GPUs only ever per node; --gres only for what is not a GPU
    assert not any(line.startswith(("#SBATCH -n", "#SBATCH --gpus-per-task", "#SBATCH --gpus="))
                   for line in lines)
    assert not any(line.startswith("#SBATCH --gres") and "gpu" in line for line in lines)
    assert "--gpus-per-task" not in text


@pytest.mark.parametrize("name", GPU_CASES)
def test_gpu_scripts_ask_per_node(name: str) -> None:
    case = CASES[name]
    lines = render(name).splitlines()
    gpu_lines = [line for line in lines if line.startswith("#SBATCH --gpus-per-node=")]
    assert len(gpu_lines) == 1
    model = f"{case.spec.gpu_model}:" if case.spec.gpu_model else ""
    assert gpu_lines[0] == f"#SBATCH --gpus-per-node={model}{case.spec.gpus_per_node}"
    assert "export MASTER_ADDR" in lines
    assert any(line.startswith("export MASTER_PORT=") for line in lines)


def test_cpu_script_has_no_gpu_or_rendezvous_lines() -> None:
    text = render("cpu")
    assert "--gpus-per-node" not in text
    assert "MASTER_ADDR" not in text
    assert "MASTER_PORT" not in text
    assert "#SBATCH --cpus-per-task=4" in text.splitlines()


def test_2x2_options_as_sbatch_reads_them() -> None:
    options = sbatch_options(render("gpu_2x2"))
    for expected in ["--nodes=2", "--ntasks-per-node=2", "--gpus-per-node=a100:2", "--cpus-per-task=8",
                     "--mem=64000", "--time=240", "--partition=gpu", "--account=proj", "--constraint=ib",
                     "--qos=high", "--open-mode=append", "--export=ALL", "--chdir=/work/wf",
                     "--job-name=sg-train", "--comment=slurm-gpu step=train/model=resnet",
                     "--output=/work/wf/.snakemake/slurm-gpu/logs/train/model=resnet/%j.log"]:
        assert expected in options


def test_mem_per_cpu_replaces_mem() -> None:
    options = sbatch_options(render("slurm_extra"))
    assert "--mem-per-cpu=2000" in options
    assert not any(o.startswith("--mem=") for o in options)


def test_slurm_extra_words_reach_sbatch_in_order() -> None:
    options = sbatch_options(render("slurm_extra"))
    assert options[-4:] == ["--exclusive", "--reservation=maint window", "-x", "n3"]


def test_slurm_extra_value_word_with_spaces_reaches_sbatch_whole() -> None:
    spec = build_spec("train", {"slurm_extra": "--reservation 'maint window'"})
    options = sbatch_options("\n".join(render_directives(spec, StepPaths.of(ROOT, "train", {}), JobOptions())))
    assert options[-2:] == ["--reservation", "maint window"]


def test_socket_ifname_exported_for_nccl_and_gloo() -> None:
    assert "export NCCL_SOCKET_IFNAME=ib0 GLOO_SOCKET_IFNAME=ib0" in render("socket_ifname").splitlines()
    assert "SOCKET_IFNAME" not in render("gpu_2x2")


def test_socket_ifname_is_shell_quoted() -> None:
    case = CASES["gpu_2x2"]
    text = render_batch_script(case.spec, case.paths, COMMAND, JobOptions(socket_ifname="ib0;touch x"))
    assert "export NCCL_SOCKET_IFNAME='ib0;touch x' GLOO_SOCKET_IFNAME='ib0;touch x'" in text.splitlines()


def test_hostile_wildcards_stay_inert() -> None:
    text = render("hostile_wildcards")
    assert "$(touch x)" not in text
    assert "../" not in text
    options = sbatch_options(text)
    output = next(o for o in options if o.startswith("--output="))
    assert output.startswith("--output=/work/wf/.snakemake/slurm-gpu/logs/train/")
    assert output.count("/") == "/work/wf/.snakemake/slurm-gpu/logs/train/x/%j.log".count("/")


def test_geometry_exports_match_the_spec() -> None:
    lines = render("gpu_2x2").splitlines()
    assert "export SLURM_GPU_NODES=2" in lines
    assert "export SLURM_GPU_GPUS_PER_NODE=2" in lines
    assert "export SLURM_GPU_TASKS_PER_NODE=2" in lines
    assert "export SLURM_GPU_STEP=train/model=resnet" in lines
    assert ("export SLURM_GPU_CHECKPOINT_DIR=/work/wf/.snakemake/slurm-gpu/checkpoints/train/model=resnet"
            in lines)


# ---------------------------------------------------------------- requeue and the warning signal

@pytest.mark.parametrize("name", [n for n in GPU_CASES if n not in ("gpu_no_signal", "no_requeue_setup_debug")])
def test_gpu_steps_are_requeueable_and_warned(name: str) -> None:
    text = render(name)
    lines = text.splitlines()
    options = sbatch_options(text)
    assert options.count("--signal=USR1@90") == 1
    assert options.count("--requeue") == 1
    # no B: prefix: the ranks get the signal, not the batch shell
    assert not any(o.startswith("--signal=B:") for o in options)
    assert lines.count("export SLURM_GPU_REQUEUE_SIGNAL=USR1") == 1
    # a requeued job reruns the script into the same log: append, never truncate
    assert "--open-mode=append" in options


def test_gpu_step_without_signal_is_still_requeueable() -> None:
    text = render("gpu_no_signal")
    options = sbatch_options(text)
    assert "--requeue" in options
    assert not any(o.startswith("--signal") for o in options)
    assert "SLURM_GPU_REQUEUE_SIGNAL" not in text


def test_cpu_steps_are_neither_requeued_nor_signalled() -> None:
    text = render("cpu")
    assert "--requeue" not in text
    assert "--signal" not in text
    assert "SLURM_GPU_REQUEUE_SIGNAL" not in text


@pytest.mark.parametrize(
    ("requeue_signal", "lead_setting", "resources", "option", "export"),
    [
        pytest.param("SIGUSR2", 90, {"gpus": 1}, "--signal=USR2@90", "USR2", id="usr2-setting"),
        pytest.param("usr1", 300, {"gpus": 1}, "--signal=USR1@300", "USR1", id="lead-setting"),
        pytest.param("USR1", 90, {"gpus": 2, "signal_lead_s": 600}, "--signal=USR1@600", "USR1", id="rule-lead"),
        pytest.param("10", 90, {"gpus": 1}, "--signal=USR1@90", "USR1", id="numeric"),
    ],
)
def test_signal_line_follows_the_settings(requeue_signal: str, lead_setting: int, resources: dict[str, object],
                                          option: str, export: str) -> None:
    spec = build_spec("train", resources, requeue_signal=requeue_signal, signal_lead_s=lead_setting)
    text = render_batch_script(spec, StepPaths.of(ROOT, "train", {}), COMMAND, JobOptions())
    assert [o for o in sbatch_options(text) if o.startswith("--signal")] == [option]
    assert f"export SLURM_GPU_REQUEUE_SIGNAL={export}" in text.splitlines()


def test_single_gpu_step_without_srun_is_warned_that_it_gets_no_signal() -> None:
    # --signal without B: reaches job steps (srun's tasks) only: a bare `python train.py` in the
    # batch step never hears it, so the executor says so (it still resumes after a time-out)
    spec = build_spec("finetune", {"gpus": 1})
    assert spec.signal and not spec.distributed
    check_launch(spec, "python train.py")  # allowed: one rank needs no srun to start
    warning = launch_warning(spec, "python train.py")
    assert warning and "rule 'finetune'" in warning and "srun" in warning and "HINT:" in warning
    assert launch_warning(spec, "srun python train.py") is None
    assert launch_warning(build_spec("prep", {}), "python prep.py") is None


def test_signal_and_requeue_come_before_slurm_extra() -> None:
    # slurm_extra is last so that a user's word never silently overrides a managed one
    options = sbatch_options(render("slurm_extra"))
    assert options.index("--signal=USR1@90") < options.index("--requeue") < options.index("--exclusive")


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash to check syntax")
@pytest.mark.parametrize("name", list(CASES))
def test_script_is_valid_bash(name: str, tmp_path: Path) -> None:
    script = tmp_path / f"{name}.sh"
    script.write_text(render(name))
    result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, timeout=10)
    assert result.returncode == 0, result.stderr


# ---------------------------------------------------------------- one #SBATCH line

@pytest.mark.parametrize(
    ("flag", "value", "line"),
    [
        ("--requeue", None, "#SBATCH --requeue"),
        ("--partition", "gpu", "#SBATCH --partition=gpu"),
        ("--nodes", 2, "#SBATCH --nodes=2"),
        ("--comment", "slurm-gpu step=a/b", '#SBATCH --comment="slurm-gpu step=a/b"'),
        ("--chdir", Path("/work/my wf"), '#SBATCH --chdir="/work/my wf"'),
        ("--comment", "tab\there", '#SBATCH --comment="tab\there"'),
    ],
)
def test_directive(flag: str, value: object, line: str) -> None:
    assert _directive(flag, value) == line


@pytest.mark.parametrize("value", ["a\nb", 'a"b', "a\rb", "a\x00b", "end\n"])
def test_directive_refuses_unrenderable_values(value: str) -> None:
    with pytest.raises(ValueError, match="--partition"):
        _directive("--partition", value)


@pytest.mark.parametrize("word", ["--x=a\nb", '--x="a"'])
def test_extra_directive_refuses_unrenderable_words(word: str) -> None:
    with pytest.raises(ValueError):
        _extra_directive(word)


@pytest.mark.parametrize(
    "value",
    [
        "gpu",
        "/work/my wf/logs/%j.log",
        "a  b\tc",
        "a=b,c=d",
        pytest.param("/work/run#2/logs/%j.log"),
        pytest.param("o'brien"),
    ],
)
def test_directive_value_reaches_sbatch_unchanged(value: str) -> None:
    line = _directive("--output", value)
    assert _sbatch_words(line[len("#SBATCH"):]) == [f"--output={value}"]


@pytest.mark.parametrize("value", ["C:\\work", 'say "hi"', "a\nb"])
def test_directive_refuses_values_sbatch_cannot_read_back(value: str) -> None:
    with pytest.raises(ValueError):
        _directive("--output", value)


def test_percent_in_root_is_doubled_in_output_only() -> None:
    spec = build_spec("train", {})
    paths = StepPaths.of(Path("/work/50%wf"), "train", {})
    lines = render_directives(spec, paths, JobOptions())
    # Slurm expands %-patterns in --output: %% is a literal %, our own %j stays a pattern
    assert "#SBATCH --output=/work/50%%wf/.snakemake/slurm-gpu/logs/train/all/%j.log" in lines
    assert "#SBATCH --chdir=/work/50%wf" in lines


def test_percent_in_wildcards_never_reaches_output() -> None:
    paths = StepPaths.of(ROOT, "train", {"sample": "%j%u"})
    output = next(line for line in render_directives(build_spec("train", {}), paths, JobOptions())
                  if line.startswith("#SBATCH --output="))
    assert re.fullmatch(r"#SBATCH --output=[^%]*/%j\.log", output)


# ---------------------------------------------------------------- the end of the script, run by bash

@pytest.mark.parametrize("status", [0, 3])
def test_the_script_records_its_end_and_keeps_the_inner_exit_status(tmp_path: Path, status: int) -> None:
    from snakemake_executor_plugin_slurm_gpu import events
    spec = build_spec("train", {"gpus": 2, "nodes": 2})
    paths = StepPaths.of(tmp_path, "train", {"lr": "0.1"})
    script = render_batch_script(spec, paths, f"exit_with() {{ return $1; }}; exit_with {status}", JobOptions())
    paths.event_log.parent.mkdir(parents=True)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text("#!/bin/sh\necho n1\n")
    (bin_dir / "scontrol").chmod(0o755)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "SLURM_JOB_ID": "77", "SLURM_JOB_NODELIST": "n[1-2]"}
    done = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == status, done.stderr
    started, ended = events.read(paths.event_log)
    assert started["event"] == "started"
    assert ended == {"ts": ended["ts"], "event": "ended", "step": "train/lr=0.1", "source": "job", "job_id": "77",
                     "exit_code": status}
    assert ended["ts"] >= started["ts"]


def test_a_step_with_requeue_off_is_neither_requeueable_nor_warned() -> None:
    text = render("no_requeue_setup_debug")
    options = sbatch_options(text)
    assert "--no-requeue" in options and "--requeue" not in options
    assert not any(o.startswith("--signal") for o in options)
    assert "SLURM_GPU_REQUEUE_SIGNAL" not in text


def test_set_up_lines_run_before_the_step_site_lines_first() -> None:
    lines = render("no_requeue_setup_debug").splitlines()
    at = [lines.index(line) for line in ("module load cuda/12.4", "module load nccl",
                                          "source ~/envs/train/bin/activate", COMMAND)]
    assert at == sorted(at)
    # after the "started" event, so that every job of the step, requeued or resubmitted, runs them
    assert lines.index(next(line for line in lines if '"event": "started"' in line)) < at[0]


def test_debug_exports_the_distributed_diagnostics() -> None:
    lines = render("no_requeue_setup_debug").splitlines()
    assert "export NCCL_DEBUG=INFO TORCH_DISTRIBUTED_DEBUG=DETAIL TORCH_CPP_LOG_LEVEL=INFO SLURM_GPU_DEBUG=1" in lines
    assert not any("NCCL_DEBUG" in line for line in render("gpu_2x2").splitlines())


def _run_script(script: str, workdir: Path, job_id: str) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", "SLURM_JOB_ID": job_id, "SLURM_JOB_NODELIST": "n1", "HOME": str(workdir)}
    return subprocess.run(["bash", "-c", script], cwd=workdir, env=env, capture_output=True, text=True, timeout=30)


def test_a_job_slurm_requeues_after_its_step_finished_does_not_run_the_step_again(tmp_path: Path) -> None:
    # Slurm 24.05+: a job once preempted and requeued is PREEMPTED and requeued again at its next end,
    # even a successful one; the batch script then runs again with the same job id
    paths = StepPaths.of(tmp_path, "train", {})
    paths.event_log.parent.mkdir(parents=True)  # the executor makes it before submitting
    runs = tmp_path / "runs"
    script = render_batch_script(build_spec("train", {"gpus": 2, "nodes": 2}), paths,
                                 f"echo run >> {runs}", JobOptions())
    first = _run_script(script, tmp_path, "71")
    again = _run_script(script, tmp_path, "71")
    assert first.returncode == again.returncode == 0
    assert runs.read_text() == "run\n"
    assert "the step finished in an earlier run of job 71" in again.stdout
    log = events.read(paths.event_log)
    assert [e["exit_code"] for e in log if e["event"] == "ended"] == [0, 0]
    assert [e["event"] for e in log if e["event"] in ("started", "already_finished")] == [
        "started", "started", "already_finished"]
    # another job of the step (a resubmission) runs it
    assert _run_script(script, tmp_path, "72").returncode == 0 and runs.read_text() == "run\nrun\n"


def test_a_run_that_failed_is_run_again_after_a_requeue(tmp_path: Path) -> None:
    paths = StepPaths.of(tmp_path, "train", {})
    runs = tmp_path / "runs"
    script = render_batch_script(build_spec("train", {"gpus": 1}), paths, f"echo run >> {runs} && test -e {tmp_path}/ok",
                                 JobOptions())
    assert _run_script(script, tmp_path, "80").returncode == 1
    (tmp_path / "ok").touch()
    assert _run_script(script, tmp_path, "80").returncode == 0
    assert runs.read_text() == "run\nrun\n"


def test_steps_slurm_never_requeues_run_their_command_as_it_is() -> None:
    for spec in (build_spec("prepare", {}), build_spec("train", {"gpus": 2, "requeue": 0})):
        script = render_batch_script(spec, StepPaths.of(Path("/w"), spec.rule, {}), "true", JobOptions())
        assert "finished=" not in script and script.splitlines()[-3:-1][0] == "rc=$?"
