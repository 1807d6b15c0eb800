"""The fused gather-and-sum on the device, and ``embed``, which validates and dispatches.

Launch shape, and why: a row of threads per token, each thread
``ELEMENTS_PER_THREAD`` (4) elements of the row (192 threads at hidden 768;
small rows share a block). Others measured this shape at 40.1 us on an H100
(BERT-base fp32, numba-cuda 0.30.4) against 46.5 us for a block per token, 47
us for a warp per token and 73 us for a flat element-per-thread grid (a div/mod
per element). Each thread loads all of its elements before it stores any: a
store between loads makes the next loads wait (the compiler cannot prove that
``out`` aliases no table), and one thread's three loads in flight cannot cover
memory latency (docs/GPU.md has the measurements). With streaming stores
(``cuda.stcs``: the output is never re-read, so it should not evict the hot
token rows from L2); numba 0.68's built-in numba.cuda has no cache hints, so
plain stores are the fallback.

The output is written through a flat 1-D view (``t * hidden + h``): the cache-hint
stores take a scalar index, and the kernels need no 3-D index arithmetic.
Sum + LayerNorm is in :mod:`bert_embedding_kernels.cuda.norm`.
"""

from __future__ import annotations

from functools import cache

import numpy as np
from numba.cuda import libdevice

from ._parts import inputs, output, store_function, token_rows
from ._runtime import SIMULATOR, WARP, cuda, memory_span
from .half import half_sum
from .norm import fused_sum_norm
from .tables import DeviceTables
from .validate import DeviceBatch, prepare

# Threads per token cover ELEMENTS_PER_THREAD elements each, in whole warps, at
# most 256; small rows share a block. Measured on an H100 at BERT-base (docs/GPU.md):
# 4 per thread 54.1 us, 8: 45.1, 16: 43.1 (float32 elements one at a time), and
# float32 pairs at 8 per thread 31.9 us, at 16 33.7. The simulator runs a Python
# thread per CUDA thread (~0.3 ms each), so it gets 8 threads per token: fewer
# than most test widths, which still exercises the loop over groups of four and
# its ragged end.
ELEMENTS_PER_THREAD = 16
PAIR_ELEMENTS_PER_THREAD = 8
_BLOCK_THREADS = 256
_LOW = np.int64(0xFFFFFFFF)


@cache
def _sum_kernel(store):
    @cuda.jit
    def sum_rows(token, segment, position, input_ids, token_type_ids, position_ids, out):
        """out[t * hidden + h] = (token[i, h] + segment[j, h]) + position[k, h].

        ``threadIdx.y`` picks the token within the block, ``threadIdx.x`` strides
        over its row, four strides per pass with every load before any store.
        Same rounding order as the CPU kernel, so the same bits.
        """
        hidden = token.shape[1]
        t = cuda.blockIdx.x * cuda.blockDim.y + cuda.threadIdx.y
        if t < input_ids.shape[0] * input_ids.shape[1]:
            i, j, k = token_rows(input_ids, token_type_ids, position_ids, t)
            base = t * hidden
            step = cuda.blockDim.x
            last = hidden - 1
            h0 = cuda.threadIdx.x
            while h0 < hidden:
                h1, h2, h3 = h0 + step, h0 + 2 * step, h0 + 3 * step
                # Past the row's end, read its last element instead (never stored): no
                # branch between the loads, so all twelve are in flight together. (A
                # branch per element made each group wait for the previous one's loads.)
                c1 = h1 if h1 < hidden else last
                c2 = h2 if h2 < hidden else last
                c3 = h3 if h3 < hidden else last
                x0 = (token[i, h0] + segment[j, h0]) + position[k, h0]
                x1 = (token[i, c1] + segment[j, c1]) + position[k, c1]
                x2 = (token[i, c2] + segment[j, c2]) + position[k, c2]
                x3 = (token[i, c3] + segment[j, c3]) + position[k, c3]
                store(out, base + h0, x0)
                if h1 < hidden:
                    store(out, base + h1, x1)
                if h2 < hidden:
                    store(out, base + h2, x2)
                if h3 < hidden:
                    store(out, base + h3, x3)
                h0 += 4 * step

    return sum_rows


@cuda.jit(device=True)
def _pair_sum(a, b, c):
    """Two float32 sums, each ``(a + b) + c``, of the float32 pairs held in three int64 words."""
    lo = (
        libdevice.int_as_float(np.int32(a & _LOW)) + libdevice.int_as_float(np.int32(b & _LOW))
    ) + libdevice.int_as_float(np.int32(c & _LOW))
    hi = (
        libdevice.int_as_float(np.int32(a >> 32)) + libdevice.int_as_float(np.int32(b >> 32))
    ) + libdevice.int_as_float(np.int32(c >> 32))
    return (np.int64(libdevice.float_as_int(hi)) << 32) | (
        np.int64(libdevice.float_as_int(lo)) & _LOW
    )


@cache
def _pairs_kernel(store):
    @cuda.jit
    def sum_pairs(token, segment, position, input_ids, token_type_ids, position_ids, out):
        """The sum kernel on float32 tables viewed as int64: two elements per load and store.

        Half the memory instructions per byte; the additions are the float32
        ones of ``sum_rows``, in the same order, so the bits are the same.
        """
        pairs = token.shape[1]
        t = cuda.blockIdx.x * cuda.blockDim.y + cuda.threadIdx.y
        if t < input_ids.shape[0] * input_ids.shape[1]:
            i, j, k = token_rows(input_ids, token_type_ids, position_ids, t)
            base = t * pairs
            step = cuda.blockDim.x
            last = pairs - 1
            p0 = cuda.threadIdx.x
            while p0 < pairs:
                p1, p2, p3 = p0 + step, p0 + 2 * step, p0 + 3 * step
                c1 = p1 if p1 < pairs else last  # as in sum_rows: no branch between loads
                c2 = p2 if p2 < pairs else last
                c3 = p3 if p3 < pairs else last
                x0 = _pair_sum(token[i, p0], segment[j, p0], position[k, p0])
                x1 = _pair_sum(token[i, c1], segment[j, c1], position[k, c1])
                x2 = _pair_sum(token[i, c2], segment[j, c2], position[k, c2])
                x3 = _pair_sum(token[i, c3], segment[j, c3], position[k, c3])
                store(out, base + p0, x0)
                if p1 < pairs:
                    store(out, base + p1, x1)
                if p2 < pairs:
                    store(out, base + p2, x2)
                if p3 < pairs:
                    store(out, base + p3, x3)
                p0 += 4 * step

    return sum_pairs


def _as_pairs(tables: DeviceTables, result) -> list | None:
    """The three tables and the flat output viewed as int64 words, where that is possible.

    Needs float32 tables of even width, C-contiguous, and every array 8-byte
    aligned (a device allocation is; a view at an odd element is not), and a
    GPU: the simulator's libdevice has no ``int_as_float``.
    """
    arrays = (tables.token, tables.segment, tables.position, result)
    if SIMULATOR or tables.dtype != np.float32 or tables.hidden_size % 2:
        return None
    if not all(a.is_c_contiguous() and memory_span(a)[0] % 8 == 0 for a in arrays):
        return None
    return [a.reshape(-1).view(np.int64) if a is result else a.view(np.int64) for a in arrays]


def _sum_launch(hidden: int, tokens: int, per_thread: int) -> tuple[int, tuple[int, int]]:
    if SIMULATOR:
        lanes = 8
    else:
        lanes = -(-hidden // per_thread)
        lanes = min(_BLOCK_THREADS, max(WARP, -(-lanes // WARP) * WARP))
    per_block = max(1, _BLOCK_THREADS // lanes) if not SIMULATOR else 4
    return -(-tokens // per_block), (lanes, per_block)


def fused_sum(tables: DeviceTables, batch: DeviceBatch, out=None, *, store: str = "auto", stream=0):
    """Summed embeddings of ``batch`` on the device; bit-identical to the CPU ``fused``.

    float16 and bfloat16 tables run :func:`bert_embedding_kernels.cuda.half.half_sum`
    (``store`` is checked, unused).

    Parameters
    ----------
    tables : DeviceTables
    batch : DeviceBatch
        From :func:`prepare`.
    out : CUDA array, (batch, seq, hidden), optional
        C-contiguous, the tables' dtype, sharing no memory with the inputs.
        None allocates a new device array.
    store : {"auto", "plain", "streaming"}
        "streaming" uses ``cuda.stcs`` (numba-cuda on a GPU); "auto" picks it where it exists.
    stream : numba stream or 0

    Returns
    -------
    The device array written (``out`` itself when given).
    """
    store = store_function(store)
    if tables.half_kind is not None:  # float16, bfloat16: widen, add in float32, round once
        return half_sum(tables, batch, out, stream=stream)
    result = output("out", out, tables, batch, stream, inputs(tables, batch))
    if batch.num_tokens and tables.hidden_size:
        pairs = _as_pairs(tables, result)
        if pairs is not None:
            blocks, threads = _sum_launch(
                tables.hidden_size, batch.num_tokens, PAIR_ELEMENTS_PER_THREAD
            )
            _pairs_kernel(store)[blocks, threads, stream](*pairs[:3], *batch, pairs[3])
        else:
            blocks, threads = _sum_launch(tables.hidden_size, batch.num_tokens, ELEMENTS_PER_THREAD)
            _sum_kernel(store)[blocks, threads, stream](
                tables.token, tables.segment, tables.position, *batch, result.reshape(-1)
            )
    return result if out is None else out


def embed(
    tables: DeviceTables,
    input_ids,
    token_type_ids=None,
    position_ids=None,
    past_length: int = 0,
    out=None,
    *,
    layer_norm: bool = False,
    return_sum: bool = False,
    check: bool = True,
    stream=0,
):
    """``embed`` on the device: validate (:func:`prepare`), then run a kernel.

    Ids may be host arrays or CUDA arrays; the result is a device array
    (``(result, sums)`` with ``return_sum``). ``check=False`` skips the device
    range check and its read-back, for ids that are known to be in range.
    """
    for name, value in (("layer_norm", layer_norm), ("return_sum", return_sum)):
        if not isinstance(value, (bool, np.bool_)):
            raise TypeError(f"{name} is {type(value).__name__}; it must be True or False.")
    if return_sum and not layer_norm:
        raise ValueError("return_sum=True needs layer_norm=True: without it the result is the sum.")
    batch = prepare(
        tables, input_ids, token_type_ids, position_ids, past_length, check=check, stream=stream
    )
    if not layer_norm:
        return fused_sum(tables, batch, out, stream=stream)
    return fused_sum_norm(tables, batch, out, keep_sum=bool(return_sum), stream=stream)
