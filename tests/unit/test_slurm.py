"""The one door to Slurm: argv builders, run(), and the parsers of what Slurm prints. Slurm itself is
never called here: run() gets a FakeSlurm runner, the parsers get recorded output from tests/data/."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from fake_slurm import FakeSlurm
from snakemake_executor_plugin_slurm_gpu import slurm
from snakemake_executor_plugin_slurm_gpu.slurm import JobRecord, SlurmError

# ---------------------------------------------------------------- sbatch


@pytest.mark.parametrize(
    ("stdout", "job_id"),
    [
        ("123\n", "123"),
        ("123", "123"),
        ("123;cluster\n", "123"),
        ("123;my-cluster.2\n", "123"),
        ("  789  \n\n", "789"),
        ("sbatch: warning: something odd\n456\n", "456"),
    ],
)
def test_parse_sbatch(stdout: str, job_id: str) -> None:
    assert slurm.parse_sbatch(stdout) == job_id


def test_parse_sbatch_after_recorded_warnings(data_dir: Path) -> None:
    assert slurm.parse_sbatch((data_dir / "sbatch_warnings.txt").read_text()) == "4242"


@pytest.mark.parametrize(
    "stdout",
    ["", "\n", "sbatch: error: Batch job submission failed\n", "Submitted batch job 123\n", "12a\n", "-1\n"],
)
def test_parse_sbatch_without_an_id(stdout: str) -> None:
    with pytest.raises(ValueError, match="no job id"):
        slurm.parse_sbatch(stdout)


# ---------------------------------------------------------------- squeue / sacct


def test_parse_squeue_recorded(data_dir: Path) -> None:
    records = slurm.parse_squeue((data_dir / "squeue_mixed.txt").read_text())
    assert records == {
        "5": JobRecord("5", "RUNNING", "", "", "n[1-2]"),
        "6": JobRecord("6", "PENDING", "Resources", "", ""),
        "7": JobRecord("7", "COMPLETING", "", "", "n3"),
        "8": JobRecord("8", "PENDING", "launch failed requeued held", "", ""),
        "9": JobRecord("9", "REQUEUE_HOLD", "JobHeldAdmin", "", ""),
        "12_3": JobRecord("12_3", "RUNNING", "", "", "n4"),  # a task of job array 12 (squeue --array)
        "13": JobRecord("13", "TIMEOUT", "TimeLimit", "", "n2"),
    }


@pytest.mark.parametrize(
    "line",
    ["10|RUN", "12_[3-9]|PENDING|None|", "abc|RUNNING|None|n1", "11||None|n1", "", "12|running|None|n1",
     "\u00b2|RUNNING|None|n1", "squeue: error: Invalid job id specified"],
    ids=["truncated", "compressed-array-tasks", "non-numeric-id", "empty-state", "blank", "lower-case-state",
         "superscript-digit-id", "error-text"],
)
def test_parse_squeue_skips_lines_it_cannot_trust(line: str) -> None:
    assert slurm.parse_squeue(line + "\n") == {}


def test_parse_squeue_keeps_a_reason_that_holds_the_delimiter() -> None:
    # the reason is the one free-text field: a '|' in it must not shift the node list into it
    assert slurm.parse_squeue("5|PENDING|held by admin|see ticket|n[1-2]\n") == {
        "5": JobRecord("5", "PENDING", "held by admin|see ticket", "", "n[1-2]")}


def test_parse_sacct_keeps_a_reason_that_holds_the_delimiter() -> None:
    assert slurm.parse_sacct("7|FAILED|a|b|1:0|n1\n") == {"7": JobRecord("7", "FAILED", "a|b", "1:0", "n1")}


def test_parse_sacct_recorded(data_dir: Path) -> None:
    records = slurm.parse_sacct((data_dir / "sacct_mixed.txt").read_text())
    assert records == {
        "7": JobRecord("7", "CANCELLED by 0", "", "0:15", "n1"),
        "14": JobRecord("14", "COMPLETED", "", "0:0", "n2"),
        "15": JobRecord("15", "FAILED", "NonZeroExitCode", "1:0", "n[1-2]"),
        "16": JobRecord("16", "TIMEOUT", "TimeLimit", "0:0", "n1"),
        "17": JobRecord("17", "OUT_OF_MEMORY", "OutOfMemory", "0:125", "n1"),
        "18": JobRecord("18", "NODE_FAIL", "NodeDown", "1:0", "n2"),
        "19": JobRecord("19", "PREEMPTED", "", "0:0", "n1"),
        "20": JobRecord("20", "PENDING", "BeginTime", "0:0", "None assigned"),
    }


@pytest.mark.parametrize(
    "line",
    ["21|COMPL", "22|RUNNING|None|0:0", "20.batch|COMPLETED||0:0|n1", "|FAILED|None|1:0|n1", "x|FAILED|None|1:0|n1"],
    ids=["truncated", "missing-field", "step-line", "empty-id", "non-numeric-id"],
)
def test_parse_sacct_skips_lines_it_cannot_trust(line: str) -> None:
    assert slurm.parse_sacct(line + "\n") == {}


def test_parse_sinfo_recorded(data_dir: Path) -> None:
    gpus, default = slurm.parse_sinfo((data_dir / "sinfo_mixed.txt").read_text())
    assert default == "debug"
    assert gpus == {"debug": 2, "gpu": 4, "cpu": 0, "mixed": 2, "disk": 3, "twotypes": 4, "mig": 7}


@pytest.mark.parametrize(
    ("stdout", "gpus", "default"),
    [
        ("debug*|gpu:2\n", {"debug": 2}, "debug"),
        ("gpu|gpu:a100:4(S:0-1)\n", {"gpu": 4}, None),
        ("cpu|(null)\n", {"cpu": 0}, None),
        ("mixed|gpu:2,tmpdisk:100\n", {"mixed": 2}, None),
        ("mixed|tmpdisk:100,gpu:2\n", {"mixed": 2}, None),
        ("p|gpu_mem:40\n", {"p": 0}, None),
        ("p|shard:8,gpu:1\n", {"p": 1}, None),
        ("", {}, None),
    ],
)
def test_parse_sinfo(stdout: str, gpus: dict[str, int], default: str | None) -> None:
    assert slurm.parse_sinfo(stdout) == (gpus, default)


# ---------------------------------------------------------------- argv builders (no shell anywhere)


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (slurm.sbatch_argv(), ["sbatch", "--parsable"]),
        (slurm.squeue_argv(["5", "6"]),
         ["squeue", "--noheader", "--states=all", "--array", "--jobs=5,6", "--format=%i|%T|%r|%N"]),
        (slurm.squeue_argv(iter(["7"])),
         ["squeue", "--noheader", "--states=all", "--array", "--jobs=7", "--format=%i|%T|%r|%N"]),
        (slurm.sacct_argv(["7", "8"]),
         ["sacct", "--noheader", "--parsable2", "-X", "--jobs=7,8",
          "--format=JobID,State,Reason,ExitCode,NodeList"]),
        (slurm.scancel_argv(["5", "6"]), ["scancel", "5", "6"]),
        (slurm.sinfo_argv(), ["sinfo", "--noheader", "--format=%P|%G|%c|%m"]),
    ],
    ids=["sbatch", "squeue", "squeue-iterable", "sacct", "scancel", "sinfo"],
)
def test_argv_builders(argv: list[str], expected: list[str]) -> None:
    assert argv == expected
    assert all(isinstance(word, str) for word in argv)


# ---------------------------------------------------------------- run()


def test_run_returns_stdout_and_passes_the_timeout(fake_slurm: FakeSlurm) -> None:
    fake_slurm.answer(["sinfo", "--noheader"], stdout="debug*|gpu:2\n")
    assert slurm.run(["sinfo", "--noheader"], timeout_s=7.5, runner=fake_slurm) == "debug*|gpu:2\n"
    assert fake_slurm.calls == [(["sinfo", "--noheader"], 7.5)]


def test_run_nonzero_exit_raises_with_argv_code_and_stderr(fake_slurm: FakeSlurm) -> None:
    argv = ["sbatch", "--parsable", "/w/s.sh"]
    fake_slurm.answer(argv, stdout="", returncode=1,
                      stderr="sbatch: error: Batch job submission failed: Invalid partition name specified\n")
    with pytest.raises(SlurmError) as excinfo:
        slurm.run(argv, runner=fake_slurm)
    error = excinfo.value
    assert error.argv == argv
    assert error.returncode == 1
    assert "Invalid partition name specified" in error.stderr
    assert error.transient is False
    assert str(error) == ("sbatch --parsable /w/s.sh exited 1: "
                          "sbatch: error: Batch job submission failed: Invalid partition name specified")


@pytest.mark.parametrize(
    ("stderr", "transient"),
    [
        ("sbatch: error: Batch job submission failed: Socket timed out on send/recv operation", True),
        ("squeue: error: Unable to contact slurm controller (connect failure)", True),
        ("slurm_load_jobs error: Unable to contact slurm controller (connect failure)", True),
        ("sacct: error: slurm_persist_conn_open_without_init: failed to open persistent connection to host:"
         "localhost:6819: Connection refused", True),
        ("sbatch: error: Batch job submission failed: Zero Bytes were transmitted or received", True),
        ("sbatch: error: Batch job submission failed: Invalid partition name specified", False),
        ("sbatch: error: Batch job submission failed: Requested node configuration is not available", False),
        ("sbatch: error: Batch job submission failed: Invalid account or account/partition combination specified",
         False),
        ("squeue: error: Invalid job id specified", False),
        ("sacct: error: Slurm accounting storage is disabled", False),
        ("", False),
    ],
)
def test_run_transient_errors(fake_slurm: FakeSlurm, stderr: str, transient: bool) -> None:
    fake_slurm.answer(["squeue"], stderr=stderr, returncode=1)
    with pytest.raises(SlurmError) as excinfo:
        slurm.run(["squeue"], runner=fake_slurm)
    assert excinfo.value.transient is transient


def test_run_transient_message_on_stdout(fake_slurm: FakeSlurm) -> None:
    fake_slurm.answer(["squeue"], stdout="Socket timed out on send/recv operation\n", returncode=1)
    with pytest.raises(SlurmError) as excinfo:
        slurm.run(["squeue"], runner=fake_slurm)
    assert excinfo.value.transient
    assert "Socket timed out" in str(excinfo.value)


def test_run_error_without_output(fake_slurm: FakeSlurm) -> None:
    fake_slurm.answer(["scancel", "5"], returncode=2)
    with pytest.raises(SlurmError, match=r"^scancel 5 exited 2: \(no output\)$"):
        slurm.run(["scancel", "5"], runner=fake_slurm)


def test_run_timeout_is_transient(fake_slurm: FakeSlurm) -> None:
    argv = ["squeue", "--noheader"]
    fake_slurm.fail_with(argv, subprocess.TimeoutExpired(argv, 30))
    with pytest.raises(SlurmError) as excinfo:
        slurm.run(argv, runner=fake_slurm)
    error = excinfo.value
    assert error.transient is True
    assert error.returncode is None
    assert error.argv == argv
    assert "squeue --noheader timed out" in str(error)


def test_run_timeout_keeps_partial_output_as_text(fake_slurm: FakeSlurm) -> None:
    argv = ["squeue", "--noheader"]
    fake_slurm.fail_with(argv, subprocess.TimeoutExpired(argv, 30, output=b"5|RUN", stderr=b"slow controller"))
    with pytest.raises(SlurmError) as excinfo:
        slurm.run(argv, runner=fake_slurm)
    assert (excinfo.value.stdout, excinfo.value.stderr) == ("5|RUN", "slow controller")


def test_run_missing_binary_is_not_transient(fake_slurm: FakeSlurm) -> None:
    fake_slurm.fail_with(["sbatch", "x.sh"], FileNotFoundError(2, "No such file or directory", "sbatch"))
    with pytest.raises(SlurmError) as excinfo:
        slurm.run(["sbatch", "x.sh"], runner=fake_slurm)
    error = excinfo.value
    assert error.transient is False
    assert error.returncode == 127
    assert "sbatch not found on PATH" in error.stderr


def test_is_no_such_job() -> None:
    assert slurm.is_no_such_job(SlurmError(["squeue"], 1, "", "slurm_load_jobs error: Invalid job id specified\n",
                                           False))
    assert not slurm.is_no_such_job(SlurmError(["squeue"], 1, "", "Unable to contact slurm controller", True))


def test_fake_slurm_refuses_unscripted_calls(fake_slurm: FakeSlurm) -> None:
    fake_slurm.answer(["squeue", "--jobs=1"], stdout="")
    with pytest.raises(AssertionError, match="unexpected Slurm call"):
        slurm.run(["squeue", "--jobs=2"], runner=fake_slurm)


# ---------------------------------------------------------------- the real runner, on a harmless program


def test_run_subprocess_uses_no_shell() -> None:
    words = ["$(echo hi)", "`id`", "a;b", "*", "'q'"]
    done = slurm.run_subprocess([sys.executable, "-c", "import sys; print('\\n'.join(sys.argv[1:]))", *words], 10)
    assert done.returncode == 0
    assert done.stdout.splitlines() == words


def test_run_subprocess_timeout_reaches_run_as_transient() -> None:
    argv = [sys.executable, "-c", "import time; time.sleep(10)"]
    with pytest.raises(SlurmError) as excinfo:
        slurm.run(argv, timeout_s=0.2)
    assert excinfo.value.transient and excinfo.value.returncode is None


def test_run_subprocess_missing_binary_reaches_run() -> None:
    with pytest.raises(SlurmError) as excinfo:
        slurm.run(["/nonexistent/sbatch-for-tests", "--parsable"], timeout_s=5)
    assert excinfo.value.returncode == 127 and not excinfo.value.transient


def test_unit_tests_cannot_reach_real_slurm() -> None:
    # the autouse guard in conftest.py: the default runner would otherwise run the real sinfo
    with pytest.raises(AssertionError, match="tried to run Slurm"):
        slurm.run(slurm.sinfo_argv())


def test_parse_sinfo_sizes() -> None:
    listing = "debug*|gpu:2|4|4000\nurgent|gpu:2|4+|4000\nbig|(null)|64|512000\nbig|(null)|32|1024000\nCLUSTER: x\n"
    assert slurm.parse_sinfo_sizes(listing) == {"debug": (4, 4000), "urgent": (None, 4000), "big": (64, 1024000)}
    assert slurm.parse_sinfo(listing) == ({"debug": 2, "urgent": 2, "big": 0}, "debug")
