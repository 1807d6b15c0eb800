"""Calls whose output starts as NaN, so an element a method never writes always fails.

Methods run back to back on the same inputs, and ``np.empty`` often returns the
buffer the previous call just freed, which already holds the right answer: a
fused kernel that skipped the last hidden element once passed 38 of 44 fused
equivalence cases that way (hidden=1 included, where it writes nothing).

- ``out=`` arrays are filled with NaN before the call.
- Allocating calls: right before the call, NaN-filled buffers of exactly the
  sizes the call will allocate are made and freed, through the same allocator
  the call uses. Those (numpy's small-block cache, glibc's bins, the package's
  output pool for large outputs) hand a freed block of a size back to the next
  request of that size, so the call gets NaN instead of a previous answer; a
  block mapped afresh holds zeros, which the random tables never sum to either.

:func:`embed` and :func:`embed_backward` take exactly the arguments of
``bert_embedding_kernels.embed`` / ``bert_embedding_kernels.embed_backward``.
"""

from __future__ import annotations

import numpy as np

import bert_embedding_kernels as bek


def fill_nan(out: np.ndarray) -> np.ndarray:
    out[...] = np.nan
    return out


def nan_array(shape, dtype) -> np.ndarray:
    return np.full(shape, np.nan, dtype)


def poison_allocations(*requests, pooled: bool = False) -> None:
    """Fill and free a NaN buffer per ``(shape, dtype)``, in the order the call allocates.

    CPython frees a list's items from the last to the first, and the allocators
    reuse the most recently freed block first, so the first request's buffer is
    the first one handed out again. ``pooled``: the call allocates through
    ``bert_embedding_kernels.pool.OUTPUTS``, which hands large buffers back on purpose (the
    last one returned first); the poison is taken from and returned to it too.
    """
    pool = getattr(getattr(bek, "pool", None), "OUTPUTS", None) if pooled else None
    allocate = np.empty if pool is None else pool.empty
    buffers = [fill_nan(allocate(shape, dtype)) for shape, dtype in requests]
    del buffers


def embed(tables, input_ids, *args, out=None, layer_norm=False, return_sum=False, **options):
    """``bert_embedding_kernels.embed`` with its output poisoned first (``out`` or the
    allocation)."""
    if isinstance(out, np.ndarray) and out.flags.writeable and out.dtype.kind == "f":
        fill_nan(out)
    shape, dtype = _output_shape(tables, input_ids), options.get("out_dtype") or tables.dtype
    if shape is not None and np.dtype(dtype).kind == "f":
        allocated = (return_sum is True) + (out is None)
        poison_allocations(*[(shape, dtype)] * allocated, pooled=True)
    return bek.embed(
        tables,
        input_ids,
        *args,
        out=out,
        layer_norm=layer_norm,
        return_sum=return_sum,
        **options,
    )


def _output_shape(tables, input_ids):
    """The shape of the output a valid call returns; None where the ids are not valid."""
    try:
        ids_shape = np.shape(input_ids)
        hidden = tables.hidden_size
    except (ValueError, TypeError, AttributeError):  # ragged lists, tables that are not
        return None
    return (*ids_shape, hidden) if len(ids_shape) == 2 else None


def embed_backward(tables, grad_output, input_ids, *args, **options):
    """``bert_embedding_kernels.embed_backward`` with the gradients' allocations poisoned first.

    The one-hot paths allocate their gradients with ``np.empty`` (``onehot`` one
    per table, ``concat`` the three stacked); the others start from zeros.
    """
    poison_allocations(*gradient_allocations(tables))
    return bek.embed_backward(tables, grad_output, input_ids, *args, **options)


def gradient_allocations(tables) -> list:
    """The ``(shape, dtype)`` of what a backward call allocates: stacked, then per table."""
    hidden = tables.hidden_size
    rows = [table.shape[0] for table in (tables.token, tables.segment, tables.position)]
    requests = [((sum(rows), hidden), tables.dtype)]
    return requests + [((r, hidden), tables.dtype) for r in rows]
