"""What a failure message shows of a step's log."""

from pathlib import Path

from snakemake_executor_plugin_slurm_gpu.logs import excerpt, read_excerpt

TRACEBACK_THEN_EPILOGUE = "\n".join(
    ["[rank1]: Traceback (most recent call last):", '[rank1]:   File "train.py", line 47, in training_step',
     "[rank1]: RuntimeError: injected failure at global_step=30",
     "srun: error: n1: task 0: Exited with exit code 1", "RuleException:",
     "CalledProcessError in file Snakefile, line 47:"] + [f"snakemake epilogue line {i}" for i in range(25)])


def test_the_real_error_is_shown_when_the_tail_is_only_snakemakes_epilogue():
    shown = excerpt(TRACEBACK_THEN_EPILOGUE, tail_lines=20)
    assert shown.startswith("error: [rank1]: RuntimeError: injected failure at global_step=30\n...\n")
    assert shown.endswith("snakemake epilogue line 24")
    assert "CalledProcessError" not in shown.splitlines()[0]


def test_an_error_already_in_the_tail_is_not_repeated():
    text = "start\nValueError: bad input\ndone"
    assert excerpt(text, tail_lines=20) == text


def test_a_log_without_errors_is_just_its_tail():
    text = "\n".join(f"line {i}" for i in range(50))
    assert excerpt(text, tail_lines=3) == "line 47\nline 48\nline 49"


def test_snakemake_wrappers_are_not_taken_for_the_cause():
    text = "\n".join(["WorkflowError:", "MissingOutputException: results/model.pt"] + ["x"] * 30)
    assert not excerpt(text, tail_lines=5).startswith("error:")


def test_reading_a_missing_log_gives_none(tmp_path: Path):
    assert read_excerpt(tmp_path / "nope.log") is None


def test_reading_only_the_end_of_a_huge_log(tmp_path: Path):
    log = tmp_path / "big.log"
    log.write_text("x" * 5_000_000 + "\nOSError: disk full\nbye\n")
    assert read_excerpt(log, tail_lines=5, max_bytes=1000).endswith("OSError: disk full\nbye")
