"""Every path of a step, in one place: batch scripts, logs and the checkpoint directory.

Wildcard values are user data: they become directory names only after being reduced to a safe
alphabet, with a hash of the exact values appended whenever that reduction lost information, so two
steps never share a directory and no value can climb out of it.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

STATE_DIR = Path(".snakemake") / "slurm-gpu"
_UNSAFE = re.compile(r"[^A-Za-z0-9._+=,-]")
_MAX_NAME = 80


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:12]


def safe_name(text: str, identity: str | None = None, force_hash: bool = False) -> str:
    """A single path component for text: readable where possible, unique always. The hash is of
    `identity` (default: text), an exact encoding of what the name stands for."""
    cleaned = _UNSAFE.sub("_", text)
    if force_hash or cleaned in ("", ".", "..") or cleaned != text or len(cleaned) > _MAX_NAME:
        return f"{cleaned[:_MAX_NAME].strip('.') or 'x'}-{_digest(identity if identity is not None else text)}"
    return cleaned


def wildcards_name(wildcards: Mapping[str, object]) -> str:
    """The step's directory name: 'k=v,k2=v2' made safe, or 'all' for a rule without wildcards."""
    if not wildcards:
        return "all"
    items = [(str(k), str(v)) for k, v in wildcards.items()]
    readable = ",".join(f"{k}={v}" for k, v in items)
    # with several wildcards, a ',' or '=' inside a value makes 'k=v,k2=v2' ambiguous
    ambiguous = len(items) > 1 and any("," in v or "=" in v for _, v in items)
    return safe_name(readable, identity=json.dumps(items), force_hash=ambiguous)


def logs_base(root: Path, log_root: Path | None = None) -> Path:
    """Where every step's log directory lives: the logdir setting, else STATE_DIR/logs."""
    if log_root is None:
        return Path(root).absolute() / STATE_DIR / "logs"
    return log_root if log_root.is_absolute() else Path(root).absolute() / log_root


@dataclass(frozen=True)
class StepPaths:
    """Paths of one step (rule + wildcards). `root` is the workflow's working directory."""

    root: Path
    rule: str
    wildcards: str  # already made safe by wildcards_name()
    checkpoint_root: Path | None = None
    log_root: Path | None = None  # the logdir setting; default STATE_DIR/logs

    @classmethod
    def of(cls, root: Path, rule: str, wildcards: Mapping[str, object],
           checkpoint_root: Path | None = None, log_root: Path | None = None) -> "StepPaths":
        return cls(Path(root).absolute(), safe_name(rule), wildcards_name(wildcards), checkpoint_root, log_root)

    @classmethod
    def of_group(cls, root: Path, name: str, members: list[tuple[str, Mapping[str, object]]],
                 checkpoint_root: Path | None = None, log_root: Path | None = None) -> "StepPaths":
        """A group job's paths: the group's name, and its members' wildcards with a hash of every
        member (rule and wildcards), since the jobs of one group over a wildcard share the name."""
        exact = sorted((rule, sorted((str(k), str(v)) for k, v in wildcards.items())) for rule, wildcards in members)
        merged: dict[str, object] = {}
        for _, wildcards in exact:
            merged.update(wildcards)
        readable = wildcards_name(merged) if merged else "group"
        return cls(Path(root).absolute(), safe_name(name),
                   safe_name(readable, identity=json.dumps(exact), force_hash=True), checkpoint_root, log_root)

    @property
    def state_dir(self) -> Path:
        return self.root / STATE_DIR

    @property
    def key(self) -> str:
        """Stable across runs and resubmissions of the same step."""
        return f"{self.rule}/{self.wildcards}"

    @property
    def logs_base(self) -> Path:
        return logs_base(self.root, self.log_root)

    @property
    def log_dir(self) -> Path:
        return self.logs_base / self.rule / self.wildcards

    def log_file(self, job_id: str) -> Path:
        return self.log_dir / f"{job_id}.log"

    @property
    def log_pattern(self) -> Path:
        """The --output pattern: Slurm fills in the job id."""
        return self.log_dir / "%j.log"

    @property
    def event_dir(self) -> Path:
        return self.state_dir / "events" / self.rule

    @property
    def event_log(self) -> Path:
        """The step's append-only event log (events.py), shared by the executor and the job."""
        return self.event_dir / f"{self.wildcards}.jsonl"

    @property
    def heartbeat_dir(self) -> Path:
        """The ranks' heartbeat files (heartbeat.py) of a distributed step; `$SLURM_GPU_HEARTBEAT_DIR`."""
        return self.state_dir / "heartbeats" / self.rule / self.wildcards

    @property
    def finished_dir(self) -> Path:
        """One empty file per job id whose step ran to a successful end (batch_script.py): a requeued
        run of that job finds it and does not run the step again."""
        return self.state_dir / "finished" / self.rule / self.wildcards

    @property
    def submission_record(self) -> Path:
        """What the step's latest job was submitted with (attach.py); gone once its verdict is in."""
        return self.state_dir / "submissions" / self.rule / f"{self.wildcards}.json"

    @property
    def script_dir(self) -> Path:
        return self.state_dir / "scripts" / self.rule / self.wildcards

    @property
    def checkpoint_dir(self) -> Path:
        """Outside every declared output, so Snakemake's pre-run deletion never reaches it."""
        base = self.checkpoint_root if self.checkpoint_root is not None else self.state_dir / "checkpoints"
        base = base if base.is_absolute() else self.root / base
        return base / self.rule / self.wildcards
