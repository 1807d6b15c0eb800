"""The fused gather-and-sum: one compiled pass that reads three rows and writes one.

The public entry points are :func:`fused_sum` and :func:`fused_sum_norm`; the
``@njit`` kernels behind them take typed arrays only and allocate nothing.
Blocks are position-major: each block is one position across up to
``BATCH_BLOCK`` sequences, so that position's row is read once and stays in L1
while it is added to every sequence. The measured design history (what was
tried, with numbers, and why it lost) is in docs/FORWARD.md.

Small calls: waking the thread pool costs a few microseconds, so outputs below
``SERIAL_MAX_BYTES`` run the same loop compiled without ``parallel``.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from .._jit import parallel_kernel, reduction_helper, serial_kernel
from .._streaming import VECTOR_BYTES, store_fence, stream32
from ..tables import EmbeddingTables
from ..validate import Batch, kernel_ids

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
# Outputs at least this large are written with streaming stores (kernels/_streaming.py),
# which skip reading each output line first: such an output does not stay in cache
# anyway. Smaller ones, which the caller may read back from cache, are stored plainly.
STREAM_MIN_BYTES = 16 * 2**20
STREAMING = True  # measured choice, docs/FORWARD.md; off to compare


def _sum_rows(token, segment, position, input_ids, token_type_ids, position_ids, out):
    """out[b, s] = (token[i] + segment[j]) + position[k] for every token.

    ``token_type_ids`` / ``position_ids`` have a first axis of 1 (shared by the
    batch) or ``batch``. Every block writes its own output rows: no races.
    """
    batch, seq = input_ids.shape
    hidden = out.shape[2]
    shared_types = token_type_ids.shape[0] == 1
    shared_positions = position_ids.shape[0] == 1
    batch_blocks = (batch + BATCH_BLOCK - 1) // BATCH_BLOCK
    for block in prange(seq * batch_blocks):
        s = block // batch_blocks
        first = (block - s * batch_blocks) * BATCH_BLOCK
        for b in range(first, min(first + BATCH_BLOCK, batch)):
            token_row = token[input_ids[b, s]]
            segment_row = segment[token_type_ids[0 if shared_types else b, s]]
            position_row = position[position_ids[0 if shared_positions else b, s]]
            out_row = out[b, s]
            for h in range(hidden):
                out_row[h] = token_row[h] + segment_row[h] + position_row[h]


_sum_rows_parallel = parallel_kernel(_sum_rows)
_sum_rows_serial = serial_kernel(_sum_rows)


@parallel_kernel
def _sum_rows_streaming(
    token, segment, position, input_ids, token_type_ids, position_ids, head, lanes, flat_out
):
    """As :func:`_sum_rows`, into the flat output, with streaming stores.

    Each row is summed into an L1-resident scratch row, then written: the first
    ``head`` elements (up to the first 32-byte boundary) and the tail plainly,
    the rest ``lanes`` at a time with 32-byte streaming stores. ``head`` is the
    same for every row: a row's byte length is a multiple of 32 (the caller
    checks). The values are those of :func:`_sum_rows`, bit for bit.
    """
    batch, seq = input_ids.shape
    hidden = token.shape[1]
    shared_types = token_type_ids.shape[0] == 1
    shared_positions = position_ids.shape[0] == 1
    batch_blocks = (batch + BATCH_BLOCK - 1) // BATCH_BLOCK
    body_end = head + (hidden - head) // lanes * lanes
    for block in prange(seq * batch_blocks):
        s = block // batch_blocks
        first = (block - s * batch_blocks) * BATCH_BLOCK
        row = np.empty(hidden, token.dtype)
        for b in range(first, min(first + BATCH_BLOCK, batch)):
            token_row = token[input_ids[b, s]]
            segment_row = segment[token_type_ids[0 if shared_types else b, s]]
            position_row = position[position_ids[0 if shared_positions else b, s]]
            for h in range(hidden):
                row[h] = token_row[h] + segment_row[h] + position_row[h]
            start = (b * seq + s) * hidden
            for h in range(head):
                flat_out[start + h] = row[h]
            for h in range(head, body_end, lanes):
                stream32(flat_out, start + h, row, h)
            for h in range(body_end, hidden):
                flat_out[start + h] = row[h]
        store_fence()  # this block's streaming stores land before the kernel returns


@reduction_helper
def _mean_and_inverse_std(row, eps):
    """LayerNorm statistics of one row, in float64, two passes over an L1-resident row.

    Two passes (mean, then squared deviations) rather than E[x^2] - E[x]^2,
    which cancels catastrophically when the mean is large next to the spread.
    """
    # Indexed loops: ``for value in row`` kept LLVM from vectorising them
    # (LayerNorm kernel 74.7 ms -> 52.8 ms at BERT-base, same bits).
    total = 0.0
    for h in range(row.size):
        total += row[h]
    mean = total / row.size
    squares = 0.0
    for h in range(row.size):
        deviation = row[h] - mean
        squares += deviation * deviation
    return mean, 1.0 / np.sqrt(squares / row.size + eps)


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
    out,
):
    """out[b, s] = LayerNorm of the three rows' sum; with ``keep_sum`` the sum goes to ``sums``.

    The row is summed, reduced and normalised in place in ``out`` while it is
    in L1. In place on purpose: with separate ``sums`` and ``out`` views of one
    array (the caller keeping no sum) LLVM's runtime overlap check failed and
    the normalising loop ran scalar (in place: 30.2 ms -> 17.4 ms at BERT-base).
    """
    batch, seq = input_ids.shape
    hidden = out.shape[2]
    shared_types = token_type_ids.shape[0] == 1
    shared_positions = position_ids.shape[0] == 1
    batch_blocks = (batch + BATCH_BLOCK - 1) // BATCH_BLOCK
    for block in prange(seq * batch_blocks):
        s = block // batch_blocks
        first = (block - s * batch_blocks) * BATCH_BLOCK
        for b in range(first, min(first + BATCH_BLOCK, batch)):
            token_row = token[input_ids[b, s]]
            segment_row = segment[token_type_ids[0 if shared_types else b, s]]
            position_row = position[position_ids[0 if shared_positions else b, s]]
            row = out[b, s]
            for h in range(hidden):
                row[h] = token_row[h] + segment_row[h] + position_row[h]
            if keep_sum:
                sum_row = sums[b, s]
                for h in range(hidden):
                    sum_row[h] = row[h]
            mean, inverse_std = _mean_and_inverse_std(row, eps)
            for h in range(hidden):
                # Centre and scale in float64 (no cancellation), then round to the
                # tables' dtype by storing, so the affine step runs at the dtype's
                # vector width (measured 1.91x -> 1.65x the plain sum's time).
                row[h] = (row[h] - mean) * inverse_std
                row[h] = row[h] * weight[h] + bias[h]


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


def _streaming_head(out: np.ndarray, hidden: int) -> int | None:
    """Elements before the first 32-byte boundary of every row, or None: no streaming here."""
    row_bytes = hidden * out.itemsize
    if out.nbytes < STREAM_MIN_BYTES or row_bytes % VECTOR_BYTES or row_bytes < 2 * VECTOR_BYTES:
        return None
    misalignment = out.ctypes.data % VECTOR_BYTES
    if misalignment % out.itemsize:
        return None
    return (VECTOR_BYTES - misalignment) % VECTOR_BYTES // out.itemsize


def fused_sum(tables: EmbeddingTables, batch: Batch, out: np.ndarray) -> np.ndarray:
    """Compute the summed embeddings of ``batch`` into ``out`` with the numba kernel."""
    if not batch.num_tokens:
        return out
    head = _streaming_head(out, tables.hidden_size) if STREAMING else None
    if head is not None:
        lanes = VECTOR_BYTES // out.itemsize
        _sum_rows_streaming(*_arguments(tables, batch), head, lanes, out.reshape(-1))
    elif out.nbytes < SERIAL_MAX_BYTES:
        _sum_rows_serial(*_arguments(tables, batch), out)
    else:
        _sum_rows_parallel(*_arguments(tables, batch), out)
    return out


def fused_sum_norm(
    tables: EmbeddingTables, batch: Batch, sums: np.ndarray, out: np.ndarray
) -> np.ndarray:
    """LayerNorm of the summed embeddings into ``out``; the sum into ``sums`` if not ``out``."""
    if batch.num_tokens:
        parallel = out.nbytes >= SERIAL_MAX_BYTES
        kernel = _sum_norm_rows_parallel if parallel else _sum_norm_rows_serial
        kernel(
            *_arguments(tables, batch),
            tables.norm_weight,
            tables.norm_bias,
            tables.norm_eps,
            sums,
            sums is not out,  # keep the sum only where the caller asked for it
            out,
        )
    return out
