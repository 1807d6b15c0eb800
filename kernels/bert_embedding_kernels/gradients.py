"""What every backward method returns, and the zeroed, cache-line-aligned arrays it starts from."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .pool import aligned_zeros
from .tables import EmbeddingTables

# Column blocks of the fused backward are whole cache lines, so that two threads
# never write into the same 64-byte line of a gradient row.
CACHE_LINE_BYTES = 64


class EmbeddingGradients(NamedTuple):
    """Gradients of the loss with respect to the three tables, shaped like them."""

    token: np.ndarray  # (vocab_size, hidden_size)
    segment: np.ndarray  # (type_vocab_size, hidden_size)
    position: np.ndarray  # (max_positions, hidden_size)


def zeros_like_tables(tables: EmbeddingTables, dtype: np.dtype) -> EmbeddingGradients:
    """Three aligned, lazily zeroed gradients of ``dtype``, shaped like the tables."""
    return EmbeddingGradients(
        *(
            aligned_zeros(table.shape, dtype)
            for table in (tables.token, tables.segment, tables.position)
        )
    )
