"""The ids of a call checked and in normal form (:class:`.batch.Batch`): the one pass
that :func:`bert_embedding_kernels.validate.calls.check_forward` and ``check_backward``
run before anything else reads the ids."""

from __future__ import annotations

import numpy as np

from ..tables import EmbeddingTables
from .batch import KERNEL_ID_DTYPES, Batch
from .ids import (
    as_ids,
    check_past_length,
    check_range,
    default_position_ids,
    default_token_type_ids,
    given_position_ids,
)
from .options import check_tables
from .outputs import check_out, table_inputs
from .positions import check_positions_after_padding, positions_after_padding


def prepare(
    tables: EmbeddingTables,
    input_ids,
    token_type_ids=None,
    position_ids=None,
    past_length=0,
    out=None,
    out_dtype: np.dtype | None = None,
) -> Batch:
    """Validate and normalise the arguments of :func:`bert_embedding_kernels.embed`.

    Raises
    ------
    TypeError
        ``tables`` is not an EmbeddingTables, ids are not integers, ``out`` has
        the wrong dtype, ``past_length`` is not an int.
    ValueError
        Shapes that do not fit (named in the message), negative ``past_length``,
        an ``out`` that is read-only, non-contiguous or overlaps an input.
    IndexError
        An id outside its table, naming the array, the (batch, position) of the
        first bad id, its value and the valid range.
    """
    check_tables(tables)
    past_length = check_past_length(past_length)
    input_ids = _input_ids(input_ids)
    batch, seq = input_ids.shape
    # Defaults share input_ids' dtype where the kernel takes it as is, so that a
    # call with defaults compiles no extra kernel specialisation.
    default_dtype = input_ids.dtype if input_ids.dtype in KERNEL_ID_DTYPES else np.dtype(np.int64)
    given = [("input_ids", input_ids)]  # caller's arrays: range-checked, kept apart from out
    token_type_ids = _token_type_ids(tables, token_type_ids, input_ids, default_dtype, given)
    position_ids, numbered = _position_ids(
        tables, position_ids, input_ids, past_length, default_dtype, given
    )
    sizes = {
        "input_ids": (tables.vocab_size, "vocab_size"),
        "token_type_ids": (tables.type_vocab_size, "type_vocab_size"),
        "position_ids": (tables.max_positions, "max_positions"),
    }
    for name, ids in given:
        if not (numbered and name == "input_ids"):  # the numbering pass checked them
            check_range(name, ids, *sizes[name])
    if numbered:  # range-checked after the ids the caller gave, as given ones are
        check_positions_after_padding(position_ids, tables, past_length)
    if position_ids.ndim == 1:
        position_ids = position_ids[None, :]
    if out is not None:
        expected = tables.dtype if out_dtype is None else out_dtype
        inputs = [*table_inputs(tables), *given]
        out = check_out(out, (batch, seq, tables.hidden_size), expected, inputs)
    return Batch(input_ids, token_type_ids, position_ids, out)


def _input_ids(value) -> np.ndarray:
    input_ids = as_ids("input_ids", value)
    if input_ids.ndim != 2:
        # The hint fits a single sequence only; for 0-D or 3-D ids it cannot help.
        hint = " Use input_ids[None, :] for a single sequence." if input_ids.ndim == 1 else ""
        raise ValueError(
            f"input_ids has shape {input_ids.shape}; it must be 2-D (batch, seq).{hint}"
        )
    return input_ids


def _token_type_ids(tables, value, input_ids, default_dtype, given: list) -> np.ndarray:
    """The token types (zeros by default: always valid); given ones join ``given``."""
    if value is None:
        return default_token_type_ids(input_ids.shape[1], default_dtype)
    if not tables.has_segment:
        raise ValueError(
            f"token_type_ids were given, but the tables ({tables.family or 'these'}) have no "
            "segment (token type) table; omit token_type_ids."
        )
    token_type_ids = as_ids("token_type_ids", value)
    if token_type_ids.shape != input_ids.shape:
        raise ValueError(
            f"token_type_ids has shape {token_type_ids.shape}; it must match input_ids' "
            f"shape {input_ids.shape}."
        )
    given.append(("token_type_ids", token_type_ids))
    return token_type_ids


def _position_ids(tables, value, input_ids, past_length, default_dtype, given: list):
    """The positions and whether they were numbered from the ids (checking the ids on the
    way: a rule with padding); given ones join ``given``. Default positions are numbered
    by the tables' rule, :mod:`bert_embedding_kernels.position_rules`."""
    seq = input_ids.shape[1]
    if value is not None and not tables.has_position:
        raise ValueError(
            f"position_ids were given, but the tables ({tables.family or 'these'}) have no "
            "position table; omit position_ids."
        )
    if not tables.has_position:
        return default_token_type_ids(seq, default_dtype), False  # row 0, the zero row
    rule = tables.rule
    if value is None and rule.padding:
        return positions_after_padding(input_ids, tables, past_length), True
    if value is None:
        first = past_length + rule.offset
        if first + seq > tables.max_positions:
            raise IndexError(
                f"position_ids ({rule.origin(past_length)}) run to position "
                f"{first + seq - 1}, out of range: valid ids satisfy "
                f"0 <= id < {tables.max_positions} (max_positions)."
            )
        return default_position_ids(first, seq, default_dtype), False
    position_ids = given_position_ids(value, input_ids)
    given.append(("position_ids", position_ids))
    return position_ids, False
