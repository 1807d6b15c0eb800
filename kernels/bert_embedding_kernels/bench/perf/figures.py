"""``embench perf``: the fused kernels against their roofline and the peers at BERT-base.

Every figure is a ratio of medians from paired, interleaved rounds of the one
timing engine (:mod:`bert_embedding_kernels.bench.engine.timing`), with its 95% interval, checked
against its target (issue 16). Each contender is checked against the naive
reference (or, for gradients, against numpy's scatter-add) before it is timed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from dataclasses import replace

import numpy as np

from ... import embed, embed_backward
from ...gradients import EmbeddingGradients
from ..engine import contenders, machine, peers
from ..engine.cases import BERT_BASE, SMALL_CALL, make_inputs, zipf_ids
from ..engine.roofline import CopyReference, apart_from
from ..engine.timing import Estimate, Timings, interleave
from . import training_step, whole_model
from .figure import Figure

FORWARD_FIGURES = (
    Figure(
        "fused (out=), fraction of the copy",
        "fused (out=)",
        "copy",
        ">= 0.90",
        "fraction of a parallel copy of the output's bytes (copy / fused)",
        invert=True,
    ),
    Figure(
        "fused (out=), fraction of the non-temporal copy",
        "fused (out=)",
        "copy (non-temporal)",
        "",
        "fraction of a copy whose stores skip the read-for-ownership",
        invert=True,
    ),
    Figure(
        "fused (out=, huge pages), fraction of the copy (huge pages)",
        "fused (out=, huge pages)",
        "copy (huge pages)",
        ">= 0.90",
        "out= from bert_embedding_kernels.hugepages.empty, against a copy between such buffers",
        invert=True,
    ),
    Figure(
        "fused allocating / fused (out=)",
        "fused",
        "fused (out=)",
        "<= 1.15",
        "an allocating call in a loop (output pool) against writing into out=",
    ),
    Figure("numpy-indexing / fused", "numpy-indexing", "fused", ">= 6", "both allocate"),
    Figure("torch-eager / fused", "torch-eager", "fused", ">= 10", "both allocate"),
    Figure("torch-compile / fused", "torch-compile", "fused", ">= 3", "both allocate"),
    Figure("onnxruntime Gather+Add / fused", "onnxruntime", "fused", "", "both allocate"),
    Figure(
        "onnxruntime EmbedLayerNorm / fused+LN",
        "onnxruntime-embedlayernorm",
        "fused+LN",
        ">= 2",
        "both allocate",
    ),
    Figure(
        "onnxruntime EmbedLayerNorm, IOBinding / fused+LN (out=)",
        "onnxruntime-embedlayernorm (bound)",
        "fused+LN (out=)",
        ">= 2",
        "both into preallocated outputs",
    ),
    Figure(
        "torch-eager-layernorm / fused+LN", "torch-eager-layernorm", "fused+LN", "", "both allocate"
    ),
    Figure(
        "fused+LN (out=) / fused (out=)",
        "fused+LN (out=)",
        "fused (out=)",
        "<= 1.2",
        "what the in-kernel LayerNorm costs",
    ),
    Figure(
        "fused float32 / fused bfloat16 (both out=)",
        "fused (out=)",
        "fused bf16 (out=)",
        "",
        "what half-precision tables gain (its target is the next row but one's)",
    ),
    Figure(
        "copy float32 / copy bfloat16",
        "copy",
        "copy bf16",
        "",
        "what halving the bytes gains a plain copy of the output: the bound of the row above",
    ),
    Figure(
        "bfloat16's gain / the copy's gain",
        "fused (out=)",
        "fused bf16 (out=)",
        ">= 0.9",
        "(fused float32 / fused bfloat16) / (copy float32 / copy bfloat16), round by round",
        relative_to=("copy", "copy bf16"),
    ),
)
BACKWARD_FIGURES = (
    Figure(
        "torch backward / fused backward",
        "torch embedding_dense_backward",
        "fused",
        ">= 3",
        "Zipf ids, all three tables, both return new gradients",
    ),
    Figure(
        "torch backward / fused backward into .grad",
        "torch embedding_dense_backward",
        "fused (accumulate_into)",
        ">= 3",
        "fused adds into caller-owned gradients",
    ),
)

_BOUND = training_step.BOUND_COPIES
TRAINING_FIGURES = (
    Figure(
        "drop-in step / copy",
        "drop-in step",
        "copy",
        f"<= {2 * _BOUND:.1f}",
        f"within 2x of the step's bound, {_BOUND} copies of the output (docs/BACKWARD.md)",
    ),
    Figure(
        "transformers eager step / drop-in step",
        "transformers eager step",
        "drop-in step",
        ">= 5",
        "zero_grad, forward, backward of all five parameters",
    ),
    Figure(
        "drop-in step (word table frozen) / copy",
        "drop-in step (word table frozen)",
        "copy",
        "",
        "no word-table gradient: fewer bytes than the bound above",
    ),
    Figure(
        "drop-in step (no LayerNorm) / copy",
        "drop-in step (no LayerNorm)",
        "copy",
        "",
        "Megatron-BERT's embeddings: the sum and the scatter-add",
    ),
    *(
        Figure(
            training_step.short_name("transformers eager step / drop-in step", batch, seq),
            training_step.short_name("transformers eager step", batch, seq),
            training_step.short_name("drop-in step", batch, seq),
            ">= 5",
            "a short batch: the step's fixed costs (the word-table gradient's pages) show",
        )
        for batch, seq in training_step.SHORT_BATCHES
    ),
    Figure(
        "transformers compiled step / drop-in compiled step",
        "transformers eager step, compiled",
        "drop-in step, compiled",
        "",
        "both under torch.compile",
    ),
)


WHOLE_MODEL_FIGURES = whole_model.FIGURES


def _checked(name: str, call, expected: np.ndarray, atol: float = 0.0):
    result = peers.as_numpy(call())
    difference = float(np.max(np.abs(result.astype(np.float64) - expected), initial=0.0))
    if difference > atol:
        raise AssertionError(f"{name} differs from the reference by {difference:.3g}; not timed")
    return call


def forward_calls(include_compile: bool = True) -> dict:
    """Every BERT-base forward contender, each checked against its reference."""
    tables, ids, types = make_inputs(BERT_BASE)
    shape = (BERT_BASE.batch, BERT_BASE.seq, BERT_BASE.hidden)
    expected = embed(tables, ids, types, method="gather")  # itself bit-tested against a loop
    normed = embed(tables, ids, types, method="gather", layer_norm=True)
    out = apart_from(tables.token, shape, np.float32)
    out_huge = apart_from(tables.token, shape, np.float32, huge_pages=True)
    out_norm = apart_from(tables.token, shape, np.float32)
    half = make_inputs(replace(BERT_BASE, dtype="bfloat16"))[0]
    out_half = apart_from(half.token, shape, half.dtype)
    calls = {
        "copy": CopyReference(shape, np.float32),
        "copy (non-temporal)": CopyReference(shape, np.float32, nontemporal=True),
        "copy bf16": CopyReference(shape, half.dtype),
        "copy (huge pages)": CopyReference(shape, np.float32, huge_pages=True),
        "fused (out=)": lambda: embed(tables, ids, types, out=out),
        "fused (out=, huge pages)": lambda: embed(tables, ids, types, out=out_huge),
        "fused": lambda: embed(tables, ids, types),
        "fused+LN (out=)": lambda: embed(tables, ids, types, out=out_norm, layer_norm=True),
        "fused+LN": lambda: embed(tables, ids, types, layer_norm=True),
        "fused bf16 (out=)": lambda: embed(half, ids, types, out=out_half),
    }
    wanted = [p for p in peers.available_peers() if include_compile or p != "torch-compile"]
    for name in wanted:
        peer = peers.make_peer(name, tables)
        calls[name] = lambda peer=peer: peer(ids, types)
    for name in peers.available_peers(layer_norm=True):
        peer = peers.make_peer(name, tables)
        calls[name] = lambda peer=peer: peer(ids, types)
    if "onnxruntime-embedlayernorm" in calls:
        bound = peers.onnxruntime_embed_layer_norm_bound(tables, ids, types)
        calls["onnxruntime-embedlayernorm (bound)"] = bound
    for name, call in calls.items():
        if name.startswith("copy"):
            continue
        if "bf16" in name:
            _checked(name, call, contenders_reference_half(half, ids, types))
        elif "LN" in name or "layernorm" in name:
            _checked(name, call, normed.astype(np.float64), contenders.LAYER_NORM_ATOL)
        else:
            _checked(name, call, expected.astype(np.float64), 1e-6 if "compile" in name else 0)
    return calls


def contenders_reference_half(tables, ids, types) -> np.ndarray:
    """bfloat16 tables: widen, add in float32, round once (what every method promises)."""
    wide = [t.astype(np.float32) for t in (tables.token, tables.segment, tables.position)]
    total = (wide[0][ids] + wide[1][types]) + wide[2][np.arange(ids.shape[1])]
    return total.astype(tables.dtype).astype(np.float64)


def backward_calls() -> dict:
    """fused backward (new and accumulated gradients) and torch's, Zipf ids, checked."""
    tables, _, types = make_inputs(BERT_BASE)
    ids = zipf_ids(BERT_BASE.vocab, (BERT_BASE.batch, BERT_BASE.seq), seed=0)
    shape = (BERT_BASE.batch, BERT_BASE.seq, BERT_BASE.hidden)
    grad = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    into = EmbeddingGradients(
        *(np.zeros(t.shape, np.float32) for t in (tables.token, tables.segment, tables.position))
    )
    calls = {
        "fused": lambda: embed_backward(tables, grad, ids, types),
        "fused (accumulate_into)": lambda: embed_backward(
            tables, grad, ids, types, accumulate_into=into
        ),
    }
    expected = embed_backward(tables, grad, ids, types, method="gather").token
    if not np.array_equal(calls["fused"]().token, expected):
        raise AssertionError("fused backward differs from np.add.at; not timed")
    torch_call = peers.torch_embedding_backward(tables, grad, ids, types)
    if torch_call is not None:
        torch_token = torch_call()[0]
        if not np.allclose(torch_token, expected, rtol=1e-5, atol=1e-4):
            raise AssertionError("torch's embedding_dense_backward differs; not timed")
        calls["torch embedding_dense_backward"] = torch_call
    return calls


SMALL_CALL_BUDGET = 3.0  # seconds


def small_call() -> Estimate:
    """One public-API call at batch 1 x seq 128 x hidden 768 into ``out=``, validation included."""
    tables, ids, _ = make_inputs(SMALL_CALL)
    out = apart_from(tables.token, (1, SMALL_CALL.seq, SMALL_CALL.hidden), tables.dtype)
    calls = {"small": lambda: embed(tables, ids, out=out)}
    return interleave(calls, budget=SMALL_CALL_BUDGET, target=0.01).estimate("small")


_FIRST_CALL = textwrap.dedent("""
    import time
    start = time.perf_counter()
    import numpy as np, bert_embedding_kernels as bek
    imported = time.perf_counter()
    tables = bek.EmbeddingTables.random(1000, 768)
    ids = np.zeros((1, 128), np.int64)
    made = time.perf_counter()
    bek.embed(tables, ids)
    done = time.perf_counter()
    print(imported - start, done - made)
""")


def first_call_seconds() -> tuple[float, float]:
    """(import time, first embed call) in a fresh process whose numba cache is warm."""
    subprocess.run([sys.executable, "-c", _FIRST_CALL], check=True, capture_output=True)
    result = subprocess.run(
        [sys.executable, "-c", _FIRST_CALL], check=True, capture_output=True, text=True
    )
    imported, first = (float(x) for x in result.stdout.split())
    return imported, first


def _figure_rows(timings: Timings, figures) -> list[dict]:
    rows = []
    for figure in figures:
        row = {"figure": figure.name, "target": figure.target, "note": figure.note}
        names = (figure.numerator, figure.denominator, *(figure.relative_to or ()))
        if not all(name in timings.samples for name in names):
            rows.append(row | {"value": None})
            continue
        ratio = timings.ratio(figure.numerator, figure.denominator, figure.relative_to)
        value, low, high = ratio.median, ratio.low, ratio.high
        if figure.invert:
            value, low, high = 1 / value, 1 / high, 1 / low
        rows.append(row | {"value": value, "ci95": [low, high], "unstable": ratio.unstable})
    return rows


def _medians(timings: Timings, pass_name: str) -> list[dict]:
    rows = []
    for name in timings.samples:
        e = timings.estimate(name)
        rows.append(
            {"pass": pass_name, "call": name, "median_s": e.median, "half_width": e.half_width}
        )
    return rows


SMALL_CALL_FIGURE = "small call, median us"


def summary(
    forward: Timings,
    backward: Timings,
    training: Timings,
    small: Estimate,
    first,
    load,
    command: str,
    whole: Timings | None = None,
) -> dict:
    """Every figure of a run as plain data: what ``--write`` stores beside the Markdown
    (``PERFORMANCE.json``), and what the Markdown and the README's figures are rendered from."""
    small_us = [small.median * 1e6, small.low * 1e6, small.high * 1e6]
    return {
        "command": command,
        "machine": machine.summary(),
        "cores": os.cpu_count(),
        "load": list(load),
        "rounds": {
            "forward": [forward.rounds, forward.seconds],
            "backward": [backward.rounds, backward.seconds],
            "training": [training.rounds, training.seconds],
            **({} if whole is None else {"whole model": [whole.rounds, whole.seconds]}),
        },
        "figures": [
            *_figure_rows(forward, FORWARD_FIGURES),
            *_figure_rows(backward, BACKWARD_FIGURES),
            *_figure_rows(training, TRAINING_FIGURES),
            *([] if whole is None else _figure_rows(whole, WHOLE_MODEL_FIGURES)),
            {
                "figure": SMALL_CALL_FIGURE,
                "target": "<= 15",
                "value": small_us[0],
                "ci95": small_us[1:],
                "unstable": False,
                "note": "batch 1 x seq 128 x hidden 768 through "
                "`bert_embedding_kernels.embed(..., out=out)`, validation included",
            },
        ],
        "first_call_s": first[1],
        "import_s": first[0],
        "medians": [
            *_medians(forward, "forward"),
            *_medians(backward, "backward"),
            *_medians(training, "training step"),
            *([] if whole is None else _medians(whole, "whole model")),
        ],
    }


def measure(
    rounds_budget: float,
    include_compile: bool = True,
    progress=None,
    include_whole_model: bool = True,
) -> tuple:
    """Everything ``embench perf`` reports, for :func:`render`."""
    load = [os.getloadavg()[0]]
    forward = interleave(forward_calls(include_compile), budget=rounds_budget, progress=progress)
    backward = interleave(backward_calls(), budget=rounds_budget / 2)
    training = interleave(training_step.calls(include_compile), budget=rounds_budget / 2)
    whole = None
    if include_whole_model:
        whole = interleave(whole_model.calls(), budget=rounds_budget / 2)
    small = small_call()
    load.append(os.getloadavg()[0])
    return forward, backward, training, small, first_call_seconds(), load, whole
