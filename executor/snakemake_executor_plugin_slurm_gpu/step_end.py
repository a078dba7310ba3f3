"""What happens at a step's verdict, whichever backend ran it: the failure message (reason, how the
ranks ended, the log and its end) and the clean-up after a success."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from . import checkpoints, housekeeping, logs
from .paths import StepPaths
from .settings import ExecutorSettings

LOG_TAIL_LINES = 20


def failure_message(subject: str, reason: str, log: Path, ranks_ended: str | None = None) -> str:
    """`subject`: "step train/all, Slurm job 12" or the like."""
    message = f"slurm-gpu: {subject}: {reason}.\n"
    if ranks_ended:
        message += f"How the ranks ended: {ranks_ended}.\n"
    message += f"Log: {log}\n"
    shown = logs.read_excerpt(log, LOG_TAIL_LINES)
    if shown is None:
        return message + "(the log does not exist: the job may never have started)\n"
    return message + f"End of the log:\n{shown}\n"


def after_success(paths: StepPaths, resumable: bool, settings: ExecutorSettings, logger: Any) -> None:
    """A resumable step's checkpoints cleaned as checkpoint-cleanup says; a step that succeeded
    leaves its event log only (keep-successful-logs keeps the rest)."""
    if resumable:
        try:
            removed = checkpoints.cleanup_after_success(paths.checkpoint_dir, settings.checkpoint_cleanup)
        except OSError as e:
            logger.warning(f"slurm-gpu: step {paths.key}: could not clean {paths.checkpoint_dir}: {e}")
        else:
            if removed:
                logger.info(f"slurm-gpu: step {paths.key} done; checkpoint cleanup "
                            f"'{settings.checkpoint_cleanup}' removed {len(removed)} file(s)")
    if not settings.keep_successful_logs:
        housekeeping.remove_step_files(paths)
