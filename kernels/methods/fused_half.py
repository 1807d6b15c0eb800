"""The fused kernels for float16 and bfloat16 tables: widen on load, add in float32, round once.

The same position-major blocks as :mod:`kernels.methods.fused` (that module's
docstring and docs/FORWARD.md say why), over the tables' 16-bit patterns
(:mod:`kernels.halfbits`). Each element is ``(token + segment) + position`` in
float32, rounded to nearest even into the output's format, or written as
float32 with ``out_dtype=float32``: bit for bit what gather computes.
LayerNorm's statistics are float64 over the float32 sum, as in the float
kernels; the normalised value is rounded once.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from .._jit import parallel_kernel, serial_kernel
from .._vectors import HALF_LANES, sum3_half
from ..halfbits import KIND, bits, store, widen
from ..tables import EmbeddingTables
from ..validate import Batch, kernel_ids
from .fused import BATCH_BLOCK, SERIAL_MAX_BYTES, _mean_and_inverse_std, block_rows, rows_of


def _sum_rows_half(token, segment, position, input_ids, token_type_ids, position_ids, kind, out):
    """out[b, s] = round((token[i] + segment[j]) + position[k]) over 16-bit tables."""
    batch, seq = input_ids.shape
    hidden = out.shape[2]
    tables, ids = (token, segment, position), (input_ids, token_type_ids, position_ids)
    batch_blocks = (batch + BATCH_BLOCK - 1) // BATCH_BLOCK
    for block in prange(seq * batch_blocks):
        s, b, last = block_rows(block, batch_blocks, batch)
        while b + 3 < last:  # four rows at once, as the float kernel (more misses in flight)
            t0, g0, p0 = rows_of(tables, ids, b, s)
            t1, g1, p1 = rows_of(tables, ids, b + 1, s)
            t2, g2, p2 = rows_of(tables, ids, b + 2, s)
            t3, g3, p3 = rows_of(tables, ids, b + 3, s)
            o0, o1, o2, o3 = out[b, s], out[b + 1, s], out[b + 2, s], out[b + 3, s]
            h = 0
            while h + HALF_LANES <= hidden:  # whole vectors (kernels/_vectors.py)
                sum3_half(o0, t0, g0, p0, h, kind)
                sum3_half(o1, t1, g1, p1, h, kind)
                sum3_half(o2, t2, g2, p2, h, kind)
                sum3_half(o3, t3, g3, p3, h, kind)
                h += HALF_LANES
            while h < hidden:  # the columns after the last whole vector
                store(o0, h, widen(t0[h], kind) + widen(g0[h], kind) + widen(p0[h], kind), kind)
                store(o1, h, widen(t1[h], kind) + widen(g1[h], kind) + widen(p1[h], kind), kind)
                store(o2, h, widen(t2[h], kind) + widen(g2[h], kind) + widen(p2[h], kind), kind)
                store(o3, h, widen(t3[h], kind) + widen(g3[h], kind) + widen(p3[h], kind), kind)
                h += 1
            b += 4
        while b < last:
            token_row, segment_row, position_row = rows_of(tables, ids, b, s)
            out_row = out[b, s]
            for h in range(hidden):
                value = widen(token_row[h], kind) + widen(segment_row[h], kind)
                store(out_row, h, value + widen(position_row[h], kind), kind)
            b += 1


_sum_rows_half_parallel = parallel_kernel(_sum_rows_half)
_sum_rows_half_serial = serial_kernel(_sum_rows_half)


def _sum_norm_rows_half(
    token,
    segment,
    position,
    input_ids,
    token_type_ids,
    position_ids,
    weight,
    bias,
    eps,
    kind,
    sums,
    keep_sum,
    out,
):
    """out[b, s] = round(LayerNorm(float32 sum)); with ``keep_sum``, round(sum) into ``sums``."""
    batch, seq = input_ids.shape
    hidden = out.shape[2]
    tables, ids = (token, segment, position), (input_ids, token_type_ids, position_ids)
    batch_blocks = (batch + BATCH_BLOCK - 1) // BATCH_BLOCK
    for block in prange(seq * batch_blocks):
        s, first, last = block_rows(block, batch_blocks, batch)
        row = np.empty(hidden, np.float32)  # the float32 sum, one per block, in L1
        for b in range(first, last):
            token_row, segment_row, position_row = rows_of(tables, ids, b, s)
            for h in range(hidden):
                value = widen(token_row[h], kind) + widen(segment_row[h], kind)
                row[h] = value + widen(position_row[h], kind)
            if keep_sum:
                sum_row = sums[b, s]
                for h in range(hidden):
                    store(sum_row, h, row[h], kind)
            mean, inverse_std = _mean_and_inverse_std(row, eps)
            out_row = out[b, s]
            for h in range(hidden):
                centred = np.float32((row[h] - mean) * inverse_std)
                value = centred * widen(weight[h], kind) + widen(bias[h], kind)
                store(out_row, h, value, kind)


_sum_norm_rows_half_parallel = parallel_kernel(_sum_norm_rows_half)
_sum_norm_rows_half_serial = serial_kernel(_sum_norm_rows_half)


def _kernel_view(array: np.ndarray) -> np.ndarray:
    # Outputs of a 16-bit dtype are written as their bit patterns; float32 as it is.
    return array if array.dtype == np.float32 else bits(array)


def _arguments(tables: EmbeddingTables, batch: Batch) -> tuple:
    return (
        bits(tables.token),
        bits(tables.segment),
        bits(tables.position),
        kernel_ids(batch.input_ids),
        kernel_ids(batch.token_type_ids),
        kernel_ids(batch.position_ids),
    )


def fused_sum_half(tables: EmbeddingTables, batch: Batch, out: np.ndarray) -> np.ndarray:
    """The summed embeddings of 16-bit ``tables`` into ``out`` (their dtype or float32)."""
    if batch.num_tokens:
        parallel = out.nbytes >= SERIAL_MAX_BYTES
        kernel = _sum_rows_half_parallel if parallel else _sum_rows_half_serial
        kernel(*_arguments(tables, batch), KIND[tables.dtype], _kernel_view(out))
    return out


def fused_sum_norm_half(
    tables: EmbeddingTables, batch: Batch, sums: np.ndarray, out: np.ndarray
) -> np.ndarray:
    """LayerNorm of the summed embeddings of 16-bit ``tables``; see :func:`fused_sum_half`."""
    if batch.num_tokens:
        parallel = out.nbytes >= SERIAL_MAX_BYTES
        kernel = _sum_norm_rows_half_parallel if parallel else _sum_norm_rows_half_serial
        kernel(
            *_arguments(tables, batch),
            bits(tables.norm_weight),
            bits(tables.norm_bias),
            tables.norm_eps,
            KIND[tables.dtype],
            _kernel_view(sums),
            sums is not out,
            _kernel_view(out),
        )
    return out
