"""LayerNorm's backward on the device: the CPU's formulas, deterministic, without float atomics.

For a row ``x`` with mean ``m`` and inverse deviation ``r``, ``xhat = (x - m) r``
and ``y = xhat * w + b``. Given ``dy``, with ``g = dy * w``:

    dx = r * (g - mean(g) - xhat * mean(g * xhat))
    dw = sum over rows of dy * xhat,      db = sum over rows of dy

(as :mod:`bert_embedding_kernels.methods.layernorm_backward`). Three kernels:

1. ``rows``: a warp per row recomputes the statistics from the stored sum in
   float64 (as the forward kernel does), reduces ``mean(g)`` and
   ``mean(g * xhat)`` over the warp, writes ``dx``, and keeps ``m`` and ``r``.
2. ``partials``: a thread per (row chunk, column) adds ``dy * xhat`` and ``dy``
   over its chunk's rows in row order, in float64; neighbouring threads read
   neighbouring columns, so the reads coalesce.
3. ``finish``: a thread per column adds the chunks' partial sums in chunk order
   and rounds once to the dtype.

Every sum has a fixed order, so a result is the same bits from run to run. The
orders differ from the CPU's (warp sums, other chunks), so the two agree to
rounding, not bitwise.
"""

from __future__ import annotations

import math
from functools import cache

import numpy as np
from numba.cuda import libdevice

from ._parts import warp_sum_function
from ._runtime import SIMULATOR, WARP, as_device, cuda
from .norm import NORM_WARPS
from .validate import check_out

# Row chunks of the weight and bias sums. On hardware, enough (chunk, column)
# threads to fill an H100 at BERT widths (256 x 768); few on the simulator.
ROW_CHUNKS = 8 if SIMULATOR else 256
_THREADS = 32 if SIMULATOR else 256

if SIMULATOR:  # the simulator's libdevice is empty, and it never fuses anything

    @cuda.jit(device=True)
    def _product(a, b):
        return a * b

else:
    # A product rounded on its own, as on the CPU: a plain ``a * b`` feeding a
    # subtraction is fused into one FMA, which keeps the product's low bits.
    # With hidden 1, ``g - mean(g)`` was then 1e-17 instead of 0, times 1/sqrt(eps).
    _product = libdevice.dmul_rn


@cache
def _rows_kernel(warp_sum):
    @cuda.jit
    def norm_backward_rows(sums, grad, weight, eps, grad_sums, means, inverse_stds):
        scratch = cuda.shared.array((NORM_WARPS, WARP), np.float64)
        lane = cuda.threadIdx.x % WARP
        warp = cuda.threadIdx.x // WARP
        rows, hidden = sums.shape
        r = cuda.blockIdx.x * NORM_WARPS + warp
        # Warps past the last row still take part in the (block-wide) reductions.
        width = hidden if r < rows else 0
        r = r if r < rows else rows - 1

        total = 0.0
        for h in range(lane, width, WARP):
            total += np.float64(sums[r, h])
        mean = warp_sum(total, lane, scratch[warp]) / hidden
        squares = 0.0
        for h in range(lane, width, WARP):
            deviation = np.float64(sums[r, h]) - mean
            squares += deviation * deviation
        inverse_std = 1.0 / math.sqrt(warp_sum(squares, lane, scratch[warp]) / hidden + eps)

        mean_g = 0.0
        mean_g_xhat = 0.0
        for h in range(lane, width, WARP):
            xhat = (np.float64(sums[r, h]) - mean) * inverse_std
            g = _product(np.float64(grad[r, h]), np.float64(weight[h]))
            mean_g += g
            mean_g_xhat += g * xhat
        mean_g = warp_sum(mean_g, lane, scratch[warp]) / hidden
        mean_g_xhat = warp_sum(mean_g_xhat, lane, scratch[warp]) / hidden
        for h in range(lane, width, WARP):
            xhat = (np.float64(sums[r, h]) - mean) * inverse_std
            g = _product(np.float64(grad[r, h]), np.float64(weight[h]))
            grad_sums[r, h] = inverse_std * (g - mean_g - xhat * mean_g_xhat)
        if lane == 0 and width:
            means[r] = mean
            inverse_stds[r] = inverse_std

    return norm_backward_rows


@cuda.jit
def _partials(sums, grad, means, inverse_stds, rows_per_chunk, weight_part, bias_part):
    chunk = cuda.blockIdx.x
    h = cuda.blockIdx.y * cuda.blockDim.x + cuda.threadIdx.x
    rows, hidden = sums.shape
    if h < hidden:
        weight_sum = 0.0
        bias_sum = 0.0
        end = (chunk + 1) * rows_per_chunk
        for r in range(chunk * rows_per_chunk, end if end < rows else rows):
            dy = np.float64(grad[r, h])
            weight_sum += dy * ((np.float64(sums[r, h]) - means[r]) * inverse_stds[r])
            bias_sum += dy
        weight_part[chunk, h] = weight_sum
        bias_part[chunk, h] = bias_sum


@cuda.jit
def _finish(weight_part, bias_part, grad_weight, grad_bias):
    h = cuda.grid(1)
    if h < grad_weight.size:
        weight_sum = 0.0
        bias_sum = 0.0
        for chunk in range(weight_part.shape[0]):
            weight_sum += weight_part[chunk, h]
            bias_sum += bias_part[chunk, h]
        grad_weight[h] = weight_sum
        grad_bias[h] = bias_sum


def _device_array(name: str, value, dtype, ndim: int):
    """``value`` as a C-contiguous ``ndim``-D device array of ``dtype`` (None: any float)."""
    array = as_device(value, name)
    if array is None:
        raise TypeError(f"{name} is {type(value).__name__}; it must be a CUDA array.")
    dtype = dtype or (np.dtype(array.dtype) if array.dtype.kind == "f" else np.dtype(np.float32))
    if np.dtype(array.dtype) != dtype or array.ndim != ndim or not array.is_c_contiguous():
        raise ValueError(
            f"{name} is {array.ndim}-D of {array.dtype}; it must be a C-contiguous "
            f"{ndim}-D array of {dtype}."
        )
    return array


def layer_norm_backward(
    sums, grad, weight, eps: float, *, out=None, allocate=None, reduction="auto", stream=0
):
    """Gradients of ``LayerNorm(sums)`` for ``sums``, the weight and the bias, on the device.

    Parameters
    ----------
    sums, grad : CUDA arrays, (rows, hidden), C-contiguous
        The pre-norm sum of the forward pass (``fused_sum_norm(..., keep_sum=True)``)
        and the gradient of the loss for its normalised output; float32 or float64.
    weight : CUDA array, (hidden,)
        The LayerNorm's scale.
    eps : float
    out : tuple of three CUDA arrays, optional
        ``(grad_sums, grad_weight, grad_bias)`` to write (shaped like ``sums``
        and ``weight``, the same dtype), e.g. torch tensors from torch's caching
        allocator.
    allocate : callable ``(shape, numpy dtype) -> CUDA array``, optional
        Where the float64 work arrays come from (default: numba's
        ``cuda.device_array``, a cudaMalloc each; torch's allocator reuses memory).
    reduction : {"auto", "shared", "shuffle"}
        The warp sum, as :func:`bert_embedding_kernels.cuda.fused_sum_norm`'s.
    stream : numba stream or 0

    Returns
    -------
    (grad_sums, grad_weight, grad_bias)
        Device arrays in the dtype, each element rounded once from float64.
    """
    sums = _device_array("sums", sums, None, 2)
    dtype = np.dtype(sums.dtype)
    grad = _device_array("grad", grad, dtype, 2)
    weight = _device_array("weight", weight, dtype, 1)
    rows, hidden = sums.shape
    if tuple(grad.shape) != (rows, hidden) or weight.shape[0] != hidden:
        raise ValueError(
            f"sums {tuple(sums.shape)}, grad {tuple(grad.shape)} and weight "
            f"{tuple(weight.shape)} must be (rows, hidden), (rows, hidden) and (hidden,)."
        )
    if allocate is None:

        def allocate(shape, work_dtype):
            return cuda.device_array(shape, work_dtype, stream=stream)

    if out is None:
        out = (allocate((rows, hidden), dtype), allocate(hidden, dtype), allocate(hidden, dtype))
    shapes = ((rows, hidden), (hidden,), (hidden,))
    names = ("grad_sums", "grad_weight", "grad_bias")
    grad_sums, grad_weight, grad_bias = (
        check_out(f"out.{name}", array, shape, dtype, [])
        for name, array, shape in zip(names, out, shapes, strict=True)
    )
    if not hidden:
        return grad_sums, grad_weight, grad_bias
    chunks = max(1, min(ROW_CHUNKS, rows))
    weight_part = as_device(allocate((chunks, hidden), np.float64), "work array")
    bias_part = as_device(allocate((chunks, hidden), np.float64), "work array")
    means = as_device(allocate(max(rows, 1), np.float64), "work array")
    inverse_stds = as_device(allocate(max(rows, 1), np.float64), "work array")
    if rows:
        rows_kernel = _rows_kernel(warp_sum_function(reduction))
        rows_kernel[-(-rows // NORM_WARPS), NORM_WARPS * WARP, stream](
            sums, grad, weight, float(eps), grad_sums, means, inverse_stds
        )
    # With no rows every chunk is empty, and the weight and bias gradients are zero.
    _partials[(chunks, -(-hidden // _THREADS)), _THREADS, stream](
        sums, grad, means, inverse_stds, -(-rows // chunks), weight_part, bias_part
    )
    _finish[-(-hidden // _THREADS), _THREADS, stream](
        weight_part, bias_part, grad_weight, grad_bias
    )
    return grad_sums, grad_weight, grad_bias
