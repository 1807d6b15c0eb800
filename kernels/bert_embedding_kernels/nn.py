"""A drop-in for transformers' ``BertEmbeddings``, forward and backward through the fused kernels.

>>> from bert_embedding_kernels.nn import BertEmbeddings                      # doctest: +SKIP
>>> model.embeddings = BertEmbeddings.from_hf(model.embeddings)  # doctest: +SKIP

The module has the parameters of transformers' module under the same names
(``word_embeddings.weight``, ``token_type_embeddings.weight``,
``position_embeddings.weight``, ``LayerNorm.weight``, ``LayerNorm.bias``), so
state dicts load unchanged, and the same ``forward`` signature and output.
Its forward is the fused sum+LayerNorm kernel; its backward is the numba
LayerNorm backward followed by the fused scatter-add (``padding_idx``
respected). Weights, ids, outputs and gradients cross between torch and numpy
without copies (CPU tensors share their memory with numpy views). On CUDA
tensors the same steps run as the numba-cuda kernels of :mod:`bert_embedding_kernels.cuda`
(float32 or float64), on torch's memory and current stream
(:mod:`bert_embedding_kernels._nn_cuda`).

torch is imported here and only here; ``import bert_embedding_kernels`` never needs it.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .api import embed, embed_backward
from .methods.layernorm_backward import layer_norm_backward
from .tables import EmbeddingTables


class _DeviceViews(dict):
    """The CUDA path's cached views of a module's parameters
    (bert_embedding_kernels._nn_cuda.device_tables).

    Never copied or pickled: a deep copy or an unpickled module starts empty
    and builds views of its own parameters on first use.
    """

    def __deepcopy__(self, memo):
        return type(self)()

    def __reduce__(self):
        return type(self), ()


_HALF = (torch.float16, torch.bfloat16)


def _float_numpy(tensor: torch.Tensor):
    """A CPU tensor as numpy, 16-bit floats widened to float32 (exactly)."""
    if tensor.dtype in _HALF:
        tensor = tensor.float()
    return tensor.detach().contiguous().numpy()


class _FusedEmbeddingLayerNorm(torch.autograd.Function):
    """LayerNorm(Wt[ids] + Ws[types] + Wp[positions]) with hand-written gradients.

    ``device_cache`` is a dict that keeps the CUDA path's device views of the
    parameters from call to call (the module's own), or None.
    """

    @staticmethod
    def forward(
        ctx,
        ids,
        types,
        positions,
        padding_idx,
        word,
        segment,
        position,
        weight,
        bias,
        eps,
        device_cache=None,
    ):
        ctx.eps, ctx.padding_idx = eps, padding_idx
        if word.is_cuda:
            from . import _nn_cuda

            ctx.tables = _nn_cuda.device_tables(
                device_cache, word, segment, position, weight, bias, eps
            )
            out, ctx.sums, ctx.batch = _nn_cuda.forward(ctx.tables, ids, types, positions)
            return out
        tables = EmbeddingTables(
            word, segment, position, norm_weight=weight, norm_bias=bias, norm_eps=eps
        )
        # 16-bit tables: the float32 sum and its LayerNorm, rounded once to the
        # dtype here; the backward starts from the float32 sum.
        wide = np.float32 if word.dtype in _HALF else None
        out, sums = embed(
            tables,
            ids,
            types,
            positions,
            method="fused",
            layer_norm=True,
            return_sum=True,
            out_dtype=wide,
        )
        ctx.save_for_backward(ids, types, positions, word, segment, position, weight)
        ctx.sums, ctx.tables = sums, None
        return torch.from_numpy(out).to(word.dtype)

    @staticmethod
    def backward(ctx, grad_out):
        needs = ctx.needs_input_grad[4:9]  # word, segment, position, weight, bias
        if ctx.tables is not None:  # the CUDA path
            from . import _nn_cuda

            grads = _nn_cuda.backward(
                ctx.tables, ctx.batch, ctx.sums, grad_out, ctx.padding_idx, ctx.eps
            )
            weight_grads = [g if n else None for g, n in zip(grads, needs, strict=True)]
            return None, None, None, None, *weight_grads, None, None
        ids, types, positions, word, segment, position, weight = ctx.saved_tensors
        grad_sums, grad_weight, grad_bias = layer_norm_backward(
            ctx.sums, _float_numpy(grad_out), _float_numpy(weight), ctx.eps
        )
        table_grads = embed_backward(
            EmbeddingTables(word, segment, position),
            grad_sums,
            ids,
            types,
            positions,
            padding_idx=ctx.padding_idx,
        )
        grads = [*table_grads, grad_weight, grad_bias]  # float32 for 16-bit tables
        weight_grads = [
            torch.from_numpy(g).to(word.dtype) if n else None
            for g, n in zip(grads, needs, strict=True)
        ]
        return None, None, None, None, *weight_grads, None, None


class BertEmbeddings(nn.Module):
    """BERT's embedding layer with the fused kernels; a drop-in for transformers' module.

    Parameters
    ----------
    vocab_size, hidden_size, max_position_embeddings, type_vocab_size : int
    layer_norm_eps : float, default 1e-12
    hidden_dropout_prob : float, default 0.1
        Dropout after LayerNorm, in training mode only (as transformers').
    pad_token_id : int, optional
        ``padding_idx`` of the word embeddings: that row's gradient stays zero.
    dtype : torch.dtype, default torch.float32
    """

    def __init__(
        self,
        vocab_size: int,
        hidden_size: int,
        max_position_embeddings: int = 512,
        type_vocab_size: int = 2,
        *,
        layer_norm_eps: float = 1e-12,
        hidden_dropout_prob: float = 0.1,
        pad_token_id: int | None = None,
        dtype: torch.dtype = torch.float32,
    ):
        super().__init__()
        self.word_embeddings = nn.Embedding(
            vocab_size, hidden_size, padding_idx=pad_token_id, dtype=dtype
        )
        self.position_embeddings = nn.Embedding(max_position_embeddings, hidden_size, dtype=dtype)
        self.token_type_embeddings = nn.Embedding(type_vocab_size, hidden_size, dtype=dtype)
        self.LayerNorm = nn.LayerNorm(hidden_size, eps=layer_norm_eps, dtype=dtype)
        self.dropout = nn.Dropout(hidden_dropout_prob)
        self._device_cache = _DeviceViews()

    def _apply(self, fn, *args, **kwargs):
        # .to(), .cuda(), .cpu(), .float(): the cached views would keep the old tensors alive.
        self._device_cache.clear()
        return super()._apply(fn, *args, **kwargs)

    @classmethod
    def from_hf(cls, module: nn.Module) -> BertEmbeddings:
        """A drop-in for transformers' ``BertEmbeddings``: weights copied once, mode kept."""
        word = module.word_embeddings
        drop_in = cls(
            word.num_embeddings,
            word.embedding_dim,
            module.position_embeddings.num_embeddings,
            module.token_type_embeddings.num_embeddings,
            layer_norm_eps=module.LayerNorm.eps,
            hidden_dropout_prob=module.dropout.p,
            pad_token_id=word.padding_idx,
            dtype=word.weight.dtype,
        )
        # transformers keeps id buffers (position_ids, token_type_ids) beside the
        # weights; take exactly our five parameters and insist on all of them.
        ours = drop_in.state_dict().keys()
        drop_in.load_state_dict({k: v for k, v in module.state_dict().items() if k in ours})
        return drop_in.train(module.training)  # swapped into an eval() model, it stays in eval

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        past_key_values_length: int = 0,
        cache_length: int | None = None,
    ) -> torch.Tensor:
        """``LayerNorm(word + token type + position)``, then dropout; shape (batch, seq, hidden).

        Ids and positions as in transformers: token types default to zeros,
        positions to ``past .. past + seq - 1`` where ``past`` is
        ``cache_length`` (transformers 5) or ``past_key_values_length``
        (transformers 4), whichever is given. With
        ``inputs_embeds`` instead of ``input_ids`` the sum runs in torch (there
        are no ids to gather), through the same LayerNorm module.
        """
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("give exactly one of input_ids and inputs_embeds")
        past = past_key_values_length if cache_length is None else cache_length
        if inputs_embeds is not None:
            return self._forward_embeds(inputs_embeds, token_type_ids, position_ids, past)
        seq = input_ids.shape[1]
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        if position_ids is None:
            position_ids = torch.arange(
                past, past + seq, dtype=input_ids.dtype, device=input_ids.device
            )[None, :]
        hidden = _FusedEmbeddingLayerNorm.apply(
            input_ids,
            token_type_ids,
            position_ids,
            self.word_embeddings.padding_idx,
            self.word_embeddings.weight,
            self.token_type_embeddings.weight,
            self.position_embeddings.weight,
            self.LayerNorm.weight,
            self.LayerNorm.bias,
            self.LayerNorm.eps,
            self._device_cache,
        )
        return self.dropout(hidden)

    def _forward_embeds(self, inputs_embeds, token_type_ids, position_ids, past):
        seq = inputs_embeds.shape[1]
        device = inputs_embeds.device
        if token_type_ids is None:
            token_type_ids = torch.zeros(inputs_embeds.shape[:2], dtype=torch.long, device=device)
        if position_ids is None:
            position_ids = torch.arange(past, past + seq, device=device)[None, :]
        summed = (
            inputs_embeds
            + self.token_type_embeddings(token_type_ids)
            + self.position_embeddings(position_ids)
        )
        return self.dropout(self.LayerNorm(summed))
