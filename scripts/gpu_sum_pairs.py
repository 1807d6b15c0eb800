"""An experiment, not shipped: the sum kernel reading and writing float32 pairs as 8-byte words.

Hypothesis (docs/GPU.md): the shipped kernel moves 4 bytes per memory
instruction, a device copy and Triton 16; half the instructions per byte might
close part of the gap to the copy. Each thread handles 4 pairs (8 floats) of
its token's row; the pair is loaded as one int64 and split with
``int_as_float``, the sum packed back with ``float_as_int``: the additions are
the float32 ones of the shipped kernel, so the bits are the same (checked).
Needs an even hidden size. Imported by scripts/gpu_diagnose.py on a GPU.
"""

import numpy as np
from numba import cuda
from numba.cuda import libdevice

LOW = np.int64(0xFFFFFFFF)


@cuda.jit(device=True)
def _plain(array, index, value):
    array[index] = value


_store = getattr(cuda, "stcs", None) or _plain  # streaming where numba-cuda has it


@cuda.jit(device=True)
def _pair_sum(a, b, c):
    lo = (
        libdevice.int_as_float(np.int32(a & LOW)) + libdevice.int_as_float(np.int32(b & LOW))
    ) + libdevice.int_as_float(np.int32(c & LOW))
    hi = (
        libdevice.int_as_float(np.int32(a >> 32)) + libdevice.int_as_float(np.int32(b >> 32))
    ) + libdevice.int_as_float(np.int32(c >> 32))
    return (np.int64(libdevice.float_as_int(hi)) << 32) | (
        np.int64(libdevice.float_as_int(lo)) & LOW
    )


@cuda.jit
def sum_pairs(token, segment, position, input_ids, token_type_ids, position_ids, out):
    """Tables and out viewed as int64 (pairs of float32); a row of threads per token."""
    batch, seq = input_ids.shape
    pairs = token.shape[1]
    t = cuda.blockIdx.x * cuda.blockDim.y + cuda.threadIdx.y
    if t < batch * seq:
        b = t // seq
        s = t - b * seq
        i = input_ids[b, s]
        j = token_type_ids[0 if token_type_ids.shape[0] == 1 else b, s]
        k = position_ids[0 if position_ids.shape[0] == 1 else b, s]
        base = t * pairs
        step = cuda.blockDim.x
        last = pairs - 1
        p0 = cuda.threadIdx.x
        while p0 < pairs:
            p1, p2, p3 = p0 + step, p0 + 2 * step, p0 + 3 * step
            c1 = p1 if p1 < pairs else last
            c2 = p2 if p2 < pairs else last
            c3 = p3 if p3 < pairs else last
            x0 = _pair_sum(token[i, p0], segment[j, p0], position[k, p0])
            x1 = _pair_sum(token[i, c1], segment[j, c1], position[k, c1])
            x2 = _pair_sum(token[i, c2], segment[j, c2], position[k, c2])
            x3 = _pair_sum(token[i, c3], segment[j, c3], position[k, c3])
            _store(out, base + p0, x0)
            if p1 < pairs:
                _store(out, base + p1, x1)
            if p2 < pairs:
                _store(out, base + p2, x2)
            if p3 < pairs:
                _store(out, base + p3, x3)
            p0 += 4 * step


def launch(device, batch, out, elements_per_thread=8):
    """Run ``sum_pairs`` on DeviceTables ``device``, DeviceBatch ``batch``, into float32 ``out``."""
    hidden = device.hidden_size
    pairs = hidden // 2
    lanes = min(256, max(32, -(-(hidden // elements_per_thread) // 32) * 32))
    per_block = max(1, 256 // lanes)
    views = [t.view(np.int64) for t in (device.token, device.segment, device.position)]
    flat = out.reshape(-1).view(np.int64)
    blocks = -(-batch.num_tokens // per_block)
    sum_pairs[blocks, (lanes, per_block)](*views, *batch, flat)
    assert pairs * 2 == hidden
