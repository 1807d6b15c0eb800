"""Checks of what a call writes into and multiplies by: ``out`` and ``attention_mask``,
and the rule every output and accumulator keeps: no memory shared with what the call reads."""

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


def table_inputs(tables) -> list[tuple[str, np.ndarray]]:
    """``("tables.token", array)`` and so on: every array the tables hold, LayerNorm's too.

    All of them, whatever the call reads of them: writing into a table (an output that
    is the caller's writable base of a table, say) is never what a caller meant, and a
    sum written into ``norm_weight`` before LayerNorm reads it gave wrong rows silently.
    """
    named = [
        ("tables.token", tables.token),
        ("tables.segment", tables.segment),
        ("tables.position", tables.position),
    ]
    if tables.norm_weight is not None:
        named += [
            ("tables.norm_weight", tables.norm_weight),
            ("tables.norm_bias", tables.norm_bias),
        ]
    return named


def refuse_overlap(name: str, array: np.ndarray, inputs) -> None:
    """ValueError if ``array`` (an output) may share memory with any of ``inputs``.

    ``inputs`` holds ``(name, array)`` pairs. ``np.may_share_memory`` compares the
    arrays' address ranges only (no exact solve): it is cheap on every call and may
    refuse interleaved strided arrays that touch no common element, never miss an
    overlap. Every method writes an output while it still reads its inputs, so an
    overlap is refused on every method alike, not only where a kernel would go wrong.
    """
    for other_name, other in inputs:
        if np.may_share_memory(array, other):
            raise ValueError(
                f"{name} overlaps {other_name}; pass an array that shares no memory with it."
            )


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
    refuse_overlap("out", out, inputs)
    return out
