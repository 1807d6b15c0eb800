"""Numpy fancy indexing: ``token[ids] + segment[tt] + position[pos]``, and ``np.add.at`` back."""

from __future__ import annotations

import numpy as np

from ..gradients import EmbeddingGradients, zeros_like_tables
from ..tables import EmbeddingTables
from ..validate import Batch, flat_ids


def gather_sum(tables: EmbeddingTables, batch: Batch, out: np.ndarray) -> np.ndarray:
    """Three gathers, summed as ``(token + segment) + position`` into ``out``.

    ``segment[tt]`` and ``position[pos]`` may have a first axis of 1; numpy
    broadcasts them over the batch. The token gather allocates one temporary
    of the output's size: this is the plain numpy way users write it.
    """
    np.add(tables.token[batch.input_ids], tables.segment[batch.token_type_ids], out=out)
    np.add(out, tables.position[batch.position_ids], out=out)
    return out


def gather_backward(
    tables: EmbeddingTables, batch: Batch, grad: np.ndarray, padding_idx: int | None
) -> EmbeddingGradients:
    """``np.add.at`` per table: numpy's unbuffered scatter-add, in token order."""
    grads = zeros_like_tables(tables)
    flat = grad.reshape(batch.num_tokens, tables.hidden_size)
    for table_grad, ids in zip(grads, flat_ids(batch), strict=True):
        np.add.at(table_grad, ids, flat)
    if padding_idx is not None:
        grads.token[padding_idx] = 0
    return grads
