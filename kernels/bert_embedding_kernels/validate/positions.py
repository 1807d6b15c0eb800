"""Positions numbered after the padding (RoBERTa's rule), in the ids' range check.

Run by :func:`bert_embedding_kernels.validate.prepare` for tables whose rule numbers
after the padding (``tables.rule.padding``, :mod:`bert_embedding_kernels.position_rules`)
when no ``position_ids`` are given.
"""

from __future__ import annotations

import numpy as np

from .._jit import serial_kernel
from ..tables import EmbeddingTables
from .batch import KERNEL_ID_DTYPES, kernel_ids
from .ids import check_range, first_out_of_range, out_of_range_error


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
    range-checked first, then converted); :func:`check_positions_after_padding`
    range-checks the positions.

    A ``past_length`` at or past ``max_positions`` puts every non-padding token past
    the table; those tokens are numbered from ``max_positions`` instead, which keeps
    the same tokens out of range and every number within int64 (``pad + past +
    count`` wrapped above 2**63 - 1, and a past_length of 2**64 failed to convert to
    the kernel's argument: numba's OverflowError or TypingError, naming nothing).

    Raises
    ------
    IndexError
        An id outside the token table, as the range check of any other call says it.
    """
    positions = np.empty(input_ids.shape, np.int64)
    if input_ids.dtype not in KERNEL_ID_DTYPES:
        check_range("input_ids", input_ids, tables.vocab_size, "vocab_size")
    ids = kernel_ids(input_ids)
    start = _numbered_from(tables, past_length)
    if (
        ids.size
        and _number_after_padding(ids, tables.vocab_size, tables.padding_idx, start, positions) >= 0
    ):
        check_range("input_ids", input_ids, tables.vocab_size, "vocab_size")  # raises
    return positions


def _numbered_from(tables: EmbeddingTables, past_length: int) -> int:
    """The ``past_length`` the kernel numbers from: at most ``max_positions`` (docstring above)."""
    return min(past_length, tables.max_positions)


def check_positions_after_padding(
    positions: np.ndarray, tables: EmbeddingTables, past_length: int
) -> None:
    """Raise BERT's IndexError for the first of RoBERTa's positions past the position table,
    naming ``past_length`` and ``padding_idx`` (the caller gave no position_ids) and the
    position's true value (the kernel's may be numbered from less, :func:`_numbered_from`).

    A no-op where the rule's largest position, ``pad + past + seq``, is in the table.
    """
    seq = positions.shape[1]
    if tables.padding_idx + past_length + seq < tables.max_positions:
        return
    flat = first_out_of_range(positions, tables.max_positions)
    if flat < 0:
        return
    where = divmod(int(flat), seq)
    value = int(positions[where]) + past_length - _numbered_from(tables, past_length)
    origin = (
        f"; default, past_length={past_length}, position_rule={tables.position_rule!r} from "
        f"padding_idx={tables.padding_idx}"
    )
    raise out_of_range_error(
        "position_ids", where, value, tables.max_positions, "max_positions", origin
    )
