"""Rank numbers as a person reads them, for the messages of both sides: the executor's hang
watchdog and the job side's rendezvous. Stdlib only."""

from __future__ import annotations

from typing import Iterable


def span(numbers: Iterable[int]) -> str:
    """[7, 0, 1, 2, 5] -> '0-2, 5, 7': a 256-rank world's problems stay one readable line."""
    groups: list[list[int]] = []
    for n in sorted(set(numbers)):
        if groups and n == groups[-1][1] + 1:
            groups[-1][1] = n
        else:
            groups.append([n, n])
    return ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in groups)
