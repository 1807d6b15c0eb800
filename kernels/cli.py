"""``embench``: check and time the four implementations on this machine."""

from __future__ import annotations

import argparse
import sys

import numpy as np

from . import machine
from .api import METHODS, embed
from .cases import BERT_BASE, Shape, make_inputs
from .equivalence import Reference
from .roofline import CopyReference
from .timing import measure


def _shape_arguments(parser: argparse.ArgumentParser, default: Shape) -> None:
    parser.add_argument("--batch-size", type=int, default=default.batch)
    parser.add_argument("--seq-len", type=int, default=default.seq)
    parser.add_argument("--vocab-size", type=int, default=default.vocab)
    parser.add_argument("--hidden-size", type=int, default=default.hidden)
    parser.add_argument("--dtype", choices=("float32", "float64"), default=default.dtype)


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
    from . import performance
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
    return parser


def main(argv: list[str] | None = None) -> int:
    arguments = build_parser().parse_args(argv)
    return arguments.run(arguments)
