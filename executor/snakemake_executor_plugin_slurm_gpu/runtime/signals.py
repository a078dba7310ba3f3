"""Signal handlers for training processes that only record what arrived.

The work a signal asks for (checkpoint, requeue, stop) is done later, at a step boundary, by all
ranks together: work inside a handler can run between any two bytecodes of any rank, which is how
Lightning's in-handler save and barrier deadlock (Lightning #21406).
"""

from __future__ import annotations

import atexit
import os
import signal
import threading
from dataclasses import dataclass, field

from ..contract import Env

REQUEUE_SIGNAL_ENV = Env.REQUEUE_SIGNAL
# "1": checkpoint on SIGTERM too (setting checkpoint-on-sigterm), for sites that preempt with SIGTERM
# only and a GraceTime long enough for a save
CHECKPOINT_ON_TERM_ENV = Env.CHECKPOINT_ON_TERM


@dataclass
class Received:
    requeue: bool = False    # the time-limit warning or a preemption notice: checkpoint and requeue
    terminate: bool = False  # SIGTERM: being killed now, no time for a checkpoint
    names: list[str] = field(default_factory=list)


_received = Received()
_owner_pid: int | None = None
_lock = threading.Lock()


def requeue_signal(environ: dict[str, str] | None = None) -> signal.Signals:
    """The signal the executor asked Slurm to send (SLURM_GPU_REQUEUE_SIGNAL), SIGUSR1 by default."""
    name = (environ if environ is not None else os.environ).get(REQUEUE_SIGNAL_ENV, "USR1").upper()
    if name.isdigit():
        return signal.Signals(int(name))
    return signal.Signals[name if name.startswith("SIG") else f"SIG{name}"]


def checkpoint_on_term(environ: dict[str, str] | None = None) -> bool:
    """Does this step save a checkpoint on SIGTERM before it stops (CHECKPOINT_ON_TERM_ENV)?"""
    return (environ if environ is not None else os.environ).get(CHECKPOINT_ON_TERM_ENV) == "1"


def _record(signum: int, frame: object) -> None:
    # forked DataLoader workers inherit this handler, and Slurm signals every process of the step:
    # only the rank process itself may act, or every worker would ask for a checkpoint and a requeue
    if os.getpid() != _owner_pid:
        if signum == signal.SIGTERM:  # a worker must still die when it is told to
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)
        return
    if signum == signal.SIGTERM:
        _received.terminate = True
    else:
        _received.requeue = True
    _received.names.append(signal.Signals(signum).name)


def install() -> None:
    """Record the requeue signal and SIGTERM from now on. Call it as early as possible: before a
    handler exists, SIGUSR1 kills the process. Idempotent; main thread only."""
    global _owner_pid
    with _lock:
        if _owner_pid == os.getpid():
            return
        signal.signal(requeue_signal(), _record)
        signal.signal(signal.SIGTERM, _record)
        _owner_pid = os.getpid()  # only once both handlers are in place, so a failed install can be retried
        atexit.register(_ignore_requeue_signal_at_exit)


def owned() -> bool:
    """Are this process's recording handlers installed (install() ran here)?"""
    return _owner_pid == os.getpid()


def reclaim() -> bool:
    """Put the recording handlers back after a framework replaced them. Lightning's trainer wraps
    ours in its own SIGTERM handler at fit(), and since 2.5.2 that handler runs `dist.broadcast`
    inside the signal handler: when Slurm's SIGTERM lands while rank 0 is asking for the requeue and
    the other ranks have already exited, the collective fails or hangs there, and rank 0 dies
    before it writes the interrupted marker. Returns whether anything had to be put back."""
    if _owner_pid != os.getpid():
        return False
    changed = False
    for signum in (requeue_signal(), signal.SIGTERM):
        try:
            if signal.getsignal(signum) is not _record:
                signal.signal(signum, _record)
                changed = True
        except (ValueError, OSError):  # not the main thread: leave them be
            return changed
    return changed


def _ignore_requeue_signal_at_exit() -> None:
    # Interpreter shutdown puts Python-level handlers back to the default, and the default action
    # of SIGUSR1 is to terminate: a time-limit warning arriving after training finished would kill
    # a rank that has already written its results, and the step would fail. An ignored signal is
    # left ignored through shutdown.
    if os.getpid() == _owner_pid:
        try:
            signal.signal(requeue_signal(), signal.SIG_IGN)
        except (ValueError, OSError):
            pass


def received() -> Received:
    """What arrived since install() (the same object; flags stay set until reset())."""
    return _received


def reset() -> None:
    _received.requeue = _received.terminate = False
    _received.names.clear()
