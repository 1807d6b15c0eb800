"""onnxruntime's EmbedLayerNormalization through IOBinding against fused+LN (out=), with both
outputs in 4 KiB pages and both in huge pages (``bert_embedding_kernels.hugepages.empty``), in one
process.

    .venv/bin/python scripts/ort_bound_pages.py [BUDGET_SECONDS]

BERT-base, float32. Each contender is checked against gather + LayerNorm, then the four are
timed in interleaved rounds by the one timing engine; prints medians and paired ratios
(docs/PERFORMANCE-16-cores.md has what it gave on 16 and 2 cores).
"""

from __future__ import annotations

import os
import sys

import numpy as np

import bert_embedding_kernels as bek
from bert_embedding_kernels.bench.engine import machine
from bert_embedding_kernels.bench.engine.cases import BERT_BASE, make_inputs
from bert_embedding_kernels.bench.engine.onnx_peers import (
    _onnxruntime_session,
    bound_call,
    embed_layer_norm_model,
)
from bert_embedding_kernels.bench.engine.roofline import apart_from
from bert_embedding_kernels.bench.engine.timing import interleave


def main(budget: float) -> None:
    tables, ids, types = make_inputs(BERT_BASE)
    shape = (BERT_BASE.batch, BERT_BASE.seq, BERT_BASE.hidden)
    session = _onnxruntime_session(embed_layer_norm_model(tables))

    def onnxruntime_into(out: np.ndarray):
        return bound_call(session, ids, types, out)

    def fused_into(out: np.ndarray):
        return lambda: bek.embed(tables, ids, types, out=out, layer_norm=True)

    def output(huge: bool) -> np.ndarray:
        return apart_from(tables.token, shape, np.float32, huge_pages=huge)

    calls = {
        "onnxruntime 4K": onnxruntime_into(output(False)),
        "onnxruntime huge": onnxruntime_into(output(True)),
        "fused+LN 4K": fused_into(output(False)),
        "fused+LN huge": fused_into(output(True)),
    }
    expected = bek.embed(tables, ids, types, method="gather", layer_norm=True)
    for name, call in calls.items():
        if np.abs(call() - expected).max() >= 1e-4:
            raise AssertionError(f"{name} differs from gather + LayerNorm; not timed")
    print(machine.describe()["cpu"], os.cpu_count(), "cores; load", os.getloadavg()[0])
    timings = interleave(calls, budget=budget, target=0.01)
    for name in calls:
        estimate = timings.estimate(name)
        print(f"{name}: {estimate.median * 1e3:.3f} ms +-{estimate.half_width * 100:.1f}%")
    for first, second in (
        ("onnxruntime 4K", "fused+LN 4K"),
        ("onnxruntime huge", "fused+LN huge"),
        ("fused+LN 4K", "fused+LN huge"),
    ):
        ratio = timings.ratio(first, second)
        print(f"{first} / {second}: {ratio.median:.2f} [{ratio.low:.2f}, {ratio.high:.2f}]")
    print(timings.rounds, "rounds")


if __name__ == "__main__":
    main(float(sys.argv[1]) if len(sys.argv) > 1 else 20.0)
