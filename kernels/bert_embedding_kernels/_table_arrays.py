"""Checks of the arrays an ``EmbeddingTables`` is built from, and how they are held."""

from __future__ import annotations

import warnings

import numpy as np

from ._arrays import as_numpy
from .dtypes import FLOAT_DTYPES, NAMES
from .position_rules import rule_named


def as_table(name: str, value) -> np.ndarray:
    """Check one table and return a read-only, C-contiguous view (or copy) of it."""
    try:
        array = as_numpy(name, value)
    except ValueError as error:  # ragged nested lists
        raise ValueError(f"{name} is not a rectangular array: {error}") from None
    if array.dtype not in FLOAT_DTYPES:
        raise TypeError(
            f"{name} has dtype {array.dtype}; embedding tables must be one of {NAMES}. "
            f"Convert it with {name}.astype(np.float32)."
        )
    if array.ndim != 2:
        raise ValueError(
            f"{name} has shape {array.shape}; an embedding table must be 2-D (rows, hidden_size)."
        )
    if array.shape[0] < 1 or array.shape[1] < 1:
        raise ValueError(
            f"{name} has shape {array.shape}; a table needs at least one row and one column."
        )
    return read_only_c_order(array, name)


class CopiedTableWarning(UserWarning):
    """A table was not C-contiguous, so the tables hold a copy, not a live view of it."""


def read_only_c_order(array: np.ndarray, name: str | None = None) -> np.ndarray:
    # Copy once here (if needed) so every kernel can assume C order and contiguous rows.
    contiguous = np.ascontiguousarray(array)
    if name is not None and contiguous is not array and not np.shares_memory(contiguous, array):
        warnings.warn(
            f"{name} is not C-contiguous ({_layout(array)}): the tables hold a copy, so an "
            f"in-place update of the original (an optimizer step) will not be seen. Pass "
            f"np.ascontiguousarray({name}) to keep a copy knowingly, or a C-contiguous array.",
            CopiedTableWarning,
            stacklevel=4,
        )
    view = contiguous.view()
    view.flags.writeable = False
    return view


def _layout(array: np.ndarray) -> str:
    if array.flags.f_contiguous:
        return "Fortran order"
    return f"strides {array.strides}"


def check_rule(rule, padding_idx, has_position: bool, vocab_size: int, max_positions: int):
    """The rule named ``rule`` (:mod:`.position_rules`) and ``padding_idx``, checked against
    each other and the tables."""
    rule = rule_named(rule)
    if padding_idx is not None:
        if isinstance(padding_idx, bool) or not isinstance(padding_idx, (int, np.integer)):
            raise TypeError(f"padding_idx is {type(padding_idx).__name__}; it must be an int.")
        if not 0 <= padding_idx < vocab_size:
            raise ValueError(
                f"padding_idx is {padding_idx}; it must satisfy 0 <= padding_idx < {vocab_size} "
                "(vocab_size)."
            )
        padding_idx = int(padding_idx)
    rule.check_tables(padding_idx, has_position, max_positions)
    return rule, padding_idx


def as_norm_vector(name: str, value, dtype: np.dtype, hidden: int) -> np.ndarray:
    """Check a LayerNorm weight or bias: a float vector of the tables' dtype and width."""
    array = as_numpy(name, value)
    if array.dtype not in FLOAT_DTYPES or array.dtype != dtype:
        raise TypeError(
            f"{name} has dtype {array.dtype}; it must have the tables' dtype {dtype}. "
            f"Convert it with {name}.astype(np.{dtype})."
        )
    if array.shape != (hidden,):
        raise ValueError(
            f"{name} has shape {array.shape}; it must be (hidden_size,) = ({hidden},)."
        )
    return read_only_c_order(array, name)
