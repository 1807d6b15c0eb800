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
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from .. import embed
from ..registry import METHODS
from . import calibrate, cases, machine
from .cases import Shape, make_inputs
from .progress import Progress
from .reference import Reference
from .render import plot, recommendations, render_markdown, slope
from .roofline import CopyReference
from .timing import measure


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
            sizes = (cases.QUICK_BASE, cases.QUICK_VOCAB_SIZES, cases.QUICK_SEQ_LENS)
            settings = cls(*sizes, METHODS, budget=0.1, skip_above=0.5)
        else:
            sizes = (cases.SWEEP_BASE, cases.VOCAB_SIZES, cases.SEQ_LENS)
            settings = cls(*sizes, METHODS, budget=0.5, skip_above=2.5)
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
