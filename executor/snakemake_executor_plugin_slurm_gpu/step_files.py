"""The executor's files on the submit host: .snakemake/slurm-gpu and below (scripts, logs, event
logs, submission records) private to the user, and the step checkpoint directories."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, NamedTuple

from . import private
from .batch_script import render_batch_script
from .paths import StepPaths


def utc_stamp() -> str:
    """A file name's time stamp: sorts in time order, unique enough at microseconds."""
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")


class StepFiles:
    def __init__(self, root: Path, logdir: str | None, checkpoint_root: str | None,
                 warn: Callable[[str], None]) -> None:
        self.root = root
        self.logdir = logdir
        self.checkpoint_root = checkpoint_root
        self._warn = warn
        self._state_base_checked = False

    def state_base(self) -> Path:
        """Snakemake's .snakemake, which holds ours: made under the user's umask, so with a lax one
        anybody could rename .snakemake/slurm-gpu and put their own in its place. It is the user's
        own directory: it loses its group/other write bits (once, said in the log)."""
        base = self.root / ".snakemake"
        if not self._state_base_checked:
            self._state_base_checked = True
            base.mkdir(exist_ok=True)
            loosened = private.tighten_own_dir(base)
            if loosened is not None:
                self._warn(f"slurm-gpu: {base} was writable by group or others (mode {loosened:04o}); "
                           "removed those write bits, since slurm-gpu's scripts and checkpoints live in it")
        return base

    def private_dir(self, path: Path) -> Path:
        """Create one of the executor's directories, 0700 from .snakemake/slurm-gpu down."""
        return private.make_private_dir(path, self.state_base())

    def checkpoint_base(self) -> Path:
        """The directory the step checkpoint directories live in: taken as it is (a scratch area
        may be shared); everything below it is the executor's and private."""
        if self.checkpoint_root is None:
            return self.state_base()
        root = Path(self.checkpoint_root)
        root = root if root.is_absolute() else self.root / root
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        return root

    def prepare_checkpoint_dir(self, paths: StepPaths) -> None:
        """Refuse a checkpoint directory someone else could have written (UntrustedPath; nothing in
        it is touched, it is evidence), else create it private."""
        base = self.checkpoint_base()
        private.check_checkpoint_dir(paths.checkpoint_dir, base=base)
        private.make_private_dir(paths.checkpoint_dir, base)

    def write_script(self, paths: StepPaths, attempt: int, text: str) -> Path:
        """The record of what was submitted: the same bytes go to sbatch's standard input."""
        self.private_dir(paths.script_dir)
        if self.logdir is None:
            self.private_dir(paths.log_dir)
        else:  # the user's directory, taken as it is (like checkpoint-root); everything below is ours
            paths.logs_base.mkdir(parents=True, exist_ok=True, mode=0o700)
            private.make_private_dir(paths.log_dir, paths.logs_base)
        self.private_dir(paths.event_dir)
        return private.write_private(paths.script_dir / f"{utc_stamp()}-attempt{attempt}.sh", text)

    def write_listing(self, paths: StepPaths, name: str, lines: list[str]) -> Path:
        """A file of arguments too many for a command line, beside the step's scripts."""
        self.private_dir(paths.script_dir)
        return private.write_private(paths.script_dir / f"{utc_stamp()}-{name}", "\n".join(lines) + "\n")


class Script(NamedTuple):
    text: str
    path: Path
    direct: bool  # it runs the rule's own shell command (submitted --no-requeue)


class ScriptError(Exception):
    """A step's script could not be made: its outputs could not be prepared, or the file not written."""


def make_script(files: StepFiles, job: Any, spec: Any, paths: StepPaths, options: Any,
                step_command: Callable[[Any, StepPaths, Any], Any],
                prepare_direct: Callable[[Any], None]) -> Script:
    """The step's batch script, rendered and kept (the text, its file), whichever backend runs it.
    A step that runs its own shell command gets its outputs prepared first, as the job-side
    Snakemake would."""
    command = step_command(job, paths, spec)
    if command.direct:
        try:
            prepare_direct(job)
        except Exception as e:  # noqa: BLE001 - Snakemake's WorkflowError, ProtectedOutputException, OSError
            raise ScriptError(f"could not prepare its outputs: {e}") from None
    text = render_batch_script(spec, paths, command, options)
    try:
        return Script(text, files.write_script(paths, job.attempt, text), command.direct)
    except (OSError, private.UntrustedPath) as e:
        raise ScriptError(f"could not write its batch script: {e}") from None
