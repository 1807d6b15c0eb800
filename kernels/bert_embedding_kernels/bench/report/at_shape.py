"""``embench check`` and ``embench mine``: every contender at the user's shape, within a budget.

``check`` times our four methods (and ``fused`` allocating); ``mine`` adds every installed
peer (torch eager, ``torch.compile``, onnxruntime) and the LayerNorm contenders, at the
shape the user gives or on a checkpoint's tables with real token ids. Both go the report's
way (:mod:`bert_embedding_kernels.bench.report.measure`): every contender checked against the naive
reference, then timed by the one engine in interleaved rounds, judged by the one rule
(:mod:`bert_embedding_kernels.bench.engine.verdict`). Before any work they say what they will do and
how long it will take; :class:`bert_embedding_kernels.bench.engine.plan.Budget` admits only what
``--budget`` can time, and a progress bar runs while they time.
"""

from __future__ import annotations

import os
import sys
import time

from ... import auto
from ...dtypes import parse
from ...registry import METHODS
from ..engine import contenders, machine, noise
from ..engine import verdict as verdicts
from ..engine.cases import Shape, make_inputs
from ..engine.plan import Budget
from ..engine.progress import Progress
from ..engine.timing import MIN_ROUNDS, format_time, interleave, planned_seconds

# What each verdict group compares, in words (bench/engine/verdict.py's GROUPS).
GROUP_WORDS = {
    "methods": "our methods into out=",
    "sum": "allocating the output",
    "layernorm": "LayerNorm(sum), allocating",
}


def predictor(shape: Shape):
    """``predict(name)``: the cost model's seconds per call of one of our methods, else None."""
    itemsize = parse(shape.dtype).itemsize

    def predict(name: str) -> float | None:
        method = "fused" if name == contenders.FUSED_ALLOCATING else name
        if method not in METHODS:
            return None
        return auto.predict(
            method, shape.tokens, shape.hidden, itemsize, shape.vocab, shape.type_vocab,
            shape.max_positions,
        )  # fmt: skip

    return predict


def _size(nbytes: int) -> str:
    return f"{nbytes / 2**20:.1f} MiB" if nbytes >= 2**20 else f"{nbytes / 2**10:.0f} KiB"


def _say(command: str, text: str) -> None:
    print(f"embench {command}: {text}", file=sys.stderr, flush=True)


def _announce(command, shape, methods, peer_names, budget, predict) -> None:
    """What the command will do and how long it will take, before it starts."""
    ours = [m for m in methods if not budget.skip(m)]
    budget.planned.clear()  # a dry run of the skip rule: the real one runs with the checks
    checking = 2 * sum(predict(m) or 0.0 for m in ours)
    skipped = f" ({len(methods) - len(ours)} skipped: too slow for --budget)" * (
        len(ours) < len(methods)
    )
    peers = f" and {len(peer_names)} peer(s)" * bool(peer_names)
    extra = "the naive reference's time"
    if peer_names:
        extra += " and the peers' set-up (torch.compile compiles)"
    _say(
        command,
        f"{shape.name}: checking {len(ours)} of our methods{skipped}{peers} against the naive "
        f"reference (our calls predicted {checking:.1f} s), then at most {budget.budget:g} s "
        f"of timing (--budget): about {checking + budget.budget:.0f} s in all, plus {extra}",
    )


def measure(command, shape, inputs, methods, peer_names, layer_norm, seconds, peer_reason=""):
    """Check, plan and time; (built contenders, timings, noise record, seconds checking).
    ``peer_reason``: why every peer is skipped (a layout they do not compute), or ''."""
    tables, input_ids, token_type_ids = inputs
    predict = predictor(shape)
    budget = Budget(seconds, predict, reserve=planned_seconds(predict("fused") or 0.0))
    _announce(command, shape, methods, peer_names, budget, predict)
    load = [os.getloadavg()[0]]
    started = time.perf_counter()
    checks = len(methods) + ("fused" in methods) + len(peer_names) + layer_norm
    with Progress(checks, f"embench {command}: checking") as bar:

        def skip(name: str) -> str:
            bar.update(name)
            if peer_reason and name in peer_names:
                return peer_reason
            return budget.skip(name)

        built = contenders.build(
            tables, (input_ids, token_type_ids), methods=methods, peer_names=peer_names,
            layer_norm=layer_norm, skip=skip,
        )  # fmt: skip
        budget.settle(built)
    checked = time.perf_counter() - started
    calls = contenders.timed(built)
    _say(
        command,
        f"checked in {checked:.1f} s; timing {len(calls)} contenders for at most "
        f"{seconds:g} s (the fewest rounds, {MIN_ROUNDS}, predicted {budget.seconds:.1f} s)",
    )
    with Progress(seconds, f"embench {command}: timing", unit="s") as bar:
        timings = interleave(
            calls,
            budget=seconds,
            progress=lambda r: bar.show(time.perf_counter() - started - checked, f"round {r}"),
        )
    load.append(os.getloadavg()[0])
    return built, timings, noise.record(load, timings), checked


def print_table(shape: Shape, built: dict, timings) -> int:
    """Every contender's median, interval and fraction of the copy; the number that failed."""
    header = (
        f"{'contender':<28} {'median':>10} {'95% CI':>9} {'fraction of copy [95% CI]':>26}  verdict"
    )
    print(header)
    print("-" * len(header))
    failures = 0
    for name, contender in built.items():
        if contender.status != "measured":
            failures += contender.status == "failed"
            print(f"{name:<28} {contender.status.upper()}: {contender.reason}")
            continue
        estimate = timings.estimate(name)
        ratio = timings.ratio(contenders.COPY, name)  # copy time / theirs: the fraction
        verdict = "roofline" if name == contenders.COPY else "ok, agrees with the reference"
        print(
            f"{name:<28} {format_time(estimate.median):>10} "
            f"{'+-' + format(estimate.half_width, '.1%'):>9} "
            f"{ratio.median:>11.2f} [{ratio.low:.2f}, {ratio.high:.2f}]  {verdict}"
        )
    print(
        f"copy: a parallel copy of the output's {_size(shape.output_nbytes)}, the memory "
        "roofline. 95% CI: of the median, distribution-free; fraction of copy: the copy's time "
        "over the contender's (1.00 = at the memory limit), a paired per-round ratio."
    )
    return failures


def print_verdicts(point: dict) -> list[str]:
    """Each group's winner by the one rule; returns the winners a user should pick."""
    picks = []
    for group, entry in point["verdict"].items():
        print(f"fastest ({GROUP_WORDS[group]}): {verdicts.phrase(entry, bold='')}")
        either = f" or {entry['runner_up']}, tied" if entry.get("tie") else ""
        picks.append(f"{entry['fastest']}{either} ({GROUP_WORDS[group]})")
    return picks


def run(
    arguments, command: str, *, peer_names=(), layer_norm=False, inputs=None, peer_reason=""
) -> int:
    """Check and time every contender at one shape; print the table and what to use."""
    from .measure import point_of

    shape = shape_of(arguments)
    inputs = inputs or make_inputs(shape)
    methods = list(arguments.methods or METHODS)
    started = time.perf_counter()
    built, timings, record, checked = measure(
        command, shape, inputs, methods, list(peer_names), layer_norm, arguments.budget,
        peer_reason,
    )  # fmt: skip
    print(
        f"embench {command}: {shape.name} (batch {shape.batch} x seq {shape.seq}, hidden "
        f"{shape.hidden}, vocab {shape.vocab}, {shape.dtype}); {timings.rounds} interleaved "
        f"rounds in {timings.seconds:.1f} s"
    )
    print(" | ".join(f"{key}: {value}" for key, value in machine.describe().items()))
    print(noise.describe(record))
    failures = print_table(shape, built, timings)
    point = point_of(command, shape.seq, shape, built, timings)
    picks = print_verdicts(point)
    if command == "mine" and picks:
        print(f"use: {'; '.join(picks)}")
    _say(
        command,
        f"took {time.perf_counter() - started:.1f} s (checking {checked:.1f} s, timing "
        f"{timings.seconds:.1f} s of --budget {arguments.budget:g})",
    )
    if failures:
        _say(command, f"{failures} contender(s) DISAGREE with the reference")
        return 1
    return 0


def shape_of(arguments) -> Shape:
    """The shape the options name (each size checked >= 1 by the parser, options.py), or
    the checkpoint's (``arguments.shape``, set by ``mine --tables``)."""
    if getattr(arguments, "shape", None) is not None:
        return arguments.shape
    return Shape(
        batch=arguments.batch_size,
        seq=arguments.seq_len,
        hidden=arguments.hidden_size,
        vocab=arguments.vocab_size,
        max_positions=max(512, arguments.seq_len),
        dtype=arguments.dtype,
    )
