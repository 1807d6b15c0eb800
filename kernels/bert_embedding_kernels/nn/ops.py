"""The fused kernels as registered PyTorch operators, so ``torch.compile`` and ``torch.export``
see through the drop-in (:class:`bert_embedding_kernels.nn.BertEmbeddings`).

Two operators in the ``bert_embedding_kernels`` namespace, CPU tensors only:

- ``torch.ops.bert_embedding_kernels.embed``: ``[LayerNorm](Wt[ids] + Ws[types] +
  Wp[positions])``; returns the output and the float pre-norm sums that LayerNorm's
  backward starts from (an empty tensor without LayerNorm, or with ``keep_sums=False``,
  which inference passes: one pass, no second buffer);
- ``torch.ops.bert_embedding_kernels.embed_backward``: the gradients of the word,
  segment and position tables and of LayerNorm's weight and bias (empty tensors for
  what does not exist).

Each has a fake (meta) implementation, so the compilers trace shapes and dtypes
without running numba, and ``embed`` has its autograd formula registered
(``torch.library.register_autograd``), which calls ``embed_backward``. Weights,
ids and gradients cross between torch and numpy without copies. 16-bit tables
are summed (and normalised) in float32 and rounded once; their backward starts
from the float32 sum, and their gradients are rounded once to the tables' dtype.

Imported by :mod:`bert_embedding_kernels.nn`; ``import bert_embedding_kernels`` never imports it
(nor torch). The numpy views of the tensors never mark their storage as not resizable
(:mod:`bert_embedding_kernels._arrays`), so FSDP2 can free and re-allocate the parameters.
"""

import threading
from collections import OrderedDict

import numpy as np
import torch

from .._arrays import as_numpy
from ..api import embed as _embed
from ..api import embed_backward as _embed_backward
from ..methods.fused.norm_backward import layer_norm_backward
from ..tables import EmbeddingTables

__all__ = ["embed", "embed_backward"]

_HALF = (torch.float16, torch.bfloat16)
_NAMESPACE = "bert_embedding_kernels"


def _float_numpy(tensor: torch.Tensor) -> np.ndarray:
    """A CPU tensor as numpy, 16-bit floats widened to float32 (exactly)."""
    if tensor.dtype in _HALF:
        tensor = tensor.float()
    return as_numpy("tensor", tensor.detach().contiguous())


def _sums_dtype(word: torch.Tensor) -> torch.dtype:
    """The pre-norm sums' dtype: the tables', float32 for 16-bit tables."""
    return torch.float32 if word.dtype in _HALF else word.dtype


# The checked tables of the tensors the operators saw last, so that a training loop's calls
# check their ids and options, not the same weights again on every call (issue 38).
_TABLES: OrderedDict = OrderedDict()
_TABLES_KEPT = 8
_tables_lock = threading.Lock()


def _layout(tensor: torch.Tensor | None):
    if tensor is None:
        return None
    return (tensor.data_ptr(), tensor.dtype, tuple(tensor.shape), tensor.stride())


def _tables(word, segment, position, weight, bias, eps, position_rule, rule_padding_idx):
    """``EmbeddingTables`` of these tensors, built (and checked) once and kept for the next
    call with tensors in the same memory, laid out the same way.

    Why it is safe: the kept tables are numpy views of the tensors' memory by address that
    do not hold the tensors (a replaced parameter is not kept alive here), and they are
    used again only where every tensor of the call has the same address, dtype, shape and
    strides: the same bytes, read the same way, held alive by the call's own tensors. A
    parameter updated in place is read as it is at the call (tables hold no derived data);
    one re-allocated (FSDP2 frees and re-gathers its parameters' storage) gets new tables.
    """
    tensors = (word, segment, position, weight, bias)
    key = (*(_layout(t) for t in tensors), eps, position_rule, rule_padding_idx)
    with _tables_lock:
        tables = _TABLES.get(key)
        if tables is not None:
            _TABLES.move_to_end(key)
            return tables
    if not all(t is None or t.is_contiguous() for t in tensors):
        return _new_tables(*tensors, eps, position_rule, rule_padding_idx)  # copied: not kept
    unheld = [None if t is None else as_numpy("tensor", t, hold=False) for t in tensors]
    tables = _new_tables(*unheld, eps, position_rule, rule_padding_idx)
    with _tables_lock:
        _TABLES[key] = tables
        while len(_TABLES) > _TABLES_KEPT:
            _TABLES.popitem(last=False)
    return tables


def _new_tables(word, segment, position, weight, bias, eps, position_rule, rule_padding_idx):
    norm = {} if weight is None else {"norm_weight": weight, "norm_bias": bias, "norm_eps": eps}
    rules = {"position_rule": position_rule, "padding_idx": rule_padding_idx}
    return EmbeddingTables(word, segment, position, **norm, **rules)


def _tensor(array: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    """A new kernel result as a tensor of ``dtype`` (16-bit: rounded once, a new tensor).

    Without a copy the tensor shares the array's memory and holds the array, so a
    buffer of the output pool (bert_embedding_kernels.pool) goes back to the pool
    only once torch has freed the tensor; it is never one of the op's inputs.
    """
    tensor = torch.from_numpy(array)
    return tensor if tensor.dtype == dtype else tensor.to(dtype)


@torch.library.custom_op(f"{_NAMESPACE}::embed", mutates_args=(), device_types="cpu")
def embed(
    ids: torch.Tensor,
    types: torch.Tensor | None,
    positions: torch.Tensor | None,
    word: torch.Tensor,
    segment: torch.Tensor | None,
    position: torch.Tensor | None,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    eps: float,
    position_rule: str,
    rule_padding_idx: int | None,
    padding_idx: int | None,
    keep_sums: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``[LayerNorm](Wt[ids] + Ws[types] + Wp[positions])`` and the float pre-norm sums.

    ``types`` / ``positions`` None: token type 0 / positions by ``position_rule``
    (a rule of :data:`..position_rules.RULES` by name; ``rule_padding_idx`` for RoBERTa's).
    ``segment`` / ``position`` None: the family has no such table. ``weight`` and
    ``bias`` None: no LayerNorm. ``padding_idx`` is the word table's (its row gets no
    gradient); the forward does not use it. ``keep_sums``: return the sums (for the
    backward), else an empty tensor as without LayerNorm (inference: one pass, no
    second buffer).
    """
    tables = _tables(word, segment, position, weight, bias, eps, position_rule, rule_padding_idx)
    # 16-bit tables: the float32 result, rounded once by _tensor.
    wide = np.float32 if word.dtype in _HALF else None
    if weight is None or not keep_sums:
        out = _embed(tables, ids, types, positions, layer_norm=weight is not None, out_dtype=wide)
        sums = word.new_empty(0, dtype=_sums_dtype(word))
    else:
        out, sums = _embed(
            tables, ids, types, positions, layer_norm=True, return_sum=True, out_dtype=wide
        )
        sums = _tensor(sums, _sums_dtype(word))
    return _tensor(out, word.dtype), sums


@embed.register_fake
def _embed_fake(
    ids,
    types,
    positions,
    word,
    segment,
    position,
    weight,
    bias,
    eps,
    position_rule,
    rule_padding_idx,
    padding_idx,
    keep_sums,
):
    out = word.new_empty((*ids.shape, word.shape[1]))
    if weight is None or not keep_sums:
        return out, word.new_empty(0, dtype=_sums_dtype(word))
    return out, word.new_empty(out.shape, dtype=_sums_dtype(word))


@torch.library.custom_op(f"{_NAMESPACE}::embed_backward", mutates_args=(), device_types="cpu")
def embed_backward(
    grad_out: torch.Tensor,
    sums: torch.Tensor,
    ids: torch.Tensor,
    types: torch.Tensor | None,
    positions: torch.Tensor | None,
    word: torch.Tensor,
    segment: torch.Tensor | None,
    position: torch.Tensor | None,
    weight: torch.Tensor | None,
    eps: float,
    position_rule: str,
    rule_padding_idx: int | None,
    padding_idx: int | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients of ``embed``'s output: (word, segment, position, LayerNorm weight, bias).

    ``sums`` is ``embed``'s second output (unused without LayerNorm, ``weight`` None).
    The word table's ``padding_idx`` row and, under a rule with padding (RoBERTa's), the position
    table's padding row get zero. A table that is None gets an empty tensor, as do
    LayerNorm's weight and bias without LayerNorm. Gradients have the tables' dtype.
    """
    if weight is None:
        grad_sums, norm_grads = _float_numpy(grad_out), []
    else:
        grad_sums, *norm_grads = layer_norm_backward(
            as_numpy("sums", sums), _float_numpy(grad_out), _float_numpy(weight), eps
        )
    tables = _tables(word, segment, position, None, None, 0.0, position_rule, rule_padding_idx)
    table_grads = _embed_backward(
        tables,
        grad_sums,
        ids,
        types,
        positions,
        padding_idx=padding_idx,
    )
    empty = word.new_empty(0)
    grads = [
        _tensor(g, word.dtype) if table is not None else empty.clone()
        for g, table in zip(table_grads, (word, segment, position), strict=True)
    ]
    if weight is None:
        return (*grads, empty.clone(), empty.clone())
    return (*grads, *(_tensor(g, word.dtype) for g in norm_grads))


@embed_backward.register_fake
def _embed_backward_fake(
    grad_out,
    sums,
    ids,
    types,
    positions,
    word,
    segment,
    position,
    weight,
    eps,
    position_rule,
    rule_padding_idx,
    padding_idx,
):
    def like(table):
        return word.new_empty(0) if table is None else word.new_empty(table.shape)

    return like(word), like(segment), like(position), like(weight), like(weight)


def _setup_context(ctx, inputs, output):
    (ids, types, positions, word, segment, position, weight, bias, eps, *rules, keep_sums) = inputs
    if weight is not None and not keep_sums:
        raise RuntimeError(
            "bert_embedding_kernels::embed ran with keep_sums=False but its gradient is needed; "
            "call it with keep_sums=True where the tables or LayerNorm require grad."
        )
    ctx.save_for_backward(ids, types, positions, word, segment, position, weight, output[1])
    ctx.eps, ctx.rules = eps, rules  # position_rule, rule_padding_idx, padding_idx
    ctx.present = [t is not None for t in (word, segment, position, weight, bias)]
    ctx.mark_non_differentiable(output[1])
    # The sums get no gradient: without this the engine fills a zero tensor the size of
    # the output for them on every backward (measured: 23 ms of a 100 ms step at BERT-base).
    ctx.set_materialize_grads(False)


def _backward(ctx, grad_out, _grad_sums):
    ids, types, positions, word, segment, position, weight, sums = ctx.saved_tensors
    if grad_out is None:  # the output itself was not used (grads are not materialised)
        return (None,) * 13
    grads = embed_backward(
        grad_out.contiguous(),
        sums,
        ids,
        types,
        positions,
        word,
        segment,
        position,
        weight,
        ctx.eps,
        *ctx.rules,
    )
    needs = ctx.needs_input_grad[3:8]  # word, segment, position, weight, bias
    table_grads = [
        g if need and present else None
        for g, need, present in zip(grads, needs, ctx.present, strict=True)
    ]
    return None, None, None, *table_grads, None, None, None, None, None


embed.register_autograd(_backward, setup_context=_setup_context)
