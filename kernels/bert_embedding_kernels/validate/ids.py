"""The ids' own checks: integers, in range (one compiled pass), and the defaults.

Every id reaches a kernel only after :func:`check_range` (or RoBERTa's numbering pass,
:mod:`.positions`) has seen it inside its table: a gather would otherwise read foreign
memory.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from .._arrays import as_numpy, is_torch_tensor
from .._jit import serial_kernel
from .batch import KERNEL_ID_DTYPES


def as_ids(name: str, value) -> np.ndarray:
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
        fix = f"{name}.long()" if is_torch_tensor(value) else f"np.asarray({name}).astype(np.int64)"
        shown = value.dtype if is_torch_tensor(value) else array.dtype
        raise TypeError(
            f"{name} has dtype {shown}; ids must be integers (bool is not accepted). "
            f"Convert them with {fix}."
        )
    if not array.dtype.isnative:
        array = array.astype(array.dtype.newbyteorder("="))
    return array


@serial_kernel
def first_out_of_range(ids, size):
    """Flat index of the first id outside [0, size), or -1: one pass, no temporaries."""
    rows, columns = ids.shape
    for row in range(rows):
        for column in range(columns):
            value = ids[row, column]
            if value < 0 or value >= size:
                return row * columns + column
    return -1


def check_range(name: str, ids: np.ndarray, size: int, size_name: str) -> None:
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
        if first_out_of_range(ids.reshape(-1, ids.shape[-1]), size) < 0:
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


def check_past_length(past_length) -> int:
    if isinstance(past_length, bool) or not isinstance(past_length, (int, np.integer)):
        raise TypeError(
            f"past_length is {type(past_length).__name__}; it must be an int >= 0 "
            "(the number of tokens already processed)."
        )
    if past_length < 0:
        raise ValueError(f"past_length is {past_length}; it must be >= 0.")
    return int(past_length)


@lru_cache(maxsize=64)
def default_token_type_ids(seq: int, dtype: np.dtype) -> np.ndarray:
    # Read-only and cached: a small call should not pay an allocation for zeros.
    zeros = np.zeros((1, seq), dtype=dtype)
    zeros.flags.writeable = False
    return zeros


@lru_cache(maxsize=64)
def default_position_ids(first: int, seq: int, dtype: np.dtype) -> np.ndarray:
    positions = np.arange(first, first + seq, dtype=dtype)[None, :]
    positions.flags.writeable = False
    return positions


def given_position_ids(value, input_ids: np.ndarray) -> np.ndarray:
    batch, seq = input_ids.shape
    position_ids = as_ids("position_ids", value)
    # A dict keeps the order and drops (1, seq) twice when batch is 1.
    allowed = list(dict.fromkeys([(seq,), (1, seq), (batch, seq)]))
    if position_ids.shape not in allowed:
        listed = ", ".join(map(str, allowed[:-1])) + f" or {allowed[-1]}"
        raise ValueError(
            f"position_ids has shape {position_ids.shape}; with input_ids of shape "
            f"{input_ids.shape} it must be {listed}."
        )
    return position_ids
