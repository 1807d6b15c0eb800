"""Issue 39's training step: two layouts of its data that move fewer or friendlier bytes.

At BERT-base (32 x 512, hidden 768, vocab 30522, float32, LayerNorm, the Zipf ids of
``embench perf``'s step), two experiments against what ships, each with its bits checked
against the shipped result first, then timed in alternating calls (medians of per-pair
ratios over 30 pairs, each call after a 256 MiB write that evicts the caches, as
``embench perf``'s other contenders do between its rounds):

1. **Recompute the sums in LayerNorm's backward** instead of keeping them: the training
   forward writes no second 48 MiB buffer, and LayerNorm's backward gathers each row's
   three table rows again (most are in cache: 5,212 distinct token rows) where it read
   the kept sum. Shipped: the forward with its kept sums, then LayerNorm's backward.
2. **The scatter's input by column block** (``blocked[c, t, :]`` holds the columns that
   thread ``c`` owns): each thread then reads one contiguous stream instead of every
   other 1.5 KiB of ``g``. Measured for a read alone and for a scatter-add one token at a
   time in both layouts (only the layout differs), then that blocked scatter against the
   shipped one, which adds four tokens at a time from the interleaved rows.

Run it on a quiet machine:

    PYTHONPATH=kernels .venv/bin/python scripts/step_layout_probe.py
"""

from __future__ import annotations

import time

import numba
import numpy as np
from numba import prange

import bert_embedding_kernels as bek
from bert_embedding_kernels._jit import parallel_kernel
from bert_embedding_kernels.bench.engine.cases import BERT_BASE, make_inputs, zipf_ids
from bert_embedding_kernels.methods.fused import norm_backward
from bert_embedding_kernels.methods.fused.backward import (
    _scatter_add_columns_parallel,
    column_block,
    scatter_block,
)

EVICT = np.zeros(256 * 2**20, np.uint8)


@parallel_kernel
def _norm_backward_regathered(token, segment, position, ids, types, grad, weight, eps, grad_sums):
    """LayerNorm's backward as shipped (one chunk of rows per iteration, plain stores),
    each row's sum gathered from the tables again; returns nothing of the weight terms
    (the rows' arithmetic for them is kept, their sums are not needed here)."""
    rows, hidden = grad.shape
    seq = ids.shape[1]
    chunks = norm_backward.ROW_CHUNKS
    per_chunk = -(-rows // chunks)
    for chunk in prange(chunks):
        x = np.empty(hidden, token.dtype)
        recent_weight = np.zeros(hidden, token.dtype)
        for r in range(chunk * per_chunk, min(rows, (chunk + 1) * per_chunk)):
            b = r // seq
            s = r - b * seq
            word, kind, place = token[ids[b, s]], segment[types[b, s]], position[s]
            for h in range(hidden):
                x[h] = word[h] + kind[h] + place[h]
            dy = grad[r]
            shift, total, squares, sum_g, sum_g_e = norm_backward._row_sums(x, dy, weight)
            mean_e = total / hidden
            inverse_std = 1.0 / np.sqrt(max(squares / hidden - mean_e * mean_e, 0.0) + eps)
            high = x.dtype.type(shift + mean_e)
            low = x.dtype.type(shift + mean_e - high)
            scale = x.dtype.type(inverse_std)
            mean_g = x.dtype.type(sum_g / hidden)
            mean_g_xhat = x.dtype.type(inverse_std * (sum_g_e - mean_e * sum_g) / hidden)
            out = grad_sums[r]
            for h in range(hidden):
                xhat = ((x[h] - high) - low) * scale
                recent_weight[h] += dy[h] * xhat
                out[h] = scale * (dy[h] * weight[h] - mean_g - xhat * mean_g_xhat)


@parallel_kernel
def _read_interleaved(grad, block, out):
    """Each thread sums its columns of every row of ``grad`` (the scatter's reads)."""
    tokens, hidden = grad.shape
    for c in prange(out.shape[0]):
        c0, c1 = c * block, min(hidden, (c + 1) * block)
        for t in range(tokens):
            row = grad[t, c0:c1]
            for h in range(c1 - c0):
                out[c, h] += row[h]


@parallel_kernel
def _read_blocked(blocked, out):
    """The same sums from the blocked layout: one contiguous stream per thread."""
    for c in prange(blocked.shape[0]):
        for t in range(blocked.shape[1]):
            row = blocked[c, t]
            for h in range(row.size):
                out[c, h] += row[h]


@parallel_kernel
def _scatter_interleaved(grad, ids, types, block, token, segment, position):
    tokens, hidden = grad.shape
    seq = ids.shape[1]
    for c in prange(-(-hidden // block)):
        c0, c1 = c * block, min(hidden, (c + 1) * block)
        for t in range(tokens):
            b = t // seq
            s = t - b * seq
            g = grad[t, c0:c1]
            word, kind = token[ids[b, s], c0:c1], segment[types[b, s], c0:c1]
            place = position[s, c0:c1]
            for h in range(c1 - c0):
                word[h] += g[h]
                kind[h] += g[h]
                place[h] += g[h]


@parallel_kernel
def _scatter_blocked(blocked, ids, types, block, token, segment, position):
    blocks, tokens, width = blocked.shape
    seq = ids.shape[1]
    for c in prange(blocks):
        c0 = c * block
        for t in range(tokens):
            b = t // seq
            s = t - b * seq
            g = blocked[c, t]
            word = token[ids[b, s], c0 : c0 + width]
            kind = segment[types[b, s], c0 : c0 + width]
            place = position[s, c0 : c0 + width]
            for h in range(width):
                word[h] += g[h]
                kind[h] += g[h]
                place[h] += g[h]


def paired(first, second, pairs: int = 30) -> tuple[float, float, float]:
    """Medians (ms) of ``first`` and ``second`` and of their per-pair ratio, caches evicted."""
    a, b = [], []
    for _ in range(pairs):
        for call, times in ((first, a), (second, b)):
            EVICT[::64] += 1
            start = time.perf_counter()
            call()
            times.append(time.perf_counter() - start)
    a, b = np.array(a), np.array(b)
    return float(np.median(a)) * 1e3, float(np.median(b)) * 1e3, float(np.median(b / a))


def main() -> None:
    shape = BERT_BASE
    tables = make_inputs(shape)[0]
    rng = np.random.default_rng(1)
    norm = {"norm_weight": (1 + 0.1 * rng.standard_normal(shape.hidden)).astype(np.float32)}
    norm["norm_bias"] = (0.1 * rng.standard_normal(shape.hidden)).astype(np.float32)
    tables = bek.EmbeddingTables(tables.token, tables.segment, tables.position, **norm)
    ids = zipf_ids(shape.vocab, (shape.batch, shape.seq), seed=0)
    types = np.zeros_like(ids)
    types[:, shape.seq // 2 :] = 1
    tokens = shape.batch * shape.seq
    grad = rng.standard_normal((tokens, shape.hidden)).astype(np.float32)
    weight, eps = tables.norm_weight, tables.norm_eps
    table_rows = (tables.token, tables.segment, tables.position)

    def kept():
        _, sums = bek.embed(tables, ids, types, layer_norm=True, return_sum=True)
        return norm_backward.layer_norm_backward(sums, grad, weight, eps)[0]

    regathered_out = np.empty_like(grad)

    def regathered():
        bek.embed(tables, ids, types, layer_norm=True)
        _norm_backward_regathered(*table_rows, ids, types, grad, weight, eps, regathered_out)
        return regathered_out

    agree = np.array_equal(kept().reshape(tokens, -1), regathered())
    largest = float(np.abs(kept().reshape(tokens, -1) - regathered()).max())
    print("| experiment | shipped ms | the alternative ms | alternative / shipped |")
    print("|---|---:|---:|---:|")
    a, b, ratio = paired(kept, regathered)
    note = "same bits" if agree else f"largest difference {largest:.1e}"
    print(f"| forward + LayerNorm's backward, sums recomputed ({note}) | {a:.2f} | {b:.2f} "
          f"| {ratio:.3f} |")  # fmt: skip

    threads = numba.get_num_threads()
    block = column_block(shape.hidden, 4, threads)  # the layout measured: a block per thread
    blocks = -(-shape.hidden // block)
    blocked = np.zeros((blocks, tokens, block), np.float32)
    for c in range(blocks):
        part = grad[:, c * block : (c + 1) * block]
        blocked[c, :, : part.shape[1]] = part
    sums = np.zeros((blocks, block), np.float32)
    a, b, ratio = paired(
        lambda: _read_interleaved(grad, block, sums), lambda: _read_blocked(blocked, sums)
    )
    print(f"| the scatter's reads alone, by column block | {a:.2f} | {b:.2f} | {ratio:.3f} |")
    if shape.hidden % block:
        return  # the blocked scatter below assumes whole blocks
    into = [[np.zeros_like(t) for t in table_rows] for _ in range(2)]
    _scatter_interleaved(grad, ids, types, block, *into[0])
    _scatter_blocked(blocked, ids, types, block, *into[1])
    same = all(np.array_equal(x, y) for x, y in zip(*into, strict=True))
    a, b, ratio = paired(
        lambda: _scatter_interleaved(grad, ids, types, block, *into[0]),
        lambda: _scatter_blocked(blocked, ids, types, block, *into[1]),
    )
    note = "same bits" if same else "DIFFERENT bits"
    print(f"| a scatter-add, by column block ({note}) | {a:.2f} | {b:.2f} | {ratio:.3f} |")
    positions = np.arange(shape.seq)[None, :]
    a, b, ratio = paired(
        lambda: _scatter_add_columns_parallel(
            grad, ids, types, positions, -1, scatter_block(shape.hidden, 4, threads), *into[0]
        ),
        lambda: _scatter_blocked(blocked, ids, types, block, *into[1]),
    )
    print(f"| the shipped scatter-add against the blocked one | {a:.2f} | {b:.2f} | {ratio:.3f} |")


if __name__ == "__main__":
    main()
