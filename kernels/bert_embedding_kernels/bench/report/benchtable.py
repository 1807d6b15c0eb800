"""Render pytest-benchmark's JSON as the Markdown table people read in CI.

Per shape (one benchmark group): every method's median, its ratio to
``fused``, and how close ``fused`` gets to the memory roofline (the copy
reference's median divided by fused's).
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

REFERENCE_METHOD = "fused"
ROOFLINE = "copy"


def _format_seconds(seconds: float) -> str:
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"


def medians_by_shape(report: dict) -> dict[str, dict[str, float]]:
    """``{shape: {row name: median seconds}}`` from a pytest-benchmark JSON report."""
    table: dict[str, dict[str, float]] = defaultdict(dict)
    for bench in report["benchmarks"]:
        row = bench["extra_info"].get("method", bench["name"])
        table[bench["group"] or bench["name"]][row] = bench["stats"]["median"]
    return dict(table)


def render(report: dict) -> str:
    """The Markdown table of one pytest-benchmark JSON report."""
    lines = []
    machine = report.get("machine_info", {})
    cpu = machine.get("cpu", {}).get("brand_raw", machine.get("processor", "?"))
    lines.append(
        f"Machine: {cpu}, Python {machine.get('python_version', '?')}; "
        f"run {report.get('datetime', '?')}."
    )
    lines.append("")
    lines.append(
        f"| shape | method | median | x {REFERENCE_METHOD} | {REFERENCE_METHOD} "
        "fraction of the copy |"
    )
    lines.append("|---|---|---:|---:|---:|")
    for shape, rows in sorted(medians_by_shape(report).items()):
        reference = rows.get(REFERENCE_METHOD)
        roofline = rows.get(ROOFLINE)
        fraction = f"{roofline / reference:.2f}" if reference and roofline else "n/a"
        for index, (row, median) in enumerate(sorted(rows.items(), key=lambda kv: kv[1])):
            ratio = f"{median / reference:.2f}" if reference else "n/a"
            shown_fraction = fraction if index == 0 else ""
            shown_shape = shape if index == 0 else ""
            lines.append(
                f"| {shown_shape} | {row} | {_format_seconds(median)} | {ratio} | "
                f"{shown_fraction} |"
            )
    lines.append("")
    lines.append(
        f"x {REFERENCE_METHOD}: median / {REFERENCE_METHOD}'s median (lower is faster). "
        f"Roofline: a parallel copy of the output's bytes; fraction = copy median / "
        f"{REFERENCE_METHOD} median (1.0 would be at the memory limit)."
    )
    return "\n".join(lines)


def render_file(path: str | Path) -> str:
    data = json.loads(Path(path).read_text())
    if not isinstance(data, dict) or not isinstance(data.get("benchmarks"), list):
        raise ValueError(
            "it is not a pytest-benchmark JSON (no 'benchmarks' list); write one with "
            "pytest tests/benchmarks --benchmark-only --benchmark-json=FILE"
        )
    return render(data)
