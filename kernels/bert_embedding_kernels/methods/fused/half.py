"""The fused kernels for float16 and bfloat16 tables: widen on load, add in float32, round once.

The same position-major blocks as :mod:`bert_embedding_kernels.methods.fused` (that module's
docstring and docs/FORWARD.md say why), over the tables' 16-bit patterns
(:mod:`bert_embedding_kernels.halfbits`). Each element is ``(token + segment) + position`` in
float32, rounded to nearest even into the output's format, or written as
float32 with ``out_dtype=float32``: bit for bit what gather computes.
LayerNorm runs on the float32 sum as the float kernels do (statistics in
float64, centring and scaling in float32); the normalised value is rounded once.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from ..._jit import parallel_kernel, row_helper, serial_kernel
from ...tables import EmbeddingTables
from ...validate.batch import Batch, kernel_ids
from .forward import (
    BATCH_BLOCK,
    BYTES_PER_THREAD,
    NORM_BYTES_PER_THREAD,
    _normalise,
    block_rows,
    launch,
    rows_of,
)
from .halfbits import KIND, bits, store, widen
from .vectors import HALF_LANES, round_half, sum3_half


@row_helper
def sum_four_rows_half(outs, tables, ids, b, s, kind):
    """Rows ``b .. b + 3`` at position ``s`` into the four ``outs`` (16-bit or float32 rows),
    four at once as the float kernel (more misses in flight), in whole vectors."""
    t0, g0, p0 = rows_of(tables, ids, b, s)
    t1, g1, p1 = rows_of(tables, ids, b + 1, s)
    t2, g2, p2 = rows_of(tables, ids, b + 2, s)
    t3, g3, p3 = rows_of(tables, ids, b + 3, s)
    o0, o1, o2, o3 = outs
    hidden = o0.size
    h = 0
    while h + HALF_LANES <= hidden:  # whole vectors (vectors.py)
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


@row_helper
def sum_row_half(out_row, tables, ids, b, s, kind):
    """One row, in whole vectors too (LLVM did not vectorise the widening loop)."""
    token_row, segment_row, position_row = rows_of(tables, ids, b, s)
    hidden = out_row.size
    h = 0
    while h + HALF_LANES <= hidden:
        sum3_half(out_row, token_row, segment_row, position_row, h, kind)
        h += HALF_LANES
    while h < hidden:
        value = widen(token_row[h], kind) + widen(segment_row[h], kind)
        store(out_row, h, value + widen(position_row[h], kind), kind)
        h += 1


@row_helper
def round_row(out_row, row, kind):
    """``out_row`` = float32 ``row`` rounded to 16-bit format ``kind`` (or copied into float32)."""
    hidden = row.size
    h = 0
    while h + HALF_LANES <= hidden:
        round_half(out_row, row, h, kind)
        h += HALF_LANES
    while h < hidden:
        store(out_row, h, row[h], kind)
        h += 1


def _sum_rows_half(token, segment, position, input_ids, token_type_ids, position_ids, kind, out):
    """out[b, s] = round((token[i] + segment[j]) + position[k]) over 16-bit tables."""
    batch, seq = input_ids.shape
    tables, ids = (token, segment, position), (input_ids, token_type_ids, position_ids)
    batch_blocks = (batch + BATCH_BLOCK - 1) // BATCH_BLOCK
    for block in prange(seq * batch_blocks):
        s, b, last = block_rows(block, batch_blocks, batch)
        while b + 3 < last:
            outs = (out[b, s], out[b + 1, s], out[b + 2, s], out[b + 3, s])
            sum_four_rows_half(outs, tables, ids, b, s, kind)
            b += 4
        while b < last:
            sum_row_half(out[b, s], tables, ids, b, s, kind)
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
    """out[b, s] = round(LayerNorm(float32 sum)); with ``keep_sum``, round(sum) into ``sums``.

    ``weight`` and ``bias`` are float32 (widened exactly by the caller). Each block
    sums its rows four at a time into float32 rows in L1, and normalises them there
    with the float kernel's :func:`_normalise` (float64 statistics, float32 centring
    and scaling) before one rounding into ``out``.
    """
    batch, seq = input_ids.shape
    hidden = out.shape[2]
    tables, ids = (token, segment, position), (input_ids, token_type_ids, position_ids)
    batch_blocks = (batch + BATCH_BLOCK - 1) // BATCH_BLOCK
    for block in prange(seq * batch_blocks):
        s, b, last = block_rows(block, batch_blocks, batch)
        rows = np.empty((4, hidden), np.float32)  # the float32 sums, one block's, in L1
        while b < last:
            count = min(4, last - b)
            if count == 4:
                sum_four_rows_half((rows[0], rows[1], rows[2], rows[3]), tables, ids, b, s, kind)
            else:
                for r in range(count):
                    sum_row_half(rows[r], tables, ids, b + r, s, kind)
            for r in range(count):
                row = rows[r]
                if keep_sum:
                    round_row(sums[b + r, s], row, kind)
                _normalise(row, row, False, False, weight, bias, eps)
                round_row(out[b + r, s], row, kind)
            b += count


_sum_norm_rows_half_parallel = parallel_kernel(_sum_norm_rows_half)
_sum_norm_rows_half_serial = serial_kernel(_sum_norm_rows_half)


def _widened(vector: np.ndarray) -> np.ndarray:
    # The LayerNorm parameters in float32 (exact for both 16-bit formats), so that the
    # normalisation runs at float32's vector width as in the float kernel.
    return vector.astype(np.float32)


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
        arguments = (*_arguments(tables, batch), KIND[tables.dtype], _kernel_view(out))
        launch(
            _sum_rows_half_parallel, _sum_rows_half_serial, out.nbytes, BYTES_PER_THREAD, *arguments
        )
    return out


def fused_sum_norm_half(
    tables: EmbeddingTables, batch: Batch, sums: np.ndarray, out: np.ndarray
) -> np.ndarray:
    """LayerNorm of the summed embeddings of 16-bit ``tables``; see :func:`fused_sum_half`."""
    if batch.num_tokens:
        launch(
            _sum_norm_rows_half_parallel,
            _sum_norm_rows_half_serial,
            out.nbytes,
            NORM_BYTES_PER_THREAD,
            *_arguments(tables, batch),
            _widened(tables.norm_weight),
            _widened(tables.norm_bias),
            tables.norm_eps,
            KIND[tables.dtype],
            _kernel_view(sums),
            sums is not out,
            _kernel_view(out),
        )
    return out
