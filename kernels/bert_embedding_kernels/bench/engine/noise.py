"""How busy the machine was while a run measured: recorded with every run, compared by compare.

A run records the 1-minute load average before and after it (``os.getloadavg``), the
machine's cores, and the spread of its repeated measurements: the half width of the copy
roofline's 95% interval (the same copy repeated every round: on a quiet machine it barely
moves) and the median half width over every contender's median. ``embench compare`` flags
two runs whose noise differs beyond what their ratios can absorb (:func:`mismatch`).
"""

from __future__ import annotations

import os
import statistics

from .contenders import COPY

# Two runs are judged alike enough to gate one on the other when neither's load per core
# exceeds the other's by more than this (the busy run: 2 CPU-bound processes on
# 2 cores, load ~1 per core above the quiet one's) ...
LOAD_PER_CORE = 0.5
# ... and neither's typical interval is more than this many times the other's while above
# the +-10% at which a median counts as unstable (that busy run's median: +-40.9%).
SPREAD_FACTOR = 2.0
SPREAD_FLOOR = 0.10


def record(load: list[float], timings) -> dict:
    """One measurement's noise: load before and after, the copy's and the median spread."""
    widths = [timings.estimate(name).half_width for name in timings.samples]
    copy = timings.estimate(COPY).half_width if COPY in timings.samples else None
    return {
        "load": [float(value) for value in load],
        "cores": os.cpu_count(),
        "copy_half_width": copy,
        "median_half_width": statistics.median(widths) if widths else None,
    }


def of_results(results: dict) -> dict:
    """A results.json's noise: its record where the run wrote one, the spreads from its points
    otherwise (older runs recorded no load)."""
    widths, copies = [], []
    for point in results.get("points", []):
        for name, entry in point["contenders"].items():
            if entry.get("status") == "measured" and entry.get("median_s"):
                low, high = entry["ci95_s"]
                width = (high - low) / 2 / entry["median_s"]
                widths.append(width)
                if name == COPY:
                    copies.append(width)
    derived = {
        "load": None,
        "cores": None,
        "copy_half_width": statistics.median(copies) if copies else None,
        "median_half_width": statistics.median(widths) if widths else None,
    }
    return derived | results.get("noise", {})


def describe(noise: dict) -> str:
    """One line: how busy the machine was and how much repeated measurements spread."""
    parts = []
    if noise.get("load"):
        before, after = noise["load"]
        cores = noise["cores"]
        parts.append(f"1-minute load {before:.2f} before, {after:.2f} after ({cores} cores)")
    if noise.get("copy_half_width") is not None:
        parts.append(f"the copy's interval +-{noise['copy_half_width']:.1%}")
    if noise.get("median_half_width") is not None:
        parts.append(f"median interval +-{noise['median_half_width']:.1%}")
    return "how busy: " + ("; ".join(parts) if parts else "not recorded")


def mismatch(a: dict, b: dict) -> str:
    """Why runs of noise ``a`` and ``b`` cannot be compared ratio for ratio, or ''.

    The copy-normalised ratios absorb a machine that is uniformly slower, not one that is
    busier: under load the one-hot (BLAS) paths slowed down far more than the copy that
    normalises them (the issue's busy run: concat 9.11x, onehot 11.86x, same code).
    """
    load_a, load_b = _load_per_core(a), _load_per_core(b)
    if load_a is not None and load_b is not None and abs(load_a - load_b) > LOAD_PER_CORE:
        return (
            f"load per core {load_a:.2f} in A, {load_b:.2f} in B (more than {LOAD_PER_CORE} apart)"
        )
    spread_a, spread_b = a.get("median_half_width"), b.get("median_half_width")
    if spread_a and spread_b:
        low, high = sorted((spread_a, spread_b))
        if high > SPREAD_FLOOR and high > SPREAD_FACTOR * low:
            return (
                f"median interval +-{spread_a:.1%} in A, +-{spread_b:.1%} in B (one above "
                f"+-{SPREAD_FLOOR:.0%} and over {SPREAD_FACTOR:g}x the other)"
            )
    return ""


def _load_per_core(noise: dict) -> float | None:
    if not noise.get("load") or not noise.get("cores"):
        return None
    return max(noise["load"]) / noise["cores"]
