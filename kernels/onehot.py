"""The two one-hot formulations: the identity the project is built on, run literally.

``onehot``  computes ``onehot(t) @ Wt + onehot(s) @ Ws + onehot(p) @ Wp``;
``concat``  computes ``[onehot(t), onehot(s), onehot(p)] @ vstack(Wt, Ws, Wp)``.

Both cost O(tokens x rows x hidden) multiply-adds, so they are slow at real
vocabulary sizes: they exist to make the identity executable and measurable.
Tokens are processed in chunks so that the extra memory (one-hot codes, index
arrays, one product buffer) stays within ``memory_budget`` bytes: a whole
one-hot matrix at batch 32 x seq 512 x vocab 30522 would take 2 GiB.

Where the identity stops: ``0 * inf`` is NaN, so an inf or NaN anywhere in a
table reaches every output row through the zeros of the one-hot codes, while a
gather only reads the rows it is asked for.
"""

from __future__ import annotations

import numpy as np

from .tables import EmbeddingTables
from .validate import Batch

DEFAULT_MEMORY_BUDGET = 256 * 2**20  # bytes of extra memory a one-hot call may use

# Per token, besides its row of one-hot codes and product: the flat token
# index, batch and position indices, three gathered ids and numpy's fancy-index
# temporaries, each at most 8 bytes (12 is generous).
_INDEX_BYTES_PER_TOKEN = 12 * 8
# Allocations whose size does not grow with the chunk (default id arrays, index
# iterators); measured with tracemalloc at under 10 KiB, reserved generously.
_FIXED_BYTES = 64 * 1024


def chunk_tokens(code_width: int, buffer_width: int, itemsize: int, memory_budget: int) -> int:
    """How many tokens one chunk may hold within ``memory_budget`` bytes."""
    if isinstance(memory_budget, bool) or not isinstance(memory_budget, (int, np.integer)):
        raise TypeError(f"memory_budget is {type(memory_budget).__name__}; it must be an int.")
    per_token = (code_width + buffer_width) * itemsize + _INDEX_BYTES_PER_TOKEN
    if memory_budget < _FIXED_BYTES + per_token:
        raise ValueError(
            f"memory_budget is {memory_budget} bytes; one token needs {per_token} bytes "
            f"at this vocabulary and width plus {_FIXED_BYTES} fixed, so the budget must be "
            f"at least {_FIXED_BYTES + per_token}."
        )
    return int((memory_budget - _FIXED_BYTES) // per_token)


def _chunk_ids(batch: Batch, start: int, stop: int):
    """The three id vectors of the flat tokens ``start:stop`` (row-major over batch, seq)."""
    seq = batch.shape[1]
    flat = np.arange(start, stop)
    b, s = np.divmod(flat, seq)
    tt, pos = batch.token_type_ids, batch.position_ids
    return (
        batch.input_ids[b, s],
        tt[b if tt.shape[0] > 1 else 0, s],
        pos[b if pos.shape[0] > 1 else 0, s],
    )


def _chunks(batch: Batch, chunk: int):
    for start in range(0, batch.num_tokens, chunk):
        stop = min(start + chunk, batch.num_tokens)
        yield start, stop, _chunk_ids(batch, start, stop)


def onehot_sum(tables: EmbeddingTables, batch: Batch, out: np.ndarray, memory_budget: int):
    """Three one-hot matmuls, summed as ``(token + segment) + position``."""
    parts = (tables.token, tables.segment, tables.position)
    widest = max(part.shape[0] for part in parts)
    chunk = chunk_tokens(widest, tables.hidden_size, tables.dtype.itemsize, memory_budget)
    flat_out = out.reshape(batch.num_tokens, tables.hidden_size)
    # One zeroed buffer serves every table: after each product only the ones
    # just written are cleared again, instead of re-zeroing chunk x V entries.
    codes_buffer = np.zeros(min(chunk, batch.num_tokens) * widest, dtype=tables.dtype)
    product_buffer = np.empty((min(chunk, batch.num_tokens), tables.hidden_size), tables.dtype)
    for start, stop, ids_per_table in _chunks(batch, chunk):
        rows = np.arange(stop - start)
        target = flat_out[start:stop]
        for part, (table, ids) in enumerate(zip(parts, ids_per_table, strict=True)):
            codes = codes_buffer[: (stop - start) * table.shape[0]].reshape(stop - start, -1)
            codes[rows, ids] = 1
            if part == 0:
                np.matmul(codes, table, out=target)
            else:
                product = product_buffer[: stop - start]
                np.matmul(codes, table, out=product)
                target += product
            codes[rows, ids] = 0
    return out


def _stacked(tables: EmbeddingTables) -> np.ndarray:
    stacked = np.vstack((tables.token, tables.segment, tables.position))
    stacked.flags.writeable = False
    return stacked


def concat_sum(tables: EmbeddingTables, batch: Batch, out: np.ndarray, memory_budget: int):
    """One concatenated one-hot code per token (three ones) times the stacked table."""
    stacked = tables.cached("stacked", _stacked)  # built once per EmbeddingTables
    width = stacked.shape[0]
    offsets = (0, tables.vocab_size, tables.vocab_size + tables.type_vocab_size)
    chunk = chunk_tokens(width, 0, tables.dtype.itemsize, memory_budget)
    flat_out = out.reshape(batch.num_tokens, tables.hidden_size)
    codes_buffer = np.zeros(min(chunk, batch.num_tokens) * width, dtype=tables.dtype)
    for start, stop, ids_per_table in _chunks(batch, chunk):
        rows = np.arange(stop - start)
        codes = codes_buffer[: (stop - start) * width].reshape(stop - start, width)
        columns = [
            offset + ids.astype(np.int64)
            for offset, ids in zip(offsets, ids_per_table, strict=True)
        ]
        for column in columns:
            codes[rows, column] = 1
        np.matmul(codes, stacked, out=flat_out[start:stop])
        for column in columns:
            codes[rows, column] = 0
    return out
