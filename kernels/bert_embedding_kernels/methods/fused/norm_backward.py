"""LayerNorm's backward over the summed embeddings, as one parallel numba pass.

For a row ``x`` with mean ``m`` and inverse deviation ``r``, ``xhat = (x - m) r``
and ``y = xhat * w + b``. Given ``dy``, with ``g = dy * w``:

    dx = r * (g - mean(g) - xhat * mean(g * xhat))
    dw = sum over rows of dy * xhat,      db = sum over rows of dy

The statistics are recomputed from the stored sum as the forward kernel computes
them (float64, sums of deviations from the row's first element ``x0``), in the
same pass as the two projections the backward needs: with ``e = x - x0``,
``sum(g * xhat) = r * (sum(g * e) - mean(e) * sum(g))``, so one reduction pass
over the row gives all four sums (``mean(e)`` is at most about sqrt(n) standard
deviations, which bounds the cancellation as for the variance). These reductions
run in float64.

The element-wise update (``xhat``, ``dx`` and the rows' terms of ``dw`` and ``db``)
runs in the row's dtype, as the forward normalises: the mean split into
``high + low`` so that ``(x - high) - low`` loses nothing to the mean's rounding.
``dw`` and ``db`` are reductions over rows: each of a fixed number of row chunks
sums :data:`FLUSH_ROWS` rows at a time in the row's dtype and adds each such sum
into its own float64 row of a partial buffer; the partial rows are summed in
chunk order afterwards, so the result is the same whatever the number of threads
(no shared accumulator, no atomics). In float64 throughout, the update took
1.3-1.6x longer at BERT-base (7.5-9.3 against 5.4-7.3 ms, scratch timings on this
2-core VM); the gradients moved from 3e-8 to 1.5e-7 of their largest element away
from the float64 formulas (torch's float32 LayerNorm: 1.7e-7, and 4.5e-5 on rows
with a mean of 1e3, where ours stays at 1.4e-7; docs/BACKWARD.md).
"""

from __future__ import annotations

import numpy as np
from numba import prange

from ..._jit import parallel_kernel, reduction_helper
from ...pool import OUTPUTS
from .forward import STREAM_MIN_BYTES, centring
from .vectors import VECTOR_BYTES, copy_stream, store_fence, vector_lanes

# Row chunks for the weight and bias partial sums: enough for many threads, few
# enough that summing the partial rows afterwards costs nothing.
ROW_CHUNKS = 64
# Rows whose weight and bias terms are summed in the row's dtype before a float64 add.
FLUSH_ROWS = 8


@reduction_helper
def _row_sums(x, dy, weight):
    """``x[0]`` and, over the row, ``sum(e)``, ``sum(e * e)``, ``sum(g)`` and ``sum(g * e)``
    with ``e = x - x[0]`` and ``g = dy * w``, in float64, in one pass.

    A reduction helper (LLVM may reassociate, so vectorise, these sums only). One pass for
    the statistics and the projections together: the row's backward took 1.2-1.45x less
    than with the statistics in a pass of their own (BERT-base, scratch timings on this
    2-core VM: 6.9-9.4 ms against 10.0-11.2 ms, the same output bits in that test).
    """
    shift = np.float64(x[0])
    total = 0.0
    squares = 0.0
    sum_g = 0.0
    sum_g_e = 0.0
    for h in range(x.size):
        e = x[h] - shift
        g = dy[h] * np.float64(weight[h])
        total += e
        squares += e * e
        sum_g += g
        sum_g_e += g * e
    return shift, total, squares, sum_g, sum_g_e


@parallel_kernel
def _norm_backward_rows(
    sums, grad, weight, eps, rows_per_chunk, stream, grad_sums, weight_part, bias_part
):
    """``stream``: write each row of ``grad_sums`` from an L1 scratch row with streaming
    stores (every row ``VECTOR_BYTES``-aligned, a whole number of vectors long)."""
    rows, hidden = sums.shape
    for chunk in prange(weight_part.shape[0]):
        weight_sums = weight_part[chunk]
        bias_sums = bias_part[chunk]
        scratch = np.empty(hidden if stream else 0, grad_sums.dtype)
        lanes = vector_lanes(scratch)
        recent_weight = np.zeros(hidden, sums.dtype)  # the last few rows' terms of dw, db
        recent_bias = np.zeros(hidden, sums.dtype)
        first = chunk * rows_per_chunk
        last = min(rows, first + rows_per_chunk)
        for r in range(first, last):
            x = sums[r]
            dy = grad[r]
            shift, total, squares, sum_g, sum_g_e = _row_sums(x, dy, weight)
            mean_e = total / hidden
            variance = max(squares / hidden - mean_e * mean_e, 0.0)  # as the forward's
            inverse_std = 1.0 / np.sqrt(variance + eps)
            high, low, scale = centring(x, shift + mean_e, inverse_std)  # the forward's
            row_type = x.dtype.type
            mean_g = row_type(sum_g / hidden)
            mean_g_xhat = row_type(inverse_std * (sum_g_e - mean_e * sum_g) / hidden)
            out = scratch if stream else grad_sums[r]
            # Element by element, no reduction: vectorised in strict order.
            for h in range(hidden):
                xhat = ((x[h] - high) - low) * scale
                d = dy[h]
                recent_weight[h] += d * xhat
                recent_bias[h] += d
                out[h] = scale * (d * weight[h] - mean_g - xhat * mean_g_xhat)
            if (r - first + 1) % FLUSH_ROWS == 0 or r == last - 1:
                for h in range(hidden):
                    weight_sums[h] += np.float64(recent_weight[h])
                    bias_sums[h] += np.float64(recent_bias[h])
                    recent_weight[h] = 0
                    recent_bias[h] = 0
            if stream:
                row = grad_sums[r]
                for h in range(0, hidden, lanes):
                    copy_stream(row, scratch, h)
        if stream:
            store_fence()


def _streams(grad_sums: np.ndarray) -> bool:
    """Whether to write ``grad_sums`` with streaming stores: where it is too large to stay in
    the last-level cache for the scatter that reads it (as the forward's output,
    ``STREAM_MIN_BYTES``) and every row starts a vector. They skip reading each line
    before writing it: 9.1-9.7 against 10.2-10.9 ms at BERT-base, the same bits (scratch
    timings, this 2-core VM)."""
    row_bytes = grad_sums.shape[-1] * grad_sums.itemsize
    address = grad_sums.__array_interface__["data"][0]
    return (
        grad_sums.nbytes >= STREAM_MIN_BYTES
        and row_bytes % VECTOR_BYTES == 0
        and address % VECTOR_BYTES == 0
    )


def layer_norm_backward(sums: np.ndarray, grad: np.ndarray, weight: np.ndarray, eps: float):
    """Gradients of ``LayerNorm(sums)`` with respect to ``sums``, the weight and the bias.

    Parameters
    ----------
    sums, grad : ndarray, shape (..., hidden)
        The pre-norm sum of the forward pass and the gradient of the loss with
        respect to the normalised output; one float dtype.
    weight : ndarray, shape (hidden,)
    eps : float

    Returns
    -------
    (grad_sums, grad_weight, grad_bias)
        ``grad_sums`` shaped like ``sums``; the other two (hidden,); all in
        ``sums``' dtype: ``grad_sums`` computed in it from float64 statistics, the
        other two rounded once from float64 sums (module docstring).
    """
    hidden = sums.shape[-1]
    flat_sums = np.ascontiguousarray(sums).reshape(-1, hidden)
    flat_grad = np.ascontiguousarray(grad, dtype=sums.dtype).reshape(-1, hidden)
    rows = flat_sums.shape[0]
    # From the pool: a training loop frees it every step, and a new one faults in 50 MB of
    # pages at BERT-base (21.8 against 16.4 ms a call, scratch timings on this 2-core VM).
    grad_sums = OUTPUTS.empty(flat_sums.shape, flat_sums.dtype)
    chunks = max(1, min(ROW_CHUNKS, rows))
    weight_part = np.zeros((chunks, hidden), np.float64)
    bias_part = np.zeros((chunks, hidden), np.float64)
    if rows:
        rows_per_chunk = -(-rows // chunks)
        _norm_backward_rows(
            flat_sums,
            flat_grad,
            weight,
            eps,
            rows_per_chunk,
            _streams(grad_sums),
            grad_sums,
            weight_part,
            bias_part,
        )
    dtype = sums.dtype
    return (
        grad_sums.reshape(sums.shape),
        weight_part.sum(axis=0).astype(dtype),
        bias_part.sum(axis=0).astype(dtype),
    )
