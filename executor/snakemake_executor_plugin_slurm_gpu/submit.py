"""sbatch that survives a busy or restarting controller: transient failures are retried with
backoff for a bounded time, permanent ones (an invalid partition, a refused option) are not, and no
retry can submit a second copy of a step whose first sbatch did reach the controller."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

from . import attach, slurm
from .spec import StepSpec

# seconds between tries: quick at first (a socket timeout under load), then every 30 s (a restart)
BACKOFF_S = (1.0, 2.0, 4.0, 8.0, 15.0, 30.0)


def delays(limit_s: float) -> Iterator[float]:
    """The waits before each retry, adding up to at most limit_s."""
    spent, i = 0.0, 0
    while True:
        wait = BACKOFF_S[min(i, len(BACKOFF_S) - 1)]
        if spent + wait > limit_s:
            return
        spent += wait
        i += 1
        yield wait


def retrying(run: Callable[[Sequence[str]], str], argv: Sequence[str], limit_s: float,
             on_retry: Callable[[str, float], None], sleep: Callable[[float], None] = time.sleep) -> str:
    """A read-only Slurm command, retried with backoff while it fails transiently."""
    waits = delays(limit_s)
    while True:
        try:
            return run(argv)
        except slurm.SlurmError as e:
            wait = next(waits, None) if e.transient else None
            if wait is None:
                raise
            on_retry(str(e), wait)
            sleep(wait)


@dataclass
class Submitter:
    """run: slurm.run-like (argv, stdin=...) -> stdout; on_retry: told of every transient failure."""

    run: Callable[..., str]
    limit_s: float = 600.0
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.time
    on_retry: Callable[[str, float], None] = field(default=lambda message, wait: None)

    def submit(self, script: str, root: Path, step: str, known: Sequence[str] = ()) -> str:
        """Submit the batch script text; the job id. Raises slurm.SlurmError (the last failure) when a
        permanent error comes back or transient ones outlast limit_s."""
        began = self.clock()
        waits = delays(self.limit_s)
        while True:
            try:
                return slurm.parse_sbatch(self.run(slurm.sbatch_argv(), stdin=script))
            except slurm.SlurmError as e:
                if not e.transient:
                    raise
                error = e
            # the request may have reached the controller before the reply was lost: look before
            # submitting again, and never resubmit without having looked
            while True:
                wait = next(waits, None)
                if wait is None:
                    raise error
                self.on_retry(str(error), wait)
                self.sleep(wait)
                try:
                    listing = slurm.parse_step_jobs(self.run(slurm.squeue_steps_argv()))
                except slurm.SlurmError as e:
                    if not e.transient:
                        raise
                    error = e
                    continue
                found = attach.lost_submission(listing, root, step, began, known)
                if found is not None:
                    return found
                break


def account_hint(run: Callable[[Sequence[str]], str], spec: StepSpec, error: slurm.SlurmError) -> str:
    """When Slurm refused the job for its account: the accounts the user has (sacctmgr), asked
    only then."""
    if not slurm.is_account_error(error):
        return ""
    try:
        accounts = slurm.parse_names(run(slurm.user_accounts_argv()))
    except slurm.SlurmError:
        accounts = []
    given = f"slurm_account is {spec.account!r}" if spec.account else "no slurm_account is set"
    mine = f"your accounts: {', '.join(sorted(set(accounts)))}" if accounts else "sacctmgr lists no account of yours"
    return (f"\nHINT: rule '{spec.rule}': {given}, and this cluster needs a valid one ({mine}); set the resource "
            "slurm_account, e.g. in the profile's default-resources")
