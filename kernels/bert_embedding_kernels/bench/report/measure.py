"""``embench report``: sweep, check, time, fit; the results as plain data (results.json schema 2).

At each point of three sweeps (vocabulary size, sequence length, and small
single-sequence calls) every contender of :mod:`bert_embedding_kernels.bench.engine.contenders` is
checked against the naive reference and then timed by the one engine
(:func:`bert_embedding_kernels.bench.engine.timing.interleave`): interleaved rounds until every
median is known within +-3% or the point's budget is spent. A contender predicted to
take longer than ``skip_above`` per call (its time at the previous point of the
sweep scaled by the work its cost model counts) is skipped and says so. The timing the
points leave unused (a point stops once its medians are within +-3%) then re-times the
points whose medians stayed unstable, the widest first
(:mod:`bert_embedding_kernels.bench.report.retime`).

:func:`write` stores ``results.json`` (docs/RESULTS.md documents the schema),
``calibration.json`` (the cost model behind ``method="auto"``, fitted here),
``report.md`` (:mod:`bert_embedding_kernels.bench.report.render`) and plots
(:mod:`bert_embedding_kernels.bench.report.plots`).
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from ...registry import METHODS
from ..engine import cases, contenders, machine, noise, peers, verdict
from ..engine.cases import Shape, make_inputs
from ..engine.progress import Progress
from ..engine.timing import interleave, planned_calls
from . import calibrate, family_axis, retime

SCHEMA = 2


@dataclass(frozen=True)
class Settings:
    base: Shape
    vocab_sizes: tuple[int, ...]
    seq_lens: tuple[int, ...]
    small_seq_lens: tuple[int, ...]  # batch 1: what a server sees per request
    methods: tuple[str, ...]
    peers: tuple[str, ...]  # outside implementations timed beside ours, sum and LayerNorm
    layer_norm: bool  # also the normalising contenders (fused+LN and the LayerNorm peers)
    budget: float  # seconds of timing per point, all contenders together
    skip_above: float  # a call predicted to take longer than this is skipped
    # A checkpoint ("minilm" or a path): its tables and real token ids instead of
    # random tables and uniform ids; no vocab sweep (see bench/engine/realdata.py).
    tables: str | None = None
    # The family axis (bench.report.family_axis): BERT's, RoBERTa's and DistilBERT's layouts
    # at these vocabularies; () leaves it out.
    family_vocab_sizes: tuple[int, ...] = ()

    @classmethod
    def defaults(cls, quick: bool, **overrides) -> Settings:
        installed = tuple(peers.available_peers() + peers.available_peers(layer_norm=True))
        if quick:
            settings = cls(
                cases.QUICK_BASE,
                cases.QUICK_VOCAB_SIZES,
                cases.QUICK_SEQ_LENS,
                cases.SMALL_SEQ_LENS[::2],
                METHODS,
                installed,
                layer_norm=True,
                budget=cases.QUICK_BUDGET,
                skip_above=0.25,
                family_vocab_sizes=family_axis.QUICK_VOCAB_SIZES,
            )
        else:
            settings = cls(
                cases.SWEEP_BASE,
                cases.VOCAB_SIZES,
                cases.SEQ_LENS,
                cases.SMALL_SEQ_LENS,
                METHODS,
                installed,
                layer_norm=True,
                budget=cases.SWEEP_BUDGET,
                skip_above=1.5,
                family_vocab_sizes=family_axis.VOCAB_SIZES,
            )
        return replace(settings, **overrides)

    def as_json(self) -> dict:
        return {**asdict(self), "base": asdict(self.base)}


def sweep_shapes(settings: Settings) -> list[tuple[str, int, Shape]]:
    shapes = [("vocab", v, settings.base.with_vocab(v)) for v in settings.vocab_sizes]
    shapes += [("seq", s, settings.base.with_seq(s)) for s in settings.seq_lens]
    small = replace(settings.base, batch=1)
    shapes += [("small", s, small.with_seq(s)) for s in settings.small_seq_lens]
    return shapes


def _skipper(shape: Shape, settings: Settings, previous: dict):
    """``skip(name)``: why a contender is not timed at ``shape`` ('' to time it)."""

    def skip(name: str) -> str:
        if name not in previous or name not in METHODS:
            return ""
        last_shape, last_seconds = previous[name]
        estimate = last_seconds * calibrate.work(name, shape) / calibrate.work(name, last_shape)
        if estimate > settings.skip_above:
            return f"estimated {estimate:.2g} s per call, above the {settings.skip_above} s limit"
        return ""

    return skip


def measure_point(sweep, size, shape, settings, previous, inputs=make_inputs):
    """Check and time every contender at one shape; (the point as results.json holds it,
    its timings)."""
    tables, input_ids, token_type_ids = inputs(shape)
    built = contenders.build(
        tables,
        (input_ids, token_type_ids),
        methods=settings.methods,
        peer_names=settings.peers,
        layer_norm=settings.layer_norm,
        skip=_skipper(shape, settings, previous),
    )
    timings = interleave(contenders.timed(built), budget=settings.budget)
    return point_of(sweep, size, shape, built, timings, previous), timings


def _time_again(settings: Settings, inputs):
    """``time_point(point, budget)`` for the second pass (:func:`.retime.retime`): the point's
    contenders checked again, those the first pass did not measure keeping its status and
    reason, then timed; (built contenders, timings, seconds checking)."""

    def time_point(point: dict, budget: float):
        started = time.perf_counter()
        first = point["contenders"]

        def skip(name: str) -> str:
            measured = first.get(name, {}).get("status") == "measured"
            return "" if measured else "not measured in the first pass"

        tables, input_ids, token_type_ids = inputs(Shape(**point["shape"]))
        built = contenders.build(
            tables, (input_ids, token_type_ids), methods=settings.methods,
            peer_names=settings.peers, layer_norm=settings.layer_norm, skip=skip,
        )  # fmt: skip
        for name, contender in built.items():
            entry = first.get(name)
            if entry is not None and entry["status"] != "measured":
                contender.status, contender.reason = entry["status"], entry.get("reason", "")
                contender.agrees = entry.get("agrees")
        checking = time.perf_counter() - started
        return built, interleave(contenders.timed(built), budget=budget), checking

    return time_point


def _rebuild(point: dict, built: dict, timings) -> dict:
    return point_of(point["sweep"], point["size"], Shape(**point["shape"]), built, timings)


def _say(text: str) -> None:
    print(f"embench report: {text}", file=sys.stderr, flush=True)


def point_of(sweep, size, shape: Shape, built: dict, timings, previous=None) -> dict:
    """One point as results.json holds it, from the checked contenders and their timings,
    with its ratios and verdicts (:func:`bert_embedding_kernels.bench.engine.verdict.point_ratios`);
    ``previous`` (name -> (shape, median)) is updated for the next point's skip rule."""
    point = {"sweep": sweep, "size": size, "shape": asdict(shape), "contenders": {}}
    for name, contender in built.items():
        entry = {
            "status": contender.status,
            "kind": contender.kind,
            "origin": contender.origin,
            "allocates": contender.allocates,
            "agrees": contender.agrees,
        }
        if contender.status == "measured":
            estimate = timings.estimate(name)
            entry |= {
                "median_s": estimate.median,
                "ci95_s": [estimate.low, estimate.high],
                "rounds": estimate.count,
                "calls_per_sample": timings.calls_per_sample[name],
            }
            if previous is not None:
                previous[name] = (shape, estimate.median)
        else:
            entry["reason"] = contender.reason
        point["contenders"][name] = entry
    point["ratios"] = verdict.point_ratios(point, timings)
    return point


def run(settings: Settings) -> dict:
    """Measure every point of every sweep; results.json (schema 2) as a dict."""
    inputs = make_inputs
    if settings.tables:
        from ..engine import realdata

        settings, inputs = realdata.report_settings(settings)
    shapes = sweep_shapes(settings)
    announce(settings, len(shapes))
    started, load = time.perf_counter(), [os.getloadavg()[0]]
    points, kept, families, family_seconds = [], [], [], 0.0
    with Progress(len(shapes) + len(settings.family_vocab_sizes), "embench report") as bar:
        previous_by_sweep: dict[str, dict] = {}
        for sweep, size, shape in shapes:
            previous = previous_by_sweep.setdefault(sweep, {})
            point, timings = measure_point(sweep, size, shape, settings, previous, inputs)
            points.append(point)
            kept.append(timings)
            bar.update(f"{sweep} {size}")
        for vocab in settings.family_vocab_sizes:
            family_started = time.perf_counter()  # its checks counted as timing: on the safe side
            families += family_axis.measure(settings.base, (vocab,), settings.budget)
            family_seconds += time.perf_counter() - family_started
            bar.update(f"family vocab {vocab}")
    total = settings.budget * (len(shapes) + len(settings.family_vocab_sizes))
    left = total - family_seconds - sum(timings.seconds for timings in kept)
    retimed = retime.retime(
        points, kept, left, settings.budget, _time_again(settings, inputs), _rebuild, _say
    )
    load.append(os.getloadavg()[0])
    seconds = time.perf_counter() - started
    print(f"embench report: measured in {seconds / 60:.1f} min", file=sys.stderr, flush=True)
    results = {
        "schema": SCHEMA,
        "machine": machine.describe(),  # after the kernels ran: the threading layer is known
        "settings": settings.as_json(),
        "points": points,
        "families": families,
        "seconds": seconds,
        "retimed": retimed,
    }
    results["noise"] = noise.of_results(results) | {"load": load, "cores": os.cpu_count()}
    if settings.tables:
        from ..engine import realdata

        results["id_comparison"] = realdata.report_comparisons(settings)
    return results


def announce(settings: Settings, points: int) -> None:
    """Say before any work what the report will measure and how long its timing takes."""
    timed = points + len(settings.family_vocab_sizes)
    slowest = planned_calls(settings.skip_above)
    print(
        f"embench report: {points} points and {len(settings.family_vocab_sizes)} family "
        f"vocabularies, {settings.budget:g} s of timing each: {timed * settings.budget / 60:.1f} "
        "min of timing, plus each point's checks (one call of every contender); a contender "
        f"predicted above {settings.skip_above:g} s a call is skipped, one below it may "
        f"overrun its point by its fewest rounds ({slowest} calls); the timing the points leave "
        "unused then re-times the unstable ones (their checks again on top)",
        file=sys.stderr,
        flush=True,
    )


def write(results: dict, directory: Path, command: str) -> list[str]:
    """Write results.json, calibration.json, report.md and the plots into ``directory``."""
    from . import plots as plotting  # matplotlib and Markdown: only when writing
    from . import render

    directory.mkdir(parents=True, exist_ok=True)
    results = {**results, "command": command}
    calibration = calibrate.fit(results["points"], source=command, machine=results["machine"])
    results["recommendations"] = verdict.recommendations(results)
    results["slopes"] = verdict.slopes(results)
    results["auto"] = verdict.auto_agreement(results, calibration)
    (directory / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (directory / "calibration.json").write_text(json.dumps(calibration, indent=2) + "\n")
    plots = plotting.plot(results, directory)
    (directory / "report.md").write_text(render.render_markdown(results, plots))
    return ["report.md", "results.json", "calibration.json", *plots]
