"""``embench compare A/results.json B/results.json``: what changed between two runs.

Machines differ, so absolute times do not travel; ratios to the copy roofline
measured in the same run do. Per point and contender shared by both runs the
change is ``(B's time / B's copy) / (A's time / A's copy)``, divided by the
median of that change over every contender at the point: above 1, B is slower
than the point's other contenders were. The median removes what all of them
share: measured on unchanged code, the copy of a 6 MiB output ran 3x slower in
one of two runs (a cache or page-placement effect on the copy itself), which
moved every ratio of that point alike. Its 95% interval combines the two runs'
intervals of ``time / copy`` (each from paired rounds) on the log scale, as
independent estimates. The
verdict is ``slower`` or ``faster`` only where that interval excludes 1, else
``same`` (:func:`bert_embedding_kernels.bench.engine.verdict.change`, the rule every command
judges by); ``--fail-above R`` fails when a contender got slower by more than
``R`` with its interval excluding 1 (asv's ``compare`` and pytest-benchmark's
``--benchmark-compare-fail`` are the models).
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

from ..engine import verdict as verdicts
from ..engine.contenders import COPY
from ..engine.timing import Z95


class ResultsError(ValueError):
    """A results.json that cannot be compared (missing, not JSON, another schema)."""


class UnlikeRuns(ValueError):
    """Two runs that measured different experiments at a point both have."""


# What must agree for two runs' points to be the same experiment: every field of the
# point's shape, and these run-wide settings (which tables, which peers were asked for).
RUN_SETTINGS = ("tables", "peers", "device")


def load(path: str | Path) -> dict:
    try:
        results = json.loads(Path(path).read_text())
    except (OSError, ValueError) as error:
        raise ResultsError(f"cannot read {path}: {error}") from None
    if not isinstance(results, dict) or results.get("schema") != 2:
        raise ResultsError(
            f"{path} is not an embench results.json of schema 2 (docs/RESULTS.md); "
            "rerun embench report to write one"
        )
    return results


def _points(results: dict) -> dict[tuple, dict]:
    return {(p["sweep"], p["size"], p["shape"]["dtype"]): p for p in results["points"]}


def _log_sigma(ratio: dict) -> float:
    """The standard error of log(ratio) implied by its 95% interval."""
    low, high = ratio["ci95"]
    return (math.log(high) - math.log(low)) / (2 * Z95) if low > 0 else math.inf


def differences(a: dict, b: dict, point_a: dict, point_b: dict) -> list[str]:
    """What differs between two runs at one shared point: shape fields, tables, peers, device."""
    found = []
    shape_a, shape_b = point_a["shape"], point_b["shape"]
    for field in sorted(shape_a.keys() | shape_b.keys()):
        if shape_a.get(field) != shape_b.get(field):
            found.append(f"{field} {shape_a.get(field)} in A, {shape_b.get(field)} in B")
    settings_a, settings_b = a.get("settings", {}), b.get("settings", {})
    for field in RUN_SETTINGS:
        value_a, value_b = settings_a.get(field), settings_b.get(field)
        if field == "device":
            value_a, value_b = value_a or "cpu", value_b or "cpu"
        if value_a != value_b:
            found.append(f"{field} {value_a} in A, {value_b} in B")
    return found


def compare(a: dict, b: dict, allow_different: bool = False) -> list[dict]:
    """Every (point, contender) measured in both runs, with B's change over A.

    Raises
    ------
    UnlikeRuns
        A shared point whose shape, tables, peers or device differ, naming the first
        difference; with ``allow_different`` the rows of such points carry it instead.
    """
    rows = []
    points_b = _points(b)
    for key, point_a in _points(a).items():
        point_b = points_b.get(key)
        if point_b is None:
            continue
        unlike = differences(a, b, point_a, point_b)
        if unlike and not allow_different:
            raise UnlikeRuns(
                f"the runs measured different experiments at {key[0]} {key[1]} {key[2]}: "
                f"{unlike[0]}; compare runs of one configuration, or pass --allow-different "
                "to see the numbers anyway, marked"
            )
        shared = sorted(
            n for n in point_a["ratios"].keys() & point_b["ratios"].keys() if n.endswith(f"/{COPY}")
        )
        if not shared:
            continue
        # What every contender at this point shares (the copy itself running slower in
        # one run, a cache state, a clock) moves all their ratios alike: divide it out.
        common = statistics.median(
            point_b["ratios"][n]["median"] / point_a["ratios"][n]["median"] for n in shared
        )
        for name in shared:
            ra, rb = point_a["ratios"][name], point_b["ratios"][name]
            change = rb["median"] / ra["median"] / common
            sigma = math.hypot(_log_sigma(ra), _log_sigma(rb))
            low, high = change * math.exp(-Z95 * sigma), change * math.exp(Z95 * sigma)
            verdict = verdicts.change(low, high)  # the one rule: the interval decides
            rows.append({"sweep": key[0], "size": key[1], "dtype": key[2],
                         "contender": name.removesuffix(f"/{COPY}"), "change": change,
                         "ci95": [low, high], "verdict": verdict,
                         "different": "; ".join(unlike)})  # fmt: skip
    return sorted(rows, key=lambda r: (r["sweep"], r["size"], r["contender"]))


def failures(rows: list[dict], fail_above: float) -> list[dict]:
    """Contenders slower by more than ``fail_above`` (0.2 = 20%) over all their points.

    Per contender, the geometric mean of its changes over the points both runs
    measured, and of their interval bounds: one noisy point does not fail a
    contender (measured: numpy's gather, which allocates temporaries, moved by
    +27% at one point and -13% at the identical other one of the same rerun of
    unchanged code), a slowdown at every point does.
    """
    by_contender: dict[str, list[dict]] = {}
    for row in rows:
        by_contender.setdefault(row["contender"], []).append(row)
    failing = []
    for name, own in by_contender.items():
        mean = math.exp(statistics.fmean(math.log(r["change"]) for r in own))
        low = math.exp(statistics.fmean(math.log(r["ci95"][0]) for r in own))
        high = math.exp(statistics.fmean(math.log(r["ci95"][1]) for r in own))
        # slower by the one rule (the interval above 1), and by more than R at its median
        if verdicts.change(low, high) == "slower" and mean > 1 + fail_above:
            failing.append({"contender": name, "change": mean, "ci95_low": low, "points": len(own)})
    return failing


def render(rows: list[dict], a: str, b: str) -> str:
    lines = [
        f"embench compare: B = {b} against A = {a}; change = (B / B's copy) / (A / A's copy), "
        "over the point's median change",
        f"{'point':<22} {'contender':<28} {'change':>7} {'95% CI':>16}  verdict",
    ]
    for r in rows:
        point = f"{r['sweep']} {r['size']} {r['dtype']}"
        low, high = r["ci95"]
        different = f"  (DIFFERENT: {r['different']})" if r.get("different") else ""
        lines.append(
            f"{point:<22} {r['contender']:<28} {r['change']:>7.3f} "
            f"[{low:6.3f}, {high:6.3f}]  {r['verdict']}{different}"
        )
    counts = {v: sum(r["verdict"] == v for r in rows) for v in ("slower", "faster", "same")}
    lines.append(
        f"{len(rows)} shared: {counts['slower']} slower, {counts['faster']} faster, "
        f"{counts['same']} the same within their 95% intervals"
    )
    return "\n".join(lines)
