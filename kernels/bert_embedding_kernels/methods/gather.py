"""Numpy fancy indexing: ``token[ids] + segment[tt] + position[pos]``, and ``np.add.at`` back."""

from __future__ import annotations

import numpy as np

from ..dtypes import is_half
from ..gradients import EmbeddingGradients, zeros_like_tables
from ..tables import EmbeddingTables
from ..validate.batch import Batch, flat_ids


def gather_sum(tables: EmbeddingTables, batch: Batch, out: np.ndarray) -> np.ndarray:
    """Three gathers, summed as ``(token + segment) + position`` into ``out``.

    ``segment[tt]`` and ``position[pos]`` may have a first axis of 1; numpy
    broadcasts them over the batch. The token gather allocates one temporary
    of the output's size: this is the plain numpy way users write it.

    16-bit tables are widened to float32 and added there; the float32 sum is
    rounded once into ``out`` (unless ``out`` is float32).
    """
    token = tables.token[batch.input_ids]
    segment = tables.segment[batch.token_type_ids]
    position = tables.position[batch.position_ids]
    if not is_half(tables.dtype):
        np.add(token, segment, out=out)
        return np.add(out, position, out=out)
    wide = np.float32
    total = np.add(token.astype(wide), segment.astype(wide), out=_float32(out, token.shape))
    np.add(total, position.astype(wide), out=total)
    if total is not out:
        np.copyto(out, total, casting="unsafe")  # round to nearest even, once
    return out


def _float32(out: np.ndarray, shape) -> np.ndarray:
    # Add straight into a float32 output; otherwise into a float32 temporary.
    return out if out.dtype == np.float32 else np.empty(shape, np.float32)


def gather_backward(
    tables: EmbeddingTables, batch: Batch, grad: np.ndarray, padding_idx: int | None
) -> EmbeddingGradients:
    """``np.add.at`` per table: numpy's unbuffered scatter-add, in token order."""
    grads = zeros_like_tables(tables, grad.dtype)
    flat = grad.reshape(batch.num_tokens, tables.hidden_size)
    for table_grad, ids in zip(grads, flat_ids(batch), strict=True):
        np.add.at(table_grad, ids, flat)
    if padding_idx is not None:
        grads.token[padding_idx] = 0
    return grads
