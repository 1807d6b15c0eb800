"""Issue 39's two forward targets with the table rows from memory and in cache.

The targets: bfloat16's gain (the float32 / bfloat16 ratio of the fused sum) at least 0.9
of a copy's, and LayerNorm in the kernel at most 1.2 times the fused sum. At BERT-base's
shape (32 x 512, hidden 768, vocab 30522, ``out=``): the fused sum in float32 and in
bfloat16, the fused sum with LayerNorm in float32, and a parallel copy of the output in
each dtype, interleaved, with token ids drawn (a) uniformly from the vocabulary, as
``embench perf`` draws them, and (b) from 64 rows only, so that every table row the
kernels read is in cache and what is left is their arithmetic and their writes.
Per-round ratios (each round runs the five once, in that order), their medians over 60
rounds. Run it on a quiet machine:

    PYTHONPATH=kernels .venv/bin/python scripts/forward_gaps_probe.py
"""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np

import bert_embedding_kernels as bek
from bert_embedding_kernels.bench.engine.cases import BERT_BASE, make_inputs
from bert_embedding_kernels.bench.engine.roofline import CopyReference


def medians(ids, float32, bfloat16, rounds: int = 60) -> dict[str, float]:
    shape = (*ids.shape, BERT_BASE.hidden)
    types = np.zeros(ids.shape, np.int64)
    out32, out16 = np.empty(shape, np.float32), np.empty(shape, bfloat16.dtype)
    normed = np.empty(shape, np.float32)
    calls = {
        "fused float32": lambda: bek.embed(float32, ids, types, out=out32),
        "fused+LN float32": lambda: bek.embed(float32, ids, types, out=normed, layer_norm=True),
        "fused bfloat16": lambda: bek.embed(bfloat16, ids, types, out=out16),
        "copy float32": CopyReference(shape, np.float32),
        "copy bfloat16": CopyReference(shape, bfloat16.dtype),
    }
    times = {name: [] for name in calls}
    for call in calls.values():
        call()
    for _ in range(rounds):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - start)
    t = {name: np.array(values) for name, values in times.items()}
    return {
        **{name: float(np.median(values)) * 1e3 for name, values in t.items()},
        "fused gain": float(np.median(t["fused float32"] / t["fused bfloat16"])),
        "copy gain": float(np.median(t["copy float32"] / t["copy bfloat16"])),
        "layer norm": float(np.median(t["fused+LN float32"] / t["fused float32"])),
        "relative": float(
            np.median(
                (t["fused float32"] / t["fused bfloat16"])
                / (t["copy float32"] / t["copy bfloat16"])
            )
        ),
    }


def main() -> None:
    float32 = make_inputs(BERT_BASE)[0]
    bfloat16 = make_inputs(replace(BERT_BASE, dtype="bfloat16"))[0]
    rng = np.random.default_rng(0)
    shape = (BERT_BASE.batch, BERT_BASE.seq)
    hot = rng.permutation(BERT_BASE.vocab)[:64]
    cases = {
        "uniform ids (rows from memory)": rng.integers(0, BERT_BASE.vocab, shape),
        "ids from 64 rows (rows in cache)": rng.choice(hot, shape),
    }
    print(
        "| ids | fused float32 ms | fused bfloat16 ms | fused gain | copy gain | gain / copy's "
        "| fused+LN ms | fused+LN / fused |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for label, ids in cases.items():
        m = medians(ids, float32, bfloat16)
        print(
            f"| {label} | {m['fused float32']:.2f} | {m['fused bfloat16']:.2f} "
            f"| {m['fused gain']:.3f} | {m['copy gain']:.3f} | {m['relative']:.3f} "
            f"| {m['fused+LN float32']:.2f} | {m['layer norm']:.3f} |"
        )


if __name__ == "__main__":
    main()
