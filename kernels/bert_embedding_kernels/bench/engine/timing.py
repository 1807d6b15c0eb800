"""The one timing engine: interleaved rounds, calibrated samples, medians with 95% intervals.

Every measurement in ``embench`` (report, perf, check, the calibration of
``method="auto"``) and the backward script goes through :func:`interleave`:

- every contender is called once first (warm-up: JIT compilation, page faults);
- each contender's *sample* is a loop of ``n`` calls timed together, ``n``
  calibrated so that a sample lasts at least ``sample_seconds`` (1 ms): a timer
  read costs tens of nanoseconds, and one call of tens of microseconds is at
  the mercy of every interrupt (single-call samples made the quick report's
  fused/copy move up to 2.9x between runs);
- one untimed call of the contender comes before each sample, and ``n`` comes
  from the median of five such single calls. Calls at sizes near the cache's
  speed up for several calls in a row after another contender ran (fused at
  batch 4 x seq 512: 870, 580, 450, 330, 290 us for its first five calls), so
  a time averaged over ``n`` calls depends on ``n``; with ``n`` from one timed
  call, one slow call gave fused ``n`` = 1 in one run and 8 in the next, 822
  against 328 us for the same code;
- one *round* takes one sample of every contender, in an order rotated every
  round, so a noisy neighbour or a frequency change hits them all alike;
- rounds go on until every contender's median has a 95% interval within
  ``target`` (3%) of it, or the time budget is spent (after ``min_rounds``).

The interval of a median is distribution-free: the order statistics whose ranks
bracket the median with 95% probability under the binomial(n, 1/2) law. A ratio
"A / B" is the median of the per-round ratios ``A_i / B_i`` (paired: both
sampled in the same round) with the same kind of interval, so a slow round
slows both sides and cancels.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

Z95 = 1.959963984540054  # two-sided 95% normal quantile

# A point whose interval stays wider than this is marked unstable in tables and plots.
UNSTABLE = 0.10


@dataclass(frozen=True)
class Estimate:
    """A median with its 95% interval."""

    median: float
    low: float
    high: float
    count: int

    @property
    def half_width(self) -> float:
        """The interval's half width relative to the median (0.03 is +-3%)."""
        return (self.high - self.low) / 2 / self.median if self.median else math.inf

    @property
    def unstable(self) -> bool:
        return self.half_width > UNSTABLE

    def includes(self, value: float) -> bool:
        return self.low <= value <= self.high


def median_interval(values: list[float]) -> Estimate:
    """The median of ``values`` and the order statistics that bracket it with 95% probability.

    With ``n`` values the 1-based ranks are ``floor(n/2 - 1.96 sqrt(n)/2)`` and
    ``ceil(1 + n/2 + 1.96 sqrt(n)/2)`` (the normal approximation of binomial(n,
    1/2); ranks 40 and 61 of 100, as the tables give); below 6 values no interval
    reaches 95%, so it spans all of them.
    """
    ordered = sorted(values)
    n = len(ordered)
    if n == 0:
        raise ValueError("no values to estimate a median from")
    middle = n // 2
    median = ordered[middle] if n % 2 else (ordered[middle - 1] + ordered[middle]) / 2
    spread = Z95 * math.sqrt(n) / 2
    low = max(0, math.floor(n / 2 - spread) - 1)
    high = min(n - 1, math.ceil(1 + n / 2 + spread) - 1)
    return Estimate(median, ordered[low], ordered[high], n)


@dataclass
class Timings:
    """Per-call seconds of every contender, one sample per round."""

    samples: dict[str, list[float]] = field(default_factory=dict)
    calls_per_sample: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0  # wall time the measurement took

    @property
    def rounds(self) -> int:
        return min((len(s) for s in self.samples.values()), default=0)

    def estimate(self, name: str) -> Estimate:
        return median_interval(self.samples[name])

    def ratio(self, numerator: str, denominator: str, relative_to=None) -> Estimate:
        """``numerator / denominator`` from paired rounds, with its 95% interval; divided,
        round by round, by ``relative_to``'s ratio (a pair of names) where given."""
        ratios = self._per_round(numerator, denominator)
        if relative_to is not None:
            reference = self._per_round(*relative_to)
            ratios = [r / q for r, q in zip(ratios, reference, strict=False)]
        return median_interval(ratios)

    def _per_round(self, numerator: str, denominator: str) -> list[float]:
        pairs = zip(self.samples[numerator], self.samples[denominator], strict=False)
        return [a / b for a, b in pairs]


def format_time(seconds: float | None) -> str:
    """Seconds as the tables print them: s, ms or us, '-' for none."""
    if seconds is None:
        return "-"
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds * 1e6:.1f} us"


# Single calls the calibration times (each after an untimed one); a call that alone lasts
# SLOW_SAMPLES samples' time ends it after one, and is timed once per sample.
TRIES = 5
SLOW_SAMPLES = 3


def _count(typical: float, sample_seconds: float) -> int:
    """Calls per sample for a call of ``typical`` seconds."""
    if typical >= SLOW_SAMPLES * sample_seconds:
        return 1
    return min(1 << 20, max(1, math.ceil(sample_seconds / max(typical, 1e-9))))


def _calibrate(call: Callable[[], object], sample_seconds: float, tries: int = TRIES) -> int:
    """How many calls one sample needs to last at least ``sample_seconds``.

    From the median of ``tries`` single calls, each after an untimed one as in a
    sample, so that one slow call does not decide ``n`` for the whole run. A
    call that alone lasts three samples' time is timed once per sample.
    """
    single = []
    for _ in range(tries):
        call()  # untimed, as before every sample
        start = time.perf_counter()
        call()
        single.append(time.perf_counter() - start)
        if single[-1] >= SLOW_SAMPLES * sample_seconds:
            return 1
    return _count(sorted(single)[len(single) // 2], sample_seconds)


# Rounds every interleaved measurement takes, however long a call is (a median and its
# distribution-free interval need a few samples).
MIN_ROUNDS = 7


def planned_calls(per_call: float, sample_seconds: float = 1e-3, rounds: int = MIN_ROUNDS) -> int:
    """The calls :func:`interleave` makes of a contender taking ``per_call`` seconds a call,
    over ``rounds`` rounds: its warm-up, the calibration's (an untimed and a timed call per
    try, one try for a slow call), and per round an untimed call and a sample.

    A call of a second gets 1 + 2 + 7 x 2 = 17 calls in the fewest rounds, not 7: what a
    budget must allow for (issue 37: a skip rule that allowed for 7 overran 60 s by 6 min).
    """
    calibration = 2 if per_call >= SLOW_SAMPLES * sample_seconds else 2 * TRIES
    return 1 + calibration + rounds * (1 + _count(per_call, sample_seconds))


def planned_seconds(per_call: float, sample_seconds: float = 1e-3) -> float:
    """The least time :func:`interleave` spends on a contender: :func:`planned_calls` at
    ``MIN_ROUNDS`` rounds, each call lasting ``per_call``."""
    return planned_calls(per_call, sample_seconds) * per_call


def interleave(
    calls: dict[str, Callable[[], object]],
    *,
    budget: float = 2.0,
    target: float = 0.03,
    min_rounds: int = MIN_ROUNDS,
    max_rounds: int = 400,
    sample_seconds: float = 1e-3,
    progress: Callable[[int], None] | None = None,
    setup: dict[str, Callable[[], object]] | None = None,
) -> Timings:
    """Time every call in interleaved rounds until each median is known within ``target``.

    Parameters
    ----------
    calls : dict of name -> zero-argument callable
        Already checked for correctness by the caller; each is called once more
        here as its warm-up.
    budget : float
        Seconds for the whole measurement: after ``min_rounds``, no round starts that the
        last one's duration says would end past it (the fewest rounds are always taken, so
        a slow contender may overrun: :func:`planned_seconds` predicts by how much).
    target : float
        Stop once every contender's 95% interval is within +-target of its median.
    setup : dict of name -> zero-argument callable, optional
        Run before each of that contender's samples, untimed, instead of the
        untimed call (e.g. re-zero the buffers a call accumulates into); such a
        contender's sample is one call.
    """
    if not calls:  # nothing installed to time: no rounds (figures read "not measured")
        return Timings()
    setup = setup or {}
    started = time.perf_counter()
    for name, call in calls.items():
        if name in setup:
            setup[name]()
        call()
    timings = Timings({name: [] for name in calls})
    timings.calls_per_sample = {
        n: 1 if n in setup else _calibrate(c, sample_seconds) for n, c in calls.items()
    }
    names = list(calls)
    for round_number in range(max_rounds):
        round_started = time.perf_counter()
        shift = round_number % len(names)
        for name in names[shift:] + names[:shift]:
            call, count = calls[name], timings.calls_per_sample[name]
            if name in setup:
                setup[name]()
            else:
                call()  # untimed: every sample starts after a call of its own
            start = time.perf_counter()
            for _ in range(count):
                call()
            timings.samples[name].append((time.perf_counter() - start) / count)
        if progress is not None:
            progress(round_number + 1)
        if round_number + 1 < min_rounds:
            continue
        precise = all(timings.estimate(n).half_width <= target for n in names)
        now = time.perf_counter()
        if precise or now + (now - round_started) - started > budget:
            break
    timings.seconds = time.perf_counter() - started
    return timings


def sample_rounds(
    calls: dict, rounds: int, sample: Callable[[Callable[[], object]], tuple], warmups: int = 2
) -> tuple[Timings, ...]:
    """``rounds`` interleaved rounds of every call (the order rotates), each sample taken by
    ``sample(call)``: for clocks other than this process's, where :func:`interleave`'s
    calibrated loops do not apply (the GPU's, read by CUDA events behind a spin kernel).

    ``sample`` returns a tuple of seconds per call, one per clock it reads (the GPU's and the
    host's, say); the result is one :class:`Timings` per clock, so every median, interval and
    paired ratio comes from :func:`median_interval` as the rest of the bench's do.
    """
    started = time.perf_counter()
    for call in calls.values():  # warm-up: compile, allocate, fill caches
        for _ in range(warmups):
            call()
    clocks: list[Timings] = []
    names = list(calls)
    for round_number in range(rounds):
        shift = round_number % len(names)
        for name in names[shift:] + names[:shift]:
            values = sample(calls[name])
            if not clocks:
                clocks = [Timings({n: [] for n in names}) for _ in values]
            for clock, value in zip(clocks, values, strict=True):
                clock.samples[name].append(value)
    for clock in clocks:
        clock.seconds = time.perf_counter() - started
    return tuple(clocks)
