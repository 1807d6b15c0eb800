"""The table dtypes the kernels take, in one place: the tables, the loader and validation read it.

float32 and float64 are computed in their own precision. The 16-bit formats,
float16 and ``ml_dtypes.bfloat16`` (the numpy bfloat16 of JAX, TensorFlow and
the ONNX tools), are storage formats: every method widens them to float32,
accumulates there and rounds once to the output dtype
(:mod:`bert_embedding_kernels.methods.fused.halfbits`).
"""

from __future__ import annotations

import ml_dtypes
import numpy as np

BFLOAT16 = np.dtype(ml_dtypes.bfloat16)
FLOAT16 = np.dtype(np.float16)
FLOAT32 = np.dtype(np.float32)
FLOAT64 = np.dtype(np.float64)

HALF_DTYPES = (FLOAT16, BFLOAT16)
FLOAT_DTYPES = (FLOAT32, FLOAT64, *HALF_DTYPES)
NAMES = ", ".join(d.name for d in FLOAT_DTYPES)  # for messages


def is_half(dtype: np.dtype) -> bool:
    """Whether a table dtype (one of FLOAT_DTYPES) is a 16-bit format: the only 2-byte ones.

    By size, not by comparing dtypes: this runs on every call, where each dtype
    comparison costs a fraction of a microsecond.
    """
    return dtype.itemsize == 2


def accumulator(dtype) -> np.dtype:
    """The dtype a method adds in: float32 for the 16-bit formats, else the dtype itself."""
    dtype = np.dtype(dtype)
    return FLOAT32 if is_half(dtype) else dtype


def output_dtypes(dtype) -> tuple[np.dtype, ...]:
    """The output dtypes ``embed(out_dtype=...)`` offers for tables of ``dtype``."""
    dtype = np.dtype(dtype)
    return (dtype, FLOAT32) if is_half(dtype) else (dtype,)


def float_dtype(value) -> np.dtype | None:
    """``value`` as one of :data:`FLOAT_DTYPES`, or None where it names none of them;
    "bfloat16" is understood by name.

    Test the result with ``is None`` before comparing it: numpy compares a dtype equal
    to None when it is float64 (``np.dtype(None)``), so ``None in (float64,)`` is True.
    """
    try:
        dtype = BFLOAT16 if str(value) == "bfloat16" else np.dtype(value)
    except (TypeError, ValueError, SyntaxError):  # numpy's parser raises each, by input
        return None
    return dtype if dtype in FLOAT_DTYPES else None


def parse(value, name: str = "dtype") -> np.dtype:
    """``value`` as one of :data:`FLOAT_DTYPES`, else a TypeError naming ``name``."""
    dtype = float_dtype(value)
    if dtype is None:
        raise TypeError(f"{name} is {value!r}; it must be one of {NAMES}.")
    return dtype
