"""The backward designs that lost, kept runnable for ``measure_backward.py --alternatives``.

Each is measured beside the shipped fused backward; docs/BACKWARD.md has the
numbers and why each was rejected. Shapes come from the one grid
(:data:`bert_embedding_kernels.bench.engine.cases.BERT_BASE`).
"""

from __future__ import annotations

import mmap

import numba
import numpy as np
from numba import prange

from bert_embedding_kernels import EmbeddingGradients
from bert_embedding_kernels._jit import parallel_kernel, serial_kernel
from bert_embedding_kernels.bench.engine.cases import BERT_BASE
from bert_embedding_kernels.gradients import aligned_zeros as _aligned_zeros
from bert_embedding_kernels.methods.fused.backward import (
    _scatter_add_columns_parallel,
    scatter_block,
)

BATCH, SEQ, HIDDEN, VOCAB = BERT_BASE.batch, BERT_BASE.seq, BERT_BASE.hidden, BERT_BASE.vocab


# rejected them can be reproduced. All give the same bits as the fused kernel,
# and all write into cache-line-aligned arrays as the library does.


def aligned_empty(shape, dtype):
    """``np.empty`` starting on a cache line (as ``_aligned_zeros``, without the zeros)."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape)) * dtype.itemsize
    raw = np.empty(nbytes + 64, np.uint8)
    offset = -raw.ctypes.data % 64
    return raw[offset : offset + nbytes].view(dtype).reshape(shape)


def aligned_zeros_like(tables):
    return EmbeddingGradients(
        *(_aligned_zeros(t.shape, t.dtype) for t in (tables.token, tables.segment, tables.position))
    )


@serial_kernel
def _first_uses(ids, rows):
    """Per token: is it the first to use its row? And the rows no token used."""
    seen = np.zeros(rows, np.bool_)
    first = np.zeros(ids.size, np.bool_)
    for t in range(ids.size):
        if not seen[ids[t]]:
            seen[ids[t]] = True
            first[t] = True
    return first, np.flatnonzero(~seen)


@parallel_kernel
def _columns_into_empty(grad, ids, types, first, untouched, block, token, segment, position):
    """Column ownership with ``token`` from ``np.empty``: zero the untouched rows,
    write each row's first use, add the rest (segment and position as in fused)."""
    tokens, hidden = grad.shape
    for c in prange((hidden + block - 1) // block):
        c0 = c * block
        c1 = min(hidden, c0 + block)
        width = c1 - c0
        for u in range(untouched.size):
            row = token[untouched[u], c0:c1]
            for h in range(width):
                row[h] = 0.0
        for t in range(tokens):
            g = grad[t, c0:c1]
            token_row = token[ids[t], c0:c1]
            segment_row = segment[types[t], c0:c1]
            position_row = position[t % SEQ, c0:c1]  # default positions: 0 .. SEQ-1
            if first[t]:
                for h in range(width):
                    value = g[h]
                    token_row[h] = 0.0 + value  # the sum from zero: -0.0 becomes +0.0
                    segment_row[h] += value
                    position_row[h] += value
            else:
                for h in range(width):
                    value = g[h]
                    token_row[h] += value
                    segment_row[h] += value
                    position_row[h] += value


def columns_into_empty(tables, grad, input_ids, token_type_ids):
    ids = input_ids.reshape(-1)
    first, untouched = _first_uses(ids, VOCAB)
    gradients = EmbeddingGradients(
        aligned_empty(tables.token.shape, tables.dtype),
        _aligned_zeros(tables.segment.shape, tables.dtype),
        _aligned_zeros(tables.position.shape, tables.dtype),
    )
    block = scatter_block(HIDDEN, tables.dtype.itemsize, numba.get_num_threads())
    flat = grad.reshape(-1, HIDDEN)
    _columns_into_empty(flat, ids, token_type_ids.reshape(-1), first, untouched, block, *gradients)
    return gradients


@serial_kernel
def _counting_sort(ids, rows):
    """Token indices grouped by row (stable: token order within a row), and row starts."""
    starts = np.zeros(rows + 1, np.int64)
    for t in range(ids.size):
        starts[ids[t] + 1] += 1
    for r in range(rows):
        starts[r + 1] += starts[r]
    order = np.empty(ids.size, np.int64)
    fill = starts[:-1].copy()
    for t in range(ids.size):
        order[fill[ids[t]]] = t
        fill[ids[t]] += 1
    return starts, order


@parallel_kernel
def _rows_by_owner(grad, starts, order, out):
    """Row ownership: each row summed by one thread in token order, untouched rows zeroed."""
    hidden = grad.shape[1]
    for r in prange(out.shape[0]):
        row = out[r]
        for h in range(hidden):
            row[h] = 0.0
        for q in range(starts[r], starts[r + 1]):
            g = grad[order[q]]
            for h in range(hidden):
                row[h] += g[h]


def counting_sort_rows(tables, grad, input_ids, token_type_ids):
    flat = grad.reshape(-1, HIDDEN)
    positions = np.broadcast_to(np.arange(SEQ), (BATCH, SEQ))
    gradients = []
    for table, ids in zip(
        (tables.token, tables.segment, tables.position),
        (input_ids, token_type_ids, positions),
        strict=True,
    ):
        starts, order = _counting_sort(np.ascontiguousarray(ids).reshape(-1), table.shape[0])
        out = aligned_empty(table.shape, table.dtype)
        _rows_by_owner(flat, starts, order, out)
        gradients.append(out)
    return EmbeddingGradients(*gradients)


@parallel_kernel
def _three_loops(grad, input_ids, token_type_ids, position_ids, padding_idx, block, *gradients):
    """The fused kernel with one inner loop per table (``g`` loaded three times)."""
    token, segment, position = gradients
    tokens, hidden = grad.shape
    seq = input_ids.shape[1]
    for c in prange((hidden + block - 1) // block):
        c0 = c * block
        c1 = min(hidden, c0 + block)
        width = c1 - c0
        for t in range(tokens):
            b = t // seq
            s = t - b * seq
            g = grad[t, c0:c1]
            row = token[input_ids[b, s], c0:c1]
            for h in range(width):
                row[h] += g[h]
            row = segment[token_type_ids[b, s], c0:c1]
            for h in range(width):
                row[h] += g[h]
            row = position[position_ids[0, s], c0:c1]
            for h in range(width):
                row[h] += g[h]


@parallel_kernel
def _rows_by_range(grad, input_ids, token_type_ids, position_ids, parts, *gradients):
    """Row ownership without sorting: part ``p`` owns the ``p``-th slice of each table's
    rows, scans every token in order and adds whole rows into the rows it owns."""
    token, segment, position = gradients
    tokens, hidden = grad.shape
    seq = input_ids.shape[1]
    for p in prange(parts):
        t_lo, t_hi = token.shape[0] * p // parts, token.shape[0] * (p + 1) // parts
        s_lo, s_hi = segment.shape[0] * p // parts, segment.shape[0] * (p + 1) // parts
        p_lo, p_hi = position.shape[0] * p // parts, position.shape[0] * (p + 1) // parts
        for t in range(tokens):
            b = t // seq
            s = t - b * seq
            rows = (
                (token, input_ids[b, s], t_lo, t_hi),
                (segment, token_type_ids[b, s], s_lo, s_hi),
                (position, position_ids[0, s], p_lo, p_hi),
            )
            for table, row, lo, hi in rows:
                if lo <= row < hi:
                    target = table[row]
                    g = grad[t]
                    for h in range(hidden):
                        target[h] += g[h]


def rows_by_range(tables, grad, input_ids, token_type_ids):
    gradients = aligned_zeros_like(tables)
    positions = np.arange(SEQ)[None, :]
    flat = grad.reshape(-1, HIDDEN)
    parts = numba.get_num_threads()
    _rows_by_range(flat, input_ids, token_type_ids, positions, parts, *gradients)
    return gradients


def without_fault_in(tables, grad, input_ids, token_type_ids):
    """The fused kernel straight into ``np.zeros``: pages faulted by the column owners."""
    gradients = aligned_zeros_like(tables)
    block = scatter_block(HIDDEN, tables.dtype.itemsize, numba.get_num_threads())
    positions = np.arange(SEQ)[None, :]
    flat = grad.reshape(-1, HIDDEN)
    _scatter_add_columns_parallel(flat, input_ids, token_type_ids, positions, -1, block, *gradients)
    return gradients


class SmallPages:
    """The fused kernel into a fresh gradient on 4 KiB pages (``MADV_NOHUGEPAGE``).

    numpy asks for transparent huge pages on large arrays, so the first touch
    of any row zeroes its whole 2 MiB page; on small pages only the pages of
    touched rows are faulted (and zeroed) at all. Linux only.
    """

    def __init__(self, tables, grad, input_ids, token_type_ids):
        self.warm = WarmBuffers(tables, grad, input_ids, token_type_ids)
        self.nbytes = tables.token.nbytes
        self.shape, self.dtype = tables.token.shape, tables.dtype

    def __call__(self):
        memory = mmap.mmap(-1, self.nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        memory.madvise(mmap.MADV_NOHUGEPAGE)
        token = np.frombuffer(memory, self.dtype).reshape(self.shape)
        segment, position = (_aligned_zeros(b.shape, b.dtype) for b in self.warm.buffers[1:])
        _scatter_add_columns_parallel(*self.warm.arguments, token, segment, position)
        return EmbeddingGradients(token, segment, position)


class WarmBuffers:
    """The fused kernel into zeroed, already-faulted buffers: the kernel's own time.

    Not a usable API (the caller would have to zero the buffers); it shows how
    much of ``fused`` is first-touch page faults of the fresh gradient.
    """

    def __init__(self, tables, grad, input_ids, token_type_ids, kernel=None, block=None):
        self.kernel = kernel or _scatter_add_columns_parallel
        self.arguments = (
            grad.reshape(-1, HIDDEN),
            input_ids,
            token_type_ids,
            np.arange(SEQ)[None, :],
            -1,
            block or scatter_block(HIDDEN, tables.dtype.itemsize, numba.get_num_threads()),
        )
        self.buffers = aligned_zeros_like(tables)

    def zero(self):
        for buffer in self.buffers:
            buffer.fill(0)

    def __call__(self):
        self.kernel(*self.arguments, *self.buffers)
        return self.buffers
