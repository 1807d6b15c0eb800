"""The call's options: the method's name, the tables, dtypes asked for, LayerNorm's flags."""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from ..dtypes import float_dtype, output_dtypes
from ..tables import EmbeddingTables


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
