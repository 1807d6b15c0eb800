"""RoBERTa's position rule: positions numbered from the ids, in the ids' range check.

Run by :func:`bert_embedding_kernels.validate.prepare` for tables whose
``position_rule`` is ``"after_padding"`` when no ``position_ids`` are given.
"""

from __future__ import annotations

import numpy as np

from .._jit import serial_kernel
from ..tables import EmbeddingTables
from . import KERNEL_ID_DTYPES, _check_range, kernel_ids


@serial_kernel
def _number_after_padding(ids, size, padding_idx, past_length, positions):
    """RoBERTa's positions of ``ids`` into ``positions`` and the ids' range check, in one
    compiled pass: the flat index of the first id outside ``[0, size)`` (the positions
    then incomplete), or -1."""
    rows, columns = ids.shape
    for row in range(rows):
        count = past_length
        for column in range(columns):
            value = ids[row, column]
            if value < 0 or value >= size:
                return row * columns + column
            if value == padding_idx:
                positions[row, column] = padding_idx
            else:
                count += 1
                positions[row, column] = padding_idx + count
    return -1


def positions_after_padding(input_ids: np.ndarray, tables: EmbeddingTables, past_length: int):
    """RoBERTa's positions (transformers' ``create_position_ids_from_input_ids``), and the
    range check of ``input_ids``, from one pass over the ids.

    ``(cumsum(ids != pad) + past) * (ids != pad) + pad``: the non-padding tokens of a
    sequence are numbered ``pad + past + 1, pad + past + 2, ...`` in order, padding tokens
    get ``pad``. A new (batch, seq) int64 array. The pass over the ids is the one the
    range check of ``input_ids`` makes for BERT's layout too, so the rule reads the batch
    no more often than BERT's positions do (ids of other dtypes than int32/int64 are
    range-checked first, then converted). :func:`prepare` range-checks the positions
    only where the rule's largest, ``pad + past + seq``, may be past the table.

    Raises
    ------
    IndexError
        An id outside the token table, as the range check of any other call says it.
    """
    positions = np.empty(input_ids.shape, np.int64)
    if input_ids.dtype not in KERNEL_ID_DTYPES:
        _check_range("input_ids", input_ids, tables.vocab_size, "vocab_size")
    ids = kernel_ids(input_ids)
    if (
        ids.size
        and _number_after_padding(
            ids, tables.vocab_size, tables.padding_idx, past_length, positions
        )
        >= 0
    ):
        _check_range("input_ids", input_ids, tables.vocab_size, "vocab_size")  # raises
    return positions
