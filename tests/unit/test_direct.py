"""Direct steps: which rules run their shell command in the batch script itself, the command as
Snakemake's shell() would run it, and the rendered lines executed by bash."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from snakemake_executor_plugin_slurm_gpu import direct


class File(str):
    """A stand-in for Snakemake's IOFile: a path with flags."""

    def __new__(cls, path: str, storage: bool = False, **flags: bool) -> "File":
        f = super().__new__(cls, path)
        f.flags = flags
        f.is_storage = storage
        return f


def job(**overrides: Any) -> SimpleNamespace:
    rule = SimpleNamespace(shellcmd="wc -l {input} > {output}", script=None, notebook=None, wrapper=None, cwl=None,
                           template_engine=None, norun=False, is_handover=False)
    base = dict(rule=rule, is_group=lambda: False, conda_env_spec=None, container_img_url=None, env_modules=None,
                is_shadow=False, benchmark=None, input=[File("data/a.txt")], output=[File("counts/a.txt")], log=[],
                resources={"tmpdir": "/tmp"}, threads=1, shellcmd="wc -l data/a.txt > counts/a.txt",
                get_wait_for_files=lambda: ["data/a.txt"])
    base.update(overrides)
    return SimpleNamespace(**base)


class Shell:
    """Snakemake's shell class as the Snakefile left it."""

    def __init__(self, executable: str | None = "/usr/bin/bash", prefix: str | None = None, suffix: str = "") -> None:
        self._executable, self._process_prefix, self._process_suffix = executable, prefix, suffix

    def get_executable(self) -> str | None:
        return self._executable

    def _get_process_prefix(self, executable: str | None = None) -> str:
        if self._process_prefix is None and (executable or "").endswith("bash"):
            return "set -euo pipefail; "
        return self._process_prefix or ""


def test_a_plain_shell_rule_runs_directly() -> None:
    assert direct.why_not_direct(job()) is None


@pytest.mark.parametrize("change, why", [
    (dict(is_group=lambda: True), "a group job"),
    (dict(rule=SimpleNamespace(shellcmd=None)), "not a shell rule"),
    (dict(rule=SimpleNamespace(shellcmd="x", script="s.py")), "a script rule"),
    (dict(conda_env_spec="envs/a.yaml"), "conda"),
    (dict(container_img_url="docker://x"), "container"),
    (dict(env_modules=["gcc"]), "environment modules"),
    (dict(is_shadow=True), "shadow"),
    (dict(benchmark="bench/a.tsv"), "benchmarked"),
    (dict(input=[File("s3://bucket/a", storage=True)]), "storage"),
    (dict(output=[File("fifo", pipe=True)]), "pipe"),
    (dict(output=[File("counts/a.txt", update=True)]), "update"),
    (dict(resources={"shell_exec": "/bin/zsh"}), "shell_exec"),
])
def test_a_rule_that_needs_more_than_its_command_keeps_the_job_side_snakemake(change: dict, why: str) -> None:
    assert why in (direct.why_not_direct(job(**change)) or "")
    assert direct.direct_shell(job(**change), Shell(), 5) is None


def test_the_command_is_snakemakes_formatting_with_its_shell_prefix_and_suffix() -> None:
    made = direct.direct_shell(job(threads=3), Shell(), latency_wait_s=7, system_tmpdir="/tmp")
    assert made == direct.DirectShell(executable="/usr/bin/bash",
                                      command="set -euo pipefail;  wc -l data/a.txt > counts/a.txt",
                                      threads=3, tmpdir=None, wait_for=("data/a.txt",), latency_wait_s=7)
    chosen = direct.direct_shell(job(), Shell("/bin/sh", prefix="set -e; ", suffix="; sync"), 5)
    assert chosen is not None and chosen.command == "set -e;  wc -l data/a.txt > counts/a.txt ; sync"
    assert chosen.executable == "/bin/sh"
    assert direct.direct_shell(job(), Shell(None), 5).executable == "/bin/sh"


def test_only_a_tmpdir_the_rule_chose_is_passed_on() -> None:
    # Snakemake's default is the submitting host's temporary directory: the node keeps its own
    assert direct.direct_shell(job(resources={"tmpdir": "/tmp"}), Shell(), 5, system_tmpdir="/tmp").tmpdir is None
    assert direct.direct_shell(job(resources={"tmpdir": "/scratch/me"}), Shell(), 5,
                               system_tmpdir="/tmp").tmpdir == "/scratch/me"


def test_a_command_snakemake_cannot_format_is_left_to_the_job_side_snakemake() -> None:
    class Unformattable(SimpleNamespace):
        @property
        def shellcmd(self) -> str:
            raise KeyError("config key 'seed' not found")
    assert direct.direct_shell(Unformattable(**vars(job())), Shell(), 5) is None


def test_a_command_too_long_for_one_argument_is_left_to_the_job_side_snakemake() -> None:
    long = "echo " + "x" * direct.MAX_COMMAND_BYTES
    assert direct.direct_shell(job(shellcmd=long), Shell(), 5) is None


# ---------------------------------------------------------------- the rendered lines, run by bash

def run_lines(tmp_path: Path, made: direct.DirectShell, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", direct.render(made) + "\necho rc=$?"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=timeout, env={"PATH": "/usr/bin:/bin", "TMPDIR": "/node/tmp"})


def made(command: str, **fields: Any) -> direct.DirectShell:
    base = dict(executable="/bin/bash", command=f"set -euo pipefail; {command}", threads=4, tmpdir=None,
                wait_for=(), latency_wait_s=2)
    base.update(fields)
    return direct.DirectShell(**base)


def test_the_command_runs_with_snakemakes_thread_variables_and_the_nodes_tmpdir(tmp_path: Path) -> None:
    done = run_lines(tmp_path, made('echo "$OMP_NUM_THREADS $MKL_NUM_THREADS $NUMEXPR_NUM_THREADS $TMPDIR"'))
    assert done.stdout.splitlines() == ["4 4 4 /node/tmp", "rc=0"]
    chosen = run_lines(tmp_path, made('echo "$TMPDIR $TEMP"', tmpdir="/scratch/a b"))
    assert chosen.stdout.splitlines() == ["/scratch/a b /scratch/a b", "rc=0"]


def test_the_commands_exit_status_is_the_steps_and_pipefail_holds(tmp_path: Path) -> None:
    assert run_lines(tmp_path, made("exit 3")).stdout.splitlines() == ["rc=3"]
    assert run_lines(tmp_path, made("false | cat")).stdout.splitlines() == ["rc=1"]


def test_inputs_are_waited_for_up_to_the_latency_wait(tmp_path: Path) -> None:
    late = subprocess.Popen(["bash", "-c", "sleep 1; touch 'in put'"], cwd=tmp_path)
    done = run_lines(tmp_path, made("cat 'in put' && echo ran", wait_for=("in put",), latency_wait_s=5))
    late.wait()
    assert done.stdout.splitlines() == ["ran", "rc=0"]
    began = time.monotonic()
    missing = run_lines(tmp_path, made("echo ran", wait_for=("in put", "never"), latency_wait_s=2))
    assert missing.stdout.splitlines() == ["rc=1"]
    assert "input never not found after 2 s (--latency-wait)" in missing.stderr
    assert 1.5 < time.monotonic() - began < 10


def test_file_names_and_commands_reach_bash_literally(tmp_path: Path) -> None:
    hostile = "$(touch pwned) `touch pwned2` 'q\" ;x"
    (tmp_path / hostile).write_text("one\ntwo\n")
    command = "wc -l < " + "'" + hostile.replace("'", "'\\''") + "'"
    done = run_lines(tmp_path, made(command, wait_for=(hostile,)))
    assert done.stdout.split() == ["2", "rc=0"], done.stderr
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "pwned2").exists()


def _rule(shellcmd: str, **attrs: Any) -> SimpleNamespace:
    return SimpleNamespace(shellcmd=shellcmd, script=None, notebook=None, wrapper=None, cwl=None,
                           template_engine=None, norun=False, is_handover=False, **attrs)


@pytest.mark.parametrize("shellcmd", ["echo {name} > {output}", "echo {rulename} > {output}"])
def test_a_command_naming_what_the_job_side_formats_otherwise_keeps_the_job_side_snakemake(shellcmd: str) -> None:
    # Job.shellcmd fills {name} with the job's name; the job side's shell() with the Snakefile's global
    assert "{name} or {rulename}" in direct.why_not_direct(job(rule=_rule(shellcmd)))


def test_a_rule_of_a_module_keeps_the_job_side_snakemake() -> None:
    workflow = SimpleNamespace(globals={"config": {}})
    in_module = _rule("echo {config} > {output}", workflow=workflow, module_globals={"config": {"a": 1}})
    in_main = _rule("echo {config} {input.a[0]} {resources.mem_mb:d} {{x}} > {output}", workflow=workflow,
                    module_globals=workflow.globals)
    assert "a rule of a module" in direct.why_not_direct(job(rule=in_module))
    assert direct.why_not_direct(job(rule=in_main)) is None
