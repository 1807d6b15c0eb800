"""One entry into validation per call: ``embed`` and ``embed_backward`` hand their arguments
here once and get back everything the method needs, checked and in normal form.

The order of the checks is the order of the errors a caller meets: the method's name,
then the tables and ids (:func:`bert_embedding_kernels.validate.prepare.prepare`), then what
depends on them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import numpy as np

from .._arrays import as_numpy
from ..tables import EmbeddingTables
from .backward import (
    check_accumulate_into,
    check_grad_dtype,
    check_grad_output,
    check_padding_idx,
)
from .batch import Batch
from .options import (
    check_memory_budget,
    check_method,
    check_method_dtype,
    check_norm_options,
    check_out_dtype,
)
from .outputs import check_attention_mask, refuse_overlap, table_inputs
from .prepare import prepare


class ForwardCall(NamedTuple):
    method: str  # a registered method, or "auto" (the cost model picks one of those)
    batch: Batch
    out_dtype: np.dtype
    layer_norm: bool
    return_sum: bool
    mask: np.ndarray | None  # multiplies the output (tables.masks_output: DeBERTa-v2)


class BackwardCall(NamedTuple):
    method: str
    batch: Batch
    grad: np.ndarray  # (batch, seq, hidden), C-contiguous, of the accumulation dtype
    padding_idx: int | None
    grad_dtype: np.dtype
    memory_budget: int
    into: object  # EmbeddingGradients to add into, or None


ORDERS = ("cpu", "tree")


def check_host_order(order) -> None:
    """The order of a host backward's sums: "cpu" (token order); "tree" is the GPU's."""
    if not isinstance(order, str) or order not in ORDERS:
        raise ValueError(
            f"order is {order!r}; it must be 'cpu' (token order) or 'tree' (a fixed binary "
            "tree; device tables only)."
        )
    if order == "tree":
        raise ValueError(
            "order='tree' is the GPU backward's fixed-tree order; host tables sum in token "
            "order only (order='cpu'). Use tables.to_device(), or order='cpu'."
        )


def check_forward(
    tables: EmbeddingTables,
    arguments: tuple,
    *,
    method,
    method_dtypes: Mapping[str, tuple[str, ...]],
    out,
    out_dtype,
    layer_norm,
    return_sum,
    attention_mask,
) -> ForwardCall:
    """``embed``'s arguments checked; ``arguments`` is ``(input_ids, token_type_ids,
    position_ids, past_length)`` and ``method_dtypes`` each registered method's dtypes."""
    method = check_method(method, tuple(method_dtypes), auto=True)
    out_dtype = check_out_dtype(tables, out_dtype)
    batch = prepare(tables, *arguments, out, out_dtype)
    layer_norm = tables.norm_by_default if layer_norm is None else layer_norm
    check_norm_options(tables, layer_norm, return_sum)
    mask = check_attention_mask(attention_mask, batch.shape) if tables.masks_output else None
    if mask is not None and batch.out is not None:  # read after out is written: kept apart
        refuse_overlap("out", batch.out, [("attention_mask", mask)])
    if method != "auto":
        check_method_dtype(method, method_dtypes[method], tables)
    return ForwardCall(method, batch, out_dtype, layer_norm, return_sum, mask)


def check_backward(
    tables: EmbeddingTables,
    grad_output,
    arguments: tuple,
    *,
    method,
    method_dtypes: Mapping[str, tuple[str, ...]],
    padding_idx,
    memory_budget,
    grad_dtype,
    accumulate_into,
    order,
) -> BackwardCall:
    """``embed_backward``'s arguments checked, ``arguments`` as for :func:`check_forward`."""
    check_host_order(order)
    method = check_method(method, tuple(method_dtypes), auto=False)
    memory_budget = check_memory_budget(memory_budget)
    batch = prepare(tables, *arguments)
    given_grad = as_numpy("grad_output", grad_output)
    grad = check_grad_output(given_grad, (*batch.shape, tables.hidden_size), tables.dtype)
    padding_idx = check_padding_idx(padding_idx, tables.vocab_size)
    grad_dtype = check_grad_dtype(tables, grad_dtype)
    check_method_dtype(method, method_dtypes[method], tables)
    into = None
    if accumulate_into is not None:
        # Everything the call reads, as forward's out is kept apart from it: an accumulator
        # over input_ids once crashed the fused backward (exit 139) as it overwrote the ids.
        ids = [(name, getattr(batch, name)) for name in Batch._fields[:3]]
        read = [*table_inputs(tables), *ids, ("grad_output", given_grad)]
        if grad is not given_grad:  # a contiguous or widened copy: the one the method reads
            read.append(("grad_output", grad))
        into = check_accumulate_into(tables, accumulate_into, grad.dtype, read)
    return BackwardCall(method, batch, grad, padding_idx, grad_dtype, memory_budget, into)
