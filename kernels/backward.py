"""The backward pass: gradients of the summed embeddings with respect to the three tables.

The forward pass is ``y[b, s] = Wt[i] + Ws[j] + Wp[k]``, so the gradient of a
loss with respect to each table is a scatter-add of the output gradient ``g``:
row ``r`` of ``Wt`` receives the sum of ``g[b, s]`` over every token whose id
is ``r``. In the one-hot view that is ``onehot(ids).T @ g``, and the four
methods of the forward pass have four backward counterparts:

``onehot``  ``onehot(t).T @ g``, ``onehot(s).T @ g``, ``onehot(p).T @ g`` (BLAS);
``concat``  ``[onehot(t), onehot(s), onehot(p)].T @ g``, split into the three tables;
``gather``  ``np.add.at(grad, ids, g)`` per table (numpy's unbuffered scatter-add);
``fused``   one parallel numba pass over ``g`` that adds each token's gradient
            into all three tables.

The fused kernel: ownership, order, zeroing
--------------------------------------------
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

Zeroing: the gradients are allocated with ``np.zeros``, whose pages the
operating system maps and zeroes lazily, on first touch; the kernel never
writes a row no token touched. Before the scatter, a row-owned pass stores a
zero into each page of each row that will be touched, so that every page is
first touched (and zeroed by the OS) by one thread only; left to the
column-owned scatter, both threads would fault each page together. At BERT-base
this pass took the fused backward from 28.8 to 25.2 ms (medians of one run;
docs/BACKWARD.md has the measurements and the alternatives that lost).
"""

from __future__ import annotations

from typing import NamedTuple

import numba
import numpy as np
from numba import prange

from ._jit import parallel_kernel, serial_kernel
from .onehot import DEFAULT_MEMORY_BUDGET
from .tables import EmbeddingTables
from .validate import KERNEL_ID_DTYPES, Batch, prepare

BACKWARD_METHODS = ("onehot", "concat", "gather", "fused")

# Column blocks are whole cache lines, so that two threads never write into the
# same 64-byte line of a gradient row (false sharing would not change results,
# only slow them down).
_CACHE_LINE_BYTES = 64
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

# One-hot budget accounting. For every token of the call: its three flat int64
# id vectors (and concat's shifted copies), six words. For every token of one
# chunk: per table a row-block mask, the selected-token index and the shifted
# ids, ten words is generous. Allocations that do not grow with the call
# (measured with tracemalloc at under 10 KiB) are reserved apart.
_ID_BYTES_PER_TOKEN = 6 * 8
_INDEX_BYTES_PER_TOKEN = 10 * 8
_FIXED_BYTES = 64 * 1024


class EmbeddingGradients(NamedTuple):
    """Gradients of the loss with respect to the three tables, shaped like them."""

    token: np.ndarray  # (vocab_size, hidden_size)
    segment: np.ndarray  # (type_vocab_size, hidden_size)
    position: np.ndarray  # (max_positions, hidden_size)


# --------------------------------------------------------------------------- validation


def _check_grad_output(grad_output, shape: tuple[int, int, int], dtype: np.dtype) -> np.ndarray:
    """Return ``grad_output`` as a C-contiguous (batch, seq, hidden) array of ``dtype``."""
    grad = grad_output if isinstance(grad_output, np.ndarray) else np.asarray(grad_output)
    if grad.dtype != dtype:
        raise TypeError(
            f"grad_output has dtype {grad.dtype}; it must have the tables' dtype {dtype}. "
            f"Convert it with grad_output.astype(np.{dtype})."
        )
    if grad.shape != shape:
        raise ValueError(
            f"grad_output has shape {grad.shape}; it must have shape {shape} "
            "(input_ids' (batch, seq) and the tables' hidden_size)."
        )
    # One copy for strided or Fortran-ordered input, so the kernels read rows.
    return np.ascontiguousarray(grad)


def _check_padding_idx(padding_idx, vocab_size: int) -> int | None:
    if padding_idx is None:
        return None
    if isinstance(padding_idx, bool) or not isinstance(padding_idx, (int, np.integer)):
        raise TypeError(
            f"padding_idx is {type(padding_idx).__name__}; it must be None or an int "
            f"in [0, {vocab_size}) (a row of the token table)."
        )
    if not 0 <= padding_idx < vocab_size:
        raise ValueError(
            f"padding_idx is {padding_idx}, out of range: it must satisfy "
            f"0 <= padding_idx < {vocab_size} (vocab_size)."
        )
    return int(padding_idx)


def _check_memory_budget(memory_budget) -> int:
    if isinstance(memory_budget, bool) or not isinstance(memory_budget, (int, np.integer)):
        raise TypeError(f"memory_budget is {type(memory_budget).__name__}; it must be an int.")
    return int(memory_budget)


# --------------------------------------------------------------------------- helpers


def _flat_ids(batch: Batch) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The three id arrays as flat (tokens,) vectors, broadcasting shared rows."""
    shape = batch.shape
    return tuple(
        np.broadcast_to(ids, shape).reshape(-1)
        for ids in (batch.input_ids, batch.token_type_ids, batch.position_ids)
    )


def _kernel_ids(ids: np.ndarray) -> np.ndarray:
    # As the forward kernel: int32/int64 as they are, other (range-checked) dtypes once to int64.
    return ids if ids.dtype in KERNEL_ID_DTYPES else ids.astype(np.int64)


def _aligned_zeros(shape: tuple[int, int], dtype: np.dtype) -> np.ndarray:
    """``np.zeros(shape, dtype)`` whose first element starts a cache line.

    Large numpy arrays start 16 bytes into a page (the allocator's header), so
    a column block of whole lines counted from the row start would end in the
    middle of a line, shared by two threads (measured at BERT-base, warm
    buffers, 2 threads: 11.9 ms unaligned, 10.4 ms aligned). Every row starts a
    line when ``hidden * itemsize`` is a multiple of 64 bytes, as at BERT's
    widths. The pages stay lazily zeroed: the padding is never written.
    """
    nbytes = int(np.prod(shape)) * dtype.itemsize
    raw = np.zeros(nbytes + _CACHE_LINE_BYTES, np.uint8)
    offset = -raw.ctypes.data % _CACHE_LINE_BYTES
    return raw[offset : offset + nbytes].view(dtype).reshape(shape)


def _zeros_like_tables(tables: EmbeddingTables) -> EmbeddingGradients:
    return EmbeddingGradients(
        *(
            _aligned_zeros(table.shape, tables.dtype)
            for table in (tables.token, tables.segment, tables.position)
        )
    )


# --------------------------------------------------------------------------- gather


def _gather_backward(tables, batch, grad, padding_idx, memory_budget):
    """``np.add.at`` per table: numpy's unbuffered scatter-add, in token order."""
    grads = _zeros_like_tables(tables)
    flat = grad.reshape(batch.num_tokens, tables.hidden_size)
    for table_grad, ids in zip(grads, _flat_ids(batch), strict=True):
        np.add.at(table_grad, ids, flat)
    if padding_idx is not None:
        grads.token[padding_idx] = 0
    return grads


# --------------------------------------------------------------------------- one-hot


def _tiles(rows: int, tokens: int, hidden: int, itemsize: int, memory_budget: int):
    """``(row_block, token_chunk)`` whose one-hot codes and buffers fit ``memory_budget``.

    A row block of the gradient is ``codes[:, block].T @ g``. When every token
    fits in one chunk the product is written straight into the gradient, so
    only the codes (tokens x row_block) and index arrays count. Otherwise tokens
    come in chunks whose products are summed through a (row_block x hidden)
    buffer, which counts too.
    """
    free = memory_budget - _FIXED_BYTES - tokens * _ID_BYTES_PER_TOKEN
    per_row = tokens * itemsize
    if free - tokens * _INDEX_BYTES_PER_TOKEN >= per_row:
        return min(rows, (free - tokens * _INDEX_BYTES_PER_TOKEN) // per_row), tokens
    for row_block in (min(rows, 256), 1):
        chunk = (free - row_block * hidden * itemsize) // (
            row_block * itemsize + _INDEX_BYTES_PER_TOKEN
        )
        if chunk >= 1:
            return row_block, int(min(chunk, tokens))
    needed = (
        _FIXED_BYTES
        + tokens * _ID_BYTES_PER_TOKEN
        + hidden * itemsize
        + itemsize
        + _INDEX_BYTES_PER_TOKEN
    )
    raise ValueError(
        f"memory_budget is {memory_budget} bytes; {tokens} tokens need "
        f"{tokens * _ID_BYTES_PER_TOKEN} bytes of ids, one token and one gradient row "
        f"{hidden * itemsize + itemsize + _INDEX_BYTES_PER_TOKEN} more, plus {_FIXED_BYTES} "
        f"fixed, so the budget must be at least {needed}."
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


def _onehot_backward(tables, batch, grad, padding_idx, memory_budget):
    """``onehot(ids).T @ g`` for each table, in tiles within ``memory_budget``."""
    flat = grad.reshape(batch.num_tokens, tables.hidden_size)
    grads = EmbeddingGradients(
        *(np.empty(t.shape, tables.dtype) for t in (tables.token, tables.segment, tables.position))
    )
    for table_grad, ids in zip(grads, _flat_ids(batch), strict=True):
        ids = ids.astype(np.int64, copy=False)
        _onehot_transpose_matmul([ids], table_grad.shape[0], flat, table_grad, memory_budget)
    if padding_idx is not None:
        grads.token[padding_idx] = 0
    return grads


def _concat_backward(tables, batch, grad, padding_idx, memory_budget):
    """``[onehot(t), onehot(s), onehot(p)].T @ g``, then split into the three tables."""
    flat = grad.reshape(batch.num_tokens, tables.hidden_size)
    sizes = (tables.vocab_size, tables.type_vocab_size, tables.max_positions)
    offsets = (0, sizes[0], sizes[0] + sizes[1])
    stacked = np.empty((sum(sizes), tables.hidden_size), tables.dtype)
    columns = [
        offset + ids.astype(np.int64) for offset, ids in zip(offsets, _flat_ids(batch), strict=True)
    ]
    _onehot_transpose_matmul(columns, stacked.shape[0], flat, stacked, memory_budget)
    # Row slices of a C-ordered array: three C-contiguous views of one buffer.
    grads = EmbeddingGradients(*np.split(stacked, offsets[1:]))
    if padding_idx is not None:
        grads.token[padding_idx] = 0
    return grads


# --------------------------------------------------------------------------- fused


def _scatter_add_columns(
    grad, input_ids, token_type_ids, position_ids, padding_idx, block, token, segment, position
):
    """Add ``grad[t]`` into row ``i``, ``j``, ``k`` of the three zeroed gradients.

    ``prange`` runs over column blocks of width ``block``; each iteration owns
    columns ``[c0, c1)`` of every row of all three gradients and walks the
    tokens in order, so no element is written by two threads and every element
    is summed in token order. ``token_type_ids`` / ``position_ids`` have a
    first axis of 1 (shared by the batch) or ``batch``. Tokens whose id is
    ``padding_idx`` (-1 for none) add nothing to the token gradient.

    One inner loop adds each gradient element into the three rows, so it is
    loaded once; three loops, one per table, measured the same (12.0 vs 12.4 ms,
    docs/BACKWARD.md).
    The rows are slices indexed from 0: with ``range(c0, c1)`` on the full rows
    numba cannot prove the index non-negative, keeps its wraparound branch, and
    the loop stays scalar (checked in the assembly: no ``vaddps`` at all); this
    way it is vectorised.
    """
    tokens, hidden = grad.shape
    seq = input_ids.shape[1]
    shared_types = token_type_ids.shape[0] == 1
    shared_positions = position_ids.shape[0] == 1
    blocks = (hidden + block - 1) // block
    for c in prange(blocks):
        c0 = c * block
        c1 = min(hidden, c0 + block)
        width = c1 - c0
        for t in range(tokens):
            b = t // seq
            s = t - b * seq
            i = input_ids[b, s]
            j = token_type_ids[0 if shared_types else b, s]
            k = position_ids[0 if shared_positions else b, s]
            g = grad[t, c0:c1]
            segment_row = segment[j, c0:c1]
            position_row = position[k, c0:c1]
            if i != padding_idx:
                token_row = token[i, c0:c1]
                for h in range(width):
                    value = g[h]
                    token_row[h] += value
                    segment_row[h] += value
                    position_row[h] += value
            else:
                for h in range(width):
                    value = g[h]
                    segment_row[h] += value
                    position_row[h] += value


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
    line = max(1, _CACHE_LINE_BYTES // itemsize)
    lines = -(-hidden // line)
    return line * -(-lines // max(1, threads))


def _fused_backward(tables, batch, grad, padding_idx, memory_budget):
    """One parallel numba pass over ``g`` adding into all three tables; see the module doc."""
    grads = _zeros_like_tables(tables)
    if batch.num_tokens == 0:
        return grads
    flat = grad.reshape(batch.num_tokens, tables.hidden_size)
    input_ids = _kernel_ids(batch.input_ids)
    if flat.nbytes < SERIAL_MAX_BYTES:
        kernel, block = _scatter_add_columns_serial, tables.hidden_size
    else:
        threads = numba.get_num_threads()
        kernel = _scatter_add_columns_parallel
        block = column_block(tables.hidden_size, tables.dtype.itemsize, threads)
        _fault_in_rows(
            input_ids,
            -1 if padding_idx is None else padding_idx,
            np.zeros(tables.vocab_size, np.bool_),
            _PAGE_BYTES // tables.dtype.itemsize,
            grads.token,
        )
    kernel(
        flat,
        input_ids,
        _kernel_ids(batch.token_type_ids),
        _kernel_ids(batch.position_ids),
        -1 if padding_idx is None else padding_idx,
        block,
        *grads,
    )
    return grads


_METHODS = {
    "onehot": _onehot_backward,
    "concat": _concat_backward,
    "gather": _gather_backward,
    "fused": _fused_backward,
}


def embed_backward(
    tables: EmbeddingTables,
    grad_output,
    input_ids,
    token_type_ids=None,
    position_ids=None,
    *,
    method: str = "fused",
    past_length: int = 0,
    padding_idx: int | None = None,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
) -> EmbeddingGradients:
    """Gradients of ``embed``'s output with respect to the three tables.

    Row ``r`` of each table's gradient is the sum of ``grad_output[b, s]`` over
    the tokens whose id for that table is ``r`` (zero for rows no token used).

    Parameters
    ----------
    tables : EmbeddingTables
        The tables of the forward pass; only their shapes and dtype are used.
    grad_output : array_like, shape (batch, seq, hidden)
        Gradient of the loss with respect to ``embed``'s output, in the tables'
        dtype. Any memory layout; strided input is copied once.
    input_ids, token_type_ids, position_ids, past_length
        Exactly as for :func:`kernels.embed`, and validated by the same code.
    method : {"onehot", "concat", "gather", "fused"}
        ``fused`` (default) is a parallel numba kernel, bitwise deterministic
        whatever the number of threads; ``gather`` uses ``np.add.at``;
        ``onehot`` and ``concat`` compute ``onehot.T @ grad_output`` with BLAS.
    padding_idx : int, optional
        A token-table row whose gradient stays zero, as ``torch.nn.Embedding``'s
        ``padding_idx``: ``0 <= padding_idx < vocab_size``.
    memory_budget : int, default 256 MiB
        Bytes of extra memory ``onehot`` and ``concat`` may use for one-hot codes
        and buffers (they work in tiles to stay within it). Ignored by the others.

    Returns
    -------
    EmbeddingGradients
        A named tuple ``(token, segment, position)`` of new C-contiguous arrays
        shaped like the tables, in the tables' dtype.

    Raises
    ------
    TypeError
        As :func:`kernels.embed`; also ``grad_output`` of another dtype than the
        tables', a ``padding_idx`` or ``memory_budget`` that is not an int.
    ValueError
        As :func:`kernels.embed`; also ``grad_output`` whose shape is not
        ``(batch, seq, hidden)`` (both shapes are named), a ``padding_idx``
        outside ``[0, vocab_size)``, an unknown ``method``, a ``memory_budget``
        too small for one token.
    IndexError
        As :func:`kernels.embed`: an id outside its table.

    Notes
    -----
    ``fused`` and ``gather`` sum each row in token order in the tables' dtype,
    so they agree bit for bit with each other and with a naive loop;
    ``onehot`` and ``concat`` let BLAS choose the order. For a row used by
    ``n`` tokens every order lies within ``n * eps * sum(|g|)`` of the exact sum.
    """
    if method not in _METHODS:
        raise ValueError(f"method is {method!r}; it must be one of {BACKWARD_METHODS}.")
    memory_budget = _check_memory_budget(memory_budget)
    batch = prepare(tables, input_ids, token_type_ids, position_ids, past_length)
    grad = _check_grad_output(grad_output, (*batch.shape, tables.hidden_size), tables.dtype)
    padding_idx = _check_padding_idx(padding_idx, tables.vocab_size)
    return _METHODS[method](tables, batch, grad, padding_idx, memory_budget)


# --------------------------------------------------------------------------- reference and inputs


def naive_embed_backward(
    tables,
    grad_output,
    input_ids,
    token_type_ids=None,
    position_ids=None,
    past_length=0,
    padding_idx=None,
    dtype=np.float64,
):
    """A deliberately naive reference: a Python loop over tokens, one row at a time.

    Independent of every method above (no fancy indexing, no ``np.add.at``, no
    BLAS, no numba, no :func:`kernels.validate.prepare`). Each row is summed in
    token order starting from zero, in ``dtype``: float64 for the tolerance
    checks, the tables' dtype for the bitwise checks of ``fused``/``gather``.

    Returns
    -------
    gradients : EmbeddingGradients
        In ``dtype``.
    magnitudes : EmbeddingGradients
        ``sum(|g|)`` per element, in float64.
    counts : EmbeddingGradients
        How many tokens added into each row, shape (rows,), int64.
    """
    grad_output = np.asarray(grad_output)
    input_ids = np.asarray(input_ids)
    batch, seq = input_ids.shape
    types = np.zeros((batch, seq), int) if token_type_ids is None else np.asarray(token_type_ids)
    if position_ids is None:
        positions = [[past_length + s for s in range(seq)] for _ in range(batch)]
    else:
        position_ids = np.asarray(position_ids).reshape(-1, seq)
        positions = [
            [int(position_ids[min(b, len(position_ids) - 1), s]) for s in range(seq)]
            for b in range(batch)
        ]
    shapes = [t.shape for t in (tables.token, tables.segment, tables.position)]
    sums = [np.zeros(shape, dtype) for shape in shapes]
    magnitudes = [np.zeros(shape, np.float64) for shape in shapes]
    counts = [np.zeros(shape[0], np.int64) for shape in shapes]
    for b in range(batch):
        for s in range(seq):
            g = grad_output[b, s]
            rows = (int(input_ids[b, s]), int(types[b, s]), positions[b][s])
            for table, row in enumerate(rows):
                if table == 0 and row == padding_idx:
                    continue
                sums[table][row] = sums[table][row] + g.astype(dtype)
                magnitudes[table][row] += np.abs(g.astype(np.float64))
                counts[table][row] += 1
    return EmbeddingGradients(*sums), EmbeddingGradients(*magnitudes), EmbeddingGradients(*counts)


def zipf_ids(vocab_size: int, shape, *, exponent: float = 1.0, seed: int = 0) -> np.ndarray:
    """Token ids whose frequencies follow Zipf's law, as in natural language.

    The id of frequency rank ``r`` (1-based) is drawn with probability
    proportional to ``r ** -exponent``; ranks are shuffled over the vocabulary
    (seeded), so frequent ids are scattered like a real tokenizer's. At BERT-base
    (vocab 30522, 16384 tokens, exponent 1) about 5200 distinct rows are used and
    the most frequent id takes about 9% of the tokens.

    Returns
    -------
    ndarray of int64, shape ``shape``
    """
    rng = np.random.default_rng(seed)
    weights = np.arange(1, vocab_size + 1, dtype=np.float64) ** -float(exponent)
    ranks = rng.choice(vocab_size, size=shape, p=weights / weights.sum())
    return rng.permutation(vocab_size)[ranks].astype(np.int64)
