"""Forward kernels: the fused gather-and-sum, and the sum followed by LayerNorm.

Launch shapes, and why (figures: BERT-base fp32 on an H100 with numba-cuda
0.30.4, measured by others, docs/GPU.md):

- sum: a row of threads per token, each thread about 4 elements of the row
  (192 threads at hidden 768). Measured 40.1 us against 46.5 us for a block
  per token and 47 us for a warp per token; a flat element-per-thread grid paid
  a div/mod per element (73 us). With streaming stores (``cuda.stcs``: the
  output is never re-read, so it should not evict the hot token rows from L2)
  34.8 us; numba 0.68's built-in numba.cuda has no cache hints, so plain stores
  are the fallback.
- sum + LayerNorm: a warp per token. Its two reductions (mean, then squared
  deviations: no cancellation) use warp shuffles on hardware (57.6 us) and a
  shared-memory reduction elsewhere (94 us measured for that variant; it is the
  one numba's CUDA simulator can run, since the simulator has no shuffles).

The output is written through a flat 1-D view (``t * hidden + h``): the cache-hint
stores take a scalar index, and the kernels need no 3-D index arithmetic.
"""

from __future__ import annotations

import math
from functools import cache

import numpy as np

from ._runtime import HAS_SHUFFLE, HAS_STREAMING_STORE, SIMULATOR, WARP, cuda
from .tables import DeviceTables
from .validate import DeviceBatch, check_out, prepare

# Sum kernel: threads per token cover ~4 elements each, in whole warps, at most
# 256; small rows share a block. The simulator runs a Python thread per CUDA
# thread (~0.3 ms each), so it gets 8 threads per token: fewer than most test
# widths, which still exercises the strided loop.
_ELEMENTS_PER_THREAD = 4
_BLOCK_THREADS = 256
# LayerNorm kernel: tokens (warps) per block. Two in the simulator, so that the
# tests cover a partly idle last block.
_NORM_WARPS = 2 if SIMULATOR else 4


@cuda.jit(device=True)
def _plain_store(array, index, value):
    array[index] = value


@cuda.jit(device=True)
def _streaming_store(array, index, value):
    # st.global.cs: evict-first; compiled only where numba-cuda provides it.
    cuda.stcs(array, index, value)


@cuda.jit(device=True)
def _warp_sum_shared(value, lane, scratch):
    """Sum of ``value`` over the 32 lanes of a warp through ``scratch`` (32 shared floats).

    Every lane adds the 32 values in lane order, so all lanes get the same
    result. ``syncthreads`` (the simulator has no ``syncwarp``) makes this a
    block-wide barrier: every thread of the block must call it, active or not.
    """
    scratch[lane] = value
    cuda.syncthreads()
    total = 0.0
    for other in range(WARP):
        total += scratch[other]
    cuda.syncthreads()  # all lanes have read before the next call overwrites
    return total


@cuda.jit(device=True)
def _warp_sum_shuffle(value, lane, scratch):
    """Butterfly sum over a warp with shuffles (hardware only; ``scratch`` unused).

    Each step adds two partial sums that the partner lane adds in the other
    order; addition is commutative, so every lane ends with the same bits.
    """
    offset = WARP // 2
    while offset > 0:
        value += cuda.shfl_xor_sync(0xFFFFFFFF, value, offset)
        offset //= 2
    return value


def _store(store: str):
    if store == "auto":
        store = "streaming" if HAS_STREAMING_STORE else "plain"
    if store == "streaming" and not HAS_STREAMING_STORE:
        raise ValueError(
            "store='streaming' needs numba-cuda's cuda.stcs on a GPU; this numba.cuda "
            "(or the simulator) has none. Use store='plain' or 'auto'."
        )
    if store not in ("plain", "streaming"):
        raise ValueError(f"store is {store!r}; it must be 'auto', 'plain' or 'streaming'.")
    return _streaming_store if store == "streaming" else _plain_store


def _reduction(reduction: str):
    if reduction == "auto":
        reduction = "shuffle" if HAS_SHUFFLE else "shared"
    if reduction == "shuffle" and not HAS_SHUFFLE:
        raise ValueError(
            "reduction='shuffle' needs warp shuffles on a GPU; numba's CUDA simulator has "
            "none. Use reduction='shared' or 'auto'."
        )
    if reduction not in ("shared", "shuffle"):
        raise ValueError(f"reduction is {reduction!r}; it must be 'auto', 'shared' or 'shuffle'.")
    return _warp_sum_shuffle if reduction == "shuffle" else _warp_sum_shared


@cache
def _sum_kernel(store):
    @cuda.jit
    def sum_rows(token, segment, position, input_ids, token_type_ids, position_ids, out):
        """out[t * hidden + h] = (token[i, h] + segment[j, h]) + position[k, h].

        ``threadIdx.y`` picks the token within the block, ``threadIdx.x`` strides
        over its row. Same rounding order as the CPU kernel, so the same bits.
        """
        batch, seq = input_ids.shape
        hidden = token.shape[1]
        t = cuda.blockIdx.x * cuda.blockDim.y + cuda.threadIdx.y
        if t < batch * seq:
            b = t // seq
            s = t - b * seq
            i = input_ids[b, s]
            j = token_type_ids[0 if token_type_ids.shape[0] == 1 else b, s]
            k = position_ids[0 if position_ids.shape[0] == 1 else b, s]
            base = t * hidden
            for h in range(cuda.threadIdx.x, hidden, cuda.blockDim.x):
                store(out, base + h, (token[i, h] + segment[j, h]) + position[k, h])

    return sum_rows


@cache
def _norm_kernel(warp_sum, store, dtype: np.dtype):
    cast = dtype.type  # rounds a float64 to the tables' dtype, in kernels and in the simulator

    @cuda.jit
    def sum_norm_rows(
        token,
        segment,
        position,
        input_ids,
        token_type_ids,
        position_ids,
        weight,
        bias,
        eps,
        sums,
        keep_sum,
        out,
    ):
        """out = LayerNorm of the three rows' sum, a warp per token; with keep_sum, sums = the sum.

        Statistics in float64 and in two passes, as on the CPU. The sum is
        stored in ``out`` and re-read by the same thread (no barrier needed)
        rather than kept in registers, so any width works.
        """
        scratch = cuda.shared.array((_NORM_WARPS, WARP), np.float64)
        lane = cuda.threadIdx.x % WARP
        warp = cuda.threadIdx.x // WARP
        batch, seq = input_ids.shape
        hidden = token.shape[1]
        tokens = batch * seq
        t = cuda.blockIdx.x * _NORM_WARPS + warp
        # Lanes past the last token still run both reductions (the shared-memory
        # one is a block-wide barrier), over an empty range.
        width = hidden if t < tokens else 0
        t = t if t < tokens else tokens - 1  # (min(): see backward._exclusive_scan)
        b = t // seq
        s = t - b * seq
        i = input_ids[b, s]
        j = token_type_ids[0 if token_type_ids.shape[0] == 1 else b, s]
        k = position_ids[0 if position_ids.shape[0] == 1 else b, s]
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
            # As the CPU: centre and scale in float64, round to the dtype, then the
            # affine step in the dtype (hardware may fuse it into one FMA).
            y = cast((np.float64(out[base + h]) - mean) * inverse_std)
            store(out, base + h, y * weight[h] + bias[h])

    return sum_norm_rows


def _sum_launch(hidden: int, tokens: int) -> tuple[int, tuple[int, int]]:
    if SIMULATOR:
        lanes = 8
    else:
        lanes = -(-hidden // _ELEMENTS_PER_THREAD)
        lanes = min(_BLOCK_THREADS, max(WARP, -(-lanes // WARP) * WARP))
    per_block = max(1, _BLOCK_THREADS // lanes) if not SIMULATOR else 4
    return -(-tokens // per_block), (lanes, per_block)


def _inputs(tables: DeviceTables, batch: DeviceBatch) -> list:
    named = [("tables.token", tables.token), ("tables.segment", tables.segment)]
    named += [("tables.position", tables.position)]
    named += list(zip(DeviceBatch._fields, batch, strict=True))
    if tables.norm_weight is not None:
        named += [("tables.norm_weight", tables.norm_weight)]
        named += [("tables.norm_bias", tables.norm_bias)]
    return named


def _output(name, given, tables, batch, stream, inputs):
    shape = (*batch.shape, tables.hidden_size)
    if given is None:
        return cuda.device_array(shape, tables.dtype, stream=stream)
    return check_out(name, given, shape, tables.dtype, inputs)


def fused_sum(tables: DeviceTables, batch: DeviceBatch, out=None, *, store: str = "auto", stream=0):
    """Summed embeddings of ``batch`` on the device; bit-identical to the CPU ``fused``.

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
    result = _output("out", out, tables, batch, stream, _inputs(tables, batch))
    if batch.num_tokens:
        blocks, threads = _sum_launch(tables.hidden_size, batch.num_tokens)
        _sum_kernel(_store(store))[blocks, threads, stream](
            tables.token, tables.segment, tables.position, *batch, result.reshape(-1)
        )
    return result if out is None else out


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
    """
    if tables.norm_weight is None:
        raise ValueError(
            "layer_norm=True needs the LayerNorm parameters, but the tables have no "
            "norm_weight and norm_bias; build them with DeviceTables(..., norm_weight=..., "
            "norm_bias=..., norm_eps=...)."
        )
    inputs = _inputs(tables, batch)
    result = _output("out", out, tables, batch, stream, inputs)
    kept = None
    if keep_sum:
        kept = _output("sums", sums, tables, batch, stream, [*inputs, ("out", result)])
    if batch.num_tokens:
        kernel = _norm_kernel(_reduction(reduction), _store(store), tables.dtype)
        blocks = -(-batch.num_tokens // _NORM_WARPS)
        flat = result.reshape(-1)
        kernel[blocks, _NORM_WARPS * WARP, stream](
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
    """:func:`kernels.embed` on the device: validate (:func:`prepare`), then run a kernel.

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
