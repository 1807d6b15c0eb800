"""The fused gather-and-sum: one compiled pass that reads three rows and writes one.

The public entry points are :func:`fused_sum` and :func:`fused_sum_norm`; the
``@njit`` kernels behind them take typed arrays only and allocate nothing.
Blocks are position-major: each block is one position across up to
``BATCH_BLOCK`` sequences, so that position's row is read once and stays in L1
while it is added to every sequence. The measured design history (what was
tried, with numbers, and why it lost) is in docs/FORWARD.md.

Small calls: waking the thread pool costs a few microseconds, so outputs below
``SERIAL_MAX_BYTES`` run the same loop compiled without ``parallel``, and larger
ones wake at most one thread per ``BYTES_PER_THREAD`` of output
(``NORM_BYTES_PER_THREAD`` with LayerNorm; :func:`launch`).
"""

from __future__ import annotations

import numba
import numpy as np
from numba import prange

from ..._jit import parallel_kernel, reduction_helper, row_helper, serial_kernel
from ...tables import EmbeddingTables
from ...validate.batch import Batch, kernel_ids
from .vectors import (
    VECTOR_BYTES,
    copy_stream,
    store_fence,
    sum3_store,
    sum3_stream,
    vector_lanes,
)

# Sequences per parallel block: large enough to reuse a position row many
# times, small enough that a huge batch of short sequences still splits into
# many blocks for the threads.
BATCH_BLOCK = 64
# Outputs smaller than this run serially: waking the TBB pool (the threading
# policy, docs/THREADING.md) costs about 10 us. Measured at hidden 768, batch 1,
# median us, serial vs parallel: 48 KiB 5.4 vs 14.9; 96 KiB 8.2 vs 20.6;
# 192 KiB 17.8 vs 20.5; 384 KiB 46 vs 29 (GNU OpenMP's pool wakes faster:
# 96 KiB 8.1 vs 8.5).
SERIAL_MAX_BYTES = 256 * 1024
# A parallel call wakes at most one thread per this many bytes of output (at least
# two): each thread woken costs about 3 us on a 16-core Xeon (TBB), where a
# 1 x 128 x 768 call took 88.6 us on 16 threads and 60.2 on 2 (paired, one process),
# 1.5 MiB ran best on 8 threads and 6 MiB on 16 (docs/FORWARD.md). LayerNorm does
# about twice the work per byte and wants twice the threads (1 x 128: 65.1 us with
# 96 KiB per thread, 69.6 with 192, 76.5 on 16 threads). Measured in float32; 16-bit
# calls take the same rule by bytes. On 2 cores every parallel call gets both threads.
BYTES_PER_THREAD = 192 * 1024
NORM_BYTES_PER_THREAD = 96 * 1024
# Outputs this large are written with streaming stores
# (vectors.py): 1.3x faster
# at BERT-base's 48 MiB, and already 1.16x at 12 MiB in isolation (docs/FORWARD.md). But
# a smaller output written plainly stays in the last-level cache for its reader (the
# next layer), which streaming would send to memory; 32 MiB is a large L3 (this
# machine's), above which the output cannot stay in cache anyway.
STREAM_MIN_BYTES = 32 * 1024 * 1024


def launch(parallel, serial, nbytes: int, bytes_per_thread: int, *args):
    """Run a forward kernel on ``args`` for ``nbytes`` of output: the ``serial`` build below
    ``SERIAL_MAX_BYTES`` or where numba has one thread (``NUMBA_NUM_THREADS=1``), else
    the ``parallel`` one on at most ``nbytes // bytes_per_thread`` threads (at least
    two, at most the caller's numba thread count)."""
    most = numba.config.NUMBA_NUM_THREADS
    if nbytes < SERIAL_MAX_BYTES or most == 1:
        return serial(*args)  # on one thread the parallel build only adds its launch
    wanted = max(2, nbytes // bytes_per_thread)
    # Reading the thread count costs 0.7 us and setting it 1 us: only where it can bind.
    if wanted >= most:
        return parallel(*args)
    available = numba.get_num_threads()  # per Python thread; numba.set_num_threads sets it
    if wanted >= available:
        return parallel(*args)
    numba.set_num_threads(wanted)
    try:
        return parallel(*args)
    finally:
        numba.set_num_threads(available)


@row_helper
def block_rows(block, batch_blocks, batch):
    """(position, first sequence, end) of position-major block ``block``."""
    s = block // batch_blocks
    first = (block - s * batch_blocks) * BATCH_BLOCK
    return s, first, min(first + BATCH_BLOCK, batch)


@row_helper
def rows_of(tables, ids, b, s):
    """The (token, segment, position) rows that sequence ``b`` reads at position ``s``.

    ``tables`` and ``ids`` are the (token, segment, position) tables and id
    arrays; a type or position id array with a first axis of 1 is shared by
    the batch.
    """
    token, segment, position = tables
    input_ids, token_type_ids, position_ids = ids
    return (
        token[input_ids[b, s]],
        segment[token_type_ids[0 if token_type_ids.shape[0] == 1 else b, s]],
        position[position_ids[0 if position_ids.shape[0] == 1 else b, s]],
    )


@row_helper
def sum_four_rows(outs, tables, ids, b0, s0, b1, s1, b2, s2, b3, s3, stream_from):
    """Four output rows at once: their four random token rows stream in together, so four
    misses are in flight where one was (0.66 -> 0.82 of the copy at BERT-base; two rows
    0.76, eight 0.35: docs/FORWARD.md).

    Whole vectors (:mod:`bert_embedding_kernels._vectors`): LLVM left this loop scalar,
    its sixteen rows too many to prove apart at run time. ``outs`` are the four output rows;
    ``stream_from`` is the first column at which they are vector-aligned for
    streaming stores, or -1 for plain ones.
    """
    t0, g0, p0 = rows_of(tables, ids, b0, s0)
    t1, g1, p1 = rows_of(tables, ids, b1, s1)
    t2, g2, p2 = rows_of(tables, ids, b2, s2)
    t3, g3, p3 = rows_of(tables, ids, b3, s3)
    o0, o1, o2, o3 = outs
    hidden, lanes = o0.size, vector_lanes(o0)
    h = 0
    if stream_from >= 0:
        while h < stream_from:  # up to the first aligned column
            o0[h] = t0[h] + g0[h] + p0[h]
            o1[h] = t1[h] + g1[h] + p1[h]
            o2[h] = t2[h] + g2[h] + p2[h]
            o3[h] = t3[h] + g3[h] + p3[h]
            h += 1
        while h + lanes <= hidden:
            sum3_stream(o0, t0, g0, p0, h)
            sum3_stream(o1, t1, g1, p1, h)
            sum3_stream(o2, t2, g2, p2, h)
            sum3_stream(o3, t3, g3, p3, h)
            h += lanes
    else:
        while h + lanes <= hidden:
            sum3_store(o0, t0, g0, p0, h)
            sum3_store(o1, t1, g1, p1, h)
            sum3_store(o2, t2, g2, p2, h)
            sum3_store(o3, t3, g3, p3, h)
            h += lanes
    while h < hidden:  # the columns after the last whole vector
        o0[h] = t0[h] + g0[h] + p0[h]
        o1[h] = t1[h] + g1[h] + p1[h]
        o2[h] = t2[h] + g2[h] + p2[h]
        o3[h] = t3[h] + g3[h] + p3[h]
        h += 1


@row_helper
def sum_row(out_row, tables, ids, b, s):
    # One row: three inputs against one output, which LLVM checks apart and vectorises.
    token_row, segment_row, position_row = rows_of(tables, ids, b, s)
    for h in range(out_row.size):
        out_row[h] = token_row[h] + segment_row[h] + position_row[h]


def _sum_rows(token, segment, position, input_ids, token_type_ids, position_ids, stream_from, out):
    """out[b, s] = (token[i] + segment[j]) + position[k] for every token.

    ``token_type_ids`` / ``position_ids`` have a first axis of 1 (shared by the
    batch) or ``batch``. Every block writes its own output rows: no races.
    ``stream_from``: see :func:`sum_four_rows`; a block that streamed ends with a
    fence, so its rows are visible when the kernel returns.
    """
    batch, seq = input_ids.shape
    tables, ids = (token, segment, position), (input_ids, token_type_ids, position_ids)
    batch_blocks = (batch + BATCH_BLOCK - 1) // BATCH_BLOCK
    for block in prange(seq * batch_blocks):
        s, b, last = block_rows(block, batch_blocks, batch)
        while b + 3 < last:  # four sequences at this position
            outs = (out[b, s], out[b + 1, s], out[b + 2, s], out[b + 3, s])
            sum_four_rows(outs, tables, ids, b, s, b + 1, s, b + 2, s, b + 3, s, stream_from)
            b += 4
        while b < last:  # the last one to three rows of the block, one at a time
            sum_row(out[b, s], tables, ids, b, s)
            b += 1
        if stream_from >= 0:
            store_fence()


_sum_rows_parallel = parallel_kernel(_sum_rows)
_sum_rows_serial = serial_kernel(_sum_rows)


@reduction_helper
def _mean_and_inverse_std(row, eps):
    """LayerNorm statistics of one row, in float64, in one pass over an L1-resident row.

    The sums are of ``row[h] - row[0]`` (the shifted-data algorithm), not of
    ``row[h]``: E[x^2] - E[x]^2 cancels catastrophically when the mean is large
    next to the spread, while with the shift the cancellation is bounded. Any
    element is at most sqrt(n) standard deviations from the mean, so
    E[d^2] <= n var: the variance loses at most log2(n) of float64's 53 bits
    (768 columns: 10), the ``n eps`` of the statistics that tests/rules.py's
    ``layer_norm_bound`` allows (tests/test_layer_norm.py has the worst case for
    the shift, an outlier first).
    One pass instead of two (mean, then squared deviations): LayerNorm's cost
    over the plain sum fell from 1.69x to 1.55x at BERT-base (docs/FORWARD.md).
    """
    # Indexed loops: ``for value in row`` kept LLVM from vectorising them.
    shift = np.float64(row[0])
    total = 0.0
    squares = 0.0
    for h in range(row.size):
        deviation = row[h] - shift
        total += deviation
        squares += deviation * deviation
    mean_deviation = total / row.size
    variance = max(squares / row.size - mean_deviation * mean_deviation, 0.0)
    return shift + mean_deviation, 1.0 / np.sqrt(variance + eps)


@row_helper
def centring(row, mean, inverse_std):
    """``(high, low, scale)`` in ``row``'s dtype: the float64 mean split so that
    ``(x - high) - low`` loses nothing to its rounding, and the inverse deviation."""
    high = row.dtype.type(mean)
    return high, row.dtype.type(mean - high), row.dtype.type(inverse_std)


@serial_kernel
def _normalise(row, sum_row, keep_sum, stream_sum, weight, bias, eps):
    """LayerNorm of ``row`` in place (its sum copied to ``sum_row`` first with ``keep_sum``,
    with streaming stores with ``stream_sum``: see :func:`_sum_norm_rows`).

    Centred and scaled in the row's dtype, at its vector width: float64 here
    cost 1.55x -> 1.41x of the plain sum's time at BERT-base (docs/FORWARD.md).
    The mean is split into ``high + low`` in that dtype, so ``(x - high) - low``
    loses nothing to the mean's rounding: ``x - high`` is exact when x is near
    the mean (Sterbenz), which is where cancellation would otherwise strike
    (rows far from zero with a small spread). The few roundings left stay
    within tests/rules.py's ``layer_norm_bound``.
    """
    hidden = row.shape[0]
    if keep_sum and stream_sum:
        for h in range(0, hidden, vector_lanes(row)):
            copy_stream(sum_row, row, h)
    elif keep_sum:
        for h in range(hidden):
            sum_row[h] = row[h]
    mean, inverse_std = _mean_and_inverse_std(row, eps)
    high, low, scale = centring(row, mean, inverse_std)
    for h in range(hidden):
        row[h] = ((row[h] - high) - low) * scale * weight[h] + bias[h]


def _sum_norm_rows(
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
    stream_sum,
    out,
):
    """out[b, s] = LayerNorm of the three rows' sum; with ``keep_sum`` the sum goes to ``sums``.

    ``stream_sum``: the sums (kept for a backward, read long after) are written with
    streaming stores, which skip reading each line first (``sums`` large, every row
    vector-aligned: :func:`_stream_from` is 0); each block then ends with a fence.

    The row is summed, reduced and normalised in place in ``out`` while it is
    in L1. In place on purpose: with separate ``sums`` and ``out`` views of one
    array (the caller keeping no sum) LLVM's runtime overlap check failed and
    the normalising loop ran scalar (in place: 30.2 ms -> 17.4 ms at BERT-base).
    Plain stores: streaming the normalised rows from an L1 scratch measured slower
    (docs/FORWARD.md).
    """
    batch, seq = input_ids.shape
    tables, ids = (token, segment, position), (input_ids, token_type_ids, position_ids)
    batch_blocks = (batch + BATCH_BLOCK - 1) // BATCH_BLOCK
    for block in prange(seq * batch_blocks):
        s, b, last = block_rows(block, batch_blocks, batch)
        while b + 3 < last:  # four rows summed at once, as in _sum_rows, then normalised
            outs = (out[b, s], out[b + 1, s], out[b + 2, s], out[b + 3, s])
            sum_four_rows(outs, tables, ids, b, s, b + 1, s, b + 2, s, b + 3, s, -1)
            for r in range(4):
                _normalise(outs[r], sums[b + r, s], keep_sum, stream_sum, weight, bias, eps)
            b += 4
        while b < last:
            sum_row(out[b, s], tables, ids, b, s)
            _normalise(out[b, s], sums[b, s], keep_sum, stream_sum, weight, bias, eps)
            b += 1
        if stream_sum:
            store_fence()


_sum_norm_rows_parallel = parallel_kernel(_sum_norm_rows)
_sum_norm_rows_serial = serial_kernel(_sum_norm_rows)


def _arguments(tables: EmbeddingTables, batch: Batch) -> tuple:
    return (
        tables.token,
        tables.segment,
        tables.position,
        kernel_ids(batch.input_ids),
        kernel_ids(batch.token_type_ids),
        kernel_ids(batch.position_ids),
    )


def fused_sum(tables: EmbeddingTables, batch: Batch, out: np.ndarray) -> np.ndarray:
    """Compute the summed embeddings of ``batch`` into ``out`` with the numba kernel."""
    if batch.num_tokens:
        arguments = (*_arguments(tables, batch), _stream_from(out), out)
        launch(_sum_rows_parallel, _sum_rows_serial, out.nbytes, BYTES_PER_THREAD, *arguments)
    return out


def _stream_from(out: np.ndarray) -> int:
    """The first column of every output row at a vector boundary, or -1 for plain stores.

    Streaming stores only for outputs of ``STREAM_MIN_BYTES`` or more, and only
    where every row starts at the same offset from a vector boundary (row bytes a
    whole number of vectors) and elements are aligned to their size, so that a
    whole number of them reaches the boundary.
    """
    if out.nbytes < STREAM_MIN_BYTES:
        return -1
    row_bytes = out.shape[-1] * out.itemsize
    address = out.__array_interface__["data"][0]
    if row_bytes % VECTOR_BYTES or address % out.itemsize:
        return -1
    return (-address % VECTOR_BYTES) // out.itemsize


def fused_sum_norm(
    tables: EmbeddingTables, batch: Batch, sums: np.ndarray, out: np.ndarray
) -> np.ndarray:
    """LayerNorm of the summed embeddings into ``out``; the sum into ``sums`` if not ``out``."""
    if batch.num_tokens:
        launch(
            _sum_norm_rows_parallel,
            _sum_norm_rows_serial,
            out.nbytes,
            NORM_BYTES_PER_THREAD,
            *_arguments(tables, batch),
            tables.norm_weight,
            tables.norm_bias,
            tables.norm_eps,
            sums,
            sums is not out,  # keep the sum only where the caller asked for it
            sums is not out and _stream_from(sums) == 0,
            out,
        )
    return out
