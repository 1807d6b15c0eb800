"""``embench compare A/results.json B/results.json``: what changed between two runs.

Machines differ, so absolute times do not travel; ratios to the copy roofline
measured in the same run do. Per point and contender shared by both runs the
change is ``(B's time / B's copy) / (A's time / A's copy)``: above 1, B is
slower. Its 95% interval combines the two runs' intervals of ``time / copy``
(each from paired rounds) on the log scale, as independent estimates. The
verdict is ``slower`` or ``faster`` only where that interval excludes 1, else
``same``; ``--fail-above R`` fails when a contender got slower by more than
``R`` with its interval excluding 1 (asv's ``compare`` and pytest-benchmark's
``--benchmark-compare-fail`` are the models).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from .contenders import COPY
from .timing import Z95


class ResultsError(ValueError):
    """A results.json that cannot be compared (missing, not JSON, another schema)."""


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


def compare(a: dict, b: dict) -> list[dict]:
    """Every (point, contender) measured in both runs, with B's change over A."""
    rows = []
    points_b = _points(b)
    for key, point_a in _points(a).items():
        point_b = points_b.get(key)
        if point_b is None:
            continue
        for name in point_a["ratios"].keys() & point_b["ratios"].keys():
            if not name.endswith(f"/{COPY}"):
                continue
            ra, rb = point_a["ratios"][name], point_b["ratios"][name]
            change = rb["median"] / ra["median"]
            sigma = math.hypot(_log_sigma(ra), _log_sigma(rb))
            low, high = change * math.exp(-Z95 * sigma), change * math.exp(Z95 * sigma)
            verdict = "slower" if low > 1 else "faster" if high < 1 else "same"
            rows.append({"sweep": key[0], "size": key[1], "dtype": key[2],
                         "contender": name.removesuffix(f"/{COPY}"), "change": change,
                         "ci95": [low, high], "verdict": verdict})  # fmt: skip
    return sorted(rows, key=lambda r: (r["sweep"], r["size"], r["contender"]))


def failures(rows: list[dict], fail_above: float) -> list[dict]:
    """Rows slower by more than ``fail_above`` (0.25 = 25%) with an interval excluding 1."""
    return [r for r in rows if r["verdict"] == "slower" and r["change"] > 1 + fail_above]


def render(rows: list[dict], a: str, b: str) -> str:
    lines = [
        f"embench compare: B = {b} against A = {a}; change = (B / B's copy) / (A / A's copy)",
        f"{'point':<22} {'contender':<28} {'change':>7} {'95% CI':>16}  verdict",
    ]
    for r in rows:
        point = f"{r['sweep']} {r['size']} {r['dtype']}"
        low, high = r["ci95"]
        lines.append(
            f"{point:<22} {r['contender']:<28} {r['change']:>7.3f} "
            f"[{low:6.3f}, {high:6.3f}]  {r['verdict']}"
        )
    counts = {v: sum(r["verdict"] == v for r in rows) for v in ("slower", "faster", "same")}
    lines.append(
        f"{len(rows)} shared: {counts['slower']} slower, {counts['faster']} faster, "
        f"{counts['same']} the same within their 95% intervals"
    )
    return "\n".join(lines)
