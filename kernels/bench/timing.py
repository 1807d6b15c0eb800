"""Median-of-repeats timing with a time budget, shared by the CLI and the report."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Timing:
    """Wall-clock seconds of each repeat of one call, and their median."""

    seconds: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def repeats(self) -> int:
        return len(self.seconds)


def measure(call, *, min_repeats: int = 3, max_repeats: int = 50, budget: float = 1.0) -> Timing:
    """Time ``call()`` until ``budget`` seconds are spent or ``max_repeats`` reached.

    The caller warms ``call`` up first (JIT compilation, page faults); here every
    call counts. At least one repeat is always made and at least ``min_repeats``
    while they fit in the budget.
    """
    seconds: list[float] = []
    while len(seconds) < max_repeats:
        spent = sum(seconds)
        if spent >= budget and len(seconds) >= 1:
            enough = len(seconds) >= min_repeats
            next_would_overrun = spent + seconds[-1] > 2 * budget
            if enough or next_would_overrun:
                break
        start = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - start)
    return Timing(tuple(seconds))
