"""The report's second pass: unstable points re-timed while the run's budget lasts.

A median whose 95% interval is wider than +-10% (:data:`..engine.timing.UNSTABLE`) is
marked unstable. The report's budget is ``--budget`` seconds of timing per point; a point
stops as soon as every median is within +-3%, so a run usually ends its sweeps with timing
left over. That remainder goes to the unstable points, the widest interval first (issue 37
item 5): each is checked again (its contenders rebuilt; the checks come on top of the
budget, as in the first pass) and timed for more interleaved rounds, which join its first
rounds. Every round samples every contender, so the joined rounds stay paired and the
ratios keep their meaning; more samples narrow the intervals a noisy spell widened.

A point is re-timed only where its fewest rounds (:func:`..engine.timing.planned_seconds`
of each measured median) fit in what is left, so the run's timing stays within its
budget. The results record what was done (``results["retimed"]``, docs/RESULTS.md).
"""

from __future__ import annotations

import math
from collections.abc import Callable

from ..engine.timing import UNSTABLE, Timings, planned_seconds


def widest(point: dict) -> float:
    """The widest interval among a point's measured medians, as a half width over the median."""
    widths = [
        (entry["ci95_s"][1] - entry["ci95_s"][0]) / 2 / entry["median_s"]
        if entry["median_s"]
        else math.inf
        for entry in point["contenders"].values()
        if entry["status"] == "measured"
    ]
    return max(widths, default=0.0)


def unstable_order(points: list[dict]) -> list[int]:
    """The indexes of the unstable points, the widest interval first."""
    unstable = [i for i, point in enumerate(points) if widest(point) > UNSTABLE]
    return sorted(unstable, key=lambda i: -widest(points[i]))


def least_seconds(point: dict) -> float:
    """The least time one more measurement of ``point`` takes: every measured contender's
    fewest rounds at its first-pass median."""
    return sum(
        planned_seconds(entry["median_s"])
        for entry in point["contenders"].values()
        if entry["status"] == "measured"
    )


def joined(first: Timings, more: Timings) -> Timings:
    """``first``'s rounds followed by ``more``'s, for the contenders timed in both."""
    names = [name for name in more.samples if name in first.samples]
    return Timings(
        {name: first.samples[name] + more.samples[name] for name in names},
        {name: first.calls_per_sample[name] for name in names},
        first.seconds + more.seconds,
    )


def label(point: dict) -> str:
    return f"{point['sweep']} {point['size']}"


def retime(
    points: list[dict],
    timings: list[Timings],
    seconds_left: float,
    per_point: float,
    time_point: Callable[[dict, float], tuple[dict, Timings, float]],
    rebuild: Callable[[dict, dict, Timings], dict],
    say: Callable[[str], None],
) -> dict:
    """Re-time the unstable ``points`` (in place), widest first, within ``seconds_left``.

    Parameters
    ----------
    points, timings : lists of the same length
        Each point as results.json holds it, and the rounds it was measured in.
    seconds_left : float
        Timing the run's budget has left after its planned sweeps.
    per_point : float
        The most one re-timing may take (the budget of a point in the first pass).
    time_point : callable (point, budget) -> (built contenders, timings, seconds checking)
        Checks the point's contenders again and times them within ``budget`` seconds.
    rebuild : callable (point, built, timings) -> point
        The point as results.json holds it, from its contenders and its joined rounds.
    say : callable
        Where the progress lines go.

    Returns
    -------
    dict
        What the second pass did: points unstable before, re-timed, still unstable after,
        and the seconds it spent timing and checking.
    """
    order = unstable_order(points)
    record = {
        "unstable_before": len(order),
        "retimed": 0,
        "unstable_after": len(order),
        "seconds_left": max(seconds_left, 0.0),
        "timing_seconds": 0.0,
        "checking_seconds": 0.0,
    }
    if not order:
        return record
    say(
        f"{len(order)} of {len(points)} points unstable (a median's 95% interval wider than "
        f"+-{UNSTABLE:.0%}); re-timing them, the widest first, in the {max(seconds_left, 0):.1f} s "
        "of timing the budget has left"
    )
    left = seconds_left
    for index in order:
        point = points[index]
        before, least = widest(point), least_seconds(point)
        allowed = min(per_point, left)
        if least > allowed:
            say(
                f"{label(point)} (+-{before:.1%}): not re-timed, its fewest rounds take "
                f"{least:.1f} s and {max(left, 0):.1f} s are left"
            )
            continue
        built, more, checking = time_point(point, allowed)
        points[index] = rebuild(point, built, joined(timings[index], more))
        timings[index] = joined(timings[index], more)
        left -= more.seconds
        record["retimed"] += 1
        record["timing_seconds"] += more.seconds
        record["checking_seconds"] += checking
        after = widest(points[index])
        state = "unstable" if after > UNSTABLE else "stable"
        say(
            f"re-timed {label(point)}: +-{before:.1%} -> +-{after:.1%} ({state}; "
            f"{more.rounds} more rounds in {more.seconds:.1f} s, {max(left, 0):.1f} s left)"
        )
    record["unstable_after"] = len(unstable_order(points))
    say(
        f"re-timed {record['retimed']} of {len(order)} unstable points; "
        f"{record['unstable_after']} stay unstable"
    )
    return record
