"""The one-hot method: the identity the project is built on, run literally.

``onehot`` computes ``onehot(t) @ Wt + onehot(s) @ Ws + onehot(p) @ Wp``; backward,
the transposed product ``onehot(ids).T @ grad`` per table. The chunking within a
memory budget here is shared with :mod:`.concat` (the concatenated one-hot code).

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

from ..dtypes import accumulator
from ..gradients import EmbeddingGradients
from ..tables import EmbeddingTables
from ..validate.batch import Batch, flat_ids
from ..validate.options import check_memory_budget

DEFAULT_MEMORY_BUDGET = 256 * 2**20  # bytes of extra memory a one-hot call may use

# Per token, besides its row of one-hot codes and product: the flat token
# index, batch and position indices, three gathered ids and numpy's fancy-index
# temporaries, each at most 8 bytes (12 is generous).
_INDEX_BYTES_PER_TOKEN = 12 * 8
# Allocations whose size does not grow with the chunk (default id arrays, index
# iterators); measured with tracemalloc at under 10 KiB, reserved generously.
_FIXED_BYTES = 64 * 1024


def chunk_tokens(
    code_width: int, buffer_width: int, itemsize: int, memory_budget: int, tables_bytes: int = 0
) -> int:
    """How many tokens one chunk may hold within ``memory_budget`` bytes.

    ``tables_bytes`` is what the call copies of the tables (concat's stacked
    table, 16-bit tables widened to float32); it comes out of the budget first.
    """
    memory_budget = check_memory_budget(memory_budget)
    per_token = (code_width + buffer_width) * itemsize + _INDEX_BYTES_PER_TOKEN
    fixed = _FIXED_BYTES + tables_bytes
    if memory_budget < fixed + per_token:
        copies = f", {tables_bytes} for its copy of the tables" if tables_bytes else ""
        raise ValueError(
            f"memory_budget is {memory_budget} bytes; one token needs {per_token} bytes "
            f"at this vocabulary and width plus {_FIXED_BYTES} fixed{copies}, so the budget "
            f"must be at least {fixed + per_token}."
        )
    return int((memory_budget - fixed) // per_token)


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


def _widened(tables: EmbeddingTables) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    # BLAS has no 16-bit products: 16-bit tables are widened (a copy) and multiplied
    # in float32; float32 and float64 tables are used as they are.
    wide = accumulator(tables.dtype)
    parts = (tables.token, tables.segment, tables.position)
    return tuple(part.astype(wide, copy=False) for part in parts)


def _chunk_target(out: np.ndarray, flat_out: np.ndarray, start: int, stop: int, buffer):
    """Where a chunk's sum goes: ``out`` itself, or a float32 buffer rounded into it after."""
    return flat_out[start:stop] if buffer is None else buffer[: stop - start]


def _round_into(flat_out: np.ndarray, start: int, stop: int, buffer) -> None:
    if buffer is not None:
        np.copyto(flat_out[start:stop], buffer[: stop - start], casting="unsafe")


def onehot_sum(tables: EmbeddingTables, batch: Batch, out: np.ndarray, memory_budget: int):
    """Three one-hot matmuls, summed as ``(token + segment) + position``."""
    parts = _widened(tables)
    wide, hidden = parts[0].dtype, tables.hidden_size
    widest = max(part.shape[0] for part in parts)
    rounding = out.dtype != wide  # 16-bit output: sum a chunk in float32, round once
    buffer_width = hidden * (2 if rounding else 1)
    copied = 0 if parts[0] is tables.token else sum(part.nbytes for part in parts)
    chunk = chunk_tokens(widest, buffer_width, wide.itemsize, memory_budget, copied)
    buffer_rows = min(chunk, batch.num_tokens)
    flat_out = out.reshape(batch.num_tokens, hidden)
    # One zeroed buffer serves every table: after each product only the ones
    # just written are cleared again, instead of re-zeroing chunk x V entries.
    codes_buffer = np.zeros(buffer_rows * widest, dtype=wide)
    product_buffer = np.empty((buffer_rows, hidden), wide)
    sum_buffer = np.empty((buffer_rows, hidden), wide) if rounding else None
    for start, stop, ids_per_table in _chunks(batch, chunk):
        rows = np.arange(stop - start)
        target = _chunk_target(out, flat_out, start, stop, sum_buffer)
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
        _round_into(flat_out, start, stop, sum_buffer)
    return out


# --------------------------------------------------------------------------- backward

# Backward budget accounting. For every token of the call: its three flat int64
# id vectors (and concat's shifted copies), six words. For every token of one
# chunk: per table a row-block mask, the selected-token index and the shifted
# ids, ten words is generous. Fixed allocations are reserved as forward.
_BACKWARD_ID_BYTES_PER_TOKEN = 6 * 8
_BACKWARD_INDEX_BYTES_PER_TOKEN = 10 * 8


def _tiles(rows: int, tokens: int, hidden: int, itemsize: int, memory_budget: int):
    """``(row_block, token_chunk)`` whose one-hot codes and buffers fit ``memory_budget``.

    A row block of the gradient is ``codes[:, block].T @ g``. When every token
    fits in one chunk the product is written straight into the gradient, so
    only the codes (tokens x row_block) and index arrays count. Otherwise tokens
    come in chunks whose products are summed through a (row_block x hidden)
    buffer, which counts too.
    """
    free = memory_budget - _FIXED_BYTES - tokens * _BACKWARD_ID_BYTES_PER_TOKEN
    per_row = tokens * itemsize
    if free - tokens * _BACKWARD_INDEX_BYTES_PER_TOKEN >= per_row:
        return min(rows, (free - tokens * _BACKWARD_INDEX_BYTES_PER_TOKEN) // per_row), tokens
    for row_block in (min(rows, 256), 1):
        chunk = (free - row_block * hidden * itemsize) // (
            row_block * itemsize + _BACKWARD_INDEX_BYTES_PER_TOKEN
        )
        if chunk >= 1:
            return row_block, int(min(chunk, tokens))
    needed = (
        _FIXED_BYTES
        + tokens * _BACKWARD_ID_BYTES_PER_TOKEN
        + hidden * itemsize
        + itemsize
        + _BACKWARD_INDEX_BYTES_PER_TOKEN
    )
    raise ValueError(
        f"memory_budget is {memory_budget} bytes; {tokens} tokens need "
        f"{tokens * _BACKWARD_ID_BYTES_PER_TOKEN} bytes of ids, one token and one gradient row "
        f"{hidden * itemsize + itemsize + _BACKWARD_INDEX_BYTES_PER_TOKEN} more, "
        f"plus {_FIXED_BYTES} fixed, so the budget must be at least {needed}."
    )


def _onehot_transpose_matmul(columns, rows, flat_grad, out, memory_budget):
    """``out = onehot(columns).T @ flat_grad`` in tiles, for any number of code columns.

    ``columns`` lists id vectors (one per table of a concatenated code, each
    already shifted to its table's offset); a token's code has a one in every
    listed column. ``rows`` is the code width, ``out`` its (rows, hidden) result.
    """
    tokens, hidden = flat_grad.shape
    dtype = flat_grad.dtype
    if tokens == 0:
        out[...] = 0
        return
    row_block, chunk = _tiles(rows, tokens, hidden, dtype.itemsize, memory_budget)
    codes_buffer = np.zeros(chunk * row_block, dtype=dtype)
    product_buffer = np.empty((row_block, hidden), dtype) if chunk < tokens else None
    for first_row in range(0, rows, row_block):
        last_row = min(first_row + row_block, rows)
        target = out[first_row:last_row]
        for start in range(0, tokens, chunk):
            stop = min(start + chunk, tokens)
            codes = codes_buffer[: (stop - start) * (last_row - first_row)]
            codes = codes.reshape(stop - start, last_row - first_row)
            hits = []
            for ids in columns:
                ids = ids[start:stop]
                selected = np.flatnonzero((ids >= first_row) & (ids < last_row))
                hits.append((selected, ids[selected] - first_row))
            for selected, column in hits:
                codes[selected, column] = 1
            if start == 0:
                np.matmul(codes.T, flat_grad[start:stop], out=target)
            else:
                np.matmul(codes.T, flat_grad[start:stop], out=product_buffer[: len(target)])
                target += product_buffer[: len(target)]
            # Clear only the ones just set, instead of re-zeroing the whole buffer.
            for selected, column in hits:
                codes[selected, column] = 0


def onehot_backward(tables, batch, grad, padding_idx, memory_budget):
    """``onehot(ids).T @ g`` for each table, in tiles within ``memory_budget``."""
    flat = grad.reshape(batch.num_tokens, tables.hidden_size)
    grads = EmbeddingGradients(
        *(np.empty(t.shape, grad.dtype) for t in (tables.token, tables.segment, tables.position))
    )
    for table_grad, ids in zip(grads, flat_ids(batch), strict=True):
        ids = ids.astype(np.int64, copy=False)
        _onehot_transpose_matmul([ids], table_grad.shape[0], flat, table_grad, memory_budget)
    if padding_idx is not None:
        grads.token[padding_idx] = 0
    return grads
