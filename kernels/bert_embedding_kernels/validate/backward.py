"""The backward pass's own argument checks: gradients in, gradients out.

Run by :func:`bert_embedding_kernels.embed_backward` after
:func:`bert_embedding_kernels.validate.prepare` has
checked the ids, before any method is looked up.
"""

from __future__ import annotations

import numpy as np

from .._arrays import as_numpy
from ..dtypes import accumulator, output_dtypes
from ..gradients import EmbeddingGradients
from ..tables import EmbeddingTables
from .options import chosen_dtype
from .outputs import refuse_overlap


def check_grad_output(grad_output, shape: tuple[int, int, int], dtype: np.dtype) -> np.ndarray:
    """``grad_output`` as a C-contiguous (batch, seq, hidden) array in which to accumulate.

    Its dtype must be the tables' ``dtype`` (or float32 for 16-bit tables); a
    16-bit gradient is widened to float32 (exactly), where the sums are made.
    """
    grad = as_numpy("grad_output", grad_output)
    if grad.dtype not in output_dtypes(dtype):
        names = " or ".join(d.name for d in output_dtypes(dtype))
        raise TypeError(
            f"grad_output has dtype {grad.dtype}; with {dtype} tables it must be {names}. "
            f"Convert it with grad_output.astype(np.{accumulator(dtype)})."
        )
    if grad.shape != shape:
        raise ValueError(
            f"grad_output has shape {grad.shape}; it must have shape {shape} "
            "(input_ids' (batch, seq) and the tables' hidden_size)."
        )
    # One copy for strided or Fortran-ordered input, so the kernels read rows.
    return np.ascontiguousarray(grad, dtype=accumulator(dtype))


def check_grad_dtype(tables: EmbeddingTables, grad_dtype) -> np.dtype:
    """The gradients' dtype: float32 for 16-bit tables by default, else the tables'."""
    if grad_dtype is None:
        return accumulator(tables.dtype)
    return chosen_dtype("grad_dtype", grad_dtype, tables)


def check_padding_idx(padding_idx, vocab_size: int) -> int | None:
    if padding_idx is None:
        return None
    if isinstance(padding_idx, bool) or not isinstance(padding_idx, (int, np.integer)):
        raise TypeError(
            f"padding_idx is {type(padding_idx).__name__}; it must be None or an int "
            f"in [0, {vocab_size}) (a row of the token table)."
        )
    if not 0 <= padding_idx < vocab_size:
        raise ValueError(
            f"padding_idx is {padding_idx}, out of range: it must satisfy "
            f"0 <= padding_idx < {vocab_size} (vocab_size)."
        )
    return int(padding_idx)


def check_accumulate_into(tables: EmbeddingTables, into, dtype: np.dtype, inputs) -> tuple:
    """Three writable, C-contiguous arrays shaped like the tables, of the accumulation dtype,
    sharing memory with none of ``inputs`` (``(name, array)`` pairs: what the call reads)
    nor with each other."""
    parts = tuple(into) if isinstance(into, (tuple, list)) else None
    if parts is None or len(parts) != 3:
        raise TypeError(
            f"accumulate_into is {type(into).__name__}; it must be an EmbeddingGradients "
            "(or a tuple) of three arrays: token, segment and position gradients."
        )
    checked = []
    for name, array, table in zip(
        EmbeddingGradients._fields,
        parts,
        (tables.token, tables.segment, tables.position),
        strict=True,
    ):
        label = f"accumulate_into.{name}"
        if not isinstance(array, np.ndarray):
            array = as_numpy(label, array)  # a torch .grad tensor: a view of its memory
        if array.dtype != dtype or array.shape != table.shape:
            raise TypeError(
                f"{label} is {array.dtype} {array.shape}; it must be {dtype} {table.shape} "
                "(the table's shape, the dtype gradients accumulate in)."
            )
        if not (array.flags.writeable and array.flags.c_contiguous):
            raise ValueError(f"{label} must be writable and C-contiguous.")
        fields = EmbeddingGradients._fields[: len(checked)]  # the ones checked so far
        named = [(f"accumulate_into.{f}", a) for f, a in zip(fields, checked, strict=True)]
        refuse_overlap(label, array, [*named, *inputs])
        checked.append(array)
    return EmbeddingGradients(*checked)
