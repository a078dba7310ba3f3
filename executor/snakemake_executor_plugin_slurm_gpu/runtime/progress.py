"""This rank's heartbeat (heartbeat.py): a daemon thread that rewrites the rank's file every few
seconds with how far the rank got and where its main thread is. The training loop only bumps a
counter (`advance`), so a step costs a few attribute writes, no I/O.

Torch-free: the Lightning observer and plain torch's Session both use it.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from .. import heartbeat
from ..contract import job_id

_STACK_FRAMES = 8


def _main_stack(main_ident: int | None) -> list[str]:
    """The main thread's innermost frames: where a rank that stopped advancing waits."""
    frame = sys._current_frames().get(main_ident) if main_ident is not None else None
    if frame is None:
        return []
    out = []
    for entry in traceback.extract_stack(frame)[-_STACK_FRAMES:]:
        short = "/".join(Path(entry.filename).parts[-2:])
        out.append(f"{short}:{entry.lineno} in {entry.name}")
    return out


class Progress:
    """Counts this rank's batches and beats while started. Safe to start again after done()."""

    def __init__(self, rank: int, directory: str | Path | None = None, interval_s: float | None = None) -> None:
        target = directory if directory is not None else os.environ.get(heartbeat.DIR_ENV)
        self.directory = Path(target) if target else None
        self.interval_s = interval_s if interval_s is not None else heartbeat.interval_s()
        self.rank = rank
        self.progress = 0
        self.global_step: int | None = None
        self.progress_ts: float | None = None
        self.max_gap_s = 0.0
        self._state = "running"
        self._main = threading.main_thread().ident
        self._halt = threading.Event()
        self._thread: threading.Thread | None = None
        self._base = {"rank": rank, "node": os.environ.get("SLURMD_NODENAME") or socket.gethostname(),
                      "pid": os.getpid(), "job_id": job_id(),
                      "restart": int(os.environ.get("SLURM_RESTART_COUNT") or 0)}

    @property
    def enabled(self) -> bool:
        return self.directory is not None

    def start(self) -> None:
        if not self.enabled or (self._thread is not None and self._thread.is_alive()):
            return
        self._state = "running"
        self._halt.clear()
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError:
            self.directory = None  # nowhere to beat: the watchdog then has nothing to judge by
            return
        self._thread = threading.Thread(target=self._run, name="slurm-gpu-heartbeat", daemon=True)
        self._thread.start()

    def advance(self, global_step: int | None = None) -> None:
        now = time.time()
        if self.progress_ts is not None:
            self.max_gap_s = max(self.max_gap_s, now - self.progress_ts)
        self.progress += 1
        self.progress_ts = now
        self.global_step = global_step

    def done(self) -> None:
        """This rank's work is over: its silence from now on means nothing."""
        self._state = "done"
        self._halt.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        self._beat()

    def beat(self) -> dict[str, Any]:
        return {**self._base, "ts": round(time.time(), 3), "progress": self.progress,
                "progress_ts": self.progress_ts, "max_gap_s": round(self.max_gap_s, 3),
                "global_step": self.global_step, "state": self._state,
                "stack": _main_stack(self._main) if self._state == "running" else []}

    def _beat(self) -> None:
        if self.directory is None:
            return
        try:
            heartbeat.write(self.directory, self.beat())
        except OSError:
            pass  # a full or unreachable file system must not kill training

    def _run(self) -> None:
        while True:
            self._beat()
            if self._halt.wait(self.interval_s):
                return
