"""`slurm-gpu status` and `slurm-gpu timeline` on a workflow directory: the table, its JSON, the
pictures, and clear exits when there is nothing to show or matplotlib is missing."""

from __future__ import annotations

import importlib.util
import io
import json
import re
import shutil
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from snakemake_executor_plugin_slurm_gpu import cli, events
from snakemake_executor_plugin_slurm_gpu.timeline import StepSummary, summarize

ROOT = Path(__file__).resolve().parents[2]
EVENTS_DATA = ROOT / "tests" / "data" / "events"
NOW = 1767261600.0 + 4500.0  # the fixture's clock: report/all still running


@pytest.fixture
def workflow(tmp_path: Path) -> Path:
    """A workflow directory whose .snakemake/slurm-gpu/events holds the fixture logs."""
    shutil.copytree(EVENTS_DATA, tmp_path / ".snakemake" / "slurm-gpu" / "events")
    return tmp_path


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(list(argv), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def table_rows(text: str) -> list[list[str]]:
    """The table's lines split into cells (cells are separated by two or more spaces)."""
    lines = text.split("\n\n")[0].splitlines()
    return [re.split(r" {2,}", line.strip()) for line in lines]


# ------------------------------------------------------------------ status
def test_status_shows_one_row_per_step_with_what_preemptions_cost(workflow: Path) -> None:
    code, out, err = run("status", "--directory", str(workflow), "--now", str(NOW))
    assert (code, err) == (0, "")
    assert table_rows(out) == [
        ["STEP", "STATE", "JOB", "NODES", "NODES/RUN", "RESTARTS", "RESUBMITS", "LAST CKPT", "STEPS LOST",
         "TIME LOST"],
        # (this fixture's logs are from before the started record said its node count)
        ["prepare/all", "completed", "5001", "c1", "-", "0", "0", "-", "-", "-"],
        ["train/model=resnet", "completed", "5002", "n[1-2]", "-", "2", "0", "3,000", "140", "10m 17s"],
        ["train/model=vit", "completed", "5007", "n[7-8]", "-", "1", "1", "3,000", ">=0", "12m 00s"],
        ["evaluate/model=resnet", "completed", "5010", "c2", "-", "0", "0", "-", "-", "-"],
        ["evaluate/model=vit", "completed", "5011", "c1", "-", "0", "0", "-", "-", "-"],
        ["report/all", "running", "5012", "c2", "-", "0", "0", "-", "-", "-"],
    ]
    # a preemption happened: the footnote says what the two loss columns mean
    assert "time lost:" in out and "steps lost:" in out


def test_status_columns_are_aligned(workflow: Path) -> None:
    _, out, _ = run("status", "-d", str(workflow), "--now", str(NOW))
    lines = out.split("\n\n")[0].splitlines()
    header = lines[0]
    # text columns: every cell starts where its heading does
    for name in ("STATE", "JOB", "NODES"):
        col = header.index(name)
        assert all(line[col - 2:col] == "  " and line[col] != " " for line in lines), name
    # number columns: every cell ends where its heading does
    for name in ("RESTARTS", "LAST CKPT", "TIME LOST"):
        end = header.index(name) + len(name)
        assert all(line[end - 1] != " " and line[end:end + 2] in ("", "  ") for line in lines), name


def test_status_json_round_trips_to_the_summaries(workflow: Path) -> None:
    code, out, _ = run("status", "-d", str(workflow), "--json", "--now", str(NOW))
    assert code == 0
    got = [StepSummary(**step) for step in json.loads(out)]  # a list, one object per step
    logs = {f"{p.parent.name}/{p.stem}": p for p in EVENTS_DATA.glob("*/*.jsonl")}
    assert got == [summarize(events.read(logs[s.step]), now=NOW, step=s.step) for s in got]
    assert [s.step for s in got][:3] == ["prepare/all", "train/model=resnet", "train/model=vit"]


def test_status_in_a_directory_without_event_logs_says_where_it_looked_and_exits_1(tmp_path: Path) -> None:
    for directory in (tmp_path / "missing", tmp_path):  # not there at all; there but nothing submitted yet
        code, out, err = run("status", "--directory", str(directory))
        assert code == 1 and out == ""
        assert str(directory / ".snakemake" / "slurm-gpu" / "events") in err
        assert "no event logs" in err


def test_status_defaults_to_the_current_directory(workflow: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(workflow)
    code, out, _ = run("status", "--now", str(NOW))
    assert code == 0 and "train/model=vit" in out


def test_a_step_waiting_in_the_queue_shows_slurms_reason(tmp_path: Path) -> None:
    log = tmp_path / ".snakemake" / "slurm-gpu" / "events" / "train" / "all.jsonl"
    log.parent.mkdir(parents=True)
    records = [{"ts": 100.0, "event": "submitted", "step": "train/all", "source": "executor", "job_id": "7"},
               {"ts": 101.0, "event": "pending", "step": "train/all", "source": "executor", "job_id": "7",
                "reason": "Resources"}]
    log.write_text("".join(json.dumps(r) + "\n" for r in records))
    _, out, _ = run("status", "-d", str(tmp_path), "--now", "200")
    assert table_rows(out)[1][:4] == ["train/all", "pending (Resources)", "7", "-"]
    assert "time lost:" not in out  # no preemption, no footnote


# ------------------------------------------------------------------ timeline
def test_timeline_writes_a_png_and_an_svg_into_the_state_directory_by_default(workflow: Path) -> None:
    code, out, err = run("timeline", "-d", str(workflow), "--now", str(NOW))
    state = workflow / ".snakemake" / "slurm-gpu"
    assert (code, err) == (0, "")
    assert out.splitlines() == [str(state / "timeline.png"), str(state / "timeline.svg")]
    assert (state / "timeline.png").read_bytes()[:4] == b"\x89PNG"
    assert "train/model=resnet" in (state / "timeline.svg").read_text()


def test_timeline_writes_every_output_given(workflow: Path, tmp_path: Path) -> None:
    targets = [tmp_path / "out" / "a.svg", tmp_path / "b.png"]  # a missing parent directory is made
    code, out, _ = run("timeline", "-d", str(workflow), "-o", str(targets[0]), "--output", str(targets[1]))
    assert code == 0 and out.splitlines() == [str(t) for t in targets]
    assert all(t.stat().st_size > 0 for t in targets)


def test_timeline_refuses_a_format_it_cannot_write_before_drawing_anything(workflow: Path, tmp_path: Path) -> None:
    code, out, err = run("timeline", "-d", str(workflow), "-o", str(tmp_path / "a.png"), "-o",
                         str(tmp_path / "b.pdf"))
    assert code == 2 and out == "" and "b.pdf" in err
    assert not (tmp_path / "a.png").exists()


def test_timeline_without_matplotlib_says_which_extra_to_install(workflow: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib" else real(name, *a))
    code, out, err = run("timeline", "-d", str(workflow))
    assert code == 2 and out == ""
    assert "pip install 'snakemake-executor-plugin-slurm-gpu[report]'" in err
    assert not (workflow / ".snakemake" / "slurm-gpu" / "timeline.png").exists()


def test_timeline_without_event_logs_exits_1(tmp_path: Path) -> None:
    code, _, err = run("timeline", "-d", str(tmp_path))
    assert code == 1 and "no event logs" in err


# ------------------------------------------------------------------ robustness and the command line
def test_torn_foreign_and_unreadable_logs_do_not_stop_status_or_timeline(workflow: Path) -> None:
    events_dir = workflow / ".snakemake" / "slurm-gpu" / "events"
    with open(events_dir / "train" / "model=resnet.jsonl", "a") as f:
        f.write('{"ts": 1767266000.0, "event": "future_thing", "x": [1]}\n')
        f.write('{"ts": 1767266001.0, "event": "checkpoint"}\n')  # no step, no job, no global_step
        f.write('{"ts": 1767266002.0, "event": "comp')             # torn: the writer died mid-line
    (events_dir / "odd").mkdir()
    (events_dir / "odd" / "weird.jsonl").write_bytes(b"\xff\xfe\x00garbage\n{\"event\": 5}\n")
    (events_dir / "odd" / "dir.jsonl").mkdir()  # matches the glob but cannot be read: said and skipped
    code, out, err = run("status", "-d", str(workflow), "--now", str(NOW))
    assert code == 0 and "train/model=resnet" in out and "odd/weird" in out
    assert "skipping" in err and "dir.jsonl" in err
    assert run("status", "-d", str(workflow), "--json", "--now", str(NOW))[0] == 0
    assert run("timeline", "-d", str(workflow), "-o", str(workflow / "t.png"), "--now", str(NOW))[0] == 0


def test_usage_errors_exit_2_and_help_lists_the_commands(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([]) == 2
    assert cli.main(["frobnicate"]) == 2
    assert cli.main(["--help"]) == 0
    helped = capsys.readouterr().out
    assert "status" in helped and "timeline" in helped


def test_the_console_script_is_this_main() -> None:
    # pyproject's [project.scripts] names the function tests call here
    scripts: dict[str, Any] = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    module, _, function = scripts["slurm-gpu"].partition(":")
    assert module == cli.__name__ and getattr(sys.modules[module], function) is cli.main
