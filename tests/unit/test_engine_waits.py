"""A finished run does not wait out Snakemake's own clocks: the status thread's sleep and the scheduler's
rate-limit timer end when the executor shuts down."""

from __future__ import annotations

import asyncio
import threading
import types

from snakemake.scheduling.job_scheduler import JobScheduler

from snakemake_executor_plugin_slurm_gpu.engine_waits import PollSleep, cancel_scheduler_timers


def _sleeping_thread(sleep: PollSleep, seconds: float) -> threading.Thread:
    thread = threading.Thread(target=asyncio.run, args=(sleep(seconds),), daemon=True)
    thread.start()
    return thread


def test_wake_ends_a_sleep_in_progress() -> None:
    sleep = PollSleep()
    thread = _sleeping_thread(sleep, 600)
    thread.join(0.2)
    assert thread.is_alive()  # it does sleep until woken
    sleep.wake()
    thread.join(10)
    assert not thread.is_alive()


def test_after_wake_no_sleep_waits() -> None:
    sleep = PollSleep()
    sleep.wake()
    thread = _sleeping_thread(sleep, 600)
    thread.join(10)
    assert not thread.is_alive()


def _fake_scheduler() -> types.SimpleNamespace:
    return types.SimpleNamespace(_open_jobs=threading.Semaphore(0))


def _armed_timers() -> list[threading.Timer]:
    return [t for t in threading.enumerate() if isinstance(t, threading.Timer) and t.is_alive()]


def test_the_installed_snakemakes_rate_limit_timer_is_cancelled() -> None:
    """Pins the Snakemake this project installs: the timer it arms after a selection round is recognised."""
    scheduler = _fake_scheduler()
    before = set(_armed_timers())
    JobScheduler._schedule_reevalutation(scheduler, 600)
    armed = [t for t in _armed_timers() if t not in before]
    assert len(armed) == 1
    assert cancel_scheduler_timers(scheduler) == 1
    for timer in armed:
        timer.join(10)
    assert not any(t.is_alive() for t in armed)
    assert not scheduler._open_jobs.acquire(blocking=False)  # cancelled, not fired


def test_only_this_schedulers_timers_are_cancelled() -> None:
    ours, theirs = _fake_scheduler(), _fake_scheduler()
    JobScheduler._schedule_reevalutation(ours, 600)
    JobScheduler._schedule_reevalutation(theirs, 0.3)
    unrelated = threading.Timer(600, lambda: None)
    unrelated.start()
    try:
        assert cancel_scheduler_timers(ours) == 1
        assert theirs._open_jobs.acquire(timeout=10)  # the other run's timer still fires
        assert unrelated.is_alive()
    finally:
        unrelated.cancel()


def test_no_scheduler_no_cancellation() -> None:
    scheduler = _fake_scheduler()
    JobScheduler._schedule_reevalutation(scheduler, 0.2)
    assert cancel_scheduler_timers(None) == 0
    assert scheduler._open_jobs.acquire(timeout=10)
