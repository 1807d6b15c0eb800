"""The fused backward: one parallel numba pass over ``grad`` adding into all three tables.

The gradient of each table is a scatter-add of the output gradient ``g``: row
``r`` of ``Wt`` receives the sum of ``g[b, s]`` over every token whose id is
``r``.

A parallel scatter-add races when two threads add into the same row, and
atomics would make the sum depend on thread timing. Here every thread owns a
block of *columns* (hidden units) of all three tables: a thread walks every
token in token order and adds that token's slice ``g[t, c0:c1]`` into the
slices ``[c0:c1]`` of its three rows. No two threads ever write the same
element, so there is no race and no atomic, and each element is summed in
token order starting from zero, whatever the number of threads or the block
width: the result is bitwise identical for every thread count (and identical
to numpy's ``np.add.at`` and to torch's CPU kernel, which also add in token
order). One pass over ``g`` serves all three tables, and the work per thread is
equal whatever the skew of the ids (a counting sort by id with one owner per
row would leave one thread with the most frequent rows). Blocks are whole
64-byte cache lines and the gradients start on a line, so no two threads write
to one line either (when a row is a whole number of lines, as at BERT's widths).

Parallelism is bounded by ``hidden / 16`` blocks for float32 (48 at hidden
768), which is plenty on the machines this project targets.

Zeroing: a new gradient's pages are mapped and zeroed by the operating system
lazily, on first touch; the kernel never writes a row no token touched. Before
the scatter, a row-owned pass stores a zero into each page of each row that will
be touched, so that every page is first touched (and zeroed by the OS) by one
thread only; left to the column-owned scatter, both threads would fault each page
together (28.8 against 25.2 ms at BERT-base, docs/BACKWARD.md). A call with many
tokens for its table (a training step) takes the token gradient from the output
pool instead (:mod:`bert_embedding_kernels.pool`): the buffer of an earlier step's
gradient that torch has freed, its pages warm, zeroed again in parallel (1.3-1.9
ms for 94 MB), which costs less than the faults.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import prange

from ..._jit import parallel_kernel, row_helper, serial_kernel
from ...gradients import CACHE_LINE_BYTES, EmbeddingGradients
from ...hugepages import sparse_zeros
from ...pool import OUTPUTS, aligned_zeros
from ...validate.batch import kernel_ids

# The smallest memory page the operating system maps on first touch.
_PAGE_BYTES = 4096
# Output gradients smaller than this run the serial build of the same kernel:
# waking the thread pool costs microseconds that a tiny call does not have.
# Measured end to end (embed_backward, vocab 30522, hidden 768, threshold forced
# either way, real-time priority): 24 KiB serial 0.92 ms vs parallel 1.27 ms;
# 96 KiB 5.4 vs 4.7 ms; 384 KiB 19.5 vs 12.9 ms. Small calls are dominated by
# first-touch faults of the fresh token gradient: each used row faults (and the
# OS zeroes) a whole 2 MiB transparent huge page.
SERIAL_MAX_BYTES = 96 * 1024
# A new token gradient comes from the output pool (warm pages, zeroed again) when the call
# has at least one token per this many table rows; fewer tokens fault in fewer pages of a
# lazily zeroed new array than zeroing the whole table costs. At vocab 30522 x 768 float32
# (scratch timings, this 2-core VM): zeroing all 94 MB in parallel 1.5 ms; each row a token
# faults in about 2.5 us (BERT-base, 16,384 Zipf tokens: 19.8 ms fresh, 15.7 ms reused).
ROWS_PER_TOKEN_TO_POOL = 16


@row_helper
def _ids_of(ids, t, seq):
    """(token, segment, position) ids of flat token ``t``; a type or position id array
    with a first axis of 1 is shared by the batch. ``ids`` is (input, type, position) ids."""
    input_ids, token_type_ids, position_ids = ids
    b = t // seq
    s = t - b * seq
    return (
        input_ids[b, s],
        token_type_ids[0 if token_type_ids.shape[0] == 1 else b, s],
        position_ids[0 if position_ids.shape[0] == 1 else b, s],
    )


@row_helper
def _add_token(grad, t, i, j, k, padding_idx, c0, c1, rows, s0):
    """Columns ``[c0, c1)`` of ``grad[t]`` into rows ``i``, ``j``, ``k`` (no token row for padding).

    The rows are slices indexed from 0: with ``range(c0, c1)`` on the full rows
    numba cannot prove the index non-negative, keeps its wraparound branch, and
    the loop stays scalar (checked in the assembly: no ``vaddps`` at all).
    One loop adds each gradient element into the three rows, so it is loaded
    once; three loops, one per table, measured the same (docs/BACKWARD.md).
    ``rows`` is the (token, segment, position) gradients; ``s0`` the block's first column
    in the segment and position ones (see :func:`_scatter_add_columns`).
    """
    token, segment, position = rows
    g = grad[t, c0:c1]
    segment_row = segment[j, s0 : s0 + c1 - c0]
    position_row = position[k, s0 : s0 + c1 - c0]
    if i != padding_idx:
        token_row = token[i, c0:c1]
        for h in range(c1 - c0):
            value = g[h]
            token_row[h] += value
            segment_row[h] += value
            position_row[h] += value
    else:
        for h in range(c1 - c0):
            value = g[h]
            segment_row[h] += value
            position_row[h] += value


@row_helper
def _four_apart(i0, i1, i2, i3, j0, j1, j2, j3, k0, k1, k2, k3, padding_idx):
    """Whether four consecutive tokens go through :func:`_add_four_tokens`.

    Needed for the result: no padding token (its token row gets nothing) and one
    segment row (added in one expression). For speed only: four different token
    rows and four different position rows. The loop runs its statements in order,
    so rows that coincide still get their adds in token order, but LLVM guards its
    vector code with run-time overlap checks and falls back to scalar code when
    two rows are one (without these two tests: 2-6% slower at BERT-base, Zipf ids).
    """
    tokens_apart = i0 != i1 and i0 != i2 and i0 != i3 and i1 != i2 and i1 != i3 and i2 != i3
    no_padding = i0 != padding_idx and i1 != padding_idx and i2 != padding_idx and i3 != padding_idx
    positions_apart = k0 != k1 and k0 != k2 and k0 != k3 and k1 != k2 and k1 != k3 and k2 != k3
    one_segment = j0 == j1 and j0 == j2 and j0 == j3
    return tokens_apart and no_padding and positions_apart and one_segment


@row_helper
def _add_four_tokens(grad, t, i0, i1, i2, i3, j, k0, k1, k2, k3, c0, c1, rows, s0):
    """Tokens ``t .. t + 3`` at once (see :func:`_four_apart` for when): four token rows in
    flight instead of one. Each element still receives its adds in token order."""
    token, segment, position = rows
    g0, g1, g2, g3 = grad[t, c0:c1], grad[t + 1, c0:c1], grad[t + 2, c0:c1], grad[t + 3, c0:c1]
    r0, r1, r2, r3 = token[i0, c0:c1], token[i1, c0:c1], token[i2, c0:c1], token[i3, c0:c1]
    s1 = s0 + c1 - c0
    p0, p1 = position[k0, s0:s1], position[k1, s0:s1]
    p2, p3 = position[k2, s0:s1], position[k3, s0:s1]
    segment_row = segment[j, s0:s1]
    for h in range(c1 - c0):
        v0, v1, v2, v3 = g0[h], g1[h], g2[h], g3[h]
        r0[h] += v0
        r1[h] += v1
        r2[h] += v2
        r3[h] += v3
        p0[h] += v0
        p1[h] += v1
        p2[h] += v2
        p3[h] += v3
        segment_row[h] = (((segment_row[h] + v0) + v1) + v2) + v3


@row_helper
def _own_columns(gradient, c0, c1, private):
    """``gradient`` itself, or where ``private``, a new array of its columns ``[c0, c1)``
    (indexed from 0) for one column block to add into alone and copy back.

    Why: every token adds into a segment row and a position row, so the blocks of those few
    rows that two threads write sit side by side in memory and are written all the time. On
    this project's VM the two vCPUs are, in some stretches of time, placed where moving a
    cache line between them is slow (a parallel copy runs faster then, 1.8 against 2.9 ms):
    the scatter at BERT-base took 15.4 ms there and 10.1 ms with these rows of its own, and
    4.64 against 4.81 ms in the other stretches (scripts/scatter_phase_probe.py,
    docs/BACKWARD.md). Each element is still summed in token order from the value it had:
    the same bits.
    """
    if not private:
        return gradient
    own = np.empty((gradient.shape[0], c1 - c0), gradient.dtype)
    own[:, :] = gradient[:, c0:c1]
    return own


def _scatter_add_columns(
    grad, input_ids, token_type_ids, position_ids, padding_idx, block, token, segment, position
):
    """Add ``grad[t]`` into row ``i``, ``j``, ``k`` of the three zeroed gradients.

    ``prange`` runs over column blocks of width ``block``; each iteration owns
    columns ``[c0, c1)`` of every row of all three gradients and walks the
    tokens in order, so no element is written by two threads and every element
    is summed in token order. Tokens whose id is ``padding_idx`` (-1 for none)
    add nothing to the token gradient.

    With more than one block, each adds into segment and position rows of its own
    (:func:`_own_columns`) and copies them back at its end; ``s0`` is the block's first
    column there (0), or in the shared gradients (``c0``) with one block.

    Four tokens at a time where they touch four different token and position
    rows and one segment row (most groups in a batch of sentences), one at a
    time otherwise: four random token rows in flight made the scatter 1.56x
    faster into existing gradients at BERT-base with Zipf ids (docs/BACKWARD.md),
    with the same bits.
    """
    tokens, hidden = grad.shape
    seq = input_ids.shape[1]
    ids = (input_ids, token_type_ids, position_ids)
    blocks = (hidden + block - 1) // block
    for c in prange(blocks):
        c0 = c * block
        c1 = min(hidden, c0 + block)
        own_segment = _own_columns(segment, c0, c1, blocks > 1)
        own_position = _own_columns(position, c0, c1, blocks > 1)
        rows = (token, own_segment, own_position)
        s0 = 0 if blocks > 1 else c0
        t = 0
        while t + 3 < tokens:
            i0, j0, k0 = _ids_of(ids, t, seq)
            i1, j1, k1 = _ids_of(ids, t + 1, seq)
            i2, j2, k2 = _ids_of(ids, t + 2, seq)
            i3, j3, k3 = _ids_of(ids, t + 3, seq)
            if _four_apart(i0, i1, i2, i3, j0, j1, j2, j3, k0, k1, k2, k3, padding_idx):
                _add_four_tokens(grad, t, i0, i1, i2, i3, j0, k0, k1, k2, k3, c0, c1, rows, s0)
                t += 4
            else:
                _add_token(grad, t, i0, j0, k0, padding_idx, c0, c1, rows, s0)
                t += 1
        while t < tokens:
            i, j, k = _ids_of(ids, t, seq)
            _add_token(grad, t, i, j, k, padding_idx, c0, c1, rows, s0)
            t += 1
        if blocks > 1:
            segment[:, c0:c1] = own_segment
            position[:, c0:c1] = own_position


@parallel_kernel
def _zero_parts(gradient, parts):
    """Zero ``gradient`` in ``parts`` contiguous parts, one memset each (see :func:`_zero`)."""
    flat = gradient.reshape(-1)
    for part in prange(parts):
        flat[part * flat.size // parts : (part + 1) * flat.size // parts] = 0


def _zero(gradient):
    """Zero a reused gradient: one contiguous part per thread, one memset each.

    A part this large goes past the cache with streaming stores (glibc's memset), where
    a memset per 3 KiB row reads each line before writing it: 94 MB in 1.3-1.9 ms against
    3.1-3.6 ms row by row (scratch timings, this 2-core VM).
    """
    _zero_parts(gradient, numba.get_num_threads())


def _new_gradients(tables, dtype, num_tokens: int) -> tuple[EmbeddingGradients, bool]:
    """Zeroed gradients for a call of ``num_tokens`` tokens, and whether the token gradient's
    pages are new (lazily zeroed: fault them in by rows) or reused warm from the pool."""
    shape = tables.token.shape
    if num_tokens * ROWS_PER_TOKEN_TO_POOL >= shape[0]:
        token, fresh = OUTPUTS.zeros(shape, dtype, fill=_zero)
    else:
        token, fresh = sparse_zeros(shape, dtype), True  # few rows written: 4 KiB pages
    small = (aligned_zeros(t.shape, dtype) for t in (tables.segment, tables.position))
    return EmbeddingGradients(token, *small), fresh


@parallel_kernel
def _fault_in_rows(input_ids, padding_idx, seen, page, gradient):
    """Store a zero into every memory page of every row some token will add into.

    ``gradient`` comes from ``np.zeros``: its pages are mapped (and zeroed by
    the operating system) on first touch. In the column-owned scatter both
    threads reach each new row at about the same moment, so they fault the
    same page together and one waits while the other zeroes it. Here rows are
    split between threads instead, each faulting its own pages; rows no token
    uses are not touched at all. ``page`` is 4 KiB in elements; the stores
    write zeros where there are zeros already, so the values do not change.
    """
    batch, seq = input_ids.shape
    for b in range(batch):
        for s in range(seq):
            seen[input_ids[b, s]] = True
    hidden = gradient.shape[1]
    for r in prange(gradient.shape[0]):
        if seen[r] and r != padding_idx:
            row = gradient[r]
            for h in range(0, hidden, page):
                row[h] = 0.0
            row[hidden - 1] = 0.0


_scatter_add_columns_parallel = parallel_kernel(_scatter_add_columns)
_scatter_add_columns_serial = serial_kernel(_scatter_add_columns)


def column_block(hidden: int, itemsize: int, threads: int) -> int:
    """Width of one thread's column block: whole cache lines, about ``hidden / threads``."""
    line = max(1, CACHE_LINE_BYTES // itemsize)
    lines = -(-hidden // line)
    return line * -(-lines // max(1, threads))


def fused_backward(tables, batch, grad, padding_idx, into=None):
    """One parallel numba pass over ``g`` adding into all three tables; see the module doc.

    ``into``: gradients (validated) to add into, as torch adds into ``.grad``;
    a training loop then faults in no fresh pages. By default, zeroed new ones
    (:func:`_new_gradients`: a large call's token gradient reuses the pool's warm pages).
    """
    if into is None:
        grads, fresh = _new_gradients(tables, grad.dtype, batch.num_tokens)
    else:
        grads, fresh = into, False
    if batch.num_tokens == 0:
        return grads
    flat = grad.reshape(batch.num_tokens, tables.hidden_size)
    input_ids = kernel_ids(batch.input_ids)
    if flat.nbytes < SERIAL_MAX_BYTES:
        kernel, block = _scatter_add_columns_serial, tables.hidden_size
    else:
        threads = numba.get_num_threads()
        kernel = _scatter_add_columns_parallel
        block = column_block(tables.hidden_size, grad.dtype.itemsize, threads)
    if fresh and kernel is _scatter_add_columns_parallel:  # new, lazily zeroed pages
        _fault_in_rows(
            input_ids,
            -1 if padding_idx is None else padding_idx,
            np.zeros(tables.vocab_size, np.bool_),
            _PAGE_BYTES // grad.dtype.itemsize,
            grads.token,
        )
    kernel(
        flat,
        input_ids,
        kernel_ids(batch.token_type_ids),
        kernel_ids(batch.position_ids),
        -1 if padding_idx is None else padding_idx,
        block,
        *grads,
    )
    return grads
