"""Every argument check, forward and backward, in one place, run before any dispatch.

:func:`bert_embedding_kernels.embed` and :func:`bert_embedding_kernels.embed_backward` call
these before they look a method up, so a bad input gets the same exception and message whichever
method was asked for, and no kernel ever sees an id outside its table (a gather
would otherwise read foreign memory).
"""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

import numpy as np

from .._arrays import as_numpy
from .._jit import serial_kernel
from ..dtypes import float_dtype, output_dtypes
from ..tables import EmbeddingTables

# Id dtypes the compiled kernel takes as they are; any other integer dtype is
# converted once (after the range check, so the conversion cannot wrap).
KERNEL_ID_DTYPES = (np.dtype(np.int32), np.dtype(np.int64))


class Batch(NamedTuple):
    """Validated ids in one normal form shared by all methods.

    ``token_type_ids`` and ``position_ids`` are 2-D with a first axis of 1
    (shared by every sequence of the batch) or ``batch``.
    """

    input_ids: np.ndarray  # (batch, seq)
    token_type_ids: np.ndarray  # (1 | batch, seq)
    position_ids: np.ndarray  # (1 | batch, seq)
    out: np.ndarray | None  # (batch, seq, hidden) or None to allocate

    @property
    def shape(self) -> tuple[int, int]:
        return self.input_ids.shape

    @property
    def num_tokens(self) -> int:
        return self.input_ids.size


def kernel_ids(ids: np.ndarray) -> np.ndarray:
    """Ids as a compiled kernel takes them: int32/int64 untouched, other dtypes once to int64.

    Only for ids :func:`prepare` has range-checked, so the conversion cannot wrap.
    """
    return ids if ids.dtype in KERNEL_ID_DTYPES else ids.astype(np.int64)


def flat_ids(batch: Batch) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The three id arrays as flat (tokens,) vectors, broadcasting shared rows."""
    return tuple(
        np.broadcast_to(ids, batch.shape).reshape(-1)
        for ids in (batch.input_ids, batch.token_type_ids, batch.position_ids)
    )


def check_method(method, known: tuple[str, ...], *, auto: bool) -> str:
    """``method`` if it names a registered implementation (or ``"auto"`` where allowed)."""
    if isinstance(method, str) and (method in known or (auto and method == "auto")):
        return method
    choices = f"{known} or 'auto'" if auto else f"{known}"
    raise ValueError(f"method is {method!r}; it must be one of {choices}.")


def check_tables(tables) -> None:
    if not isinstance(tables, EmbeddingTables):
        raise TypeError(
            f"tables is {type(tables).__name__}; pass a bert_embedding_kernels.EmbeddingTables "
            "(EmbeddingTables(token=..., segment=..., position=...))."
        )


def check_out_dtype(tables: EmbeddingTables, out_dtype) -> np.dtype:
    """The output dtype: the tables' by default; float32 may be asked of 16-bit tables."""
    check_tables(tables)
    if out_dtype is None:
        return tables.dtype
    return chosen_dtype(
        "out_dtype",
        out_dtype,
        tables,
        " (16-bit tables may return float32, the sum before rounding)",
    )


def chosen_dtype(name: str, value, tables: EmbeddingTables, note: str = "") -> np.dtype:
    """``value`` (not None) as one of the dtypes tables of this dtype may return, else a
    TypeError naming ``name``: ``out_dtype`` and ``grad_dtype`` allow the same ones."""
    allowed = output_dtypes(tables.dtype)
    dtype = float_dtype(value)  # None for no float dtype at all ("int8", object, "nonsense")
    # None first: `None in (float64,)` is True (numpy's dtype == None is float64's), and an
    # int8 out_dtype once returned float64 so.
    if dtype is None or dtype not in allowed:
        names = " or ".join(d.name for d in allowed)
        shown = getattr(value, "__name__", value)
        raise TypeError(
            f"{name} is {shown!r}; with {tables.dtype} tables it must be {names}{note}."
        )
    return dtype


@lru_cache(maxsize=64)
def _takes(dtypes: tuple[str, ...], dtype: np.dtype) -> bool:
    # Cached: numpy builds a dtype's name anew on each access (about 2 us of a small call).
    return dtype.name in dtypes


def check_method_dtype(method: str, dtypes: tuple[str, ...], tables: EmbeddingTables) -> None:
    """The method takes tables of this dtype (its registry record lists the ones it does)."""
    if not _takes(dtypes, tables.dtype):
        raise TypeError(
            f"method {method!r} does not take {tables.dtype} tables; it takes "
            f"{', '.join(dtypes)}. Convert the tables or choose another method."
        )


def check_memory_budget(memory_budget) -> int:
    if isinstance(memory_budget, bool) or not isinstance(memory_budget, (int, np.integer)):
        raise TypeError(f"memory_budget is {type(memory_budget).__name__}; it must be an int.")
    return int(memory_budget)


def check_norm_options(tables: EmbeddingTables, layer_norm, return_sum) -> None:
    """``layer_norm`` and ``return_sum`` are bools, and LayerNorm has its parameters."""
    for name, value in (("layer_norm", layer_norm), ("return_sum", return_sum)):
        if not isinstance(value, (bool, np.bool_)):
            raise TypeError(f"{name} is {type(value).__name__}; it must be True or False.")
    if layer_norm and not tables.has_layer_norm:
        raise ValueError(
            "layer_norm=True needs the LayerNorm parameters, but the tables have no "
            "norm_weight and norm_bias; build them with EmbeddingTables(..., norm_weight=..., "
            "norm_bias=..., norm_eps=...)."
        )
    if return_sum and not layer_norm:
        raise ValueError("return_sum=True needs layer_norm=True: without it the result is the sum.")


def _as_ids(name: str, value) -> np.ndarray:
    """Return ``value`` as an integer array without copying arrays that already are."""
    if isinstance(value, np.ma.MaskedArray):
        # min() and max() skip masked entries, but every method reads them.
        raise TypeError(
            f"{name} is a masked array; masked ids would be read anyway. "
            f"Fill them first, e.g. {name}.filled(0)."
        )
    if type(value) is np.ndarray:
        array = value
    else:
        try:
            array = as_numpy(name, value)
        except ValueError as error:  # ragged nested lists
            raise ValueError(f"{name} is not a rectangular array of ids: {error}") from None
    if array.size == 0 and array.dtype == np.float64 and not isinstance(value, np.ndarray):
        array = array.astype(np.int64)  # np.asarray([]) is float64; an empty list is no float
    if array.dtype.kind not in "iu":
        raise TypeError(
            f"{name} has dtype {array.dtype}; ids must be integers (bool is not accepted). "
            f"Convert them with np.asarray({name}).astype(np.int64)."
        )
    if not array.dtype.isnative:
        array = array.astype(array.dtype.newbyteorder("="))
    return array


@serial_kernel
def _first_out_of_range(ids, size):
    """Flat index of the first id outside [0, size), or -1: one pass, no temporaries."""
    rows, columns = ids.shape
    for row in range(rows):
        for column in range(columns):
            value = ids[row, column]
            if value < 0 or value >= size:
                return row * columns + column
    return -1


def _check_range(name: str, ids: np.ndarray, size: int, size_name: str) -> None:
    """Raise IndexError naming the first id outside ``[0, size)``.

    int32/int64 ids are scanned once by a compiled loop (a small call's budget
    is microseconds; numpy's min and max cost two passes and about 2 us each).
    Other dtypes use ``min``/``max``, which compare in the array's own dtype
    against a Python int, so huge unsigned values and the int64 minimum cannot
    overflow the check.
    """
    if ids.size == 0:
        return
    if ids.dtype in KERNEL_ID_DTYPES:
        if _first_out_of_range(ids.reshape(-1, ids.shape[-1]), size) < 0:
            return
    elif ids.min() >= 0 and ids.max() < size:
        return
    bad = (ids < 0) | (ids >= size)
    where = np.unravel_index(int(np.argmax(bad)), ids.shape)
    raise out_of_range_error(name, where, ids[where], size, size_name)


def out_of_range_error(name: str, where, value, size: int, size_name: str, origin: str = ""):
    """The IndexError for the id ``value`` at ``name[where]``; ``origin`` says where
    ids the caller did not give came from."""
    if len(where) == 2:
        location = f"{name}[{where[0]}, {where[1]}] (batch {where[0]}, position {where[1]}{origin})"
    else:
        location = f"{name}[{where[0]}] (position {where[0]}{origin})"
    return IndexError(
        f"{location} is {value}, out of range: valid ids satisfy 0 <= id < {size} ({size_name})."
    )


def _check_past_length(past_length) -> int:
    if isinstance(past_length, bool) or not isinstance(past_length, (int, np.integer)):
        raise TypeError(
            f"past_length is {type(past_length).__name__}; it must be an int >= 0 "
            "(the number of tokens already processed)."
        )
    if past_length < 0:
        raise ValueError(f"past_length is {past_length}; it must be >= 0.")
    return int(past_length)


@lru_cache(maxsize=64)
def _default_token_type_ids(seq: int, dtype: np.dtype) -> np.ndarray:
    # Read-only and cached: a small call should not pay an allocation for zeros.
    zeros = np.zeros((1, seq), dtype=dtype)
    zeros.flags.writeable = False
    return zeros


@lru_cache(maxsize=64)
def _default_position_ids(past_length: int, seq: int, dtype: np.dtype) -> np.ndarray:
    positions = np.arange(past_length, past_length + seq, dtype=dtype)[None, :]
    positions.flags.writeable = False
    return positions


def _position_ids(value, input_ids: np.ndarray) -> np.ndarray:
    batch, seq = input_ids.shape
    position_ids = _as_ids("position_ids", value)
    # A dict keeps the order and drops (1, seq) twice when batch is 1.
    allowed = list(dict.fromkeys([(seq,), (1, seq), (batch, seq)]))
    if position_ids.shape not in allowed:
        listed = ", ".join(map(str, allowed[:-1])) + f" or {allowed[-1]}"
        raise ValueError(
            f"position_ids has shape {position_ids.shape}; with input_ids of shape "
            f"{input_ids.shape} it must be {listed}."
        )
    return position_ids


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
    past_length = _check_past_length(past_length)
    input_ids = _as_ids("input_ids", input_ids)
    if input_ids.ndim != 2:
        # The hint fits a single sequence only; for 0-D or 3-D ids it cannot help.
        hint = " Use input_ids[None, :] for a single sequence." if input_ids.ndim == 1 else ""
        raise ValueError(
            f"input_ids has shape {input_ids.shape}; it must be 2-D (batch, seq).{hint}"
        )
    batch, seq = input_ids.shape
    # Defaults share input_ids' dtype where the kernel takes it as is, so that a
    # call with defaults compiles no extra kernel specialisation.
    default_dtype = input_ids.dtype if input_ids.dtype in KERNEL_ID_DTYPES else np.dtype(np.int64)
    given = [("input_ids", input_ids)]  # caller's arrays: range-checked, kept apart from out
    range_checked = set()  # of those, the ones already checked on the way
    numbered = False  # positions numbered by RoBERTa's rule, from the ids

    if token_type_ids is None:
        token_type_ids = _default_token_type_ids(seq, default_dtype)  # zeros: always valid
    else:
        if not tables.has_segment:
            raise ValueError(
                f"token_type_ids were given, but the tables ({tables.family or 'these'}) have no "
                "segment (token type) table; omit token_type_ids."
            )
        token_type_ids = _as_ids("token_type_ids", token_type_ids)
        if token_type_ids.shape != input_ids.shape:
            raise ValueError(
                f"token_type_ids has shape {token_type_ids.shape}; it must match input_ids' "
                f"shape {input_ids.shape}."
            )
        given.append(("token_type_ids", token_type_ids))

    if position_ids is not None and not tables.has_position:
        raise ValueError(
            f"position_ids were given, but the tables ({tables.family or 'these'}) have no "
            "position table; omit position_ids."
        )
    if not tables.has_position:
        position_ids = _default_token_type_ids(seq, default_dtype)  # row 0, the zero row
    elif position_ids is None and tables.position_rule == "after_padding":
        position_ids = positions_after_padding(input_ids, tables, past_length)
        range_checked.add("input_ids")
        numbered = True  # range-checked after the ids the caller gave, as given ones are
    elif position_ids is None:
        if past_length + seq > tables.max_positions:
            raise IndexError(
                f"position_ids (default, past_length={past_length}) run to position "
                f"{past_length + seq - 1}, out of range: valid ids satisfy "
                f"0 <= id < {tables.max_positions} (max_positions)."
            )
        position_ids = _default_position_ids(past_length, seq, default_dtype)
    else:
        position_ids = _position_ids(position_ids, input_ids)
        given.append(("position_ids", position_ids))

    sizes = {
        "input_ids": (tables.vocab_size, "vocab_size"),
        "token_type_ids": (tables.type_vocab_size, "type_vocab_size"),
        "position_ids": (tables.max_positions, "max_positions"),
    }
    for name, ids in given:
        if name not in range_checked:
            _check_range(name, ids, *sizes[name])
    if numbered:
        check_positions_after_padding(position_ids, tables, past_length)
    if position_ids.ndim == 1:
        position_ids = position_ids[None, :]

    if out is not None:
        expected = tables.dtype if out_dtype is None else out_dtype
        inputs = [*table_inputs(tables), *given]
        out = check_out(out, (batch, seq, tables.hidden_size), expected, inputs)
    return Batch(input_ids, token_type_ids, position_ids, out)


# The backward pass's checks live beside these, in
# kernels/bert_embedding_kernels/validate/backward.py, those of out and attention_mask
# in outputs.py, RoBERTa's positions in positions.py.
from .backward import (  # noqa: E402
    check_accumulate_into,
    check_grad_dtype,
    check_grad_output,
    check_padding_idx,
)
from .outputs import check_attention_mask, check_out, refuse_overlap, table_inputs  # noqa: E402
from .positions import check_positions_after_padding, positions_after_padding  # noqa: E402

__all__ = [
    "KERNEL_ID_DTYPES",
    "Batch",
    "check_accumulate_into",
    "check_attention_mask",
    "check_grad_dtype",
    "check_grad_output",
    "check_memory_budget",
    "check_method",
    "check_method_dtype",
    "check_norm_options",
    "check_out_dtype",
    "check_padding_idx",
    "check_tables",
    "chosen_dtype",
    "flat_ids",
    "kernel_ids",
    "prepare",
    "refuse_overlap",
    "table_inputs",
]
