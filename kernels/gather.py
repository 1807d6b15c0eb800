"""Numpy fancy indexing: ``token[ids] + segment[tt] + position[pos]``."""

from __future__ import annotations

import numpy as np

from .tables import EmbeddingTables
from .validate import Batch


def gather_sum(tables: EmbeddingTables, batch: Batch, out: np.ndarray) -> np.ndarray:
    """Three gathers, summed as ``(token + segment) + position`` into ``out``.

    ``segment[tt]`` and ``position[pos]`` may have a first axis of 1; numpy
    broadcasts them over the batch. The token gather allocates one temporary
    of the output's size: this is the plain numpy way users write it.
    """
    np.add(tables.token[batch.input_ids], tables.segment[batch.token_type_ids], out=out)
    np.add(out, tables.position[batch.position_ids], out=out)
    return out
