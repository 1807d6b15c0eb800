"""Checks of what a call writes into and multiplies by: ``out`` and ``attention_mask``."""

from __future__ import annotations

import numpy as np

from .._arrays import as_numpy, is_torch_tensor


def check_attention_mask(attention_mask, shape: tuple[int, int]) -> np.ndarray | None:
    """The attention mask as a (batch, seq) array of numbers, or None."""
    if attention_mask is None:
        return None
    mask = as_numpy("attention_mask", attention_mask)
    if mask.dtype.kind not in "biuf":
        raise TypeError(f"attention_mask has dtype {mask.dtype}; it must hold 0s and 1s.")
    if mask.shape != shape:
        raise ValueError(f"attention_mask has shape {mask.shape}; it must be {shape}.")
    return mask


def check_out(out, shape: tuple[int, int, int], dtype: np.dtype, inputs) -> np.ndarray:
    if is_torch_tensor(out):
        out = as_numpy("out", out)  # a view: the kernels write into the tensor's memory
    if not isinstance(out, np.ndarray):
        raise TypeError(f"out is {type(out).__name__}; it must be a numpy array or None.")
    if out.dtype != dtype:
        raise TypeError(
            f"out has dtype {out.dtype}; it must have the output dtype {dtype} (the tables' "
            f"unless out_dtype says otherwise). Allocate it with np.empty({shape}, dtype={dtype})."
        )
    if out.shape != shape:
        raise ValueError(f"out has shape {out.shape}; it must have shape {shape}.")
    if not out.flags.writeable:
        raise ValueError("out is read-only; pass a writable array.")
    if not out.flags.c_contiguous:
        raise ValueError("out is not C-contiguous; pass np.empty(shape, dtype) or None.")
    for name, array in inputs:
        if np.may_share_memory(out, array):
            raise ValueError(f"out overlaps {name}; pass an array that shares no memory with it.")
    return out
