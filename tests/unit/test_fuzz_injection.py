"""Hostile text in resources, slurm_extra and wildcards: refused with a clear error, or carried as
literal text. Property tests (hypothesis, derandomized so CI always runs the same cases); the
rendered batch script is really executed by bash, with stand-ins for scontrol and the inner Snakemake.
The real-cluster fuzz (sbatch reading the directives) is tests/cluster/test_security.py."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from snakemake_executor_plugin_slurm_gpu.batch_script import (JobOptions, inner_command_line, render_batch_script,
                                                              render_directives)
from snakemake_executor_plugin_slurm_gpu.paths import StepPaths
from snakemake_executor_plugin_slurm_gpu.spec import (ResourceError, WildcardError, build_spec,
                                                      check_target_wildcards)

FUZZ = settings(max_examples=200, derandomize=True, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])
CANARY = "sg-canary"
SHELL_BITS = ["$(touch sg-canary)", "`touch sg-canary`", ";touch sg-canary;", "|touch sg-canary", "&& touch sg-canary",
              "\n touch sg-canary", "'", '"', "\\", "${IFS}", "$HOME", "#", " -p other", "%j", "*", "~"]
hostile_text = st.one_of(
    st.text(max_size=40),
    st.lists(st.one_of(st.sampled_from(SHELL_BITS), st.text(max_size=6)), max_size=6).map("".join),
)


def sbatch_lines(script: str) -> list[str]:
    """The #SBATCH block at the top, as sbatch reads it: up to the first line that is neither a
    comment nor blank."""
    lines = []
    for line in script.split("\n")[1:]:
        if not line.startswith("#"):
            break
        if line.startswith("#SBATCH"):
            lines.append(line)
    return lines


# ---------------------------------------------------------------- slurm_extra and text resources

@FUZZ
@given(text=hostile_text)
@example(text="--mail-user='a b' --begin=now\n--partition=x")
@example(text='--comment="x" ; rm -rf ~')
def test_slurm_extra_is_refused_clearly_or_becomes_one_directive_per_word(text: str) -> None:
    try:
        spec = build_spec("train", {"gpus": 2, "slurm_extra": text})
    except ResourceError as e:
        assert str(e).startswith("rule 'train': resource 'slurm_extra'") and "HINT:" in str(e)
        return
    assert spec.extra == tuple(shlex.split(text))  # shell-like words, nothing expanded
    directives = render_directives(spec, StepPaths.of(Path("/w"), "train", {}), JobOptions())
    extra_lines = directives[len(directives) - len(spec.extra):]
    for word, line in zip(spec.extra, extra_lines):
        assert "\n" not in line and "\r" not in line and line.startswith("#SBATCH ")
        # sbatch reads one word per line: the word, with only the double quotes we added around it
        assert line[len("#SBATCH "):].replace('"', "") == word


@FUZZ
@given(resource=st.sampled_from(["slurm_partition", "slurm_account", "constraint", "qos", "gpu_model"]),
       text=hostile_text)
def test_text_resources_are_refused_clearly_or_rendered_on_one_line(resource: str, text: str) -> None:
    try:
        spec = build_spec("train", {"gpus": 2, resource: text})
        script = render_batch_script(spec, StepPaths.of(Path("/w"), "train", {}), "true", JobOptions())
    except ResourceError as e:
        assert str(e).startswith(f"rule 'train': resource '{resource}'") and "HINT:" in str(e)
        return
    header = sbatch_lines(script)
    # nothing the value held ended the #SBATCH block or added a line of its own
    assert len(header) == len([line for line in script.split("\n") if line.startswith("#SBATCH")])
    assert all("\n" not in line for line in header)


# ---------------------------------------------------------------- wildcards through the batch script

@pytest.fixture
def stand_ins(tmp_path: Path) -> Path:
    """scontrol and the inner program as shell stand-ins: the program writes its argv, NUL-separated."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text("#!/bin/sh\necho n1\n")
    (bin_dir / "record-argv").write_text('#!/bin/bash\nprintf \'%s\\0\' "$@" > "$ARGV_FILE"\n')
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    return bin_dir


@FUZZ
@given(values=st.lists(hostile_text, min_size=1, max_size=3))
@example(values=["x$(touch sg-canary)`touch sg-canary`;touch sg-canary;'q\"y", "\n", "-p", "%j"])
def test_wildcard_values_reach_the_inner_command_literally_and_nothing_runs(stand_ins: Path, tmp_path: Path,
                                                                            values: list[str]) -> None:
    values = [v.replace("\x00", "") for v in values]  # argv cannot hold NUL at all
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    spec = build_spec("train", {"gpus": 2, "nodes": 2})
    paths = StepPaths.of(work, "train", {f"w{i}": v for i, v in enumerate(values)})
    command = inner_command_line([str(stand_ins / "record-argv"), *values], general_args="--quiet")
    script = render_batch_script(spec, paths, command, JobOptions())
    argv_file = tmp_path / "argv.bin"
    argv_file.unlink(missing_ok=True)
    # every example is a new job: job 4321's run of an earlier example finished its step
    shutil.rmtree(paths.finished_dir, ignore_errors=True)
    env = {"PATH": f"{stand_ins}:/usr/bin:/bin", "ARGV_FILE": str(argv_file), "SLURM_JOB_ID": "4321",
           "SLURM_JOB_NODELIST": "n[1-2]", "HOME": str(tmp_path)}
    done = subprocess.run(["bash", "-c", script], cwd=work, env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    recorded = argv_file.read_bytes().split(b"\0")[:-1]
    assert [a.decode("utf-8", "surrogateescape") for a in recorded] == [*values, "--quiet", "--mode", "remote"]
    assert not any(p.name == CANARY for p in tmp_path.rglob("*")), "a value was run through a shell"
    # the step's directories are made from the values, but always inside the workflow
    assert paths.checkpoint_dir.is_dir() and work in paths.checkpoint_dir.parents


# ---------------------------------------------------------------- what Snakemake's --target-jobs can carry

@pytest.mark.parametrize("value", ["a,b", "'quoted'", '"x', "y'", ",", "model=vit,lr=1"])
def test_wildcards_that_target_jobs_would_change_are_refused(value: str) -> None:
    with pytest.raises(WildcardError) as caught:
        check_target_wildcards("train", {"model": value})
    message = str(caught.value)
    assert message.startswith("rule 'train': wildcard 'model' is ") and repr(value) in message
    assert "HINT:" in message and "wildcard_constraints" in message


@FUZZ
@given(value=st.text(max_size=20))
def test_any_other_wildcard_value_is_accepted(value: str) -> None:
    if "," in value or value != value.strip("'\""):
        with pytest.raises(WildcardError):
            check_target_wildcards("r", {"w": value})
    else:
        check_target_wildcards("r", {"w": value})
        # the round trip Snakemake's parser makes (snakemake.common.parse_key_value_arg)
        key, parsed = f"w={value}".split("=", 1)
        assert parsed.strip("'\"") == value and re.split(",", f"w={value}") == [f"w={value}"]
