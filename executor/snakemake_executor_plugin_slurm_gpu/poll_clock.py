"""When to ask Slurm. Two clocks: event logs (files) are read every tick; Slurm is asked on its own,
adaptive interval (fast while jobs are finishing, slower while nothing happens), or at once when a
batch script says it ended."""

from __future__ import annotations

from typing import Iterable

# after a step's batch script says it ended: ask Slurm at most this often, for at most this long
# (the job may sit in COMPLETING while an epilog runs), then fall back to the normal poll interval
ENDED_POLL_GAP_S = 1.0
ENDED_POLL_WINDOW_S = 30.0


class PollClock:
    def __init__(self, tick_s: float, min_s: float, max_s: float) -> None:
        self.tick_s = tick_s
        self.min_s, self.max_s = min_s, max_s
        self.interval_s = min_s
        self.next_poll = 0.0
        self.last_poll = float("-inf")

    @property
    def between_checks_s(self) -> float:
        """What Snakemake waits between two status checks (it reads the event logs each time)."""
        return min(self.tick_s, self.interval_s)

    def due(self, now: float, ended_at: Iterable[float | None], wall: float) -> bool:
        """Ask Slurm now (monotonic `now`)? When its interval is up, or when a batch script said it
        ended (`ended_at`, wall-clock times) in the last ENDED_POLL_WINDOW_S (then at most once per
        ENDED_POLL_GAP_S)."""
        if now >= self.next_poll:
            return True
        if now - self.last_poll < ENDED_POLL_GAP_S:
            return False
        return any(ended is not None and wall - ended < ENDED_POLL_WINDOW_S for ended in ended_at)

    def polled(self, now: float) -> None:
        self.last_poll = now

    def back_off(self, changed: bool) -> None:
        """Poll Slurm fast while jobs are finishing, slower while nothing happens."""
        self.interval_s = self.min_s if changed else min(self.max_s, self.interval_s * 1.5)
        self.next_poll = self.last_poll + self.interval_s
