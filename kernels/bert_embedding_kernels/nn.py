"""A drop-in for transformers' ``BertEmbeddings``, forward and backward through the fused kernels.

>>> from bert_embedding_kernels.nn import BertEmbeddings                      # doctest: +SKIP
>>> model.embeddings = BertEmbeddings.from_hf(model.embeddings)  # doctest: +SKIP

The module has the parameters of transformers' module under the same names
(``word_embeddings.weight``, ``token_type_embeddings.weight``,
``position_embeddings.weight``, ``LayerNorm.weight``, ``LayerNorm.bias``), so
state dicts load unchanged, and the same ``forward`` signature and output.
Its forward is the fused sum+LayerNorm kernel; its backward is the numba
LayerNorm backward followed by the fused scatter-add (``padding_idx``
respected). On CPU tensors both run as the registered PyTorch operators of
:mod:`bert_embedding_kernels.torch_ops`, so ``torch.compile`` (``fullgraph=True``
included) and ``torch.export`` trace the module. Weights, ids, outputs and
gradients cross between torch and numpy without copies (CPU tensors share their
memory with numpy views). On CUDA
tensors the same steps run as the numba-cuda kernels of :mod:`bert_embedding_kernels.cuda`
(float32 or float64), on torch's memory and current stream
(:mod:`bert_embedding_kernels._nn_cuda`).

torch is imported here, in :mod:`bert_embedding_kernels.torch_ops` and in the CUDA path only;
``import bert_embedding_kernels`` never needs it.
"""

from __future__ import annotations

import copy
import inspect

import torch
from torch import nn

from . import torch_ops
from .families import FAMILIES, PAST_NAMES, inspect_module


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


class _FusedEmbeddings(torch.autograd.Function):
    """The CUDA path: LayerNorm(Wt[ids] + Ws[types] + Wp[positions]) on the device kernels.

    CPU tensors go through the registered operators of :mod:`bert_embedding_kernels.torch_ops`
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
        from . import _nn_cuda

        ctx.eps, ctx.padding_idx, ctx.rules = eps, padding_idx, rules
        ctx.tables = _nn_cuda.device_tables(
            device_cache, word, segment, position, weight, bias, eps
        )
        out, ctx.sums, ctx.batch = _nn_cuda.forward(ctx.tables, ids, types, positions)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        from . import _nn_cuda

        needs = ctx.needs_input_grad[5:10]  # word, segment, position, weight, bias
        grads = _nn_cuda.backward(
            ctx.tables, ctx.batch, ctx.sums, grad_out, ctx.padding_idx, ctx.eps
        )
        if ctx.rules.get("position_rule") == "after_padding":  # as the CPU's core does
            grads[2][ctx.rules["padding_idx"]] = 0
        weight_grads = [g if n else None for g, n in zip(grads, needs, strict=True)]
        return None, None, None, None, None, *weight_grads, None, None


# The call of transformers' BertEmbeddings (5.x: cache_length, 4.x: past_key_values_length).
def _bert_call(
    input_ids=None,
    token_type_ids=None,
    position_ids=None,
    inputs_embeds=None,
    past_key_values_length=0,
    cache_length=None,
):
    pass


_BERT_SIGNATURE = inspect.signature(_bert_call)
_UNSET = object()  # an argument the call did not give


class _Binder:
    """``signature.bind(*args, **kwargs).arguments`` (the arguments given, by name) as a plain
    Python function of that signature, which torch.compile traces (``Signature.bind`` makes
    dynamo break the graph of a whole model: it reads a mapping proxy). The same binding
    and, for a call that does not fit, a TypeError as Python's. Pickled as its signature.
    """

    def __init__(self, signature: inspect.Signature):
        self.signature = signature
        header, body = [], []
        kinds = inspect.Parameter
        parameters = list(signature.parameters.values())
        last_positional_only = max(
            (i for i, p in enumerate(parameters) if p.kind is kinds.POSITIONAL_ONLY), default=-1
        )
        for i, parameter in enumerate(parameters):
            name, kind = parameter.name, parameter.kind
            if kind is kinds.KEYWORD_ONLY and not any(h.startswith("*") for h in header):
                header.append("*")
            if kind is kinds.VAR_POSITIONAL or kind is kinds.VAR_KEYWORD:
                header.append(("*" if kind is kinds.VAR_POSITIONAL else "**") + name)
                body.append(f"    if {name}:\n        _bound[{name!r}] = {name}")  # not empty
                continue
            header.append(name if parameter.default is parameter.empty else f"{name}=_UNSET")
            body.append(f"    if {name} is not _UNSET:\n        _bound[{name!r}] = {name}")
            if i == last_positional_only:
                header.append("/")
        source = "def bind({}):\n    _bound = {{}}\n{}\n    return _bound\n".format(
            ", ".join(header), "\n".join(body)
        )
        namespace = {"_UNSET": _UNSET}
        exec(source, namespace)  # source built from the parameters' names only
        self._bind = namespace["bind"]

    def __call__(self, *args, **kwargs) -> dict:
        return self._bind(*args, **kwargs)

    def __reduce__(self):
        return type(self), (self.signature,)

    def __deepcopy__(self, memo):
        return self


class BertEmbeddings(nn.Module):
    """A BERT-family embedding layer on the fused kernels; a drop-in for transformers' module.

    Built with the arguments below it is BERT's layer. :meth:`from_hf` builds the
    drop-in of any family :mod:`bert_embedding_kernels.families` accepts (RoBERTa,
    XLM-R, DistilBERT, ELECTRA, ALBERT, DeBERTa-v2, ...), with that module's
    submodules (copied), parameter names, call signature and rules.

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
        self.family = FAMILIES[0]  # BERT
        self._bind = _Binder(_BERT_SIGNATURE)
        self._padding_positions = None  # the position rule's padding index (RoBERTa)
        self._device_cache = _DeviceViews()

    def _apply(self, fn, *args, **kwargs):
        # .to(), .cuda(), .cpu(), .float(): the cached views would keep the old tensors alive.
        self._device_cache.clear()
        return super()._apply(fn, *args, **kwargs)

    @classmethod
    def from_hf(cls, module: nn.Module) -> BertEmbeddings:
        """The drop-in for a BERT-family embeddings module: its submodules copied, mode kept.

        Raises
        ------
        TypeError
            ``module`` is not one whose computation the kernels reproduce exactly
            (the message names its class and why; :mod:`bert_embedding_kernels.families`).
        """
        found = inspect_module(module)
        drop_in = cls.__new__(cls)
        nn.Module.__init__(drop_in)
        # The same submodules under the same names (state dicts load unchanged, and a
        # frozen table such as DistilBERT's sinusoidal positions stays frozen).
        for name, child in module.named_children():
            drop_in.add_module(name, copy.deepcopy(child))
        drop_in.family = found.family
        signature = inspect.signature(type(module).forward)
        drop_in._bind = _Binder(
            signature.replace(parameters=list(signature.parameters.values())[1:])  # no self
        )
        drop_in._padding_positions = found.padding_idx
        drop_in._device_cache = _DeviceViews()
        return drop_in.train(module.training)  # swapped into an eval() model, it stays in eval

    def forward(self, *args, **kwargs) -> torch.Tensor:
        """The family's embeddings of the ids (or of ``inputs_embeds``); (batch, seq, hidden).

        Takes the family's own call (BERT's: ``input_ids``, ``token_type_ids``,
        ``position_ids``, ``inputs_embeds``, ``cache_length`` /
        ``past_key_values_length``; DistilBERT's positional ``(input_ids,
        inputs_embeds)``; DeBERTa-v2's ``mask``...). Defaults as in transformers:
        token types zeros, positions by the family's rule. With ``inputs_embeds``
        the sum runs in torch (there are no ids to gather).
        """
        call = self._bind(*args, **kwargs)
        input_ids, inputs_embeds = call.get("input_ids"), call.get("inputs_embeds")
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("give exactly one of input_ids and inputs_embeds")
        past = next((call[n] for n in PAST_NAMES if call.get(n) is not None), 0)
        token_type_ids, position_ids = call.get("token_type_ids"), call.get("position_ids")
        segment = getattr(self, "token_type_embeddings", None)
        position = getattr(self, "position_embeddings", None)
        norm = getattr(self, "LayerNorm", None)
        embed_proj = getattr(self, "embed_proj", None)
        fused_norm = norm is not None and embed_proj is None
        if segment is None:
            token_type_ids = None  # a family without token types ignores them, as transformers
        if position is None:
            position_ids = None
        if inputs_embeds is not None:
            hidden = self._sum_embeds(inputs_embeds, token_type_ids, position_ids, past)
        else:
            hidden = self._sum_ids(input_ids, token_type_ids, position_ids, past, fused_norm)
        if embed_proj is not None:
            hidden = embed_proj(hidden)
        if norm is not None and (inputs_embeds is not None or not fused_norm):
            hidden = norm(hidden)
        mask = call.get("mask")
        if self.family.deberta and mask is not None:
            if mask.dim() != hidden.dim():
                mask = mask.squeeze(1).squeeze(1) if mask.dim() == 4 else mask
                mask = mask.unsqueeze(2)
            hidden = hidden * mask.to(hidden.dtype)
        return self.dropout(hidden)

    def extra_repr(self) -> str:
        positions = "after padding" if self._padding_positions is not None else "absolute"
        return f"family={self.family.name}, positions={positions}"

    def _rules(self) -> dict:
        if self._padding_positions is None:
            return {}
        return {"position_rule": "after_padding", "padding_idx": self._padding_positions}

    def _sum_ids(self, input_ids, token_type_ids, position_ids, past, fused_norm):
        segment = getattr(self, "token_type_embeddings", None)
        position = getattr(self, "position_embeddings", None)
        if segment is not None and token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        if position is not None and position_ids is None:
            if self._padding_positions is not None:
                # The core numbers them by the tables' rule (past 0, CPU); the GPU path and a
                # past length take them as ids.
                if input_ids.is_cuda or past:
                    pad = self._padding_positions
                    position_ids = _positions_after_padding(input_ids, pad, past)
            else:
                seq = input_ids.shape[1]
                position_ids = torch.arange(
                    past, past + seq, dtype=input_ids.dtype, device=input_ids.device
                )[None, :]
        if input_ids.is_cuda and (segment is None or position is None or not fused_norm):
            raise NotImplementedError(
                f"the {self.family.name} drop-in runs on CPU tensors; on CUDA only families with "
                "token types, positions and LayerNorm right after the sum (BERT, RoBERTa, ...) "
                "run through the GPU kernels. Keep transformers' module on the GPU."
            )
        norm = self.LayerNorm if fused_norm else None
        tables = (
            self.word_embeddings.weight,
            None if segment is None else segment.weight,
            None if position is None else position.weight,
            None if norm is None else norm.weight,
            None if norm is None else norm.bias,
        )
        if self.word_embeddings.weight.is_cuda:
            return _FusedEmbeddings.apply(
                input_ids,
                token_type_ids,
                position_ids,
                self.word_embeddings.padding_idx,
                self._rules(),
                *tables,
                norm.eps,
                self._device_cache,
            )
        rule = "absolute" if self._padding_positions is None else "after_padding"
        hidden, _ = torch_ops.embed(
            input_ids,
            token_type_ids,
            position_ids,
            *tables,
            0.0 if norm is None else float(norm.eps),
            rule,
            self._padding_positions,
            self.word_embeddings.padding_idx,
            # the pre-norm sums only where a backward will need them
            torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tables),
        )
        return hidden

    def _sum_embeds(self, inputs_embeds, token_type_ids, position_ids, past):
        """The family's sum in torch, in its own order, for ``inputs_embeds``."""
        segment = getattr(self, "token_type_embeddings", None)
        position = getattr(self, "position_embeddings", None)
        shape, device = inputs_embeds.shape[:2], inputs_embeds.device
        parts = {}
        if segment is not None:
            if token_type_ids is None:
                token_type_ids = torch.zeros(shape, dtype=torch.long, device=device)
            parts["s"] = segment(token_type_ids)
        if position is not None:
            if position_ids is None:
                # RoBERTa's rule has no ids to count: sequential from padding_idx + 1, no past
                first = past if self._padding_positions is None else self._padding_positions + 1
                position_ids = torch.arange(first, first + shape[1], device=device)[None, :]
            parts["p"] = position(position_ids)
        hidden = inputs_embeds
        for table in self.family.sum_order[1:]:
            if table in parts:
                hidden = hidden + parts[table]
        return hidden


def _positions_after_padding(input_ids, padding_idx: int, past: int):
    """RoBERTa's position ids (transformers' ``create_position_ids_from_input_ids``), in torch."""
    kept = input_ids.ne(padding_idx).int()
    return ((torch.cumsum(kept, dim=1).type_as(kept) + past) * kept).long() + padding_idx
