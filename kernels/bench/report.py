"""``embench report``: sweep, check, time, fit, plot, recommend.

For each point of a vocabulary sweep and a sequence-length sweep it checks
every method against the reference, times it (warm-up, then the median of
repeats within a time budget) beside the copy roofline, and skips a method
whose predicted time for one call exceeds the skip limit (predicted from its
time at the previous point, scaled by the work its cost model says it does).
It writes ``report.md``, ``results.json``, ``calibration.json`` (the rule
``method="auto"`` uses) and two log-log PNG plots.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from .. import embed
from ..registry import METHODS
from . import calibrate, machine
from .cases import Shape, make_inputs
from .progress import Progress
from .reference import Reference
from .roofline import CopyReference
from .timing import measure

# Expected log-log slopes, shown next to the fitted ones: the one-hot paths do
# tokens x rows x hidden multiply-adds (rows = vocab + types + positions); the
# gathers touch tokens x hidden values whatever the vocabulary.
EXPECTED_SLOPE = {
    "vocab": {"onehot": 1.0, "concat": 1.0, "gather": 0.0, "fused": 0.0},
    "seq": {"onehot": 1.0, "concat": 1.0, "gather": 1.0, "fused": 1.0},
}
SLOPE_NOTE = {
    "vocab": "one-hot paths ~1 (cost grows with the vocabulary), gathers ~0 (flat)",
    "seq": "all ~1 (cost grows with the tokens); the one-hot paths a little more, since "
    "the position table grows with the longest sequence",
}


@dataclass(frozen=True)
class Settings:
    base: Shape
    vocab_sizes: tuple[int, ...]
    seq_lens: tuple[int, ...]
    methods: tuple[str, ...]
    budget: float  # seconds of timing per method and point
    skip_above: float  # a call predicted to take longer than this is skipped
    # A checkpoint ("minilm" or a path): its tables and real token ids instead of
    # random tables and uniform ids; no vocab sweep (see kernels.realdata).
    tables: str | None = None

    @classmethod
    def defaults(cls, quick: bool, **overrides) -> Settings:
        if quick:
            base = Shape(batch=4, seq=128, hidden=768, vocab=30522)
            settings = cls(base, (1000, 8000, 30522), (32, 128, 512), METHODS, 0.1, 0.5)
        else:
            base = Shape(batch=8, seq=128, hidden=768, vocab=30522)
            settings = cls(
                base,
                (1000, 8000, 30522, 100_000, 250_000),
                (32, 64, 128, 256, 512, 1024, 2048),
                METHODS,
                0.5,
                2.5,
            )
        return replace(settings, **overrides)


@dataclass
class Point:
    """One method at one shape of one sweep."""

    sweep: str
    size: int  # the swept value: vocab size or sequence length
    shape: Shape
    method: str
    status: str = "measured"  # or "skipped"
    median_s: float | None = None
    repeats: int = 0
    estimated_s: float | None = None
    copy_s: float | None = None
    max_abs_diff: float | None = None
    bound_ratio: float | None = None
    bitwise: bool | None = None
    agrees: bool | None = None

    def as_json(self) -> dict:
        data = asdict(self)
        data["shape"] = asdict(self.shape)
        return data


@dataclass
class Results:
    settings: Settings
    machine: dict
    points: list[Point] = field(default_factory=list)
    id_comparison: list[dict] = field(default_factory=list)  # with --tables: real vs uniform

    def measured(self, sweep: str, method: str) -> list[Point]:
        return [
            p
            for p in self.points
            if p.sweep == sweep and p.method == method and p.status == "measured"
        ]

    @property
    def disagreements(self) -> list[Point]:
        return [p for p in self.points if p.agrees is False]


def sweep_shapes(settings: Settings) -> list[tuple[str, int, Shape]]:
    shapes = [("vocab", v, settings.base.with_vocab(v)) for v in settings.vocab_sizes]
    shapes += [("seq", s, settings.base.with_seq(s)) for s in settings.seq_lens]
    return shapes


def _measure_point(sweep, size, shape, settings, previous, results, bar, inputs=make_inputs):
    tables, input_ids, token_type_ids = inputs(shape)
    reference = None
    out = np.empty((shape.batch, shape.seq, shape.hidden), dtype=tables.dtype)
    copy = CopyReference(out.shape, tables.dtype)
    copy_s = measure(copy, budget=settings.budget / 4).median
    for method in settings.methods:
        point = Point(sweep, size, shape, method, copy_s=copy_s)
        results.points.append(point)
        if method in previous:
            last_shape, last_seconds = previous[method]
            scale = calibrate.work(method, shape) / calibrate.work(method, last_shape)
            point.estimated_s = last_seconds * scale
            if point.estimated_s > settings.skip_above:
                point.status = "skipped"
                bar.update(f"{sweep} {size} {method} skipped")
                continue

        def call(method=method):
            return embed(tables, input_ids, token_type_ids, method=method, out=out)

        call()  # warm-up: compile this exact specialisation, fault pages in
        if reference is None:
            reference = Reference(tables, input_ids, token_type_ids)
        agreement = reference.compare(method, out)
        timing = measure(call, budget=settings.budget)
        point.median_s, point.repeats = timing.median, timing.repeats
        point.max_abs_diff, point.bound_ratio = agreement.max_abs_diff, agreement.bound_ratio
        point.bitwise, point.agrees = agreement.bitwise, agreement.ok
        previous[method] = (shape, timing.median)
        bar.update(f"{sweep} {size} {method} {timing.median * 1e3:.2f} ms")


def run(settings: Settings) -> Results:
    """Measure every method at every point of both sweeps."""
    inputs = make_inputs
    if settings.tables:
        from . import realdata

        settings, inputs = realdata.report_settings(settings)
    results = Results(settings, machine.describe())
    shapes = sweep_shapes(settings)
    with Progress(len(shapes) * len(settings.methods), "embench report") as bar:
        previous_by_sweep: dict[str, dict] = {"vocab": {}, "seq": {}}
        for sweep, size, shape in shapes:
            previous = previous_by_sweep[sweep]
            _measure_point(sweep, size, shape, settings, previous, results, bar, inputs)
    if settings.tables:
        results.id_comparison = realdata.report_comparisons(settings)
    results.machine = machine.describe()  # now the threading layer has started
    return results


def slope(points: list[Point]) -> float | None:
    """The log-log slope of time against the swept size (None below two points)."""
    if len(points) < 2:
        return None
    x = np.log([p.size for p in points])
    y = np.log([p.median_s for p in points])
    return float(np.polyfit(x, y, 1)[0])


def _fastest_by_size(results: Results, sweep: str) -> list[tuple[int, str, float, str, float]]:
    """Per swept size: (size, fastest, its time, runner-up, runner-up / fastest)."""
    rows = []
    sizes = sorted({p.size for p in results.points if p.sweep == sweep})
    for size in sizes:
        timed = sorted(
            (p.median_s, p.method)
            for p in results.points
            if p.sweep == sweep and p.size == size and p.status == "measured"
        )
        if not timed:
            continue
        best_s, best = timed[0]
        runner_s, runner = timed[1] if len(timed) > 1 else (math.nan, "-")
        rows.append((size, best, best_s, runner, runner_s / best_s))
    return rows


def recommendations(results: Results) -> list[str]:
    """Plain-words advice: consecutive sizes with the same winner form one regime."""
    advice = []
    for sweep, label in (("vocab", "vocabulary"), ("seq", "sequence length")):
        regimes: list[list] = []
        for size, best, _, runner, ratio in _fastest_by_size(results, sweep):
            if regimes and regimes[-1][2] == best:
                regimes[-1][1] = size
                regimes[-1][3].append(ratio)
                regimes[-1][4].add(runner)
            else:
                regimes.append([size, size, best, [ratio], {runner}])
        for first, last, best, ratios, runners in regimes:
            span = f"{first}" if first == last else f"{first} to {last}"
            advice.append(
                f"{label} {span}: use **{best}**; the next best ({', '.join(sorted(runners))}) "
                f"is {min(ratios):.1f}x to {max(ratios):.1f}x slower."
            )
    return advice


def _format_time(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds * 1e6:.1f} us"


def _sweep_table(results: Results, sweep: str) -> list[str]:
    methods = results.settings.methods
    label = "vocab size" if sweep == "vocab" else "seq len"
    lines = [
        f"| {label} | " + " | ".join(methods) + " | copy (roofline) | fused / roofline |",
        "|---:|" + "---:|" * (len(methods) + 2),
    ]
    for size in sorted({p.size for p in results.points if p.sweep == sweep}):
        cells, copy_s, fused_s = [], None, None
        for method in methods:
            point = next(
                p
                for p in results.points
                if p.sweep == sweep and p.size == size and p.method == method
            )
            copy_s = point.copy_s
            if point.status == "skipped":
                cells.append(f"skipped (estimated {point.estimated_s:.1f} s)")
                continue
            mark = "" if point.agrees else " **DISAGREES**"
            cells.append(_format_time(point.median_s) + mark)
            if method == "fused":
                fused_s = point.median_s
        fraction = f"{copy_s / fused_s:.2f}" if fused_s and copy_s else "-"
        lines.append(
            f"| {size} | " + " | ".join(cells) + f" | {_format_time(copy_s)} | {fraction} |"
        )
    return lines


def render_markdown(results: Results, command: str, plots: list[str]) -> str:
    s = results.settings
    base = s.base
    lines = [
        "# Which BERT embedding implementation to use: measured here",
        "",
        f"Generated by `{command}`.",
        "",
        "## Machine and settings",
        "",
    ]
    lines += [f"- {key}: {value}" for key, value in results.machine.items()]
    lines += [
        f"- base shape: batch {base.batch} x seq {base.seq}, hidden {base.hidden}, vocab "
        f"{base.vocab}, {base.dtype}, {base.type_vocab} token types",
        f"- vocab sweep at seq {base.seq}: {', '.join(map(str, s.vocab_sizes)) or 'none'}",
        f"- seq-length sweep at vocab {base.vocab} (position table max(512, seq) rows): "
        f"{', '.join(map(str, s.seq_lens))}",
        f"- timing: warm-up call, then median of repeats within {s.budget} s per method and "
        f"point; a call predicted above {s.skip_above} s is skipped",
    ]
    if s.tables:
        from .realdata import describe_source

        lines += describe_source(s)
    lines += [
        "",
        "## Recommendation",
        "",
    ]
    lines += [f"- {line}" for line in recommendations(results)]
    lines += [
        "",
        '`method="auto"` in `kernels.embed` applies the cost model fitted from these '
        "measurements (see calibration.json).",
        "",
        "## Agreement with the reference",
        "",
    ]
    bad = results.disagreements
    if bad:
        lines.append(f"**{len(bad)} measurement(s) DISAGREE with the reference:**")
        lines += [
            f"- {p.method} at {p.shape.name}: max |diff| {p.max_abs_diff:.3g}, "
            f"error/bound {p.bound_ratio:.3g}"
            for p in bad
        ]
    else:
        checked = sum(p.agrees is not None for p in results.points)
        lines.append(
            f"All {checked} measured method/shape pairs agree with the reference "
            "within the guaranteed bound (gather and fused bit for bit)."
        )
    for sweep, title in (("vocab", "Time vs vocabulary size"), ("seq", "Time vs sequence length")):
        if not any(p.sweep == sweep for p in results.points):
            continue  # no vocab sweep on a checkpoint's fixed tables
        lines += ["", f"## {title}", ""]
        lines += _sweep_table(results, sweep)
        plot = f"time_vs_{sweep}.png"
        if plot in plots:
            lines += ["", f"![{title}]({plot})"]
    lines += [
        "",
        "## Scaling exponents (log-log slope of time)",
        "",
        "| method | vs vocab (expected) | vs seq len (expected) |",
        "|---|---:|---:|",
    ]
    for method in s.methods:
        cells = []
        for sweep in ("vocab", "seq"):
            fitted = slope(results.measured(sweep, method))
            shown = "-" if fitted is None else f"{fitted:.2f}"
            cells.append(f"{shown} ({EXPECTED_SLOPE[sweep][method]:.0f})")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"Expected vs vocab: {SLOPE_NOTE['vocab']}. Expected vs seq len: "
        f"{SLOPE_NOTE['seq']}. Small shapes flatten the gathers' slope: fixed per-call "
        "costs dominate there.",
        "",
        "**Roofline**: a parallel copy of the output's bytes (`copy`), timed at every "
        "point. No forward pass can beat it; `fused / roofline` is the fraction of it "
        "the fused kernel reaches (1.0 = at the memory limit).",
    ]
    if results.id_comparison:
        from .realdata import render_comparison

        lines += ["", *render_comparison(results.id_comparison, s.tables)]
    return "\n".join(lines) + "\n"


def plot(results: Results, directory: Path) -> list[str]:
    """Write the two log-log plots; returns their file names (none without matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    written = []
    for sweep, xlabel in (("vocab", "vocabulary size"), ("seq", "sequence length")):
        if not any(p.sweep == sweep for p in results.points):
            continue
        figure, axes = plt.subplots(figsize=(7.5, 5))
        for method in results.settings.methods:
            points = results.measured(sweep, method)
            if points:
                axes.plot(
                    [p.size for p in points], [p.median_s for p in points], marker="o", label=method
                )
        copies = sorted({(p.size, p.copy_s) for p in results.points if p.sweep == sweep})
        axes.plot(
            [c[0] for c in copies], [c[1] for c in copies], "k--", label="copy (memory roofline)"
        )
        axes.set_xscale("log")
        axes.set_yscale("log")
        axes.set_xlabel(xlabel)
        axes.set_ylabel("median time per call (s)")
        base = results.settings.base
        fixed = f"seq {base.seq}" if sweep == "vocab" else f"vocab {base.vocab}"
        axes.set_title(
            f"BERT summed embeddings: time vs {xlabel}\n"
            f"batch {base.batch}, {fixed}, hidden {base.hidden}, {base.dtype}"
        )
        axes.grid(True, which="both", alpha=0.3)
        axes.legend()
        figure.tight_layout()
        name = f"time_vs_{sweep}.png"
        figure.savefig(directory / name, dpi=110)
        plt.close(figure)
        written.append(name)
    return written


def write(results: Results, directory: Path, command: str) -> list[str]:
    """Write report.md, results.json, calibration.json and the plots into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    plots = plot(results, directory)
    (directory / "report.md").write_text(render_markdown(results, command, plots))
    data = {
        "command": command,
        "machine": results.machine,
        "settings": {**asdict(results.settings), "base": asdict(results.settings.base)},
        "points": [p.as_json() for p in results.points],
        "slopes": {
            sweep: {m: slope(results.measured(sweep, m)) for m in results.settings.methods}
            for sweep in ("vocab", "seq")
        },
        "recommendations": recommendations(results),
        "id_comparison": results.id_comparison,
    }
    (directory / "results.json").write_text(json.dumps(data, indent=2) + "\n")
    calibration = calibrate.fit(
        [p.as_json() for p in results.points], source=command, machine=results.machine
    )
    (directory / "calibration.json").write_text(json.dumps(calibration, indent=2) + "\n")
    return ["report.md", "results.json", "calibration.json", *plots]
