"""Waits of Snakemake's own that outlast a finished run, cut short when the run is over.

When the last step has ended, a Snakemake process still waits out two clocks before it exits (measured on
a 3-step chain of 1-s steps: 1.3 s from the last payload's end to exit, a fifth of the chain's time):

- the executor interface's status thread, asleep between two polls: `shutdown()` joins it, so the run's end
  waits for the rest of the poll interval. `PollSleep` is a sleep that shutdown can wake.
- the scheduler's job-rate-limiter timer (`--max-jobs-per-timespan`, 1 s by default), a non-daemon
  `threading.Timer` armed after every round of job selection, last of all for the local `all` rule. Its only
  effect is to wake the scheduler loop for another selection round; once the executor is shut down there is
  no round to come, so the process need not wait for it. `cancel_scheduler_timers` cancels those timers and
  nothing else: it recognises them by the function Snakemake arms them with, and a Snakemake that arms no
  such timer (or names it otherwise) is left exactly as it is, and so are the timers of another scheduler in
  the same process.
"""

from __future__ import annotations

import asyncio
import threading

# JobScheduler._schedule_reevalutation (sic, Snakemake 8 and 9), and the spelling a fix would give it
_SCHEDULER_TIMER_OWNERS = ("JobScheduler._schedule_reevalutation.", "JobScheduler._schedule_reevaluation.")


class PollSleep:
    """The status thread's sleep between polls, which `wake()` ends at once, for good."""

    def __init__(self) -> None:
        self._woken = threading.Event()

    async def __call__(self, seconds: float) -> None:
        if not self._woken.is_set():
            # a worker thread of the loop waits, so the Event can be set from any thread
            await asyncio.to_thread(self._woken.wait, seconds)

    def wake(self) -> None:
        self._woken.set()


def cancel_scheduler_timers(scheduler: object) -> int:
    """Cancel this scheduler's pending re-evaluation timers (another workflow run in the same process keeps
    its own); how many were cancelled."""
    if scheduler is None:
        return 0
    cancelled = 0
    for thread in threading.enumerate():
        function = getattr(thread, "function", None)
        if (isinstance(thread, threading.Timer)
                and getattr(function, "__qualname__", "").startswith(_SCHEDULER_TIMER_OWNERS)
                and any(cell.cell_contents is scheduler for cell in getattr(function, "__closure__", None) or ())):
            thread.cancel()
            cancelled += 1
    return cancelled
