"""What a failure message shows of a step's log: the tail, and the error that caused it when the
tail is only the inner Snakemake's own epilogue."""

from __future__ import annotations

import re
from pathlib import Path

# "RuntimeError: boom", "[rank1]: torch.OutOfMemoryError: ...": a Python exception line, not the
# generic wrappers Snakemake prints after any failing shell command
_ERROR_LINE = re.compile(r"^(?:\[rank\d+\]:\s*)?(?:[A-Za-z_][\w.]*\.)?([A-Z]\w*(?:Error|Exception|Interrupt|Exit))\b:?.*")
_WRAPPERS = {"RuleException", "CalledProcessError", "WorkflowError", "MissingOutputException"}


def excerpt(text: str, tail_lines: int = 20) -> str:
    """The last `tail_lines` lines, preceded by the last real exception line if it is not among them."""
    lines = text.splitlines()
    tail = lines[-tail_lines:]
    cause = None
    for line in reversed(lines):
        match = _ERROR_LINE.match(line.strip())
        if match and match.group(1) not in _WRAPPERS:
            cause = line.strip()
            break
    shown = "\n".join(tail)
    if cause and cause not in tail:
        return f"error: {cause}\n...\n{shown}"
    return shown


def read_tail(path: Path, max_bytes: int = 1 << 20) -> str:
    """The last `max_bytes` of a log file as text ("" if it cannot be read)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def read_excerpt(path: Path, tail_lines: int = 20, max_bytes: int = 1 << 20) -> str | None:
    """excerpt() of the end of a log file (at most `max_bytes` read), or None if it does not exist."""
    if not path.exists():
        return None
    return excerpt(read_tail(path, max_bytes), tail_lines)
