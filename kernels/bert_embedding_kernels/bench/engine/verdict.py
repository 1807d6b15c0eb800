"""What the measurements say: fastest and runner-up with paired ratios, regimes, slopes, auto.

Contenders are compared only with others called the same way:

- ``methods``: our methods, each writing into a preallocated ``out=`` (the
  choice ``method="auto"`` makes);
- ``sum``: the implementations a user picks between, each allocating its
  output as those libraries do (``fused (allocating)`` and the sum peers);
- ``layernorm``: the same for BERT's whole layer, LayerNorm(sum).

A ratio is the median of per-round ratios with its 95% interval
(:meth:`bert_embedding_kernels.bench.engine.timing.Timings.ratio`).

One rule judges every verdict of every command (report, perf, check, mine and compare):
an interval, never a median alone, decides. :func:`side` says whether a 95% interval lies
wholly above a line, wholly below it, or straddles it (an interval touching the line
straddles it); :func:`target` turns that into met / MISSED / undecided for a target such
as ``>= 0.90``, :func:`change` into slower / faster / same for a change against 1, and the
report's and check's rankings call two contenders whose ratio straddles 1 a tie. The named
winner is always the one the quoted paired ratio favours, so its ratio is at least 1.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from ... import auto
from ...dtypes import parse
from ...registry import REGISTRY
from .contenders import COPY
from .timing import UNSTABLE, Timings

GROUPS = {
    "methods": lambda c: c["origin"] == "kernels" and c["kind"] == "sum" and not c["allocates"],
    "sum": lambda c: c["kind"] == "sum" and c["allocates"],
    "layernorm": lambda c: c["kind"] == "layernorm",
}
# method="auto" must pick a method within this much of the fastest (or tied with it).
AUTO_TOLERANCE = 0.10
SWEEP_LABELS = {"vocab": "vocabulary", "seq": "sequence length", "small": "batch 1, seq"}


ABOVE, BELOW, STRADDLES = "above", "below", "straddles"
MET, MISSED, UNDECIDED = "met", "MISSED", "undecided"


def side(low: float, high: float, line: float) -> str:
    """Where the interval ``[low, high]`` lies against ``line``: ``above``, ``below`` or
    ``straddles`` (an interval that includes or touches the line cannot tell)."""
    if low > line:
        return ABOVE
    if high < line:
        return BELOW
    return STRADDLES


def target(low: float, high: float, op: str, bound: float) -> str:
    """A target ``op bound`` (``>=`` or ``<=``) against an interval: met, MISSED or undecided."""
    where = side(low, high, bound)
    if where == STRADDLES:
        return UNDECIDED
    return MET if (where == ABOVE) == (op == ">=") else MISSED


def change(low: float, high: float) -> str:
    """A change (B over A, 1 = none) from its interval: slower, faster or same."""
    return {ABOVE: "slower", BELOW: "faster", STRADDLES: "same"}[side(low, high, 1.0)]


def ranked(ratio_of: Callable, first: str, second: str) -> tuple[str, str, object]:
    """``(winner, runner_up, runner_up / winner)``: the winner is the one the paired ratio
    favours (the ratio quoted), so the quoted ratio is never below 1; ``first`` was ranked
    first by its median."""
    ratio = ratio_of(second, first)
    if ratio.median < 1:
        # The medians ranked them one way, the paired rounds (the sharper measure, and the
        # one quoted) the other: the paired rounds decide, whether or not they tie.
        return second, first, ratio_of(first, second)
    return first, second, ratio


def tie(ratio) -> bool:
    """Two contenders whose paired ratio's interval straddles 1."""
    return side(ratio.low, ratio.high, 1.0) == STRADDLES


def _estimate(e) -> dict:
    return {"median": e.median, "ci95": [e.low, e.high], "unstable": e.unstable}


def point_ratios(point: dict, timings: Timings) -> dict:
    """Every measured contender over the copy, and each group's runner-up over its fastest."""
    measured = {n: c for n, c in point["contenders"].items() if c["status"] == "measured"}
    ratios = {f"{n}/{COPY}": _estimate(timings.ratio(n, COPY)) for n in measured if n != COPY}
    point["verdict"] = {}
    for group, member in GROUPS.items():
        order = sorted((c["median_s"], n) for n, c in measured.items() if member(c))
        if not order:
            continue
        best = order[0][1]
        entry = {"fastest": best, "runner_up": None}
        if len(order) > 1:
            best, runner, ratio = ranked(timings.ratio, best, order[1][1])
            entry = {"fastest": best, "runner_up": runner}
            entry |= {**_estimate(ratio), "tie": tie(ratio)}
            ratios[f"{runner}/{best}"] = _estimate(ratio)
        point["verdict"][group] = entry
    return ratios


def phrase(entry: dict, bold: str = "**") -> str:
    """A group's verdict in words: the winner (between ``bold`` marks), and the runner-up
    with the ratio of the two, at least 1, or a tie."""
    if entry["runner_up"] is None:
        return f"{bold}{entry['fastest']}{bold} (nothing else measured)"
    low, high = entry["ci95"]
    if entry["tie"]:
        return (
            f"{bold}{entry['fastest']}{bold} and {entry['runner_up']} tie ({entry['runner_up']} / "
            f"{entry['fastest']} {entry['median']:.2f}, 95% CI [{low:.2f}, {high:.2f}] includes 1)"
        )
    return (
        f"{bold}{entry['fastest']}{bold}; runner-up {entry['runner_up']} is "
        f"{entry['median']:.2f}x slower (95% CI [{low:.2f}, {high:.2f}])"
    )


def recommendations(results: dict) -> list[dict]:
    """One line per sweep and group: consecutive sizes with the same fastest form one regime."""
    advice = []
    for sweep, label in SWEEP_LABELS.items():
        points = sorted(
            (p for p in results["points"] if p["sweep"] == sweep), key=lambda p: p["size"]
        )
        for group in GROUPS:
            regimes: list[list] = []
            for point in points:
                entry = point.get("verdict", {}).get(group)
                if entry is None:
                    continue
                if (
                    regimes
                    and regimes[-1][2]["fastest"] == entry["fastest"]
                    and not entry.get("tie")
                    and not regimes[-1][2].get("tie")
                ):
                    regimes[-1][1] = point["size"]
                    regimes[-1][3].append(entry)
                else:
                    regimes.append([point["size"], point["size"], entry, [entry]])
            for first, last, entry, entries in regimes:
                span = f"{first}" if first == last else f"{first} to {last}"
                text = f"{label} {span} ({group}): {phrase(entry)}"
                if len(entries) > 1 and entries[0]["runner_up"]:
                    medians = [e["median"] for e in entries if e["runner_up"]]
                    text += f"; across the range {min(medians):.2f}x to {max(medians):.2f}x"
                advice.append(
                    {
                        "sweep": sweep,
                        "group": group,
                        "from": first,
                        "to": last,
                        "fastest": entry["fastest"],
                        "text": text,
                    }
                )
    return advice


def slopes(results: dict) -> dict:
    """Log-log slope of each contender's median against the swept size, per sweep."""
    fitted: dict[str, dict] = {}
    for sweep in ("vocab", "seq"):
        points = [p for p in results["points"] if p["sweep"] == sweep]
        names = {n for p in points for n in p["contenders"]}
        for name in sorted(names):
            pairs = [
                (p["size"], p["contenders"][name]["median_s"])
                for p in points
                if p["contenders"].get(name, {}).get("status") == "measured"
            ]
            if len(pairs) >= 2:
                x, y = np.log(np.array(pairs, dtype=float)).T
                fitted.setdefault(sweep, {})[name] = float(np.polyfit(x, y, 1)[0])
    return fitted


def expected_slope(sweep: str, name: str) -> float | None:
    """The registry's expected growth of one of our methods (None for others)."""
    record = REGISTRY.get(name)
    if record is None:
        return None
    return record.vocab_growth if sweep == "vocab" else record.token_growth


def _predicted_choice(calibration: dict, shape: dict) -> str:
    itemsize = parse(shape["dtype"]).itemsize
    tokens = shape["batch"] * shape["seq"]
    predictions = {}
    for method, coefficients in calibration["coefficients"].items():
        if method not in REGISTRY:
            continue
        rows = auto.code_rows(method, shape["vocab"], shape["type_vocab"], shape["max_positions"])
        features = auto.features(method, tokens, shape["hidden"], itemsize, rows)
        predictions[method] = float(features @ np.asarray(coefficients))
    return min(predictions, key=predictions.get)


def auto_agreement(results: dict, calibration: dict) -> dict:
    """At every point: the method the fitted cost model picks against the fastest measured."""
    rows, misses = [], 0
    for point in results["points"]:
        entry = point.get("verdict", {}).get("methods")
        if entry is None:
            continue
        choice = _predicted_choice(calibration, point["shape"])
        chosen = point["contenders"].get(choice, {})
        best = point["contenders"][entry["fastest"]]
        if chosen.get("status") != "measured":
            ok, slower = False, math.inf
        else:
            slower = chosen["median_s"] / best["median_s"]
            tied = chosen["ci95_s"][0] <= best["ci95_s"][1]  # intervals overlap
            ok = slower <= 1 + AUTO_TOLERANCE or tied
        misses += not ok
        rows.append(
            {
                "sweep": point["sweep"],
                "size": point["size"],
                "auto": choice,
                "fastest": entry["fastest"],
                "auto_over_fastest": slower,
                "ok": ok,
            }
        )
    return {"tolerance": AUTO_TOLERANCE, "points": rows, "misses": misses}


def unstable(entry: dict) -> bool:
    """A measured contender whose 95% interval is wider than +-10% of its median."""
    low, high = entry["ci95_s"]
    return (high - low) / 2 > UNSTABLE * entry["median_s"]
