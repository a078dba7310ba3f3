"""`slurm-gpu efficiency` and the report at shutdown: per-step CPU, memory and GPU figures from sacct
output recorded on the local Slurm 22.05 cluster (tests/data/sacct_efficiency.txt), with requeued
runs, both ways of asking for memory, missing accounting, the table and the CSV.

The recorded jobs (sbatch --acctg-freq=task=1 unless said otherwise, so that MaxRSS was sampled):
    58  --cpus-per-task=2 --mem=500M, python burning ~7 s of CPU; default sampling (30 s): no MaxRSS
    59  --gpus-per-node=2 --ntasks-per-node=2 --mem-per-cpu=100M, srun sleep 3; no MaxRSS
    60  --nodes=2 --gpus-per-node=1 --mem=300M, requeued after 2 s (scontrol requeue), then completed
    61  as 58, sampled: MaxRSS 214.45M (batch) and 163.04M (step 0)
    62  --nodes=2 --gpus-per-node=2 --ntasks-per-node=2 --mem-per-cpu=100M: ReqMem '400M' (4 CPUs)
    63  as 60, sampled, requeued after ~4 s; the second run completed
    64  --begin=now+3600 --mem=100M, cancelled while pending (never ran)
"""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
from pathlib import Path
from typing import Any, Sequence

import pytest

from snakemake_executor_plugin_slurm_gpu import cli, efficiency, events, slurm

ROOT = Path(__file__).resolve().parents[2]
SACCT = (ROOT / "tests" / "data" / "sacct_efficiency.txt").read_text()
EVENTS_DATA = ROOT / "tests" / "data" / "events"
NOW = 1767261600.0 + 4500.0  # the clock of the event fixture (see test_cli.py)


class FakeSacct:
    """`run` for efficiency: answers sacct_usage_argv() with the recorded lines of the asked ids."""

    def __init__(self, text: str = SACCT) -> None:
        self.text = text
        self.calls: list[list[str]] = []

    def __call__(self, argv: Sequence[str]) -> str:
        self.calls.append(list(argv))
        jobs = next(a for a in argv if a.startswith("--jobs=")).split("=", 1)[1].split(",")
        return "".join(line + "\n" for line in self.text.splitlines()
                       if line.split("|")[0].split(".")[0] in jobs)


def submitted(step: str, job: str, ts: float, nodes: int = 1, gpus_per_node: int = 0) -> dict[str, Any]:
    return {"ts": ts, "event": "submitted", "step": step, "source": "executor", "job_id": job, "attempt": 1,
            "nodes_requested": nodes, "tasks_per_node": 1, "gpus_per_node": gpus_per_node}


def workflow_with(tmp_path: Path, steps: dict[str, list[dict[str, Any]]]) -> Path:
    for step, records in steps.items():
        rule, wildcards = step.split("/")
        log = tmp_path / ".snakemake" / "slurm-gpu" / "events" / rule / f"{wildcards}.jsonl"
        log.parent.mkdir(parents=True, exist_ok=True)
        for record in records:
            events.append(log, record)
    return tmp_path


STEPS = {
    "burn/all": [submitted("burn/all", "61", 100.0)],
    "gpu/all": [submitted("gpu/all", "62", 101.0, nodes=2, gpus_per_node=2)],
    "requeued/all": [submitted("requeued/all", "63", 102.0, nodes=2, gpus_per_node=1)],
    "never/all": [submitted("never/all", "64", 103.0)],
    "lost/all": [submitted("lost/all", "99999", 104.0, gpus_per_node=2)],
}


def by_step(found: list[efficiency.StepEfficiency]) -> dict[str, efficiency.StepEfficiency]:
    return {s.step: s for s in found}


# ------------------------------------------------------------------ parsing sacct (slurm.py)
def test_the_argv_asks_sacct_for_every_run_and_step_in_mb() -> None:
    argv = slurm.sacct_usage_argv(["61", "62"])
    assert argv == ["sacct", "--noheader", "--parsable2", "--duplicates", "--units=M", "--jobs=61,62",
                    "--format=JobIDRaw,JobID,State,ElapsedRaw,TotalCPU,AllocCPUS,ReqMem,MaxRSS,AllocTRES,NNodes"]


def test_the_recorded_output_parses_into_runs_and_their_job_steps() -> None:
    records = slurm.parse_sacct_usage(SACCT)
    assert len(records) == len(SACCT.splitlines())
    batch = next(r for r in records if (r.job_id, r.step) == ("61", "batch"))
    assert batch.max_rss_mb == pytest.approx(214.45)
    assert batch.total_cpu_s == pytest.approx(4.189)
    assert [r.state for r in records if r.job_id == "63" and not r.step] == ["REQUEUED", "COMPLETED"]
    never = next(r for r in records if r.job_id == "64")
    assert (never.state, never.elapsed_s, never.alloc_tres, never.max_rss_mb) == ("CANCELLED by 0", 0, "", None)


def test_truncated_and_foreign_lines_are_skipped() -> None:
    header = "JobIDRaw|JobID|State|ElapsedRaw|TotalCPU|AllocCPUS|ReqMem|MaxRSS|AllocTRES|NNodes"
    text = "\n".join(["61|61|COMPL", header, "", "x|x|COMPLETED|1|00:01.000|1|1M||cpu=1|1", SACCT.splitlines()[0]])
    assert [r.job_id for r in slurm.parse_sacct_usage(text)] == ["58"]


@pytest.mark.parametrize("text, seconds", [
    ("00:07.344", 7.344), ("01:02", 62.0), ("1:02:03", 3723.0), ("2-01:00:00", 176400.0), ("00:00:00", 0.0),
    ("", None), ("INVALID", None)])
def test_cpu_times_in_every_sacct_shape(text: str, seconds: float | None) -> None:
    assert slurm.parse_duration_s(text) == (pytest.approx(seconds) if seconds is not None else None)


@pytest.mark.parametrize("text, mb", [
    ("214.45M", 214.45), ("219600K", 219600 / 1024), ("2G", 2048.0), ("0", 0.0), ("", None), ("12Q", None)])
def test_sizes_in_mb(text: str, mb: float | None) -> None:
    assert slurm.parse_size_mb(text) == (pytest.approx(mb) if mb is not None else None)


@pytest.mark.parametrize("req_mem, cpus, nodes, per_node", [
    ("500M", 2, 1, 500.0),       # 22.05, --mem=500M on one node
    ("600M", 2, 2, 300.0),       # 22.05, --mem=300M on two nodes: the job's total
    ("400M", 4, 2, 200.0),       # 22.05, --mem-per-cpu=100M x 4 CPUs on two nodes
    ("500Mn", 2, 2, 500.0),      # before 21.08: per node
    ("100Mc", 4, 2, 200.0),      # before 21.08: per CPU
    ("2Gn", 1, 1, 2048.0),
    ("0", 1, 1, None), ("0n", 1, 1, None), ("", 1, 1, None)])
def test_requested_memory_per_node_from_every_reqmem_format(req_mem: str, cpus: int, nodes: int,
                                                            per_node: float | None) -> None:
    assert slurm.req_mem_per_node_mb(req_mem, cpus, nodes) == per_node


@pytest.mark.parametrize("tres, gpus", [
    ("billing=4,cpu=4,gres/gpu=4,node=2", 4), ("billing=2,cpu=2,node=1", 0), ("", 0),
    ("cpu=8,gres/gpu=8,gres/gpu:a100=8,node=1", 8), ("cpu=8,gres/gpu:a100=2,gres/gpu:v100=1", 3)])
def test_gpus_in_a_tres_list(tres: str, gpus: int) -> None:
    assert slurm.tres_gpus(tres) == gpus


# ------------------------------------------------------------------ the figures of a step
def test_cpu_step_efficiency_and_peak_memory_against_a_per_node_request() -> None:
    burn = by_step(efficiency.compute(STEPS, FakeSacct(), now=200.0))["burn/all"]
    assert (burn.jobs, burn.state, burn.elapsed_s, burn.cpus, burn.gpus) == (1, "COMPLETED", 7, 2, 0)
    assert burn.cpu_efficiency == pytest.approx(7.347 / (7 * 2))
    assert burn.mem_requested_mb == 500.0
    assert burn.mem_peak_mb == pytest.approx(214.45)  # the larger of batch (214.45) and step 0 (163.04)
    assert burn.mem_efficiency == pytest.approx(214.45 / 500)
    assert (burn.gpu_hours, burn.gpu_hours_lost, burn.notes) == (0.0, 0.0, [])


def test_gpu_step_with_memory_per_cpu() -> None:
    gpu = by_step(efficiency.compute(STEPS, FakeSacct(), now=200.0))["gpu/all"]
    assert (gpu.jobs, gpu.elapsed_s, gpu.cpus, gpu.gpus) == (1, 8, 4, 4)
    assert gpu.mem_requested_mb == 200.0  # 100M per CPU x 2 CPUs per node
    assert gpu.mem_peak_mb == pytest.approx(73.37)
    assert gpu.gpu_hours == pytest.approx(8 * 4 / 3600)
    assert gpu.cpu_efficiency == pytest.approx(9.100 / (8 * 4))


def test_a_step_never_sampled_has_no_memory_peak_rather_than_zero() -> None:
    # what Slurm 22.05 printed for a short GPU step: every MaxRSS 0 (JobAcctGatherFrequency not reached)
    text = "\n".join([
        "70|70|COMPLETED|4|00:01.000|4|300M||billing=4,cpu=4,gres/gpu=2,node=1|1",
        "70.batch|70.batch|COMPLETED|4|00:00.500|2||0|cpu=2,gres/gpu=2,mem=0,node=1|1",
        "70.0|70.0|COMPLETED|3|00:00.500|2||0|cpu=2,gres/gpu=2,mem=0,node=1|1"])
    steps = {"gpu/all": [submitted("gpu/all", "70", 100.0, gpus_per_node=2)]}
    (gpu,) = efficiency.compute(steps, FakeSacct(text), now=200.0)
    assert (gpu.mem_peak_mb, gpu.mem_efficiency) == (None, None)


def test_every_run_of_a_requeued_job_counts() -> None:
    requeued = by_step(efficiency.compute(STEPS, FakeSacct(), now=200.0))["requeued/all"]
    assert (requeued.jobs, requeued.state, requeued.elapsed_s, requeued.gpus) == (2, "COMPLETED", 6 + 8, 2)
    assert requeued.gpu_hours == pytest.approx((6 + 8) * 2 / 3600)
    assert requeued.cpu_efficiency == pytest.approx((2.224 + 2.210) / ((6 + 8) * 2))
    assert requeued.mem_requested_mb == 300.0
    assert requeued.mem_peak_mb == pytest.approx(53.29)  # over the job steps of both runs


def test_a_step_resubmitted_as_a_new_job_counts_both_jobs() -> None:
    step = "train/all"
    records = [submitted(step, "60", 1.0, nodes=2, gpus_per_node=1),
               {"ts": 2.0, "event": "resubmitted", "step": step, "source": "executor", "job_id": "60",
                "new_job_id": "63", "cause": "preemption", "why": "test"},
               submitted(step, "63", 2.1, nodes=2, gpus_per_node=1)]
    found = efficiency.compute({step: records}, FakeSacct(), now=10.0)[0]
    assert found.job_ids == ["60", "63"]
    assert (found.jobs, found.elapsed_s) == (4, 2 + 20 + 6 + 8)
    assert found.gpu_hours == pytest.approx((2 + 20 + 6 + 8) * 2 / 3600)
    assert found.mem_peak_mb == pytest.approx(53.29)  # job 60 ran with default sampling: no MaxRSS


def test_runs_that_never_started_are_not_counted() -> None:
    never = by_step(efficiency.compute(STEPS, FakeSacct(), now=200.0))["never/all"]
    assert (never.jobs, never.state, never.elapsed_s, never.cpu_efficiency, never.gpu_hours) == (
        0, "CANCELLED", 0, None, 0.0)
    assert never.mem_requested_mb == 100.0 and never.mem_peak_mb is None


def test_no_maxrss_sample_leaves_the_peak_unknown() -> None:
    found = efficiency.compute({"short/all": [submitted("short/all", "58", 1.0)]}, FakeSacct(), now=10.0)[0]
    assert found.cpu_efficiency == pytest.approx(7.344 / 14)
    assert (found.mem_requested_mb, found.mem_peak_mb, found.mem_efficiency) == (500.0, None, None)


def test_memory_asked_per_cpu_or_per_node_before_21_08() -> None:
    old = ("70|70|COMPLETED|100|01:40.000|4|1000Mc||billing=4,cpu=4,gres/gpu=2,node=2|2\n"
           "70.0|70.0|COMPLETED|100|01:40.000|4||1536M|cpu=4,gres/gpu=2,node=2|2\n"
           "71|71|COMPLETED|100|00:50.000|2|3000Mn||billing=2,cpu=2,node=1|1\n"
           "71.batch|71.batch|COMPLETED|100|00:50.000|2||750M|cpu=2,node=1|1\n")
    steps = {"percpu/all": [submitted("percpu/all", "70", 1.0)], "pernode/all": [submitted("pernode/all", "71", 2.0)]}
    found = by_step(efficiency.compute(steps, FakeSacct(old), now=10.0))
    assert found["percpu/all"].mem_requested_mb == 2000.0  # 1000 MB x 4 CPUs over 2 nodes
    assert found["percpu/all"].mem_efficiency == pytest.approx(1536 / 2000)
    assert found["percpu/all"].cpu_efficiency == pytest.approx(100 / 400)
    assert found["pernode/all"].mem_requested_mb == 3000.0
    assert found["pernode/all"].mem_efficiency == pytest.approx(0.25)


def test_a_job_unknown_to_accounting_shows_dashes_and_a_note() -> None:
    lost = by_step(efficiency.compute(STEPS, FakeSacct(), now=200.0))["lost/all"]
    assert (lost.jobs, lost.elapsed_s, lost.cpu_efficiency, lost.gpu_hours) == (None, None, None, None)
    assert lost.state == "pending" and lost.gpus == 2  # from the event log: 1 node x 2 GPUs
    assert lost.notes == ["no accounting record for job 99999 (accounting off or purged?)"]


def test_a_step_with_one_job_missing_counts_the_others_and_says_so() -> None:
    step = "part/all"
    records = [submitted(step, "99998", 1.0),
               {"ts": 2.0, "event": "resubmitted", "step": step, "source": "executor", "job_id": "99998",
                "new_job_id": "61", "cause": "timeout", "why": "test"}]
    found = efficiency.compute({step: records}, FakeSacct(), now=10.0)[0]
    assert (found.jobs, found.elapsed_s) == (1, 7)
    assert found.notes == ["no accounting record for job 99998: its use is not counted"]


def test_accounting_off_never_crashes(tmp_path: Path) -> None:
    def disabled(argv: Sequence[str]) -> str:
        raise slurm.SlurmError(argv, 1, "", "sacct: error: Slurm accounting storage is disabled\n", False)

    found = efficiency.compute(STEPS, disabled, now=200.0)
    assert all(s.jobs is None and s.gpu_hours is None for s in found)
    assert all(s.notes == ["Slurm accounting not available: sacct: error: Slurm accounting storage is disabled"]
               for s in found)
    table = efficiency.format_table(found)
    assert "accounting storage is disabled" in table
    assert "0.00 GPU-hours used" in table and "(5 steps without accounting not counted)" in table

    def not_installed(argv: Sequence[str], timeout_s: float) -> slurm.Completed:
        raise FileNotFoundError(2, "No such file or directory", argv[0])

    def missing(argv: Sequence[str]) -> str:  # sacct not on PATH: slurm.run's SlurmError
        return slurm.run(argv, runner=not_installed)

    assert all(s.notes and s.notes[0].startswith("Slurm accounting not available")
               for s in efficiency.compute(STEPS, missing, now=200.0))


def test_gpu_hours_lost_are_the_steps_gpus_times_the_time_status_counts_as_lost(tmp_path: Path) -> None:
    shutil.copytree(EVENTS_DATA, tmp_path / ".snakemake" / "slurm-gpu" / "events")
    found = by_step(efficiency.compute(efficiency.load_steps(tmp_path), FakeSacct(""), now=NOW))
    # 10m 17s and 12m 00s lost (see test_cli.py's status table), 2 nodes x 2 GPUs each
    assert found["train/model=resnet"].seconds_lost == 617.0
    assert found["train/model=resnet"].gpu_hours_lost == pytest.approx(617 * 4 / 3600)
    assert found["train/model=vit"].gpu_hours_lost == pytest.approx(720 * 4 / 3600)
    assert found["train/model=vit"].job_ids == ["5003", "5007"]
    assert found["prepare/all"].gpu_hours_lost == 0.0
    assert efficiency.totals(list(found.values())) == (0.0, pytest.approx((617 + 720) * 4 / 3600))
    rows = {line.split()[0]: line.split() for line in efficiency.format_table(list(found.values())).splitlines()
            if line.startswith("train/")}
    assert rows["train/model=resnet"][-1] == "0.69" and rows["train/model=vit"][-1] == "0.80"


def test_a_few_gpu_seconds_are_not_shown_as_zero() -> None:
    gpu = by_step(efficiency.compute(STEPS, FakeSacct(), now=200.0))["gpu/all"]
    gpu.gpu_hours = 4 * 2 / 3600
    assert efficiency.table_row(gpu)[-2:] == ("<0.01", "0.00")


def test_one_sacct_call_per_thousand_job_ids() -> None:
    steps = {f"many/i={i}": [submitted(f"many/i={i}", str(100000 + i), float(i))] for i in range(2500)}
    fake = FakeSacct("")
    found = efficiency.compute(steps, fake, now=3000.0)
    assert len(found) == 2500
    counts = [len(next(a for a in argv if a.startswith("--jobs=")).split(",")) for argv in fake.calls]
    assert counts == [1000, 1000, 500]


# ------------------------------------------------------------------ the table and the CSV
def test_the_table_has_a_row_per_step_dashes_for_the_unknown_and_a_total() -> None:
    text = efficiency.format_table(efficiency.compute(STEPS, FakeSacct(), now=200.0))
    table, total, notes = text.rstrip("\n").split("\n\n")
    rows = [re.split(r" {2,}", line.strip()) for line in table.splitlines()]
    assert rows == [
        ["STEP", "JOBS", "STATE", "ELAPSED", "CPUS", "CPU EFF", "MEM REQ", "MEM PEAK", "MEM EFF", "GPUS", "GPU-H",
         "GPU-H LOST"],
        ["burn/all", "1", "COMPLETED", "7s", "2", "52%", "500 MB", "214 MB", "43%", "0", "0.00", "0.00"],
        ["gpu/all", "1", "COMPLETED", "8s", "4", "28%", "200 MB", "73 MB", "37%", "4", "0.01", "0.00"],
        ["requeued/all", "2", "COMPLETED", "14s", "2", "16%", "300 MB", "53 MB", "18%", "2", "0.01", "0.00"],
        ["never/all", "0", "CANCELLED", "0s", "1", "-", "100 MB", "-", "-", "0", "0.00", "0.00"],
        ["lost/all", "-", "pending", "-", "-", "-", "-", "-", "-", "2", "-", "0.00"],
    ]
    # number columns end where their heading ends
    lines = table.splitlines()
    end = lines[0].index("GPU-H LOST") + len("GPU-H LOST")
    assert all(len(line) == end for line in lines)
    assert total == "total: 0.02 GPU-hours used, 0.00 GPU-hours lost to preemption " \
                    "(1 step without accounting not counted)"
    assert "GPU-H LOST" in notes and "lost/all: no accounting record for job 99999" in notes


def test_the_csv_has_the_documented_columns_and_empty_cells_for_the_unknown(tmp_path: Path) -> None:
    found = efficiency.compute(STEPS, FakeSacct(), now=200.0)
    path = efficiency.write_csv(found, tmp_path / "sub" / "eff.csv")
    rows = list(csv.DictReader(io.StringIO(path.read_text())))
    assert tuple(rows[0]) == efficiency.CSV_COLUMNS == (
        "step", "jobs", "state", "elapsed_s", "cpus", "cpu_efficiency", "mem_requested_mb", "mem_peak_mb",
        "mem_efficiency", "gpus", "gpu_hours", "gpu_hours_lost")
    burn, gpu, lost = rows[0], rows[1], rows[4]
    assert burn == {"step": "burn/all", "jobs": "1", "state": "COMPLETED", "elapsed_s": "7", "cpus": "2",
                    "cpu_efficiency": "0.5248", "mem_requested_mb": "500.0", "mem_peak_mb": "214.4",
                    "mem_efficiency": "0.4289", "gpus": "0", "gpu_hours": "0.0000", "gpu_hours_lost": "0.0000"}
    assert float(gpu["gpu_hours"]) == pytest.approx(32 / 3600, abs=1e-4)
    assert lost["jobs"] == lost["cpu_efficiency"] == lost["gpu_hours"] == "" and lost["gpus"] == "2"


# ------------------------------------------------------------------ the command and the report
def test_the_command_prints_the_table_and_writes_the_csv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    workdir = workflow_with(tmp_path / "wf", STEPS)
    fake = FakeSacct()
    monkeypatch.setattr(efficiency, "default_run", fake)
    out, err = io.StringIO(), io.StringIO()
    target = tmp_path / "eff.csv"
    assert cli.main(["efficiency", "-d", str(workdir), "--csv", str(target), "--now", "200"], out=out, err=err) == 0
    assert err.getvalue() == ""
    assert "burn/all" in out.getvalue() and "total: 0.02 GPU-hours used" in out.getvalue()
    assert len(target.read_text().splitlines()) == 1 + len(STEPS)
    assert len(fake.calls) == 1  # one sacct for every step


def test_the_command_without_event_logs_exits_1(tmp_path: Path) -> None:
    err = io.StringIO()
    assert cli.main(["efficiency", "-d", str(tmp_path)], out=io.StringIO(), err=err) == 1
    assert "no event logs" in err.getvalue()


def test_help_lists_the_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--help"]) == 0
    assert "efficiency" in capsys.readouterr().out
    assert "slurm-gpu efficiency" in (cli.__doc__ or "")


def test_write_report_as_csv_or_table(tmp_path: Path) -> None:
    workdir = workflow_with(tmp_path / "wf", STEPS)
    as_csv = efficiency.write_report(workdir, tmp_path / "r" / "efficiency.csv", run=FakeSacct(), now=200.0)
    assert as_csv == tmp_path / "r" / "efficiency.csv"
    assert as_csv.read_text().splitlines()[0] == ",".join(efficiency.CSV_COLUMNS)
    as_text = efficiency.write_report(workdir, tmp_path / "efficiency.txt", run=FakeSacct(), now=200.0)
    assert as_text.read_text().startswith("STEP ") and "total:" in as_text.read_text()
    # nothing submitted yet: a report without rows, no sacct call
    fake = FakeSacct()
    empty = efficiency.write_report(tmp_path / "empty", tmp_path / "empty.csv", run=fake)
    assert empty.read_text() == ",".join(efficiency.CSV_COLUMNS) + "\n" and fake.calls == []


def test_a_torn_event_log_line_does_not_stop_the_report(tmp_path: Path) -> None:
    workdir = workflow_with(tmp_path, {"burn/all": STEPS["burn/all"]})
    log = workdir / ".snakemake" / "slurm-gpu" / "events" / "burn" / "all.jsonl"
    with open(log, "a") as f:
        f.write(json.dumps({"ts": 5, "event": "completed"})[:10])
    found = efficiency.compute(efficiency.load_steps(workdir), FakeSacct(), now=200.0)
    assert [s.jobs for s in found] == [1]
