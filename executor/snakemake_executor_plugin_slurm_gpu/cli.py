"""`slurm-gpu`: what happened to a workflow's steps, from the event logs the executor and the jobs
wrote under `<workflow>/.snakemake/slurm-gpu/events/`.

    slurm-gpu status     [--directory DIR] [--json]     a table of steps (or a JSON list of StepSummary)
    slurm-gpu timeline   [--directory DIR] [-o OUT ...] a picture (.png / .svg); needs matplotlib
    slurm-gpu efficiency [--directory DIR] [--csv PATH] what each step used of its CPUs, memory and
                                                       GPUs, GPU-hours lost to preemption (asks sacct)
    slurm-gpu explain    [--directory DIR] [-- SNAKEMAKE_ARGS]  the batch scripts a run would submit

Exit status: 0 done; 1 no event logs in DIR; 2 a usage error, or matplotlib missing for `timeline`.

Cheap to import: matplotlib is loaded only by `timeline`, inside timeline.render().
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Sequence, TextIO

from . import efficiency, events, timeline
from .paths import STATE_DIR

# the executor's last words in explain mode (executor.Executor._explain)
EXPLAINED = "slurm-gpu: explain: printed the batch scripts"

REPORT_EXTRA = "pip install 'snakemake-executor-plugin-slurm-gpu[report]'"
PICTURE_SUFFIXES = (".png", ".svg")


class NoEventLogs(Exception):
    """DIR has no step event logs: not a workflow directory, or nothing was submitted yet."""

    def __init__(self, where: Path) -> None:
        super().__init__(f"no event logs under {where} (is {where.parents[2]} the workflow's directory? "
                         "Event logs appear once slurm-gpu has submitted a step; use --directory DIR)")


def events_dir(directory: Path) -> Path:
    return directory / STATE_DIR / "events"


def load_steps(directory: Path, err: TextIO | None = None) -> dict[str, list[dict[str, Any]]]:
    """{"rule/wildcards": its events} for every step log under the workflow `directory`. A log that
    cannot be read is said on `err` and skipped; NoEventLogs when there is none at all."""
    if not any(events.step_logs(directory / STATE_DIR)):
        raise NoEventLogs(events_dir(directory.absolute()))
    return events.read_steps(directory / STATE_DIR,
                             lambda log, e: print(f"slurm-gpu: skipping {log}: {e}", file=err or sys.stderr))


summaries = timeline.summaries


# ------------------------------------------------------------------ status
STATUS_COLUMNS = ("STEP", "STATE", "JOB", "NODES", "NODES/RUN", "RESTARTS", "RESUBMITS", "LAST CKPT", "STEPS LOST",
                  "TIME LOST")
_RIGHT_ALIGNED = {"RESTARTS", "RESUBMITS", "LAST CKPT", "STEPS LOST", "TIME LOST"}


def status_row(s: timeline.StepSummary) -> tuple[str, ...]:
    state = s.state + (f" ({s.pending_reason})" if s.pending_reason else "")
    # the node count of every run, oldest first: an elastic step's shows where it ran smaller
    per_run = ",".join(str(n) if n else "?" for n in s.node_counts) if any(s.node_counts) else "-"
    return (s.step, state, s.job_id or "-", s.nodes or "-", per_run, str(s.restarts), str(s.resubmissions),
            f"{s.last_checkpoint_step:,}" if s.last_checkpoint_step is not None else "-",
            timeline.format_steps_lost(s), timeline.format_duration(s.seconds_lost) if s.preemptions else "-")


def format_table(rows: Sequence[Sequence[str]], header: Sequence[str] = STATUS_COLUMNS) -> str:
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]

    def line(row: Sequence[str]) -> str:
        cells = [str(cell).rjust(width) if name in _RIGHT_ALIGNED else str(cell).ljust(width)
                 for cell, width, name in zip(row, widths, header)]
        return "  ".join(cells).rstrip()

    return "\n".join([line(header)] + [line(row) for row in rows])


def cmd_status(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    now = args.now if args.now is not None else time.time()
    found = summaries(load_steps(args.directory, err), now)
    if args.json:
        json.dump([asdict(s) for s in found], out, indent=2)  # one object per step, as in the table
        out.write("\n")
        return 0
    out.write(format_table([status_row(s) for s in found]) + "\n")
    if any(s.preemptions for s in found):
        out.write("\ntime lost: waiting in the queue after a preemption plus the run time since its last checkpoint;"
                  "\nsteps lost: training steps redone after resuming (>= : at least, after a hard stop)\n")
    return 0


# ------------------------------------------------------------------ timeline
def cmd_timeline(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    targets = [Path(p) for p in args.output] if args.output else \
        [args.directory / STATE_DIR / f"timeline{suffix}" for suffix in PICTURE_SUFFIXES]
    wrong = [str(p) for p in targets if p.suffix.lower() not in PICTURE_SUFFIXES]
    if wrong:
        print(f"slurm-gpu timeline: the picture is written as .png or .svg, not {', '.join(wrong)}", file=err)
        return 2
    if importlib.util.find_spec("matplotlib") is None:
        print(f"slurm-gpu timeline: drawing the timeline needs matplotlib: {REPORT_EXTRA}", file=err)
        return 2
    steps = load_steps(args.directory, err)
    model = timeline.build_timeline(steps, now=args.now if args.now is not None else time.time())
    for target in targets:
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            timeline.render(model, target)
        except ImportError as e:  # matplotlib present but broken (a missing compiled part)
            print(f"slurm-gpu timeline: matplotlib could not be loaded ({e}): {REPORT_EXTRA}", file=err)
            return 2
        print(target, file=out)
    return 0


# ------------------------------------------------------------------ efficiency
def cmd_efficiency(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    steps = load_steps(args.directory, err)
    found = efficiency.compute(steps, run=efficiency.default_run,
                               now=args.now if args.now is not None else time.time())
    out.write(efficiency.format_table(found))
    if args.csv is not None:
        try:
            print(efficiency.write_csv(found, args.csv), file=out)
        except OSError as e:
            print(f"slurm-gpu efficiency: cannot write {args.csv}: {e}", file=err)
            return 2
    return 0


def cmd_explain(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Snakemake with --slurm-gpu-explain: the batch script of every step the run would submit, and
    nothing submitted. Snakemake ends such a run with an error; here that is the expected end."""
    extra = list(args.snakemake_args)
    if extra[:1] == ["--"]:
        extra = extra[1:]
    argv = [sys.executable, "-m", "snakemake", "--jobs", "1", *extra, "--executor", "slurm-gpu",
            "--slurm-gpu-explain"]
    done = subprocess.run(argv, cwd=args.directory, capture_output=True, text=True, check=False)
    out.write(done.stdout)
    if done.returncode != 0 and EXPLAINED in done.stderr:
        return 0
    err.write(done.stderr)
    return done.returncode or 1


# ------------------------------------------------------------------ the command line
# Each sub-command: (help, add its arguments, run it).
Command = tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace, TextIO, TextIO], int]]


def _status_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the step summaries as JSON")


def _timeline_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", "--output", action="append", metavar="OUT",
                        help="write the picture here (.png or .svg; repeatable; default: "
                             f"DIR/{STATE_DIR}/timeline.png and .svg)")


def _efficiency_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--csv", type=Path, metavar="PATH",
                        help="also write the figures as CSV (columns: " + ", ".join(efficiency.CSV_COLUMNS) + ")")


def _explain_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("snakemake_args", nargs=argparse.REMAINDER, metavar="-- SNAKEMAKE_ARGS",
                        help="what you would pass to snakemake (targets, --profile, --config, ...)")


COMMANDS: dict[str, Command] = {
    "efficiency": ("what each step's Slurm jobs used of their CPUs, memory and GPUs (from sacct), "
                   "and GPU-hours lost to preemption", _efficiency_arguments, cmd_efficiency),
    "explain": ("print the batch script every step of the run would get, without submitting anything",
                _explain_arguments, cmd_explain),
    "status": ("a table of the workflow's steps: state, job, restarts, what preemptions cost",
               _status_arguments, cmd_status),
    "timeline": ("draw every step's runs, waits, signals and checkpoints over time (needs matplotlib)",
                 _timeline_arguments, cmd_timeline),
}


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-d", "--directory", type=Path, default=Path("."), metavar="DIR",
                        help="the workflow's working directory (default: the current one)")
    # the clock for "still running" and "still waiting" (epoch seconds): reproducible reports and tests
    common.add_argument("--now", type=float, default=None, help=argparse.SUPPRESS)
    parser = argparse.ArgumentParser(prog="slurm-gpu", description="What slurm-gpu recorded about a workflow's "
                                     "steps (from DIR/.snakemake/slurm-gpu/events).")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (help_text, add_arguments, _) in COMMANDS.items():
        add_arguments(sub.add_parser(name, parents=[common], help=help_text, description=help_text))
    return parser


def main(argv: list[str] | None = None, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # --help, or a usage error argparse already printed
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    try:
        return COMMANDS[args.command][2](args, out, err)
    except NoEventLogs as e:
        print(f"slurm-gpu {args.command}: {e}", file=err)
        return 1


if __name__ == "__main__":
    sys.exit(main())
