"""The deterministic backward pass on the device: table gradients as in-order segmented sums.

The gradient of each table row is the sum of ``grad_output[b, s]`` over the
tokens that read that row. The CPU sums every element in token order starting
from zero; to give the same bits, the GPU must too, so every (row, column) is
one thread's sequential sum: float atomics would add in whatever order the
threads arrive. What the GPU can do in parallel is find each row's tokens.
The three tables share one concatenated row space (token rows, then segment
rows, then position rows, like the ``concat`` method), and a stable counting
sort groups the token indices by row, in token order, with integer arithmetic
only:

1. ``_rank_in_chunk``: the (table, token) entries are cut into chunks of one
   block each; each entry's rank among the earlier entries of its chunk with
   the same row, and each chunk's count per row (written by the row's last
   entry in the chunk; no atomics).
2. ``_chunk_offsets``: per row, a running sum over chunks turns the counts into
   each chunk's offset within the row, and gives the row's total.
3. ``_exclusive_scan``: one block scans the row totals into row starts.
4. ``_place``: entry -> ``order[start[row] + offset[chunk, row] + rank]``.
5. ``_segment_sums``: a thread per (row, column) adds its row's gradients in
   the sorted (token) order, and writes zero rows too (no separate memset).
   With ``order="tree"``, :mod:`.tree`'s kernel adds them in a fixed binary tree.

The cost that cannot go: a row read by ``n`` tokens is a chain of ``n``
dependent additions (the segment rows: half the batch each). The loads of a
chain are issued ``UNROLL`` at a time and added in order, so that memory
latency is paid once per group rather than once per token. Memory: a
(chunks x rows) int32 table, 6 MiB at BERT-base (49152 entries, 31036 rows).
"""

from __future__ import annotations

from functools import cache
from typing import NamedTuple

import numpy as np

from ..validate.backward import check_padding_idx
from ._runtime import SIMULATOR, as_device, cuda
from .half import half_grad
from .tables import DeviceTables
from .tree import check_order, launch, tree_sums_kernel
from .validate import DeviceBatch, check_targets, device_grad, prepare

# One chunk per block, one entry per thread. The simulator runs a Python thread
# per CUDA thread, so it gets small blocks (and still several chunks per test).
_CHUNK = 32 if SIMULATOR else 1024
_SCAN_THREADS = 32 if SIMULATOR else 1024
_THREADS = 32 if SIMULATOR else 256
# Loads in flight per chain; 4 in the simulator so that the tests' short rows
# exercise both the unrolled loop and its tail.
UNROLL = 4 if SIMULATOR else 16
# Row blocks of the segmented sum: one per row on hardware; the simulator's
# blocks loop over rows instead (fewer Python threads).
_SIM_ROW_BLOCKS = 4


class DeviceGradients(NamedTuple):
    """Gradients of the three tables on the device: row views of one array."""

    token: object  # (vocab_size, hidden_size)
    segment: object  # (type_vocab_size, hidden_size)
    position: object  # (max_positions, hidden_size)


@cuda.jit(device=True)
def _entry_row(e, input_ids, token_type_ids, position_ids, padding_idx, vocab, types):
    """Concatenated row of entry ``e`` (table ``e // tokens``, token ``e % tokens``), or -1."""
    batch, seq = input_ids.shape
    tokens = batch * seq
    if e >= 3 * tokens:
        return -1
    table = e // tokens
    t = e - table * tokens
    b = t // seq
    s = t - b * seq
    if table == 0:
        i = input_ids[b, s]
        return -1 if i == padding_idx else i
    if table == 1:
        return vocab + token_type_ids[0 if token_type_ids.shape[0] == 1 else b, s]
    return vocab + types + position_ids[0 if position_ids.shape[0] == 1 else b, s]


@cuda.jit
def _zero(flat):
    for n in range(cuda.grid(1), flat.size, cuda.gridsize(1)):
        flat[n] = 0


@cuda.jit
def _rank_in_chunk(
    input_ids, token_type_ids, position_ids, padding_idx, vocab, types, ranks, chunk_counts
):
    rows = cuda.shared.array(_CHUNK, np.int64)
    lane = cuda.threadIdx.x
    e = cuda.blockIdx.x * _CHUNK + lane
    row = _entry_row(e, input_ids, token_type_ids, position_ids, padding_idx, vocab, types)
    rows[lane] = row
    cuda.syncthreads()
    if row >= 0:
        rank = 0
        for other in range(lane):  # every lane reads the same address: a broadcast
            if rows[other] == row:
                rank += 1
        last = True
        for other in range(lane + 1, _CHUNK):
            if rows[other] == row:
                last = False
                break
        ranks[e] = rank
        if last:
            chunk_counts[cuda.blockIdx.x, row] = rank + 1


@cuda.jit
def _chunk_offsets(chunk_counts, row_counts):
    row = cuda.grid(1)
    if row < row_counts.size:
        running = 0
        for chunk in range(chunk_counts.shape[0]):
            count = chunk_counts[chunk, row]
            chunk_counts[chunk, row] = running
            running += count
        row_counts[row] = running


@cuda.jit
def _exclusive_scan(counts, starts):
    """``starts[r] = sum(counts[:r])`` in one block: slices per thread, then a shared scan."""
    partial = cuda.shared.array(_SCAN_THREADS, np.int64)
    lane = cuda.threadIdx.x
    per_thread = (counts.size + _SCAN_THREADS - 1) // _SCAN_THREADS
    first = lane * per_thread
    # No min() in kernels: numba 0.68's built-in numba.cuda fails to type min(int, int)
    # ("Signature mismatch"); numba-cuda compiles it.
    last = first + per_thread if first + per_thread < counts.size else counts.size
    own = 0
    for r in range(first, last):
        own += counts[r]
    partial[lane] = own
    cuda.syncthreads()
    offset = 1
    while offset < _SCAN_THREADS:  # Hillis-Steele inclusive scan of the partials
        left = partial[lane - offset] if lane >= offset else 0
        cuda.syncthreads()
        partial[lane] += left
        cuda.syncthreads()
        offset *= 2
    running = partial[lane] - own
    for r in range(first, last):
        starts[r] = running
        running += counts[r]


@cuda.jit
def _place(
    input_ids,
    token_type_ids,
    position_ids,
    padding_idx,
    vocab,
    types,
    ranks,
    chunk_offsets,
    row_starts,
    order,
):
    e = cuda.grid(1)
    row = _entry_row(e, input_ids, token_type_ids, position_ids, padding_idx, vocab, types)
    if row >= 0:
        tokens = input_ids.shape[0] * input_ids.shape[1]
        where = row_starts[row] + chunk_offsets[e // _CHUNK, row] + ranks[e]
        order[where] = e % tokens


@cache
def _segment_sums_kernel(dtype: np.dtype, unroll: int):
    zero = dtype.type(0)

    @cuda.jit
    def segment_sums(grad, order, row_starts, row_counts, accumulate, token, segment, position):
        """Row ``r`` of the concatenated gradients = the sum of ``grad[t]`` over its tokens.

        ``grad`` is (tokens, hidden). Each (row, column) is one thread's sum in
        token order, from zero or (with ``accumulate``) from the value already
        there. A group of ``unroll`` tokens is read in two sweeps with no branch
        in either (the tail re-reads the row's last token and ignores it): the
        token indices, then the gradients, all in flight together; then added in order.
        """
        hidden = token.shape[1]
        vocab = token.shape[0]
        first_position = vocab + segment.shape[0]
        rows = first_position + position.shape[0]
        h = cuda.blockIdx.y * cuda.blockDim.x + cuda.threadIdx.x
        if h < hidden:
            where = cuda.local.array(unroll, np.int32)
            loaded = cuda.local.array(unroll, dtype.type)
            for r in range(cuda.blockIdx.x, rows, cuda.gridDim.x):
                total = zero
                if accumulate:
                    if r < vocab:
                        total = token[r, h]
                    elif r < first_position:
                        total = segment[r - vocab, h]
                    else:
                        total = position[r - first_position, h]
                start = row_starts[r]
                count = row_counts[r]
                for n in range(0, count, unroll):
                    for u in range(unroll):
                        m = n + u
                        where[u] = order[start + (m if m < count else count - 1)]
                    for u in range(unroll):
                        loaded[u] = grad[where[u], h]
                    for u in range(unroll):  # the additions, in token order
                        if n + u < count:
                            total += loaded[u]
                if r < vocab:
                    token[r, h] = total
                elif r < first_position:
                    segment[r - vocab, h] = total
                else:
                    position[r - first_position, h] = total

    return segment_sums


def _sort_buffers(rows: int, entries: int, stream) -> tuple:
    chunks = max(1, -(-entries // _CHUNK))
    return (
        cuda.device_array(rows, np.int32, stream=stream),  # row counts
        cuda.device_array(rows, np.int32, stream=stream),  # row starts
        cuda.device_array(max(entries, 1), np.int32, stream=stream),  # order
        cuda.device_array((chunks, rows), np.int32, stream=stream),  # chunk counts
        cuda.device_array(max(entries, 1), np.int32, stream=stream),  # ranks
    )


def fused_backward(
    tables: DeviceTables,
    batch: DeviceBatch,
    grad_output,
    padding_idx=None,
    *,
    out=None,
    accumulate_into=None,
    order: str = "cpu",
    tree_launch=None,
    stream=0,
) -> DeviceGradients:
    """Gradients of the three tables; bit-identical to the CPU ``fused`` backward.

    float16 and bfloat16 tables get float32 gradients, summed in float32 from a
    ``grad_output`` widened exactly, as the CPU's default ``grad_dtype``.

    Parameters
    ----------
    tables : DeviceTables
    batch : DeviceBatch
        From :func:`prepare`.
    grad_output : (batch, seq, hidden) array, host or CUDA
        In the tables' dtype; device arrays of any layout are read in place.
    padding_idx : int, optional
        A token row whose gradient stays zero (torch's ``padding_idx``).
    out : DeviceGradients or tuple of three CUDA arrays, optional
        Write the gradients here (every element, unused rows as zeros; laid out
        as ``accumulate_into``), e.g. tensors from torch's caching allocator.
    accumulate_into : DeviceGradients or tuple of three CUDA arrays, optional
        Add the gradients into these (shaped like the tables, their dtype,
        C-contiguous; torch ``.grad`` tensors work), each element in token order
        after the value already there, as the CPU does; the ``padding_idx`` row
        is left as it was. Nothing is allocated then: a training loop pays no
        device allocation per step.
    order : {"cpu", "tree"}
        "cpu": each element summed in token order, bit-identical to the CPU.
        "tree": each element reduced in a fixed binary tree over the row's tokens
        (:mod:`bert_embedding_kernels.cuda.tree`): the same bits on every run and for
        any launch shape, within ``ceil(log2 n)`` roundings of the exact sum, but
        not always the CPU's bits. The CPU has only the token order.
    tree_launch : (blocks, threads), optional
        The tree kernel's launch shape (for tests: any shape gives the same bits);
        None picks one. Only with ``order="tree"``.
    stream : numba stream or 0

    Returns
    -------
    DeviceGradients
        New device arrays (row views of one array), or the arrays of ``accumulate_into``.
    """
    order = check_order(order, tree_launch)
    hidden, dtype = tables.hidden_size, tables.grad_dtype
    # Wrapped once (a torch tensor's wrapping costs host time): kept to check the targets.
    given_grad = as_device(grad_output, "grad_output")
    if given_grad is not None:
        grad_output = given_grad
    if tables.half_kind is None:
        grad = device_grad(grad_output, (*batch.shape, hidden), dtype, stream)
    else:  # float16, bfloat16: gradients accumulate in float32, as on the CPU
        grad = half_grad(grad_output, (*batch.shape, hidden), tables, stream)
    padding = check_padding_idx(padding_idx, tables.vocab_size)  # the CPU's check and message
    if out is not None and accumulate_into is not None:
        raise ValueError("give out or accumulate_into, not both.")
    # grad_output as the caller gave it (a device array, read by the copy where one was
    # made) and as the sums read it: no target may share memory with either.
    read = (grad,) if given_grad is None or given_grad is grad else (grad, given_grad)
    if accumulate_into is not None:
        targets = DeviceGradients(
            *check_targets("accumulate_into", accumulate_into, tables, batch, read)
        )
    elif out is not None:
        targets = DeviceGradients(*check_targets("out", out, tables, batch, read))
    else:
        grads = cuda.device_array((rows_of(tables), hidden), dtype, stream=stream)
        vocab, first_position = tables.vocab_size, tables.vocab_size + tables.type_vocab_size
        targets = DeviceGradients(
            grads[:vocab], grads[vocab:first_position], grads[first_position:]
        )
    with tables.scratch_lock:
        tokens, row_starts, row_counts = _sort(tables, batch, padding, stream)
        arguments = (grad, tokens, row_starts, row_counts, accumulate_into is not None, *targets)
        if order == "tree":
            if hidden:
                blocks, threads = launch(rows_of(tables), hidden, *(tree_launch or ()))
                tree_sums_kernel(dtype)[blocks, threads, stream](*arguments)
            return targets
        lanes = _THREADS if SIMULATOR else min(256, -(-hidden // 32) * 32)
        row_blocks = min(rows_of(tables), _SIM_ROW_BLOCKS) if SIMULATOR else rows_of(tables)
        kernel = _segment_sums_kernel(dtype, UNROLL)
        kernel[(row_blocks, -(-hidden // lanes)), lanes, stream](*arguments)
    return targets


def rows_of(tables: DeviceTables) -> int:
    """Rows of the concatenated gradient: token, then segment, then position rows."""
    return tables.vocab_size + tables.type_vocab_size + tables.max_positions


def _sort(tables: DeviceTables, batch: DeviceBatch, padding, stream) -> tuple:
    """(order, row starts, row counts): each row's tokens, in token order (module doc)."""
    rows, entries = rows_of(tables), 3 * batch.num_tokens
    row_counts, row_starts, order, chunk_counts, ranks = tables.scratch(
        ("backward", stream, rows, entries), lambda: _sort_buffers(rows, entries, stream)
    )
    ids = (*batch, -1 if padding is None else padding, tables.vocab_size, tables.type_vocab_size)
    if entries:
        chunks = chunk_counts.shape[0]
        _zero[min(1024, -(-chunk_counts.size // _THREADS)), _THREADS, stream](
            chunk_counts.reshape(-1)
        )
        _rank_in_chunk[chunks, _CHUNK, stream](*ids, ranks, chunk_counts)
        _chunk_offsets[-(-rows // _THREADS), _THREADS, stream](chunk_counts, row_counts)
        _exclusive_scan[1, _SCAN_THREADS, stream](row_counts, row_starts)
        _place[-(-entries // _THREADS), _THREADS, stream](
            *ids, ranks, chunk_counts, row_starts, order
        )
    else:  # no tokens: every row is empty
        for array in (row_counts, row_starts):
            _zero[1, _THREADS, stream](array)
    return order, row_starts, row_counts


def embed_backward(
    tables: DeviceTables,
    grad_output,
    input_ids,
    token_type_ids=None,
    position_ids=None,
    past_length: int = 0,
    padding_idx=None,
    *,
    out=None,
    accumulate_into=None,
    order: str = "cpu",
    check: bool = True,
    stream=0,
) -> DeviceGradients:
    """``embed_backward`` on the device (validate with :func:`prepare`, then run).

    ``order`` as :func:`fused_backward`: "cpu" (the default, bit-identical to the
    CPU) or "tree" (deterministic for any launch shape); checked before the ids.
    """
    order = check_order(order)
    batch = prepare(
        tables, input_ids, token_type_ids, position_ids, past_length, check=check, stream=stream
    )
    return fused_backward(
        tables,
        batch,
        grad_output,
        padding_idx,
        out=out,
        accumulate_into=accumulate_into,
        order=order,
        stream=stream,
    )
