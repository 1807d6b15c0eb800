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
from ..halfbits import KIND, bits, store, widen
from ..tables import EmbeddingTables
from ..validate import Batch, kernel_ids
from .fused import BATCH_BLOCK, SERIAL_MAX_BYTES, _mean_and_inverse_std


def _sum_rows_half(token, segment, position, input_ids, token_type_ids, position_ids, kind, out):
    """out[b, s] = round((token[i] + segment[j]) + position[k]) over 16-bit tables."""
    batch, seq = input_ids.shape
    hidden = out.shape[2]
    shared_types = token_type_ids.shape[0] == 1
    shared_positions = position_ids.shape[0] == 1
    batch_blocks = (batch + BATCH_BLOCK - 1) // BATCH_BLOCK
    for block in prange(seq * batch_blocks):
        s = block // batch_blocks
        first = (block - s * batch_blocks) * BATCH_BLOCK
        last = min(first + BATCH_BLOCK, batch)
        b = first
        while b + 3 < last:  # four rows at once, as the float kernel (more misses in flight)
            t0 = token[input_ids[b, s]]
            t1 = token[input_ids[b + 1, s]]
            t2 = token[input_ids[b + 2, s]]
            t3 = token[input_ids[b + 3, s]]
            g0 = segment[token_type_ids[0 if shared_types else b, s]]
            g1 = segment[token_type_ids[0 if shared_types else b + 1, s]]
            g2 = segment[token_type_ids[0 if shared_types else b + 2, s]]
            g3 = segment[token_type_ids[0 if shared_types else b + 3, s]]
            p0 = position[position_ids[0 if shared_positions else b, s]]
            p1 = position[position_ids[0 if shared_positions else b + 1, s]]
            p2 = position[position_ids[0 if shared_positions else b + 2, s]]
            p3 = position[position_ids[0 if shared_positions else b + 3, s]]
            o0, o1, o2, o3 = out[b, s], out[b + 1, s], out[b + 2, s], out[b + 3, s]
            for h in range(hidden):
                store(o0, h, widen(t0[h], kind) + widen(g0[h], kind) + widen(p0[h], kind), kind)
                store(o1, h, widen(t1[h], kind) + widen(g1[h], kind) + widen(p1[h], kind), kind)
                store(o2, h, widen(t2[h], kind) + widen(g2[h], kind) + widen(p2[h], kind), kind)
                store(o3, h, widen(t3[h], kind) + widen(g3[h], kind) + widen(p3[h], kind), kind)
            b += 4
        while b < last:
            token_row = token[input_ids[b, s]]
            segment_row = segment[token_type_ids[0 if shared_types else b, s]]
            position_row = position[position_ids[0 if shared_positions else b, s]]
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
    shared_types = token_type_ids.shape[0] == 1
    shared_positions = position_ids.shape[0] == 1
    batch_blocks = (batch + BATCH_BLOCK - 1) // BATCH_BLOCK
    for block in prange(seq * batch_blocks):
        s = block // batch_blocks
        first = (block - s * batch_blocks) * BATCH_BLOCK
        row = np.empty(hidden, np.float32)  # the float32 sum, one per block, in L1
        for b in range(first, min(first + BATCH_BLOCK, batch)):
            token_row = token[input_ids[b, s]]
            segment_row = segment[token_type_ids[0 if shared_types else b, s]]
            position_row = position[position_ids[0 if shared_positions else b, s]]
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
