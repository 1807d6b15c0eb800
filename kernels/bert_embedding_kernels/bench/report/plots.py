"""The report's plots: one log-log plot per sweep of results.json (schema 2), 95% intervals
as error bars, every contender in its own colour and marker. Nothing here measures."""

from __future__ import annotations

from pathlib import Path

from ..engine.verdict import SWEEP_LABELS, unstable
from .render import contender_names

PEER_STYLE = "--"  # dashed lines: outside implementations

# Every contender's colour and marker, the same in every plot and run: matplotlib's default
# cycle has 10 colours, and the report draws 13 series (onehot and torch-eager-layernorm
# both came out blue, concat and onnxruntime-embedlayernorm both orange). Ours are round,
# the sum peers triangles, the LayerNorm ones diamonds; the copy is black squares.
SERIES_STYLES = {
    "copy": ("black", "s"),
    "onehot": ("#1f77b4", "o"),
    "concat": ("#ff7f0e", "o"),
    "gather": ("#2ca02c", "o"),
    "fused": ("#d62728", "o"),
    "fused (allocating)": ("#9467bd", "o"),
    "numpy-indexing": ("#8c564b", "^"),
    "torch-eager": ("#e377c2", "^"),
    "torch-compile": ("#7f7f7f", "^"),
    "onnxruntime": ("#bcbd22", "^"),
    "fused+LN": ("#17becf", "D"),
    "torch-eager-layernorm": ("#393b79", "D"),
    "onnxruntime-embedlayernorm": ("#e7969c", "D"),
}
# For a contender the table does not name yet (a new method or peer): colours no named
# contender has, so it still gets its own.
SPARE_COLOURS = ("#637939", "#8c6d31", "#843c39", "#7b4173", "#6b6ecf", "#b5cf6b", "#e7ba52")
SPARE_MARKERS = ("v", "P", "X", "*", "h", "<", ">")


def series_styles(names: list[str]) -> dict[str, tuple[str, str]]:
    """``{name: (colour, marker)}``, a pair no other name of ``names`` has."""
    styles = {n: SERIES_STYLES[n] for n in names if n in SERIES_STYLES}
    others = [n for n in names if n not in SERIES_STYLES]
    for index, name in enumerate(others):
        colour = SPARE_COLOURS[index % len(SPARE_COLOURS)]
        styles[name] = (colour, SPARE_MARKERS[index // len(SPARE_COLOURS) % len(SPARE_MARKERS)])
    return styles


def plot(results: dict, directory: Path) -> list[str]:
    """One log-log plot per sweep with 95% intervals as error bars (none without matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    written = []
    for sweep, label in SWEEP_LABELS.items():
        points = sorted(
            (p for p in results["points"] if p["sweep"] == sweep), key=lambda p: p["size"]
        )
        if len(points) < 2:
            continue
        figure, axes = plt.subplots(figsize=(8, 5.5))
        names = contender_names(points)
        styles = series_styles(names)
        for name in names:
            measured = [
                (p["size"], p["contenders"][name])
                for p in points
                if p["contenders"].get(name, {}).get("status") == "measured"
            ]
            if not measured:
                continue
            sizes = [size for size, _ in measured]
            medians = [e["median_s"] for _, e in measured]
            errors = [
                [m - e["ci95_s"][0] for m, (_, e) in zip(medians, measured, strict=True)],
                [e["ci95_s"][1] - m for m, (_, e) in zip(medians, measured, strict=True)],
            ]
            origin = measured[0][1]["origin"]
            style = {"peer": PEER_STYLE, "roofline": ":"}.get(origin, "-")
            color, marker = styles[name]
            axes.errorbar(
                sizes,
                medians,
                yerr=errors,
                fmt=style,
                marker=marker,
                markersize=4,
                capsize=2,
                label=name,
                color=color,
            )
            for size, entry in measured:
                if unstable(entry):
                    axes.annotate("~", (size, entry["median_s"]), color="red")
        axes.set_xscale("log")
        axes.set_yscale("log")
        axes.set_xlabel(label)
        axes.set_ylabel("median time per call (s), 95% CI")
        axes.set_title(f"{label}: ours solid, outside libraries dashed, copy dotted; ~ unstable")
        axes.legend(fontsize=7, ncol=2)
        axes.grid(True, which="both", alpha=0.3)
        name = f"time_vs_{sweep}.png"
        figure.tight_layout()
        figure.savefig(directory / name, dpi=110)
        plt.close(figure)
        written.append(name)
    return written
