"""The concatenated one-hot method: the identity as one wide linear layer.

``concat`` computes ``[onehot(t), onehot(s), onehot(p)] @ vstack(Wt, Ws, Wp)``; backward,
``[onehot(t), onehot(s), onehot(p)].T @ grad`` split into the three tables. Tokens are
processed in chunks within ``memory_budget`` bytes, as :mod:`.onehot` does (its helpers).
"""

from __future__ import annotations

import numpy as np

from ..gradients import EmbeddingGradients
from ..tables import EmbeddingTables
from ..validate.batch import Batch, flat_ids
from .onehot import (
    _chunk_target,
    _chunks,
    _onehot_transpose_matmul,
    _round_into,
    _widened,
    chunk_tokens,
)


def concat_sum(tables: EmbeddingTables, batch: Batch, out: np.ndarray, memory_budget: int):
    """One concatenated one-hot code per token (three ones) times the stacked table."""
    # Stacked anew on every call: a cached copy went stale when the caller updated
    # the tables in place (training); the copy costs little next to the product.
    stacked = np.vstack(_widened(tables))
    wide, width = stacked.dtype, stacked.shape[0]
    offsets = (0, tables.vocab_size, tables.vocab_size + tables.type_vocab_size)
    rounding = out.dtype != wide  # 16-bit output: sum a chunk in float32, round once
    hidden = tables.hidden_size if rounding else 0
    # The stacked table (and any widened tables it came from) counts against the budget.
    copied = stacked.nbytes * (2 if wide != tables.dtype else 1)
    chunk = chunk_tokens(width, hidden, wide.itemsize, memory_budget, copied)
    buffer_rows = min(chunk, batch.num_tokens)
    flat_out = out.reshape(batch.num_tokens, tables.hidden_size)
    codes_buffer = np.zeros(buffer_rows * width, dtype=wide)
    sum_buffer = np.empty((buffer_rows, tables.hidden_size), wide) if rounding else None
    for start, stop, ids_per_table in _chunks(batch, chunk):
        rows = np.arange(stop - start)
        codes = codes_buffer[: (stop - start) * width].reshape(stop - start, width)
        columns = [
            offset + ids.astype(np.int64)
            for offset, ids in zip(offsets, ids_per_table, strict=True)
        ]
        for column in columns:
            codes[rows, column] = 1
        np.matmul(codes, stacked, out=_chunk_target(out, flat_out, start, stop, sum_buffer))
        for column in columns:
            codes[rows, column] = 0
        _round_into(flat_out, start, stop, sum_buffer)
    return out


def concat_backward(tables, batch, grad, padding_idx, memory_budget):
    """``[onehot(t), onehot(s), onehot(p)].T @ g``, then split into the three tables."""
    flat = grad.reshape(batch.num_tokens, tables.hidden_size)
    sizes = (tables.vocab_size, tables.type_vocab_size, tables.max_positions)
    offsets = (0, sizes[0], sizes[0] + sizes[1])
    stacked = np.empty((sum(sizes), tables.hidden_size), grad.dtype)
    columns = [
        offset + ids.astype(np.int64) for offset, ids in zip(offsets, flat_ids(batch), strict=True)
    ]
    _onehot_transpose_matmul(columns, stacked.shape[0], flat, stacked, memory_budget)
    # Row slices of a C-ordered array: three C-contiguous views of one buffer.
    grads = EmbeddingGradients(*np.split(stacked, offsets[1:]))
    if padding_idx is not None:
        grads.token[padding_idx] = 0
    return grads
