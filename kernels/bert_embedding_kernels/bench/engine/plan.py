"""A command's time, predicted and kept: which contenders its ``--budget`` can time.

:func:`.timing.interleave` takes at least ``MIN_ROUNDS`` rounds of
every contender, so a budget holds only the contenders whose fewest rounds fit in it, counted
in the calls the engine really makes (:func:`.timing.planned_calls`:
a warm-up, the calibration's calls, an untimed call before every sample). :class:`Budget`
admits contenders in order until the budget is spent and says why it skips the rest: first
on the cost model's prediction of our methods (a call of a minute is never run to learn
that it takes a minute), then on one timed call of every contender after its check (two
where a short call came out too slow: :meth:`Budget.settle`).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from .timing import MIN_ROUNDS, format_time, planned_calls, planned_seconds

# Seconds: a settling call slower than its budget allows is timed again if it took less than
# this, the scale of the waits a busy machine's scheduler adds (slices of a few ms, several
# in a row); a longer call is not run twice to learn that it is slow.
RETIME_BELOW = 0.1


class Budget:
    """Contenders admitted in order while their fewest rounds fit in ``budget`` seconds.

    Parameters
    ----------
    budget : float
        Seconds of timing, all contenders together.
    predict : callable name -> seconds per call or None
        The cost model's prediction (None: not predicted; timed once after its check).
    reserve : float
        Seconds kept for the copy roofline, which is always timed.
    """

    def __init__(self, budget: float, predict: Callable[[str], float | None], reserve=0.0):
        self.budget = budget
        self.predict = predict
        self.reserve = reserve
        self.planned: dict[str, float] = {}  # name -> seconds per call

    @property
    def seconds(self) -> float:
        """The least time the admitted contenders' rounds take (the copy's reserve included
        until it is timed)."""
        copy = 0.0 if "copy" in self.planned else self.reserve
        return copy + sum(planned_seconds(t) for t in self.planned.values())

    @property
    def left(self) -> float:
        """Seconds of the budget not yet planned."""
        return self.budget - self.seconds

    def admit(self, name: str, per_call: float, *, always: bool = False) -> str:
        """Plan ``name`` at ``per_call`` seconds a call; '' if it fits, else why it does not."""
        self.planned.pop(name, None)
        needed = planned_seconds(per_call)
        left = self.left
        if always or needed <= left:
            self.planned[name] = per_call
            return ""
        calls = planned_calls(per_call)
        return (
            f"{format_time(per_call)} per call x {calls} calls (warm-up, calibration, "
            f"{MIN_ROUNDS} rounds of an untimed call and a sample) = {format_time(needed)}, "
            f"over the {format_time(max(left, 0.0))} of --budget {self.budget:g} left; "
            "raise --budget to time it"
        )

    def skip(self, name: str) -> str:
        """Before the check: a reason to skip ``name`` on its predicted call, else ''."""
        per_call = self.predict(name)
        if per_call is None:
            return ""
        reason = self.admit(name, per_call)
        return f"predicted {reason}" if reason else ""

    def settle(self, built: dict, copy: str = "copy") -> None:
        """After the checks: time one call of every contender still measured and plan them
        all again on those times, in order (the copy first, always); skip what no longer fits.

        A short call that does not fit is timed once more and planned on the faster of the
        two, and so is the copy's, whose time is taken from every other contender's room: on
        a busy machine one call of a parallel kernel can wait a scheduler slice for a thread,
        and that one wait must not drop a contender whose calls fit (a CI run on a busy
        machine skipped every method at ``--budget 0.05``); a call slow every time, or longer
        than any such wait (``RETIME_BELOW``), is skipped."""
        self.planned.clear()
        for name in [copy, *(n for n in built if n != copy)]:
            contender = built.get(name)
            if contender is None or contender.status != "measured":
                continue
            per_call = _seconds(contender.call)
            short = per_call < RETIME_BELOW
            if short and (name == copy or planned_seconds(per_call) > self.left):
                per_call = min(per_call, _seconds(contender.call))
            reason = self.admit(name, per_call, always=name == copy)
            if reason:
                contender.status, contender.reason = "skipped", f"timed {reason}"


def _seconds(call: Callable[[], object]) -> float:
    """The seconds one call of ``call`` takes."""
    start = time.perf_counter()
    call()
    return time.perf_counter() - start
