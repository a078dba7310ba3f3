#!/usr/bin/env python3
"""Snakemake's own test workflows as a conformance suite for `--executor slurm-gpu`.

Snakemake's tests are not part of this repository: the sdist of the installed Snakemake version is
downloaded from PyPI (`pip download --no-binary :all:`) into .cache/conformance/ (gitignored) and
reused. Each selected test of Snakemake's tests/tests.py is replayed as a command line: how it calls
tests/common.py's run() (directory, targets, config, cores, resources, ...) is read from tests.py with
`ast`, so the suite follows the installed version. Each workflow runs in a fresh temporary copy of its
directory with

    snakemake --executor slurm-gpu --jobs 8 --latency-wait 5 --cores <cores> <the test's arguments>

and its outputs are compared with expected-results/ the way common.py does (md5 of the stripped bytes of
every expected file; .gitignore/.gitkeep at the top and *_WIN files skipped; only existence when the test
passes check_md5=False). `--cores` is the test's (common.run's default is 3): with a remote executor it
caps each rule's threads and does not limit how many jobs run at once. With --baseline every workflow
also runs with the local executor (`--cores <cores>`), so the report says which ones pass locally.

    .venv/bin/python tests/conformance/run.py                  # the whole selection, slurm-gpu only
    .venv/bin/python tests/conformance/run.py --baseline       # and each one locally too
    .venv/bin/python tests/conformance/run.py --subset smoke   # the CI smoke subset
    .venv/bin/python tests/conformance/run.py --only test_group_jobs test_pipes_simple -v

The last line is `N passed, M failed[, K skipped]` (M counts known failures too); the exit status is 1
when a workflow that known_failures.py does not list fails. Logs of every run are kept under
.cache/conformance/logs/, and a summary in .cache/conformance/last-run.json.
"""

from __future__ import annotations

import argparse
import ast
import glob
import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
CACHE = Path(os.environ.get("SLURM_GPU_CONFORMANCE_CACHE", REPO / ".cache" / "conformance"))
VENV_BIN = Path(sys.executable).parent

sys.path.insert(0, str(HERE))
from known_failures import KNOWN_FAILURES, SKIPPED, TIMEOUT_S  # noqa: E402

# ------------------------------------------------------------------------------------------ selection
# Names are test functions of Snakemake's tests/tests.py; each is replayed through the first run() call
# in its body (later calls of multi-run tests, and their extra assertions, are not replayed).

SELECTION: list[str] = [
    # plain chains, targets, wildcards, odd file and directory names
    "test01", "test02", "test03", "test04", "test05", "test06", "test07", "test08", "test10", "test11",
    "test12", "test13", "test15", "test_delete_all_output", "test_issue956", "test_subpath",
    "test_same_wildcard", "test_conditional", "test_spaces_in_fnames", "test_with_parentheses",
    "test_default_target", "test_localrule", "test_ruledeps",
    # params, input functions, config
    "test_params", "test_unpack_dict", "test_unpack_list", "test_shell", "test_keyword_list",
    "test_globwildcards", "test_config", "test_update_config", "test_yaml_config", "test_config_merging",
    "test_config_replacing", "test_wildcard_keyword", "test_format_params", "test_format_wildcards",
    "test_nonstr_params", "test_deferred_func_eval", "test_input_generator", "test_multiext",
    "test_github_issue806", "test_pathlib", "test_fstring", "test_match_by_wildcard_names",
    "test_expand_list_of_functions", "test_github_issue1384", "test_pathvars",
    # run: blocks, scripts, includes, local imports, logs
    "test_run_namedlist", "test_local_import", "test_log_input", "test_bash", "test_long_shell",
    "test_script_python", "test_script_import_snakemake_obj", "test_issue1092", "test_template_engine",
    "test_source_path", "test_source_path_parent", "test_shadowed_log", "test_multiple_includes",
    "test_name_override",
    # temp/protected/touch/directory/shadow/update/ensure
    "test_temp", "test_no_temp", "test_temp_expand", "test_all_temp", "test_touch",
    "test_protected_symlink_output", "test_symlink_time_handling", "test_directory2", "test_delete_output",
    "test_shadow", "test_shadow_copy", "test_shadow_prefix", "test_update_flag", "test_temp_and_all_input",
    "test_ensure_success",
    # threads, cores, resources (default, set, human readable, lazy, inferred), priorities, retries
    "test_threads", "test_threads0", "test_set_threads", "test_core_dependent_threads",
    "test_default_resources", "test_default_resources_humanreadable", "test_default_resources_mebibytes",
    "test_github_issue1550", "test_set_resources", "test_set_resources_human_readable",
    "test_set_resources_complex_cli", "test_github_issue1069", "test_lazy_resources", "test_inferred_resources",
    "test_handover", "test_string_resources", "test_issue_3970", "test_github_issue_4039_runtime_cli",
    "test_github_issue_4039_mem_cli", "test_issue1331",
    "test_retries", "test_priority", "test_max_jobs_per_timespan", "test_workflow_profile_relative_path",
    # groups, pipes, service jobs
    "test_group_jobs", "test_group_jobs_attempts", "test_multicomp_group_jobs", "test_groupid_expand_local",
    "test_groupid_expand_cluster", "test_group_temp", "test_issue850", "test_issue860", "test_issue930",
    "test_cores_limited_by_global_supply", "test_group_jobs_resources", "test_group_job_resources_with_pipe",
    "test_scopes_submitted_to_cluster", "test_job_properties", "test_pipes_simple", "test_pipes_multiple",
    "test_pipes2", "test_service_jobs",
    # checkpoints, batches, scatter/gather, until/omit-from
    "test_checkpoints", "test_checkpoints_dir", "test_checkpoints_many", "test_module_checkpoint",
    "test_checkpoint_allowed_rules", "test_checkpoint_until", "test_checkpoint_omit_from",
    "test_temp_checkpoint", "test_uncreatable_checkpoint_input", "test_checkpoint_missing_output",
    "test_batch", "test_until", "test_omitfrom", "test_scatter_gather",
    # modules
    "test_modules_all", "test_modules_specific", "test_use_rule_same_module", "test_module_input_func",
    "test_modules_ruledeps_inheritance", "test_module_nested",
    # failing jobs: snakemake must exit non-zero (and leave what common.py checks)
    "test09", "test_group_job_fail", "test_retries_not_overriden",
    "test_issue2826_failed_binary_logs", "test_update_flag_fail", "test_ensure_nonempty_fail",
    "test_github_issue1261",
]

# the CI smoke subset (tests/cluster/test_conformance_smoke.py): a chain, default resources, threads,
# a group, a pipe group, a checkpoint workflow, params/wildcards, a failing job
SMOKE: list[str] = [
    "test01",                       # a two-step chain with a log and threads
    "test_params",                  # params and wildcards
    "test_default_resources",       # --default-resources expressions, in a group job
    "test_core_dependent_threads",  # threads from workflow.cores
    "test_group_jobs",              # group jobs: one Slurm job per group
    "test_pipes_simple",            # pipe() outputs: a group whose jobs must run at once
    "test_service_jobs",            # service() outputs
    "test_checkpoints",             # checkpoints: the DAG is re-evaluated after a job
    "test09",                       # a failing job: snakemake must exit non-zero
]


# ------------------------------------------------------------------------------------------ the sdist

class SdistUnavailable(RuntimeError):
    pass


def snakemake_version() -> str:
    try:
        from importlib.metadata import version
        return version("snakemake")
    except Exception:
        out = subprocess.run([snakemake_exe(), "--version"], capture_output=True, text=True, check=True)
        return out.stdout.strip()


def snakemake_exe() -> str:
    exe = VENV_BIN / "snakemake"
    return str(exe) if exe.exists() else (shutil.which("snakemake") or "snakemake")


def fetch_tests(version: str | None = None, cache: Path = CACHE) -> Path:
    """tests/ of the Snakemake sdist of `version` (default: the installed one), downloaded from PyPI
    once and then reused. Raises SdistUnavailable with the reason when it cannot be had."""
    version = version or snakemake_version()
    root = cache / f"snakemake-{version}"
    tests = root / "tests"
    if (tests / "tests.py").is_file() and (tests / "common.py").is_file():
        return tests
    cache.mkdir(parents=True, exist_ok=True)
    sdist = cache / f"snakemake-{version}.tar.gz"
    if not sdist.is_file():
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
               f"snakemake=={version}", "-d", str(cache)]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise SdistUnavailable(f"`{' '.join(cmd)}` could not run: {e}") from e
        if proc.returncode or not sdist.is_file():
            raise SdistUnavailable(f"`{' '.join(cmd)}` failed (exit {proc.returncode}); Snakemake's test "
                                   f"workflows come from that sdist on PyPI:\n{(proc.stdout + proc.stderr)[-3000:]}")
    prefix = f"snakemake-{version}/tests/"
    partial = cache / f".extract-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    try:
        with tarfile.open(sdist) as tar:
            members = [m for m in tar.getmembers() if m.name.startswith(prefix)]
            if not members:
                raise SdistUnavailable(f"{sdist} has no {prefix} (is it Snakemake's sdist?)")
            kwargs = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            tar.extractall(partial, members=members, **kwargs)
    except (tarfile.TarError, OSError) as e:
        shutil.rmtree(partial, ignore_errors=True)
        raise SdistUnavailable(f"cannot extract {sdist}: {e} (delete it to download it again)") from e
    root.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(tests, ignore_errors=True)
    os.replace(partial / f"snakemake-{version}" / "tests", tests)
    shutil.rmtree(partial, ignore_errors=True)
    return tests


# ------------------------------------------------------------------------------------------ tests.py

class Unsupported(Exception):
    """A run() argument this replay cannot express as a command line."""


@dataclass
class Invocation:
    name: str                      # test function
    directory: str                 # its workflow directory under tests/
    kwargs: dict = field(default_factory=dict)
    skip: str | None = None        # why it cannot be replayed


SKIP_DECORATORS = {
    "connected": "needs network access",
    "apptainer": "needs apptainer/singularity",
    "conda": "needs conda",
    "needs_s3": "needs an S3 server",
    "needs_envmodules": "needs environment modules",
    "needs_strace": "needs strace",
    "only_on_windows": "Windows only",
    "zenodo": "needs a Zenodo token",
    "gcloud": "needs Google Cloud",
    "azbatch": "needs Azure Batch",
}


def _value(node: ast.AST):
    """A run() argument as a Python value: literals, plus the few calls tests.py uses."""
    try:
        return ast.literal_eval(node)
    except (ValueError, SyntaxError, TypeError):
        pass
    if isinstance(node, ast.Call):
        fn = ast.unparse(node.func)
        args = [_value(a) for a in node.args]
        if fn == "dpath":
            return ("dpath", args[0])
        if fn == "Path":
            return str(args[0])
        if fn == "Resources.parse":
            return list(args[0])
        if fn == "Batch":
            return f"{args[0]}={args[1]}/{args[2]}"
        if fn == "dict":
            return {k.arg: _value(k.value) for k in node.keywords}
        if isinstance(node.func, ast.Attribute) and node.func.attr == "split" and not node.args:
            return _value(node.func.value).split()
    raise Unsupported(ast.unparse(node))


def parse_tests(tests_dir: Path) -> dict[str, Invocation]:
    """Every test function of tests.py, with its first run() call's arguments."""
    module = ast.parse((tests_dir / "tests.py").read_text())
    found: dict[str, Invocation] = {}
    for fn in module.body:
        if not isinstance(fn, ast.FunctionDef) or not fn.name.startswith("test"):
            continue
        calls = [n for n in ast.walk(fn) if isinstance(n, ast.Call) and getattr(n.func, "id", None) == "run"]
        calls.sort(key=lambda c: (c.lineno, c.col_offset))
        inv = Invocation(fn.name, "")
        found[fn.name] = inv
        for deco in fn.decorator_list:
            text = ast.unparse(deco)
            base = text.split("(")[0].rsplit(".", 1)[-1]
            if base in SKIP_DECORATORS:
                inv.skip = SKIP_DECORATORS[base]
            elif base in ("skip",) or text.startswith("pytest.mark.skip("):
                inv.skip = "skipped in Snakemake's own tests"
            elif base == "parametrize":
                inv.skip = "parametrized test"
        if not calls:
            inv.skip = inv.skip or "no run() call"
            continue
        call = calls[0]
        try:
            path = call.args[0] if call.args else next(k.value for k in call.keywords if k.arg == "path")
            p = _value(path)
            if not (isinstance(p, tuple) and p[0] == "dpath"):
                raise Unsupported(ast.unparse(path))
            inv.directory = p[1]
            for k in call.keywords:
                if k.arg in (None, "path"):
                    if k.arg is None:
                        raise Unsupported("**kwargs")
                    continue
                inv.kwargs[k.arg] = _value(k.value)
        except (Unsupported, StopIteration, IndexError) as e:
            inv.skip = inv.skip or f"run() argument not replayable: {e}"
    return found


# ------------------------------------------------------------------------------------------ command line

IGNORED_KWARGS = {"cleanup", "cleanup_scripts", "check_results", "check_md5", "shouldfail", "cores", "nodes",
                  "cluster", "cluster_status", "printshellcmds", "shellcmd", "snakefile", "tmpdir"}


def _strip_shellcmd(cmd: str) -> tuple[list[str], int | None]:
    """A tests.py `shellcmd` as arguments, without the executor/cores/jobs options (ours replace them)."""
    words = shlex.split(cmd)
    if not words or words[0] != "snakemake":
        raise Unsupported(f"shellcmd {cmd!r}")
    if any(w.startswith((">", "<", "|")) or w in ("&&", ";") for w in words):
        raise Unsupported(f"shell redirection in {cmd!r}")
    out: list[str] = []
    cores = jobs = None
    i = 1
    with_value = {"-c", "--cores", "-j", "--jobs", "--executor", "-e"}
    while i < len(words):
        w = words[i]
        if w in with_value:
            if w in ("-c", "--cores"):
                cores = int(words[i + 1])
            elif w in ("-j", "--jobs"):
                jobs = int(words[i + 1])
            i += 2
            continue
        m = re.fullmatch(r"(?:-c|-j|--cores=|--jobs=)(\d+)", w)
        if m:
            if w.startswith(("-c", "--cores")):
                cores = int(m.group(1))
            else:
                jobs = int(m.group(1))
            i += 1
            continue
        if w.startswith("--cluster-generic") or w.startswith("--executor="):
            raise Unsupported(f"executor-specific options in {cmd!r}")
        if w in ("--summary", "--dag", "--list-input-changes", "--unlock"):
            raise Unsupported(f"{w} runs no workflow")
        out.append(w)
        i += 1
    # with the local executor, which these commands use, --jobs stands for --cores
    return out, cores if cores is not None else jobs


def workflow_args(inv: Invocation) -> tuple[list[str], int]:
    """The test's own arguments (targets, config, ...) and its cores."""
    kw = inv.kwargs
    cores = kw.get("cores", 3)
    args: list[str] = []
    if kw.get("executor", "local") != "local":
        raise Unsupported(f"executor={kw['executor']!r}")
    if kw.get("snakefile"):
        args += ["--snakefile", kw["snakefile"]]
    if kw.get("shellcmd"):
        extra, shell_cores = _strip_shellcmd(kw["shellcmd"])
        if shell_cores is not None:
            cores = shell_cores
        args += extra
    for key, value in kw.items():
        if key in IGNORED_KWARGS or key == "executor":
            continue
        if key == "targets":
            args += list(value)
        elif key == "config":
            args += ["--config", *(f"{k}={v}" for k, v in value.items())]
        elif key == "configfiles":
            files = [v[1].split("/", 1)[1] if isinstance(v, tuple) and v[1].startswith(inv.directory + "/")
                     else None for v in value]
            if None in files:
                raise Unsupported("configfiles outside the workflow directory")
            args += ["--configfile", *files]
        elif key == "default_resources":
            args += ["--default-resources", *value]
        elif key == "resources":
            args += ["--resources", *(f"{k}={v}" for k, v in value.items())]
        elif key == "overwrite_resources":
            args += ["--set-resources", *(f"{rule}:{k}={v}" for rule, res in value.items() for k, v in res.items())]
        elif key == "overwrite_groups":
            args += ["--groups", *(f"{k}={v}" for k, v in value.items())]
        elif key == "group_components":
            args += ["--group-components", *(f"{k}={v}" for k, v in value.items())]
        elif key in ("until", "omit_from"):
            args += ["--" + key.replace("_", "-"), *value]
        elif key == "shadow_prefix":
            args += ["--shadow-prefix", value]
        elif key == "overwrite_resource_scopes":
            args += ["--set-resource-scopes", *(f"{k}={v}" for k, v in value.items())]
        elif key == "overwrite_scatter":
            args += ["--set-scatter", *(f"{k}={v}" for k, v in value.items())]
        elif key == "scheduler_ilp_solver":
            args += ["--scheduler-ilp-solver", value]
        elif key == "max_threads":
            args += ["--max-threads", str(value)]
        elif key == "retries":
            args += ["--retries", str(value)]
        elif key == "batch":
            args += ["--batch", value]
        elif key in ("forceall", "all_temp", "benchmark_extended") and value:
            args.append("--" + key.replace("_", "-"))
        elif key in ("forceall", "all_temp", "benchmark_extended"):
            pass
        else:
            raise Unsupported(f"run() argument {key}={value!r}")
    return args, int(cores)


# the remote run's Snakemake and executor: slurm-gpu, or (--official) the official Slurm plugin in its own
# venv (make bench-venv), to show a failure is not slurm-gpu's
REMOTE = {"exe": None, "executor": "slurm-gpu"}


def command(inv: Invocation, mode: str, extra: list[str] = ()) -> list[str]:
    args, cores = workflow_args(inv)
    if mode == "local":
        return [snakemake_exe(), "--cores", str(cores), *args]
    return [REMOTE["exe"] or snakemake_exe(), "--executor", REMOTE["executor"], "--jobs", "8", "--latency-wait", "5",
            "--cores", str(cores), *extra, *args]


# ------------------------------------------------------------------------------------------ results

def _md5(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.md5(f.read().strip()).hexdigest()


def compare(results_dir: Path, workdir: Path, check_md5: bool = True) -> str | None:
    """None when the outputs match expected-results/ (tests/common.py's rules), else why not."""
    expected = [os.path.relpath(f, results_dir)
                for f in glob.iglob(os.path.join(results_dir, "**/**"), recursive=True) if not os.path.isdir(f)]
    for rel in sorted(expected):
        if rel in (".gitignore", ".gitkeep") or not os.path.isfile(results_dir / rel) or rel.endswith("_WIN"):
            continue
        target = workdir / rel
        if not target.exists():
            return f'expected file "{rel}" not produced'
        if check_md5 and _md5(str(results_dir / rel)) != _md5(str(target)):
            found = target.read_bytes().strip()[:120]
            want = (results_dir / rel).read_bytes().strip()[:120]
            return f"wrong content in {rel}: found {found!r}, expected {want!r}"
    return None


@dataclass
class Result:
    name: str
    mode: str                      # slurm-gpu | local
    status: str                    # pass | fail | xfail | xpass | skip
    seconds: float = 0.0
    reason: str = ""
    log: str = ""


def _cancel_leftovers(workdir: Path) -> None:
    """scancel the jobs whose working directory is this run's (ours alone: the directory is fresh)."""
    try:
        out = subprocess.run(["squeue", "--noheader", "--format=%i|%Z"], capture_output=True, text=True,
                             timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return
    ids = [line.split("|", 1)[0] for line in out.splitlines()
           if "|" in line and (line.split("|", 1)[1] + "/").startswith(str(workdir) + "/")]
    if ids:
        subprocess.run(["scancel", *ids], capture_output=True, timeout=30)


def _error_line(output: str) -> str:
    """The most telling line of a failed run's output."""
    lines = [l.strip() for l in output.splitlines() if l.strip()]
    # the executor's own message about a failed job (plus the log line after "End of the log:")
    for i, line in enumerate(lines):
        if line.startswith("message: ") and line not in ("message: None",) and "Error in group" not in line:
            tail = next((l for l in lines[i + 1: i + 12] if re.search(r"[Ee]rror|Exception|rror:", l)
                         and not l.startswith(("For further", "Error in rule"))), "")
            return f"{line[len('message: '):]} {tail}".strip()[:400]
    patterns = (r"^(WorkflowError|MissingOutputException|RuleException|IncompleteFilesException|"
                r"MissingInputException|AmbiguousRuleException|ChildIOException|[A-Za-z]*Exception in|.*Error:)",
                r"slurm-gpu: .*(fail|refus|error|cannot)", r"error", r"Error")
    for pat in patterns:
        for i, line in enumerate(lines):
            if re.search(pat, line) and not line.startswith(("Shutting down", "Complete log", "Exiting because")) \
                    and "At least one job did not complete" not in line:
                more = " ".join(lines[i + 1: i + 3]) if line.endswith(":") else ""
                return (line + " " + more).strip()[:400]
    return lines[-1][:400] if lines else "(no output)"


def run_one(inv: Invocation, tests_dir: Path, mode: str, timeout_s: float, extra: list[str] = (),
            keep: bool = False, log_dir: Path | None = None) -> Result:
    kw = inv.kwargs
    shouldfail = bool(kw.get("shouldfail"))
    check_results = kw.get("check_results", not shouldfail)
    check_md5 = kw.get("check_md5", True)
    try:
        argv = command(inv, mode, extra)
    except Unsupported as e:
        return Result(inv.name, mode, "skip", reason=f"not replayable: {e}")
    src = tests_dir / inv.directory
    if not (src / kw.get("snakefile", "Snakefile")).is_file():
        return Result(inv.name, mode, "skip", reason=f"{inv.directory}/{kw.get('snakefile', 'Snakefile')} missing")
    if check_results and not (src / "expected-results").is_dir():
        return Result(inv.name, mode, "skip", reason=f"{inv.directory} has no expected-results/")
    workdir = Path(tempfile.mkdtemp(prefix=f"smk-conformance-{inv.name}-{mode}-"))
    for entry in os.listdir(src):     # as common.prepare_tmpdir: copy the directory's contents
        s = src / entry
        if s.is_dir():
            shutil.copytree(s, workdir / entry)
        else:
            shutil.copy(s, workdir / entry)
    env = dict(os.environ)
    env["PATH"] = f"{VENV_BIN}:{env.get('PATH', '/usr/bin:/bin')}"
    env.pop("SNAKEMAKE_PROFILE", None)
    start = time.monotonic()
    proc = subprocess.Popen(argv, cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, errors="replace", start_new_session=True)
    timed_out = False
    try:
        output, _ = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        timed_out = True
        os.killpg(proc.pid, signal.SIGINT)          # Ctrl-C: the executor cancels its jobs
        try:
            output, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            output, _ = proc.communicate()
    seconds = time.monotonic() - start
    if mode != "local":
        _cancel_leftovers(workdir)
    header = f"$ cd {workdir} && {shlex.join(argv)}\n"
    log = ""
    if log_dir is not None:
        log_dir.mkdir(parents=True, exist_ok=True)
        (log_dir / f"{inv.name}.log").write_text(header + output)
        log = str(log_dir / f"{inv.name}.log")

    if timed_out:
        status, reason = "fail", f"timed out after {timeout_s:.0f} s: {_error_line(output)}"
    elif shouldfail and proc.returncode == 0:
        status, reason = "fail", "expected snakemake to fail, it exited 0"
    elif not shouldfail and proc.returncode != 0:
        status, reason = "fail", f"exit {proc.returncode}: {_error_line(output)}"
    else:
        mismatch = compare(src / "expected-results", workdir, check_md5) if check_results else None
        status, reason = ("fail", mismatch) if mismatch else ("pass", "failed as expected" if shouldfail else "")
    if not keep and status == "pass":
        shutil.rmtree(workdir, ignore_errors=True)
    else:   # kept for a look
        reason = f"{reason} [workdir {workdir}]"
    return Result(inv.name, mode, status, seconds, reason, log)


# ------------------------------------------------------------------------------------------ main

def selected(args_only: list[str] | None, subset: str) -> list[str]:
    if args_only:
        return list(dict.fromkeys(args_only))
    if subset == "candidates":   # every test whose first run() call can be replayed (for choosing)
        invocations = parse_tests(fetch_tests())
        return [n for n, inv in invocations.items() if not inv.skip and inv.kwargs.get("executor", "local") == "local"]
    names = SMOKE if subset == "smoke" else SELECTION + [n for n in SKIPPED if n not in SELECTION]
    return list(dict.fromkeys(names))


def run_suite(names: list[str], *, baseline: bool = False, local_only: bool = False, timeout_s: float = 300, extra: list[str] = (),
              keep: bool = False, verbose: bool = False, out=sys.stdout) -> list[tuple[Result, Result | None]]:
    tests_dir = fetch_tests()
    invocations = parse_tests(tests_dir)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    log_root = CACHE / "logs" / stamp
    rows: list[tuple[Result, Result | None]] = []
    print(f"Snakemake {snakemake_version()} test workflows from {tests_dir}; logs in {log_root}", file=out)
    print(f"{'workflow':<44} {'local' if local_only else REMOTE['executor']:<10} {'s':>6}  " + (f"{'local':<6} {'s':>5}  " if baseline else "")
          + "reason", file=out, flush=True)
    for name in names:
        inv = invocations.get(name)
        if name in SKIPPED:
            res, base = Result(name, "slurm-gpu", "skip", reason=SKIPPED[name]), None
        elif inv is None:
            res, base = Result(name, "slurm-gpu", "skip", reason="not a test of this Snakemake version's tests.py"), None
        elif inv.skip:
            res, base = Result(name, "slurm-gpu", "skip", reason=inv.skip), None
        else:
            limit = TIMEOUT_S.get(name, timeout_s)
            res = (run_one(inv, tests_dir, "local", timeout_s, (), keep, log_root / "local") if local_only else
                   run_one(inv, tests_dir, "slurm-gpu", limit, extra, keep, log_root / "slurm-gpu"))
            base = run_one(inv, tests_dir, "local", timeout_s, (), keep, log_root / "local") if baseline else None
            if name in KNOWN_FAILURES and res.status == "fail":
                res.status = "xfail"
                res.reason = f"known: {KNOWN_FAILURES[name]} | {res.reason}"
            elif name in KNOWN_FAILURES and res.status == "pass":
                res.status = "xpass"
                res.reason = "listed in known_failures.py but passes: remove it there"
        rows.append((res, base))
        local = ""
        if baseline:
            local = f"{(base.status if base else '-'):<6} {(base.seconds if base else 0):>5.1f}  "
        reason = res.reason if res.status != "pass" else ""
        if base is not None and base.status == "fail":
            reason = (reason + " | local: " + base.reason).strip(" |")
        print(f"{name:<44} {res.status:<10} {res.seconds:>6.1f}  {local}{reason}", file=out, flush=True)
        if verbose and res.status in ("fail", "xfail") and res.log:
            print("    " + "\n    ".join(Path(res.log).read_text().splitlines()[-40:]), file=out, flush=True)
    summary = {
        "snakemake": snakemake_version(), "when": stamp, "baseline": baseline,
        "rows": [{"slurm_gpu": asdict(r), "local": asdict(b) if b else None} for r, b in rows],
    }
    CACHE.mkdir(parents=True, exist_ok=True)
    (CACHE / "last-run.json").write_text(json.dumps(summary, indent=1))
    return rows


def summarize(rows: list[tuple[Result, Result | None]], total_s: float, out=sys.stdout) -> int:
    count = lambda *states: sum(r.status in states for r, _ in rows)  # noqa: E731
    passed, failed, skipped = count("pass", "xpass"), count("fail", "xfail"), count("skip")
    unexpected = [r for r, _ in rows if r.status == "fail"]
    bases = [b for _, b in rows if b is not None]
    print(file=out)
    if bases:
        print(f"local executor baseline: {sum(b.status == 'pass' for b in bases)} passed, "
              f"{sum(b.status == 'fail' for b in bases)} failed, {sum(b.status == 'skip' for b in bases)} skipped",
              file=out)
    print(f"slurm-gpu: {count('xfail')} known failures (known_failures.py), {len(unexpected)} unexpected"
          + (f": {', '.join(r.name for r in unexpected)}" if unexpected else "")
          + (f"; known failures that now pass: {', '.join(r.name for r, _ in rows if r.status == 'xpass')}"
             if count("xpass") else "") + f"; {total_s / 60:.1f} min", file=out)
    print(f"{passed} passed, {failed} failed" + (f", {skipped} skipped" if skipped else ""), file=out, flush=True)
    return 1 if unexpected else 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", nargs="+", metavar="NAME", help="these tests of Snakemake's tests.py only")
    p.add_argument("--subset", choices=("all", "smoke", "candidates"), default="all",
                   help="the whole selection, the CI smoke subset, or every replayable test of tests.py")
    p.add_argument("--baseline", action="store_true", help="also run each workflow with the local executor")
    p.add_argument("--timeout", type=float, default=300, help="seconds per workflow run (default 300)")
    p.add_argument("--extra-args", default="", help="more snakemake arguments for the slurm-gpu runs, e.g. "
                   "'--slurm-gpu-job-side-snakemake'")
    p.add_argument("--keep", action="store_true", help="keep the work directories of passing runs too")
    p.add_argument("-v", "--verbose", action="store_true", help="print the end of a failed run's output")
    p.add_argument("--list", action="store_true", help="print the selection with each test's command line")
    p.add_argument("--local-only", action="store_true", help="run with the local executor only (for choosing)")
    p.add_argument("--official", metavar="SNAKEMAKE", help="run the remote runs with this snakemake and the official "
                   "plugin (--executor slurm) instead, e.g. .venv-official/bin/snakemake")
    args = p.parse_args(argv)
    if args.official:
        REMOTE.update(exe=str(Path(args.official).absolute()), executor="slurm")
    names = selected(args.only, args.subset)
    try:
        if args.list:
            tests_dir = fetch_tests()
            invocations = parse_tests(tests_dir)
            for name in names:
                inv = invocations.get(name)
                why = SKIPPED.get(name) or (inv.skip if inv else "not in tests.py")
                try:
                    line = why and f"skip: {why}" or f"{inv.directory}: " + shlex.join(command(inv, "slurm-gpu")[1:])
                except Unsupported as e:
                    line = f"not replayable: {e}"
                print(f"{name:<44} {line}")
            return 0
        start = time.monotonic()
        rows = run_suite(names, baseline=args.baseline and not args.local_only, local_only=args.local_only, timeout_s=args.timeout, extra=shlex.split(args.extra_args),
                         keep=args.keep, verbose=args.verbose)
    except SdistUnavailable as e:
        print(f"ERROR: Snakemake's test workflows are not available: {e}", file=sys.stderr)
        return 2
    return summarize(rows, time.monotonic() - start)


if __name__ == "__main__":
    sys.exit(main())
