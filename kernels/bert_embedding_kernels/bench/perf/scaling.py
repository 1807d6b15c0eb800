"""``embench scaling``: how the CPU kernels' time changes with the number of threads.

Every contender runs at every thread count in the same interleaved rounds of the
one timing engine (:mod:`bert_embedding_kernels.bench.engine.timing`); each call first sets numba's
thread count for its own thread (``numba.set_num_threads``, which a parallel
region reads at launch), so a round holds every (contender, threads) pair and a
speedup "at k threads over 1 thread" is a paired ratio with its 95% interval.
The copy of the output's bytes is the roofline at each thread count: the
forward pass follows it where memory bandwidth, not arithmetic, is the limit.

Every contender is checked at every thread count before it is timed: the result
must not depend on how many threads computed it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import replace

import numba
import numpy as np

from ... import embed, embed_backward
from ...gradients import EmbeddingGradients
from ..engine import machine
from ..engine.cases import BERT_BASE, SMALL_CALL, Shape, make_inputs, zipf_ids
from ..engine.roofline import CopyReference, apart_from
from ..engine.timing import Timings, interleave

# (column name, unit scale, unit) in the order of the table.
CONTENDERS = (
    ("copy", 1e3, "ms"),
    ("fused (out=)", 1e3, "ms"),
    ("fused bf16 (out=)", 1e3, "ms"),
    ("fused+LN (out=)", 1e3, "ms"),
    ("backward (accumulate_into)", 1e3, "ms"),
    ("small call", 1e6, "us"),
)


def default_threads() -> tuple[int, ...]:
    """1, 2, 4, ... up to numba's thread count, and that count itself."""
    most = numba.config.NUMBA_NUM_THREADS
    counts = [1]
    while counts[-1] * 2 < most:
        counts.append(counts[-1] * 2)
    if most > 1:
        counts.append(most)
    return tuple(counts)


def check_threads(threads) -> tuple[int, ...]:
    """The thread counts, each within 1..NUMBA_NUM_THREADS, or a ValueError naming the rule."""
    most = numba.config.NUMBA_NUM_THREADS
    counts = tuple(int(k) for k in threads)
    if not counts or any(k < 1 or k > most for k in counts):
        raise ValueError(
            f"threads must be between 1 and NUMBA_NUM_THREADS ({most}) on this machine; "
            f"got {list(counts)}"
        )
    return tuple(sorted(set(counts)))


def _at(threads: int, call: Callable[[], object]) -> Callable[[], object]:
    def run():
        numba.set_num_threads(threads)
        return call()

    return run


def _name(contender: str, threads: int) -> str:
    return f"{contender} @{threads}"


def scaling_calls(threads, shape: Shape = BERT_BASE, small: Shape = SMALL_CALL) -> dict:
    """Every (contender, thread count) call, each checked against a one-thread reference."""
    threads = check_threads(threads)
    tables, ids, types = make_inputs(shape)
    half = make_inputs(replace(shape, dtype="bfloat16"))[0]
    zipf = zipf_ids(shape.vocab, (shape.batch, shape.seq), seed=0)
    size = (shape.batch, shape.seq, shape.hidden)
    grad = np.random.default_rng(1).standard_normal(size).astype(np.float32)
    small_tables, small_ids, _ = make_inputs(small)

    expected = {
        "fused (out=)": embed(tables, ids, types, method="gather"),
        "fused bf16 (out=)": embed(half, ids, types, method="gather"),
        "fused+LN (out=)": embed(tables, ids, types, layer_norm=True),  # its own reference
        "backward (accumulate_into)": embed_backward(tables, grad, zipf, types).token,
        "small call": embed(small_tables, small_ids, method="gather"),
    }
    # One set of buffers: the calls at different thread counts run one after another.
    out = apart_from(tables.token, size, np.float32)
    out_half = apart_from(half.token, size, half.dtype)
    out_norm = apart_from(tables.token, size, np.float32)
    out_small = apart_from(small_tables.token, (1, small.seq, small.hidden), np.float32)
    into = EmbeddingGradients(
        *(np.zeros(t.shape, np.float32) for t in (tables.token, tables.segment, tables.position))
    )
    contenders = {
        "copy": CopyReference(size, np.float32),
        "fused (out=)": lambda: embed(tables, ids, types, out=out),
        "fused bf16 (out=)": lambda: embed(half, ids, types, out=out_half),
        "fused+LN (out=)": lambda: embed(tables, ids, types, out=out_norm, layer_norm=True),
        "backward (accumulate_into)": lambda: embed_backward(
            tables, grad, zipf, types, accumulate_into=into
        ),
        "small call": lambda: embed(small_tables, small_ids, out=out_small),
    }
    calls = {_name(name, k): _at(k, call) for k in threads for name, call in contenders.items()}
    caller_threads = numba.get_num_threads()
    try:
        for k in threads:
            _check(k, calls, expected, into)
    finally:
        numba.set_num_threads(caller_threads)
    return calls


def _check(threads: int, calls: dict, expected: dict, into: EmbeddingGradients) -> None:
    """Each contender at ``threads`` gives the reference's bits: no kernel's result may
    depend on how many threads computed it."""
    for contender, reference in expected.items():
        call = calls[_name(contender, threads)]
        if contender.startswith("backward"):
            for gradient in into:
                gradient[:] = 0  # one accumulation from zero is the fresh gradient
            call()
            result = into.token
        else:
            result = call()
        if not np.array_equal(result.view(np.uint8), reference.view(np.uint8)):
            raise AssertionError(
                f"{contender} at {threads} threads differs from the reference; not timed"
            )


def measure(
    threads, budget: float, shape: Shape = BERT_BASE, small: Shape = SMALL_CALL, progress=None
) -> Timings:
    """Interleaved rounds of every (contender, thread count) pair."""
    calls = scaling_calls(threads, shape, small)
    caller_threads = numba.get_num_threads()
    try:
        return interleave(calls, budget=budget, min_rounds=7, progress=progress)
    finally:
        numba.set_num_threads(caller_threads)


def _cell(timings: Timings, contender: str, threads: int, scale: float, one: int) -> str:
    estimate = timings.estimate(_name(contender, threads))
    # three significant digits, trailing zeros kept ("1.50"), no bare point ("100." -> "100")
    text = f"{estimate.median * scale:#.3g}".rstrip(".")
    if threads != one:
        speedup = timings.ratio(_name(contender, one), _name(contender, threads))
        text += f" ({speedup.median:.2f}x [{speedup.low:.2f}, {speedup.high:.2f}])"
    return text


def render(timings: Timings, threads, command: str, load, shape: Shape = BERT_BASE) -> str:
    """Markdown: a row per thread count, each contender's median and its speedup over the
    fewest threads, and fused's fraction of the copy at that count."""
    threads = check_threads(threads)
    one = threads[0]
    header = [
        "threads",
        *(f"{name}, {unit}" for name, _, unit in CONTENDERS),
        "fused, fraction of the copy",
    ]
    lines = [
        "# How the CPU kernels scale with threads",
        "",
        f"Generated by `{command}`; do not edit by hand.",
        "",
        f"Machine: {machine.summary()}.",
        "",
        f"Shape: batch {shape.batch} x seq {shape.seq}, hidden {shape.hidden}, vocab "
        f"{shape.vocab}, float32 unless named; uniform ids forward, Zipf ids backward; the small "
        f"call is batch {SMALL_CALL.batch} x seq {SMALL_CALL.seq} through "
        "`bert_embedding_kernels.embed(..., "
        "out=out)`, validation included. Every (contender, threads) pair is timed in the same "
        f"interleaved rounds ({timings.rounds} rounds in {timings.seconds:.0f} s); each cell is "
        f"the median, and in brackets its speedup over {one} thread(s) as the median of "
        "per-round ratios with its 95% interval. `fused, fraction of the copy` is the copy's "
        "time over fused's, for a parallel copy of the output's bytes at the same thread "
        "count (1.0 would be the roofline). "
        f"1-minute load average {load[0]:.2f} before and {load[1]:.2f} after.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---:|" * len(header),
    ]
    for k in threads:
        cells = [_cell(timings, name, k, scale, one) for name, scale, _ in CONTENDERS]
        fraction = timings.ratio(_name("copy", k), _name("fused (out=)", k))
        cells.append(f"{fraction.median:.2f} [{fraction.low:.2f}, {fraction.high:.2f}]")
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(timings: Timings, threads, path: str) -> bool:
    """Speedup over the fewest threads against threads, one line per contender; False
    without matplotlib (the table says the same)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    threads = check_threads(threads)
    one = threads[0]
    figure, axes = plt.subplots(figsize=(6.4, 4.4))
    axes.plot(threads, [k / one for k in threads], ":", color="grey", label="ideal")
    for name, _, _ in CONTENDERS:
        ratios = [timings.ratio(_name(name, one), _name(name, k)) for k in threads[1:]]
        medians = [1.0, *(r.median for r in ratios)]
        errors = [
            [0.0, *(r.median - r.low for r in ratios)],
            [0.0, *(r.high - r.median for r in ratios)],
        ]
        axes.errorbar(threads, medians, yerr=errors, marker="o", capsize=3, label=name)
    axes.set_xscale("log", base=2)
    axes.set_xticks(threads, [str(k) for k in threads])
    axes.set_xlabel("numba threads")
    axes.set_ylabel(f"speedup over {one} thread(s)")
    axes.set_title(f"CPU kernels by thread count ({os.cpu_count()} cores)")
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True
