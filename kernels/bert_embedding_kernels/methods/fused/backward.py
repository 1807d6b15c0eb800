"""The fused backward: a parallel numba scatter-add of ``grad`` into the three tables.

The gradient of each table is a scatter-add of the output gradient ``g``: row
``r`` of ``Wt`` receives the sum of ``g[b, s]`` over every token whose id is
``r``.

A parallel scatter-add races when two threads add into the same row, and
atomics would make the sum depend on thread timing. Here the work is split into
parts that share no element: a *column block* (hidden units ``[c0, c1)``) of the
token gradient, or the same block of the segment and position gradients. Each
part walks every token in token order and adds that token's slice
``g[t, c0:c1]`` into the slice ``[c0:c1]`` of its rows. No two threads ever
write the same element, so there is no race and no atomic, and each element is
summed in token order starting from zero, whatever the number of threads or the
block width: the result is bitwise identical for every thread count (and
identical to numpy's ``np.add.at`` and to torch's CPU kernel, which also add in
token order). The work per part is equal whatever the skew of the ids (a
counting sort by id with one owner per row would leave one thread with the most
frequent rows). Blocks are whole 64-byte cache lines and the gradients start on
a line, so no two threads write to one line either (when a row is a whole number
of lines, as at BERT's widths).

Why the tables are parts of their own (issue 39): every token adds into a segment
and a position row, so with column blocks of all three tables the threads wrote
side by side in those few rows all the time; where a cache line moves slowly
between two cores that tripled the scatter's time (docs/BACKWARD.md, "Two
speeds"). Each part reads its columns of ``g``: ``g`` is read twice in all, once
for the token parts and once for the others (one thread: 8.4 ms at BERT-base
against 6.1 for one walk into all three tables).

Parallelism is bounded by ``2 x hidden / 16`` parts for float32 (96 at hidden
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
def _add_token_row(grad, t, i, c0, c1, token):
    """Columns ``[c0, c1)`` of ``grad[t]`` into row ``i`` of the token gradient.

    The rows are slices indexed from 0: with ``range(c0, c1)`` on the full rows
    numba cannot prove the index non-negative, keeps its wraparound branch, and
    the loop stays scalar (checked in the assembly: no ``vaddps`` at all).
    """
    g = grad[t, c0:c1]
    row = token[i, c0:c1]
    for h in range(c1 - c0):
        row[h] += g[h]


@row_helper
def _add_four_token_rows(grad, t, i0, i1, i2, i3, c0, c1, token):
    """Tokens ``t .. t + 3`` into four different token rows at once: four random rows in flight
    instead of one (1.56x faster at BERT-base with Zipf ids, docs/BACKWARD.md)."""
    g0, g1, g2, g3 = grad[t, c0:c1], grad[t + 1, c0:c1], grad[t + 2, c0:c1], grad[t + 3, c0:c1]
    r0, r1, r2, r3 = token[i0, c0:c1], token[i1, c0:c1], token[i2, c0:c1], token[i3, c0:c1]
    for h in range(c1 - c0):
        r0[h] += g0[h]
        r1[h] += g1[h]
        r2[h] += g2[h]
        r3[h] += g3[h]


@row_helper
def _add_segment_position(grad, t, j, k, c0, c1, s0, segment, position):
    """Columns ``[c0, c1)`` of ``grad[t]`` into segment row ``j`` and position row ``k``, whose
    columns start at ``s0`` (see :func:`_scatter_add_columns`)."""
    g = grad[t, c0:c1]
    segment_row = segment[j, s0 : s0 + c1 - c0]
    position_row = position[k, s0 : s0 + c1 - c0]
    for h in range(c1 - c0):
        value = g[h]
        segment_row[h] += value
        position_row[h] += value


@row_helper
def _add_four_segment_positions(grad, t, j, k0, k1, k2, k3, c0, c1, s0, segment, position):
    """Tokens ``t .. t + 3`` of one segment into four different position rows at once."""
    g0, g1, g2, g3 = grad[t, c0:c1], grad[t + 1, c0:c1], grad[t + 2, c0:c1], grad[t + 3, c0:c1]
    s1 = s0 + c1 - c0
    p0, p1 = position[k0, s0:s1], position[k1, s0:s1]
    p2, p3 = position[k2, s0:s1], position[k3, s0:s1]
    segment_row = segment[j, s0:s1]
    for h in range(c1 - c0):
        v0, v1, v2, v3 = g0[h], g1[h], g2[h], g3[h]
        p0[h] += v0
        p1[h] += v1
        p2[h] += v2
        p3[h] += v3
        segment_row[h] = (((segment_row[h] + v0) + v1) + v2) + v3


@row_helper
def _four_token_rows_apart(i0, i1, i2, i3, padding_idx):
    """Whether four consecutive tokens go through :func:`_add_four_token_rows`: needed for the
    result, no padding token (its row gets nothing); for speed, four different rows (LLVM
    guards its vector code with run-time overlap checks and runs scalar code when two rows
    are one; without this test 2-6% slower at BERT-base, Zipf ids). The loop runs its
    statements in order, so rows that coincide would still get their adds in token order."""
    tokens_apart = i0 != i1 and i0 != i2 and i0 != i3 and i1 != i2 and i1 != i3 and i2 != i3
    no_padding = i0 != padding_idx and i1 != padding_idx and i2 != padding_idx and i3 != padding_idx
    return tokens_apart and no_padding


@row_helper
def _four_positions_apart(j0, j1, j2, j3, k0, k1, k2, k3):
    """Whether four consecutive tokens go through :func:`_add_four_segment_positions`: one
    segment row (added in one expression, needed for the result) and, for speed, four
    different position rows."""
    one_segment = j0 == j1 and j0 == j2 and j0 == j3
    positions_apart = k0 != k1 and k0 != k2 and k0 != k3 and k1 != k2 and k1 != k3 and k2 != k3
    return one_segment and positions_apart


@row_helper
def _own_columns(gradient, c0, c1, private):
    """``gradient`` itself, or where ``private``, a new array of its columns ``[c0, c1)``
    (indexed from 0) for one column block to add into alone and copy back.

    Why: every token adds into a segment row and a position row, so the blocks of those few
    rows that two threads write sit side by side in memory and are written all the time; on
    a machine where moving a cache line between two cores is slow, that costs more than the
    adds (docs/BACKWARD.md, "Two speeds"). Each element is still summed in token order from
    the value it had: the same bits.
    """
    if not private:
        return gradient
    own = np.empty((gradient.shape[0], c1 - c0), gradient.dtype)
    own[:, :] = gradient[:, c0:c1]
    return own


@row_helper
def _token_rows_pass(grad, ids, seq, padding_idx, c0, c1, token):
    """Every token in order into columns ``[c0, c1)`` of its token row (none for padding)."""
    tokens = grad.shape[0]
    t = 0
    while t + 3 < tokens:
        i0 = _ids_of(ids, t, seq)[0]
        i1 = _ids_of(ids, t + 1, seq)[0]
        i2 = _ids_of(ids, t + 2, seq)[0]
        i3 = _ids_of(ids, t + 3, seq)[0]
        if _four_token_rows_apart(i0, i1, i2, i3, padding_idx):
            _add_four_token_rows(grad, t, i0, i1, i2, i3, c0, c1, token)
            t += 4
        else:
            if i0 != padding_idx:
                _add_token_row(grad, t, i0, c0, c1, token)
            t += 1
    while t < tokens:
        i = _ids_of(ids, t, seq)[0]
        if i != padding_idx:
            _add_token_row(grad, t, i, c0, c1, token)
        t += 1


@row_helper
def _segment_position_pass(grad, ids, seq, c0, c1, s0, segment, position):
    """Every token in order into columns ``[c0, c1)`` of its segment and position rows."""
    tokens = grad.shape[0]
    t = 0
    while t + 3 < tokens:
        _, j0, k0 = _ids_of(ids, t, seq)
        _, j1, k1 = _ids_of(ids, t + 1, seq)
        _, j2, k2 = _ids_of(ids, t + 2, seq)
        _, j3, k3 = _ids_of(ids, t + 3, seq)
        if _four_positions_apart(j0, j1, j2, j3, k0, k1, k2, k3):
            _add_four_segment_positions(grad, t, j0, k0, k1, k2, k3, c0, c1, s0, segment, position)
            t += 4
        else:
            _add_segment_position(grad, t, j0, k0, c0, c1, s0, segment, position)
            t += 1
    while t < tokens:
        _, j, k = _ids_of(ids, t, seq)
        _add_segment_position(grad, t, j, k, c0, c1, s0, segment, position)
        t += 1


def _scatter_add_columns(
    grad, input_ids, token_type_ids, position_ids, padding_idx, block, token, segment, position
):
    """Add ``grad[t]`` into row ``i``, ``j``, ``k`` of the three gradients.

    ``prange`` runs over ``2 x blocks`` parts: a column block ``[c0, c1)`` of width
    ``block`` of the token gradient, or the same block of the segment and position
    gradients. Each part walks every token in order, so no element is written by two
    threads and every element is summed in token order. Tokens whose id is
    ``padding_idx`` (-1 for none) add nothing to the token gradient.

    Why two kinds of part (issue 39): the token rows are random and many, the segment and
    position rows few and written by every token; split apart, no thread writes next to
    another's hot rows. At BERT-base on this project's 2-core VM (one block of each kind):
    4.17 against 4.74 ms for column blocks of all three tables, and 5.18 against 10.73 ms
    in the stretches where a cache line moves slowly between its vCPUs (docs/BACKWARD.md).
    With more than one block, the segment and position parts add into rows of their own
    (:func:`_own_columns`) and copy them back; ``s0`` is their first column there (0), or
    in the shared gradients (``c0``) with one block.
    """
    hidden = grad.shape[1]
    seq = input_ids.shape[1]
    ids = (input_ids, token_type_ids, position_ids)
    blocks = (hidden + block - 1) // block
    for part in prange(2 * blocks):
        c = part % blocks
        c0 = c * block
        c1 = min(hidden, c0 + block)
        if part < blocks:
            _token_rows_pass(grad, ids, seq, padding_idx, c0, c1, token)
            continue
        own_segment = _own_columns(segment, c0, c1, blocks > 1)
        own_position = _own_columns(position, c0, c1, blocks > 1)
        s0 = 0 if blocks > 1 else c0
        _segment_position_pass(grad, ids, seq, c0, c1, s0, own_segment, own_position)
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


def scatter_block(hidden: int, itemsize: int, threads: int) -> int:
    """The scatter's column block for ``threads`` threads: half of them take blocks of the token
    gradient, the other half the same blocks of the segment and position gradients."""
    return column_block(hidden, itemsize, -(-threads // 2))


def fused_backward(tables, batch, grad, padding_idx, into=None):
    """The parallel scatter-add of ``g`` into the three tables; see the module doc.

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
        block = scatter_block(tables.hidden_size, grad.dtype.itemsize, threads)
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
