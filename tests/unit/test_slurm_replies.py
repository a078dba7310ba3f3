"""Odd replies from squeue, sacct and sbatch, recorded in tests/data/replies/ (one file per case): the
parsers keep every well-formed line exactly, skip what they cannot trust, and never raise, except
parse_sbatch's ValueError when no line is a job id. A skipped line leaves its job unknown for one
poll, so the last part follows such a job (and one in a state this version does not know) through
the policy with a fake clock: it is waited for, but only for Limits.missing_s.

The policy's own boundaries (decide() at 599.9 s and 600 s, a missing job found again) are pinned in
test_policy.py; this file only adds what the recorded replies feed into it."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Callable, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fake_slurm import FakeSlurm
from snakemake_executor_plugin_slurm_gpu import slurm
from snakemake_executor_plugin_slurm_gpu.policy import Act, Limits
from test_lifecycle import Step, decision
from snakemake_executor_plugin_slurm_gpu.lifecycle import Polled, StepRules
from snakemake_executor_plugin_slurm_gpu.slurm import Completed, JobRecord
from snakemake_executor_plugin_slurm_gpu.status import STATE_TABLE, Outcome, StatusQuery, classify

Parser = Callable[[str], dict[str, JobRecord]]
ASCII_ID = re.compile(r"[0-9]+")  # used with fullmatch: '$' would also accept a trailing newline


@pytest.fixture
def replies(data_dir: Path) -> Path:
    return data_dir / "replies"


def reply(directory: Path, name: str) -> str:
    # decoded the way run_subprocess decodes a command's output, so a '\r\n' or a stray byte reaches
    # the parser as it would from the real command (read_text would translate the line ends)
    return (directory / name).read_bytes().decode("utf-8", errors="replace")


# ---------------------------------------------------------------- squeue and sacct, case by case

REPLY_CASES = [
    pytest.param("squeue_truncated_line.txt", slurm.parse_squeue, {
        "5": JobRecord("5", "RUNNING", "", "", "n[1-2]"),
        "6": JobRecord("6", "PENDING", "Resources", "", ""),
        # '8|COMPLETING|No' (a field short) and '7|RUNN' (cut off mid-state) are left out
    }, id="squeue-truncated-line"),
    pytest.param("squeue_array_and_het_ids.txt", slurm.parse_squeue, {
        # an array task (50_1) is one of ours (--array lists each one so); a compressed range of
        # tasks (50_[2-5], squeue without --array) and het components (51+0) are not
        "50_1": JobRecord("50_1", "RUNNING", "", "", "n1"),
        "52": JobRecord("52", "RUNNING", "", "", "n4"),
    }, id="squeue-array-and-het-ids"),
    pytest.param("squeue_non_utf8.bin", slurm.parse_squeue, {
        "5": JobRecord("5", "RUNNING", "", "", "n\ufffd1"),
        "6": JobRecord("6", "PENDING", "Reason\ufffd", "", ""),
        # a replaced byte in the id or the state makes the line foreign: skipped, not guessed at
    }, id="squeue-non-utf8"),
    pytest.param("squeue_crlf_and_padding.bin", slurm.parse_squeue, {
        "5": JobRecord("5", "RUNNING", "", "", "n1"),
        "6": JobRecord("6", "PENDING", "Priority", "", ""),
    }, id="squeue-crlf-and-padding"),
    pytest.param("squeue_unicode_digit_ids.txt", slurm.parse_squeue, {
        # '²', '٣', '４２' are digits to str.isdigit() and to \d, never in a Slurm job id
        "43": JobRecord("43", "RUNNING", "", "", "n4"),
    }, id="squeue-unicode-digit-ids"),
    pytest.param("squeue_error_text_on_stdout.txt", slurm.parse_squeue, {}, id="squeue-error-text-on-stdout"),
    pytest.param("squeue_empty.txt", slurm.parse_squeue, {}, id="squeue-empty"),
    pytest.param("sacct_unknown_state.txt", slurm.parse_sacct, {
        # kept verbatim: what an unknown state means is status.py's business, not the parser's
        "30": JobRecord("30", "WEIRD_NEW_STATE", "", "0:0", "n1"),
        "31": JobRecord("31", "COMPLETED", "", "0:0", "n2"),
    }, id="sacct-unknown-state"),
    pytest.param("sacct_reason_with_pipe.txt", slurm.parse_sacct, {
        "40": JobRecord("40", "FAILED", "held: see ticket|1234", "1:0", "n1"),
        "41": JobRecord("41", "PENDING", "a|b|c", "0:0", "None assigned"),
        "42": JobRecord("42", "CANCELLED by 1000", "", "0:15", "n[3-4]"),
    }, id="sacct-reason-with-pipe"),
    pytest.param("sacct_steps_and_blank_lines.txt", slurm.parse_sacct, {
        # the FAILED step 60.0 must not overwrite the allocation's own COMPLETED
        "60": JobRecord("60", "COMPLETED", "", "0:0", "n1"),
        "61": JobRecord("61", "RUNNING", "", "0:0", "n2"),
    }, id="sacct-steps-and-blank-lines"),
    pytest.param("sacct_header_leaked.txt", slurm.parse_sacct, {
        "70": JobRecord("70", "TIMEOUT", "TimeLimit", "0:0", "n1"),
    }, id="sacct-header-leaked"),
    pytest.param("sacct_requeued_duplicates.txt", slurm.parse_sacct, {
        # sacct lists the runs of a requeued job oldest first: the last line is the run that matters
        "80": JobRecord("80", "RUNNING", "", "0:0", "n2"),
    }, id="sacct-requeued-duplicates"),
]


@pytest.mark.parametrize(("name", "parse", "expected"), REPLY_CASES)
def test_recorded_reply_keeps_good_lines_exactly_and_skips_the_rest(
        replies: Path, name: str, parse: Parser, expected: dict[str, JobRecord]) -> None:
    assert parse(reply(replies, name)) == expected


# ---------------------------------------------------------------- sbatch, case by case

SBATCH_CASES = [
    pytest.param("sbatch_warning_before_id.txt", "98765", id="warning-before-id"),
    pytest.param("sbatch_warning_after_id.txt", "4242", id="warning-after-id"),
    pytest.param("sbatch_federated_id.txt", "67108865", id="federated-id"),
    # fullwidth digits, what sbatch prints without --parsable, a letter in the id: none of them is an id
    pytest.param("sbatch_non_numeric_id.txt", None, id="non-numeric-id"),
    pytest.param("sbatch_error_only.txt", None, id="error-only"),
]


@pytest.mark.parametrize(("name", "job_id"), SBATCH_CASES)
def test_recorded_sbatch_reply(replies: Path, name: str, job_id: str | None) -> None:
    stdout = reply(replies, name)
    if job_id is None:
        with pytest.raises(ValueError, match="no job id") as excinfo:
            slurm.parse_sbatch(stdout)
        # the user sees what sbatch said, not just that it was wrong
        assert stdout.strip().splitlines()[-1] in str(excinfo.value)
    else:
        assert slurm.parse_sbatch(stdout) == job_id


def test_every_recorded_reply_has_a_case(replies: Path) -> None:
    # a file added to replies/ without a case here would look tested and not be
    used = {p.values[0] for p in REPLY_CASES + SBATCH_CASES}
    assert {p.name for p in replies.iterdir()} == used


# ---------------------------------------------------------------- the real runner: bytes and stdin


def test_run_subprocess_replaces_non_utf8_bytes_and_the_line_still_parses() -> None:
    done = slurm.run_subprocess(
        [sys.executable, "-c", "import sys; sys.stdout.buffer.write(b'5|RUNNING|None|n\\xff1\\n')"], 10)
    assert done.returncode == 0
    assert isinstance(done.stdout, str) and "\ufffd" in done.stdout
    assert slurm.parse_squeue(done.stdout) == {"5": JobRecord("5", "RUNNING", "", "", "n\ufffd1")}


def test_run_subprocess_decodes_the_recorded_non_utf8_reply_like_the_case_table(replies: Path) -> None:
    # the .bin case above is decoded by reply(); this shows run_subprocess does exactly the same
    cat_file = "import sys; sys.stdout.buffer.write(open(sys.argv[1], 'rb').read())"
    stdout = slurm.run(
        [sys.executable, "-c", cat_file, str(replies / "squeue_non_utf8.bin")], timeout_s=10)
    assert stdout == reply(replies, "squeue_non_utf8.bin")
    assert set(slurm.parse_squeue(stdout)) == {"5", "6"}


CAT = [sys.executable, "-c", "import sys; sys.stdout.buffer.write(sys.stdin.buffer.read())"]
SCRIPT = "#!/bin/bash\n#SBATCH --gres=gpu:1\necho 'grüße | $(not expanded)'\n"


def test_run_subprocess_hands_stdin_to_the_program() -> None:
    assert slurm.run_subprocess(CAT, 10, stdin=SCRIPT) == Completed(0, SCRIPT, "")


def test_run_with_stdin_through_the_real_runner_returns_what_the_program_read() -> None:
    assert slurm.run(CAT, timeout_s=10, stdin=SCRIPT) == SCRIPT


def test_run_subprocess_without_stdin_gives_the_program_an_empty_one() -> None:
    """Never the caller's own stdin: a Slurm command that prompts must not wait on our terminal.
    Our fd 0 is a pipe holding text for the test, so an inherited stdin would show, whatever
    stdin pytest itself was started with."""
    read_end, write_end = os.pipe()
    os.write(write_end, b"the executor's own stdin\n")
    os.close(write_end)
    saved = os.dup(0)
    try:
        os.dup2(read_end, 0)
        done = slurm.run_subprocess([sys.executable, "-c", "import sys; print(repr(sys.stdin.read()))"], 10)
    finally:
        os.dup2(saved, 0)
        os.close(saved)
        os.close(read_end)
    assert done.stdout == "''\n"


@pytest.mark.parametrize("stdin", [SCRIPT, ""], ids=["script", "empty-text"])
def test_run_hands_stdin_to_the_runner(fake_slurm: FakeSlurm, stdin: str) -> None:
    fake_slurm.answer(slurm.sbatch_argv(), stdout="4242\n")
    assert slurm.run(slurm.sbatch_argv(), runner=fake_slurm, stdin=stdin) == "4242\n"
    assert fake_slurm.stdins == [stdin]  # "" is input too, not "no input"


def test_run_without_stdin_calls_a_two_argument_runner(fake_slurm: FakeSlurm) -> None:
    # the Runner contract: the third argument only when there is input, so a runner written
    # before stdin existed keeps working
    calls: list[tuple[Sequence[str], float]] = []

    def two_argument_runner(argv: Sequence[str], timeout_s: float) -> Completed:
        calls.append((list(argv), timeout_s))
        return Completed(0, "5|RUNNING|None|n1\n", "")

    assert slurm.run(["squeue"], timeout_s=3.0, runner=two_argument_runner) == "5|RUNNING|None|n1\n"
    assert calls == [(["squeue"], 3.0)]
    fake_slurm.answer(["squeue"])
    slurm.run(["squeue"], runner=fake_slurm)
    assert fake_slurm.stdins == [None]


# ---------------------------------------------------------------- what a skipped or odd line leads to

LIMITS = Limits(settle_s=60.0, missing_s=600.0)


def test_an_unknown_state_is_waited_for_until_missing_s_then_fails_naming_it(replies: Path) -> None:
    record = slurm.parse_sacct(reply(replies, "sacct_unknown_state.txt"))["30"]
    verdict = classify(record)
    assert (verdict.outcome, verdict.state) == (Outcome.UNKNOWN, "WEIRD_NEW_STATE")
    assert classify(JobRecord("5", "WEIRD_NEW_STATE")).outcome is Outcome.UNKNOWN
    step = Step(StepRules(limits=LIMITS), job_id="30")
    assert decision(step.see(Polled(verdict, record), 1000.0)).act is Act.WAIT
    assert decision(step.see(Polled(verdict, record), 1599.9)).act is Act.WAIT
    action = decision(step.see(Polled(verdict, record), 1600.0))
    assert action.act is Act.FAIL
    assert "WEIRD_NEW_STATE" in action.reason and "does not know" in action.reason and "600 s" in action.reason


def test_a_job_whose_line_is_cut_off_then_vanishes_is_failed_after_missing_s(fake_slurm: FakeSlurm,
                                                                             replies: Path) -> None:
    """Job 7 is the truncated last line of a recorded squeue reply, then the controller forgets it
    and sacct has no line for it either: the step is failed missing_s after the first poll that
    could not read it, not polled forever."""
    query, step = StatusQuery(run=fake_slurm.run), Step(StepRules(limits=LIMITS), job_id="7")
    ids = ["5", "6", "7"]
    fake_slurm.answer(slurm.squeue_argv(ids), stdout=reply(replies, "squeue_truncated_line.txt"))
    fake_slurm.answer(slurm.sacct_argv(["7"]), stdout="")
    # later polls: only 7 is still asked about; squeue no longer knows it, sacct prints nothing
    fake_slurm.answer(slurm.squeue_argv(["7"]), stderr="slurm_load_jobs error: Invalid job id specified\n",
                      returncode=1, times=3)
    fake_slurm.answer(slurm.sacct_argv(["7"]), stdout="", times=3)

    def poll(job_ids: list[str], now: float) -> Act:
        records = query.records(job_ids)
        seen = records.get("7")
        return decision(step.see(Polled(classify(seen) if seen else None, seen), now)).act

    assert poll(ids, 1000.0) is Act.WAIT
    assert poll(["7"], 1300.0) is Act.WAIT
    assert poll(["7"], 1599.9) is Act.WAIT
    assert poll(["7"], 1600.0) is Act.FAIL
    assert fake_slurm.commands() == ["squeue", "sacct"] * 4


def test_the_failure_of_a_vanished_job_says_slurm_forgot_it() -> None:
    step = Step(StepRules(limits=LIMITS), job_id="5")
    assert step.poll("RUNNING", 1000.0).act is Act.WAIT
    # vanishing starts its own clock: the time it ran before does not count towards missing_s
    assert step.poll(None, 6000.0).act is Act.WAIT
    assert step.poll(None, 6599.9).act is Act.WAIT
    action = step.poll(None, 6600.0)
    assert action.act is Act.FAIL
    assert "neither squeue nor sacct" in action.reason and "600 s" in action.reason


# ---------------------------------------------------------------- any text at all

# the same examples on every run and machine; database=None: nothing is replayed from an earlier run
PROPERTY = settings(max_examples=300, derandomize=True, deadline=None, database=None)
# pieces of real replies and of the traps the parsers guard against, mixed into arbitrary text so
# that most examples hold delimiters, line breaks of every kind and near-valid ids and states
FRAGMENTS = st.sampled_from(["|", "\n", "\r\n", "\r", "\x85", "\u2028", "\x0b", " ", "5", "12", ";c", "_3", "+0",
                             ".batch", "RUNNING", "CANCELLED by 0", "COMPLETED+", "None", "0:15", "n[1-2]",
                             "\u00b2", "\u0663", "\uff14", "\ufffd"])
SLURMISH_TEXT = st.lists(st.one_of(st.text(), FRAGMENTS), max_size=30).map("".join)
# and line by line: fields that are near misses of a good line, joined by the delimiter
FIELDS = st.one_of(FRAGMENTS, st.text(max_size=4), st.text("0123456789\u00b2\u0663\uff14 ", min_size=1, max_size=3),
                   st.sampled_from(sorted(STATE_TABLE)))
SLURMISH_LINES = st.lists(st.lists(FIELDS, max_size=7).map("|".join), max_size=6).map("\n".join)
ANY_TEXT = st.one_of(st.text(), SLURMISH_TEXT, SLURMISH_LINES)


@PROPERTY
@given(ANY_TEXT)
def test_squeue_and_sacct_parsers_never_raise_and_key_records_by_ascii_id(text: str) -> None:
    for parse in (slurm.parse_squeue, slurm.parse_sacct):
        for key, record in parse(text).items():
            assert ASCII_ID.fullmatch(key), (parse.__name__, key)
            assert record.job_id == key


@PROPERTY
@given(ANY_TEXT)
def test_parse_sbatch_returns_an_ascii_id_or_raises_value_error(text: str) -> None:
    try:
        job_id = slurm.parse_sbatch(text)
    except ValueError:
        return
    assert ASCII_ID.fullmatch(job_id)


# one line as Slurm prints it; no line break of any kind inside a field, and no '|' outside the reason
LINE_BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
REASONS = st.text(st.characters(exclude_characters=LINE_BREAKS)).filter(lambda r: r != "None")
NODES = st.text(st.characters(exclude_categories=("Zs", "Cc", "Zl", "Zp", "Cs"), exclude_characters="|"))
STATES = st.sampled_from(sorted(STATE_TABLE) + ["CANCELLED by 1000", "COMPLETED+", "WEIRD_NEW_STATE"])
JOB_IDS = st.integers(min_value=0, max_value=2**32).map(str)


@PROPERTY
@given(junk=st.text(), job_id=JOB_IDS, state=STATES, reason=REASONS, nodes=NODES)
def test_a_well_formed_squeue_line_is_parsed_exactly_after_any_junk(
        junk: str, job_id: str, state: str, reason: str, nodes: str) -> None:
    records = slurm.parse_squeue(f"{junk}\n{job_id}|{state}|{reason}|{nodes}\n")
    assert records[job_id] == JobRecord(job_id, state, reason, "", nodes)


@PROPERTY
@given(junk=st.text(), job_id=JOB_IDS, state=STATES, reason=REASONS, nodes=NODES,
       exit_code=st.sampled_from(["0:0", "1:0", "0:15", "137:0"]))
def test_a_well_formed_sacct_line_is_parsed_exactly_after_any_junk(
        junk: str, job_id: str, state: str, reason: str, exit_code: str, nodes: str) -> None:
    records = slurm.parse_sacct(f"{junk}\n{job_id}|{state}|{reason}|{exit_code}|{nodes}\n")
    assert records[job_id] == JobRecord(job_id, state, reason, exit_code, nodes)
