"""Sum + LayerNorm on the device: a warp per token, float64 statistics in two passes.

Two kernels, chosen by the row's width:

- ``registers`` (hidden <= 32 x ``MAX_PER_LANE``, 1024 on hardware: every BERT
  size): each lane keeps its ``ceil(hidden / 32)`` sums in a local array the
  compiler holds in registers (the trip counts are compile-time constants, so
  the loops unroll), so the rows are read once and the output written once.
  The loads come first, with no branch between them (a lane past the row's end
  reads its last element and ignores it), so all of a lane's loads are in
  flight together: with a branch per element, each waited for the last.
- ``reread`` (wider rows): the sum is stored in ``out`` and re-read by the same
  thread for the second and third passes (no barrier needed), so any width works.

Both add the same float64 terms in the same order (each lane's elements in
column order, then the warp sum), so they give the same bits.
"""

from __future__ import annotations

import math
from functools import cache

import numpy as np

from ._parts import inputs, output, store_function, token_rows, warp_sum_function
from ._runtime import SIMULATOR, WARP, cuda, memory_span
from .half import half_sum_norm
from .tables import DeviceTables
from .validate import DeviceBatch

# Tokens (warps) per block. Two in the simulator, so that the tests cover a
# partly idle last block.
NORM_WARPS = 2 if SIMULATOR else 4
# Widest row kept in registers, in elements per lane. Small in the simulator, so
# that the tests' widths reach both kernels.
MAX_PER_LANE = 4 if SIMULATOR else 32


@cache
def _norm_kernel(warp_sum, store, dtype: np.dtype, per_lane: int):
    """The ``registers`` kernel for rows of at most ``per_lane`` x 32 elements."""
    cast = dtype.type  # rounds a float64 to the tables' dtype, in kernels and in the simulator

    @cuda.jit
    def sum_norm_rows(
        token, segment, position, input_ids, token_type_ids, position_ids,
        weight, bias, eps, sums, keep_sum, out,
    ):  # fmt: skip
        scratch = cuda.shared.array((NORM_WARPS, WARP), np.float64)
        values = cuda.local.array(per_lane, dtype.type)
        lane = cuda.threadIdx.x % WARP
        warp = cuda.threadIdx.x // WARP
        hidden = token.shape[1]
        tokens = input_ids.shape[0] * input_ids.shape[1]
        t = cuda.blockIdx.x * NORM_WARPS + warp
        # Lanes past the last token still run both reductions (the shared-memory
        # one is a block-wide barrier), over an empty row.
        width = hidden if t < tokens else 0
        t = t if t < tokens else tokens - 1  # (no min(): see backward._exclusive_scan)
        i, j, k = token_rows(input_ids, token_type_ids, position_ids, t)
        base = t * hidden

        last = hidden - 1
        for e in range(per_lane):  # all loads first, with no branch between them
            h = lane + e * WARP
            c = h if h < hidden else last  # past the end: a valid element, never used
            values[e] = (token[i, c] + segment[j, c]) + position[k, c]
        total = 0.0
        for e in range(per_lane):
            if lane + e * WARP < width:
                total += np.float64(values[e])
        mean = warp_sum(total, lane, scratch[warp]) / hidden

        squares = 0.0
        for e in range(per_lane):
            if lane + e * WARP < width:
                deviation = np.float64(values[e]) - mean
                squares += deviation * deviation
        inverse_std = 1.0 / math.sqrt(warp_sum(squares, lane, scratch[warp]) / hidden + eps)

        for e in range(per_lane):
            h = lane + e * WARP
            if h < width:
                if keep_sum:
                    store(sums, base + h, values[e])
                # As the CPU: centre and scale in float64, round to the dtype, then the
                # affine step in the dtype (hardware may fuse it into one FMA).
                y = cast((np.float64(values[e]) - mean) * inverse_std)
                store(out, base + h, y * weight[h] + bias[h])

    return sum_norm_rows


@cache
def _norm_kernel_reread(warp_sum, store, dtype: np.dtype):
    """The ``reread`` kernel, for rows wider than the registers hold."""
    cast = dtype.type

    @cuda.jit
    def sum_norm_rows(
        token, segment, position, input_ids, token_type_ids, position_ids,
        weight, bias, eps, sums, keep_sum, out,
    ):  # fmt: skip
        scratch = cuda.shared.array((NORM_WARPS, WARP), np.float64)
        lane = cuda.threadIdx.x % WARP
        warp = cuda.threadIdx.x // WARP
        hidden = token.shape[1]
        tokens = input_ids.shape[0] * input_ids.shape[1]
        t = cuda.blockIdx.x * NORM_WARPS + warp
        width = hidden if t < tokens else 0
        t = t if t < tokens else tokens - 1
        i, j, k = token_rows(input_ids, token_type_ids, position_ids, t)
        base = t * hidden

        total = 0.0
        for h in range(lane, width, WARP):
            x = (token[i, h] + segment[j, h]) + position[k, h]
            out[base + h] = x
            if keep_sum:
                store(sums, base + h, x)
            total += np.float64(x)
        mean = warp_sum(total, lane, scratch[warp]) / hidden

        squares = 0.0
        for h in range(lane, width, WARP):
            deviation = np.float64(out[base + h]) - mean
            squares += deviation * deviation
        inverse_std = 1.0 / math.sqrt(warp_sum(squares, lane, scratch[warp]) / hidden + eps)

        for h in range(lane, width, WARP):
            y = cast((np.float64(out[base + h]) - mean) * inverse_std)
            store(out, base + h, y * weight[h] + bias[h])

    return sum_norm_rows


def norm_kernel(reduction: str, store: str, dtype: np.dtype, hidden: int):
    """The compiled kernel for these options and this width (``registers`` where it fits)."""
    warp_sum, store = warp_sum_function(reduction), store_function(store)
    per_lane = max(1, -(-hidden // WARP))
    if per_lane <= MAX_PER_LANE:
        return _norm_kernel(warp_sum, store, np.dtype(dtype), per_lane)
    return _norm_kernel_reread(warp_sum, store, np.dtype(dtype))


def fused_sum_norm(
    tables: DeviceTables,
    batch: DeviceBatch,
    out=None,
    *,
    keep_sum: bool = False,
    sums=None,
    reduction: str = "auto",
    store: str = "auto",
    stream=0,
):
    """LayerNorm of the summed embeddings on the device; with ``keep_sum`` also the sum.

    Parameters
    ----------
    tables : DeviceTables
        With ``norm_weight`` and ``norm_bias``.
    batch : DeviceBatch
    out, sums : CUDA arrays, (batch, seq, hidden), optional
        As ``out`` of :func:`fused_sum`; ``sums`` is used only with ``keep_sum``.
    keep_sum : bool
        Also write the pre-norm sum (bit-identical to :func:`fused_sum`).
    reduction : {"auto", "shared", "shuffle"}
        The warp reduction: "shuffle" (hardware only) or "shared" (shared memory,
        runs on the simulator); "auto" picks shuffles where they exist.
    store, stream
        As :func:`fused_sum`.

    Returns
    -------
    ``out``, or ``(out, sums)`` with ``keep_sum``.

    Notes
    -----
    Statistics are float64 for both dtypes, as on the CPU, but the warp sums
    them in another order, and hardware may fuse ``y * weight + bias`` into one
    FMA: agreement with the CPU is to rounding, not bitwise (docs/GPU.md).
    float16 and bfloat16 tables run :func:`bert_embedding_kernels.cuda.half.half_sum_norm`,
    the CPU's 16-bit algorithm, bit for bit (its docstring says where it could not be).
    """
    if tables.norm_weight is None:
        raise ValueError(
            "layer_norm=True needs the LayerNorm parameters, but the tables have no "
            "norm_weight and norm_bias; build them with DeviceTables(..., norm_weight=..., "
            "norm_bias=..., norm_eps=...)."
        )
    if tables.half_kind is not None:  # options checked, then the CPU's 16-bit algorithm
        warp_sum_function(reduction), store_function(store)
        return half_sum_norm(tables, batch, out, keep_sum=keep_sum, sums=sums, stream=stream)
    named = inputs(tables, batch)
    result = output("out", out, tables, batch, stream, named)
    kept = None
    if keep_sum:
        kept = output("sums", sums, tables, batch, stream, [*named, ("out", memory_span(result))])
    if batch.num_tokens and tables.hidden_size:
        kernel = norm_kernel(reduction, store, tables.dtype, tables.hidden_size)
        blocks = -(-batch.num_tokens // NORM_WARPS)
        flat = result.reshape(-1)
        kernel[blocks, NORM_WARPS * WARP, stream](
            tables.token,
            tables.segment,
            tables.position,
            *batch,
            tables.norm_weight,
            tables.norm_bias,
            tables.norm_eps,
            flat if kept is None else kept.reshape(-1),
            keep_sum,
            flat,
        )
    result = result if out is None else out
    if not keep_sum:
        return result
    return result, (kept if sums is None else sums)
