"""The drop-in's path for CUDA tensors: the device kernels on torch's memory and current stream.

Tensors are viewed as numba device arrays without copies; outputs, gradients
and work arrays come from torch's caching allocator (numba's own allocations
are a cudaMalloc each, which takes longer than the kernels). Kernels are
queued on torch's current stream, so they run in order with the model's
other work and the host never waits, except for the range check of the ids
in the forward pass (one 24-byte read-back, as ``torch.nn.Embedding`` has a
device-side assert instead).

Imported by :mod:`bert_embedding_kernels.nn.module` only when a CUDA tensor arrives, since importing
``bert_embedding_kernels.cuda`` initialises the CUDA driver.
"""

from __future__ import annotations

import numpy as np
import torch

from .. import cuda as gpu
from ..position_rules import rule_named

_FLOAT_DTYPES = (torch.float32, torch.float64)
_NUMPY_TO_TORCH = {np.dtype(np.float32): torch.float32, np.dtype(np.float64): torch.float64}


def _stream():
    """torch's current stream as numba's: 0 for the legacy default stream, else an external one."""
    handle = torch.cuda.current_stream().cuda_stream
    return gpu.cuda.external_stream(handle) if handle else 0


def _allocator(device):
    def allocate(shape, dtype):
        return torch.empty(shape, dtype=_NUMPY_TO_TORCH[np.dtype(dtype)], device=device)

    return allocate


def device_tables(cache, word, segment, position, weight, bias, eps):
    """The parameters as :class:`bert_embedding_kernels.cuda.DeviceTables` views, cached per module.

    The views see every in-place update of the parameters (they are the same
    memory), so a cached entry is never stale. It is reused while the five
    tensors keep their addresses and layouts (the entry holds them alive, so
    an address cannot be reused by another tensor meanwhile); the backward's
    sort buffers live with it.
    """
    parameters = (word, segment, position, weight, bias)
    if word.dtype not in _FLOAT_DTYPES:
        raise TypeError(
            f"word_embeddings.weight has dtype {word.dtype}; the CUDA kernels take float32 or "
            "float64 parameters (bfloat16 tables are CPU-only for now: keep float32 "
            "parameters on the GPU, or run the module on the CPU)."
        )
    key = tuple((p.data_ptr(), tuple(p.shape), p.stride(), p.dtype) for p in parameters), eps
    if cache is not None and cache.get("key") == key:
        return cache["tables"]
    tables = gpu.DeviceTables(
        *(p.detach() for p in (word, segment, position)),
        norm_weight=weight.detach(),
        norm_bias=bias.detach(),
        norm_eps=eps,
    )
    if cache is not None:
        cache.update(key=key, tables=tables)
    return tables


def forward(tables, ids, types, positions):
    """(LayerNorm output, pre-norm sum, the checked device ids), as torch tensors but the ids."""
    stream = _stream()
    batch = gpu.prepare(tables, ids.detach(), types.detach(), positions.detach(), stream=stream)
    device = ids.device
    dtype = _NUMPY_TO_TORCH[tables.dtype]
    out = torch.empty((*batch.shape, tables.hidden_size), dtype=dtype, device=device)
    sums = torch.empty_like(out)
    gpu.fused_sum_norm(tables, batch, out, keep_sum=True, sums=sums, stream=stream)
    return out, sums, batch


def backward(tables, batch, sums, grad_out, padding_idx, eps):
    """Gradients of word, segment, position, LayerNorm weight and bias, as new torch tensors."""
    stream = _stream()
    hidden = tables.hidden_size
    grad_sums = torch.empty_like(sums)
    weight = tables.norm_weight
    grad_weight = torch.empty(hidden, dtype=sums.dtype, device=sums.device)
    grad_bias = torch.empty_like(grad_weight)
    gpu.layer_norm_backward(
        sums.view(-1, hidden),
        grad_out.contiguous().view(-1, hidden),
        weight,
        eps,
        out=(grad_sums.view(-1, hidden), grad_weight, grad_bias),
        allocate=_allocator(sums.device),
        stream=stream,
    )
    table_grads = [
        torch.empty(tuple(table.shape), dtype=sums.dtype, device=sums.device)
        for table in (tables.token, tables.segment, tables.position)
    ]
    gpu.fused_backward(tables, batch, grad_sums, padding_idx, out=table_grads, stream=stream)
    return [*table_grads, grad_weight, grad_bias]


class FusedEmbeddings(torch.autograd.Function):
    """LayerNorm(Wt[ids] + Ws[types] + Wp[positions]) on the device kernels, with autograd.

    CPU tensors go through the registered operators of :mod:`bert_embedding_kernels.nn.ops`
    instead (which ``torch.compile`` and ``torch.export`` trace). ``rules`` are the tables'
    keyword arguments for the family's position rule. ``device_cache`` is a dict that keeps
    the device views of the parameters from call to call (the module's own).
    """

    @staticmethod
    def forward(
        ctx,
        ids,
        types,
        positions,
        padding_idx,
        rules,
        word,
        segment,
        position,
        weight,
        bias,
        eps,
        device_cache=None,
    ):
        ctx.eps, ctx.padding_idx, ctx.rules = eps, padding_idx, rules
        ctx.tables = device_tables(device_cache, word, segment, position, weight, bias, eps)
        out, ctx.sums, ctx.batch = forward(ctx.tables, ids, types, positions)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        needs = ctx.needs_input_grad[5:10]  # word, segment, position, weight, bias
        grads = backward(ctx.tables, ctx.batch, ctx.sums, grad_out, ctx.padding_idx, ctx.eps)
        if rule_named(ctx.rules.get("position_rule", "absolute")).padding:  # as the CPU's core
            grads[2][ctx.rules["padding_idx"]] = 0
        weight_grads = [g if n else None for g, n in zip(grads, needs, strict=True)]
        return None, None, None, None, None, *weight_grads, None, None
