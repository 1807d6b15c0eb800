"""One figure of ``embench perf``: a ratio of two contenders' medians, with its target."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Figure:
    """One ratio (numerator / denominator) with its target."""

    name: str
    numerator: str
    denominator: str
    target: str  # ">= 6" or "<= 1.15"; "" for none
    note: str
    invert: bool = False  # report denominator / numerator (a fraction of the roofline)
    # (numerator, denominator) of a second ratio that this one is divided by, round by round:
    # a gain measured against the gain of a reference (bfloat16's against a 16-bit copy's)
    relative_to: tuple[str, str] | None = None
