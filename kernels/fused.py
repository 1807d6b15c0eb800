"""The fused gather-and-sum: one compiled pass that reads three rows and writes one.

The public entry point is :func:`fused_sum`; the ``@njit`` kernel behind it
takes typed arrays only and allocates nothing (see DESIGN.md's conventions).
"""

from __future__ import annotations

import numpy as np
from numba import prange

from ._jit import parallel_kernel
from .tables import EmbeddingTables
from .validate import KERNEL_ID_DTYPES, Batch


@parallel_kernel
def _sum_rows(token, segment, position, input_ids, token_type_ids, position_ids, out):
    """out[b * seq + s] = (token[i] + segment[j]) + position[k] for every token.

    ``token_type_ids`` / ``position_ids`` have a first axis of 1 (shared by the
    batch) or ``batch``. ``prange`` hands each thread one contiguous block of
    tokens; every iteration writes its own output row, so there is no race.
    """
    batch, seq = input_ids.shape
    hidden = out.shape[1]
    shared_types = token_type_ids.shape[0] == 1
    shared_positions = position_ids.shape[0] == 1
    for t in prange(batch * seq):
        b = t // seq
        s = t - b * seq
        i = input_ids[b, s]
        j = token_type_ids[0 if shared_types else b, s]
        k = position_ids[0 if shared_positions else b, s]
        for h in range(hidden):
            out[t, h] = token[i, h] + segment[j, h] + position[k, h]


def _kernel_ids(ids: np.ndarray) -> np.ndarray:
    # int32/int64 go to the kernel untouched; other integer dtypes (already
    # range-checked, so nothing can wrap) are converted once.
    return ids if ids.dtype in KERNEL_ID_DTYPES else ids.astype(np.int64)


def fused_sum(tables: EmbeddingTables, batch: Batch, out: np.ndarray) -> np.ndarray:
    """Compute the summed embeddings of ``batch`` into ``out`` with the numba kernel."""
    if batch.num_tokens:
        _sum_rows(
            tables.token,
            tables.segment,
            tables.position,
            _kernel_ids(batch.input_ids),
            _kernel_ids(batch.token_type_ids),
            _kernel_ids(batch.position_ids),
            out.reshape(batch.num_tokens, tables.hidden_size),
        )
    return out
