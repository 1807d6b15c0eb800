"""The forward kernels for float16 and bfloat16 device tables, and their gradients' input.

Bit for bit the CPU's 16-bit results (:mod:`bert_embedding_kernels.methods.fused_half`):

- :func:`half_sum`: each element ``(token + segment) + position`` in float32
  (widened exactly), rounded once to nearest even into the tables' format;
- :func:`half_sum_norm`: the CPU's LayerNorm of that float32 sum: shifted
  one-pass statistics in float64, the mean split into ``high + low`` float32,
  ``((x - high) - low) * scale * weight + bias`` in float32 with no fused
  multiply-add, rounded once;
- :func:`half_grad`: ``grad_output`` in float32 (16-bit gradients widened
  exactly), where the backward accumulates, as the CPU does.

Device arrays of 16-bit data: float16 ones are numba float16 arrays; bfloat16
ones (numba has no bfloat16) are ``uint16`` arrays of the bit patterns: view
them with ``.copy_to_host().view(ml_dtypes.bfloat16)``.

A first version, for exactness rather than speed: a thread per element (sum)
or per token (LayerNorm, three passes over the row). The only difference from
the CPU is the order in which the float64 statistics are added (the CPU lets
LLVM vectorise that sum): a last-bit difference in float64 that would have to
cross a float32 and then a 16-bit rounding boundary to show.

NaN bits (:mod:`.halfbits` puts x86's back after each operation): the
statistics of a row holding a NaN or an infinity are NaN, carrying the row's
first NaN (quieted) or, where only infinities made it, x86's default NaN; where
they meet the row's own NaN, the output takes theirs (the CPU's multiply by the
scale, as LLVM compiled it, has the scale first). Which NaN the CPU keeps where
a row holds several different NaNs depends on the order LLVM gave its
vectorised sum: the tests compare rows with one NaN besides infinities.
"""

from __future__ import annotations

import math

import numpy as np

from ._parts import inputs, output, token_rows
from ._runtime import SIMULATOR, as_device, cuda, memory_span
from .halfbits import DEFAULT_NAN, QUIET, as_bits, as_float, is_nan, narrow, sum3, widen, x86_nan
from .validate import DeviceBatch, device_grad

THREADS = 32 if SIMULATOR else 256
_SIM_BLOCKS = 2  # the simulator runs a Python thread per CUDA thread: grid-stride instead

if SIMULATOR:

    @cuda.jit(device=True)
    def _mul32(a, b):
        return a * b

    @cuda.jit(device=True)
    def _add32(a, b):
        return a + b

    @cuda.jit(device=True)
    def _mul64(a, b):
        return a * b

else:  # pragma: no cover  (hardware only)
    from numba.cuda import libdevice

    # Rounded operations the compiler may not contract into an FMA (the CPU does not).
    @cuda.jit(device=True)
    def _mul32(a, b):
        return libdevice.fmul_rn(a, b)

    @cuda.jit(device=True)
    def _add32(a, b):
        return libdevice.fadd_rn(a, b)

    @cuda.jit(device=True)
    def _mul64(a, b):
        return libdevice.dmul_rn(a, b)


def _blocks(work: int) -> int:
    return _SIM_BLOCKS if SIMULATOR else max(1, min(65535, -(-work // THREADS)))


@cuda.jit(device=True)
def _element(token, segment, position, i, j, k, h, kind):
    """The float32 sum of one element, with the CPU's NaN bits."""
    a = as_float(widen(token[i, h], kind))
    b = as_float(widen(segment[j, h], kind))
    c = as_float(widen(position[k, h], kind))
    return sum3(a, b, c)


@cuda.jit
def _sum_half(token, segment, position, input_ids, token_type_ids, position_ids, kind, out):
    """out[t * hidden + h] = round((token[i, h] + segment[j, h]) + position[k, h])."""
    hidden = token.shape[1]
    total = input_ids.shape[0] * input_ids.shape[1] * hidden
    for n in range(cuda.grid(1), total, cuda.gridsize(1)):
        t = n // hidden
        h = n - t * hidden
        i, j, k = token_rows(input_ids, token_type_ids, position_ids, t)
        out[n] = narrow(as_bits(_element(token, segment, position, i, j, k, h, kind)), kind)


@cuda.jit(device=True)
def _nan_as(value, bits):
    """``value``, or the float32 of ``bits`` where ``value`` is a NaN."""
    return value if value == value else as_float(bits)


@cuda.jit
def _sum_norm_half(
    token, segment, position, input_ids, token_type_ids, position_ids,
    weight, bias, eps, kind, sums, keep_sum, out,
):  # fmt: skip
    """out = round(LayerNorm(float32 sum)) per token, as the CPU (module docstring)."""
    hidden = token.shape[1]
    tokens = input_ids.shape[0] * input_ids.shape[1]
    for t in range(cuda.grid(1), tokens, cuda.gridsize(1)):
        i, j, k = token_rows(input_ids, token_type_ids, position_ids, t)
        base = t * hidden
        shift = np.float64(_element(token, segment, position, i, j, k, 0, kind))
        total = 0.0
        squares = 0.0
        row_nan = DEFAULT_NAN  # the NaN a NaN statistic carries: the row's first, or x86's
        found = False
        for h in range(hidden):
            x = _element(token, segment, position, i, j, k, h, kind)
            if keep_sum:
                sums[base + h] = narrow(as_bits(x), kind)
            x_bits = as_bits(x)
            if not found and is_nan(x_bits):
                row_nan = x_bits | QUIET
                found = True
            deviation = np.float64(x) - shift
            total += deviation
            squares += _mul64(deviation, deviation)
        mean_deviation = total / hidden
        variance = squares / hidden - _mul64(mean_deviation, mean_deviation)
        if variance < 0.0:  # max(variance, 0.0), keeping a NaN as the CPU does
            variance = 0.0
        mean = shift + mean_deviation
        inverse_std = 1.0 / math.sqrt(variance + eps)
        high = _nan_as(np.float32(mean), row_nan)
        low = _nan_as(np.float32(mean - np.float64(high)), row_nan)
        scale = _nan_as(np.float32(inverse_std), row_nan)
        for h in range(hidden):
            x = _element(token, segment, position, i, j, k, h, kind)
            w = as_float(widen(weight[h], kind))
            b = as_float(widen(bias[h], kind))
            y = x86_nan(x - high, x, high)
            y = x86_nan(y - low, y, low)
            y = x86_nan(_mul32(y, scale), scale, y)  # the statistics' NaN first: as the CPU
            y = x86_nan(_mul32(y, w), y, w)
            y = x86_nan(_add32(y, b), y, b)
            out[base + h] = narrow(as_bits(y), kind)


def _flat_bits(array):
    return array.reshape(-1).view(np.uint16)


def half_sum(tables, batch: DeviceBatch, out=None, *, stream=0):
    """:func:`~bert_embedding_kernels.cuda.fused_sum` for 16-bit tables (module docstring)."""
    result = output("out", out, tables, batch, stream, inputs(tables, batch))
    work = batch.num_tokens * tables.hidden_size
    if work:
        _sum_half[_blocks(work), THREADS, stream](
            tables.token, tables.segment, tables.position, *batch, tables.half_kind,
            _flat_bits(result),
        )  # fmt: skip
    return result if out is None else out


def half_sum_norm(tables, batch: DeviceBatch, out=None, *, keep_sum=False, sums=None, stream=0):
    """:func:`~bert_embedding_kernels.cuda.fused_sum_norm` for 16-bit tables."""
    named = inputs(tables, batch)
    result = output("out", out, tables, batch, stream, named)
    kept = None
    if keep_sum:
        kept = output("sums", sums, tables, batch, stream, [*named, ("out", memory_span(result))])
    if batch.num_tokens and tables.hidden_size:
        flat = _flat_bits(result)
        _sum_norm_half[_blocks(batch.num_tokens), THREADS, stream](
            tables.token, tables.segment, tables.position, *batch,
            tables.norm_weight, tables.norm_bias, tables.norm_eps, tables.half_kind,
            flat if kept is None else _flat_bits(kept), keep_sum, flat,
        )  # fmt: skip
    result = result if out is None else out
    return (result, kept if sums is None else sums) if keep_sum else result


@cuda.jit
def _widen_grad(grad, kind, flat):
    """flat[b * seq + s, h] = float32(grad[b, s, h]) for a (batch, seq, hidden) uint16 grad."""
    batch, seq, hidden = grad.shape
    for n in range(cuda.grid(1), batch * seq * hidden, cuda.gridsize(1)):
        t = n // hidden
        h = n - t * hidden
        b = t // seq
        flat[t, h] = as_float(widen(grad[b, t - b * seq, h], kind))


def half_grad(grad_output, shape: tuple, tables, stream):
    """``grad_output`` (tables' dtype or float32, host or device) as a float32 (tokens, hidden)."""
    grad = as_device(grad_output, "grad_output")
    if grad is None:  # host data: widened exactly by numpy, copied once
        host = np.asarray(grad_output)
        if np.dtype(host.dtype) not in (tables.dtype, np.dtype(np.float32)):
            raise TypeError(
                f"grad_output has dtype {host.dtype}; with {tables.dtype} tables it must be "
                f"{tables.dtype.name} or float32. Convert it with grad_output.astype(np.float32)."
            )
        return device_grad(host.astype(np.float32), shape, np.dtype(np.float32), stream)
    dtype = np.dtype(grad.dtype)
    if dtype == np.float32:
        return device_grad(grad, shape, dtype, stream)
    if dtype != tables.array_dtype:
        raise TypeError(
            f"grad_output has dtype {dtype}; with {tables.dtype} tables a CUDA grad_output "
            f"must be {tables.array_dtype.name} (the tables' device dtype) or float32."
        )
    if tuple(grad.shape) != shape:
        raise ValueError(
            f"grad_output has shape {tuple(grad.shape)}; it must have shape {shape} "
            "(input_ids' (batch, seq) and the tables' hidden_size)."
        )
    flat = cuda.device_array((shape[0] * shape[1], shape[2]), np.float32, stream=stream)
    if flat.size:
        _widen_grad[_blocks(flat.size), THREADS, stream](
            grad.view(np.uint16), tables.half_kind, flat
        )
    return flat
