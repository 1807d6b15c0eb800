"""A drop-in for transformers' ``BertEmbeddings``, forward and backward through the fused kernels.

>>> from bert_embedding_kernels.nn import BertEmbeddings                      # doctest: +SKIP
>>> model.bert.embeddings = BertEmbeddings.from_hf(model.bert.embeddings)  # doctest: +SKIP

``from_hf`` adopts the replaced module's own objects: its submodules and their
Parameters (so a decoder tied to the word embeddings stays tied, and optimizers,
hooks and ``requires_grad`` flags keep working), its id buffers, its hooks, its
plain attributes (``padding_idx``, ``config``, ...) and its static methods
(``create_position_ids_from_inputs_embeds``...). Parameter names and state dicts
are unchanged, and the module takes the replaced module's own call signature.

Its forward is the fused sum+LayerNorm kernel; its backward is the numba
LayerNorm backward followed by the fused scatter-add (``padding_idx``
respected). On CPU tensors both run as the registered PyTorch operators of
:mod:`bert_embedding_kernels.nn.ops`, so ``torch.compile`` (``fullgraph=True``
included) and ``torch.export`` trace the module. Weights, ids, outputs and
gradients cross between torch and numpy without copies. On CUDA tensors the same
steps run as the numba-cuda kernels of :mod:`bert_embedding_kernels.cuda`
(float32 or float64), on torch's memory and current stream
(:mod:`bert_embedding_kernels.nn.cuda`).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from ..families import FAMILIES, PAST_NAMES, check_buffers, inspect_module
from ..position_rules import ABSOLUTE, PositionRule
from . import ops
from .binding import BERT_SIGNATURE, Binder, binder_of


class _DeviceViews(dict):
    """The CUDA path's cached views of a module's parameters
    (bert_embedding_kernels.nn.cuda.device_tables).

    Never copied or pickled: a deep copy or an unpickled module starts empty
    and builds views of its own parameters on first use.
    """

    def __deepcopy__(self, memo):
        return type(self)()

    def __reduce__(self):
        return type(self), ()


class Layout(NamedTuple):
    """What acceptance found the module to compute (read by every forward, never probed again)."""

    segment: bool  # a token-type table in the sum
    position: bool  # a position table in the sum
    layer_norm: bool  # a LayerNorm after the sum (or after the projection)
    embed_proj: bool  # DeBERTa-v2's projection between the sum and LayerNorm
    padding_positions: int | None  # RoBERTa's rule: the padding index positions count from
    rule: PositionRule = ABSOLUTE  # how default positions are numbered (position_rules.py)

    @property
    def fused_norm(self) -> bool:
        """LayerNorm right after the sum, so the kernel normalises the row it just summed."""
        return self.layer_norm and not self.embed_proj


def _layout(found) -> Layout:
    return Layout(
        found.segment is not None,
        found.position is not None,
        found.layer_norm is not None,
        found.embed_proj is not None,
        found.padding_idx,
        found.family.positions or ABSOLUTE,
    )


# Module state that is torch's bookkeeping, not the replaced module's face.
_NOT_ADOPTED = {"training"}


class BertEmbeddings(nn.Module):
    """A BERT-family embedding layer on the fused kernels; a drop-in for transformers' module.

    Built with the arguments below it is BERT's layer. :meth:`from_hf` builds the
    drop-in of any family :mod:`bert_embedding_kernels.families` accepts (RoBERTa,
    XLM-R, DistilBERT, ELECTRA, ALBERT, DeBERTa-v2, ...) from that module's own
    submodules, parameters, buffers and call signature.

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
        # transformers' id buffers, as its BertEmbeddings registers them
        positions = torch.arange(max_position_embeddings).expand((1, -1))
        self.register_buffer("position_ids", positions, persistent=False)
        self.register_buffer("token_type_ids", torch.zeros_like(positions), persistent=False)
        self.family = FAMILIES[0]  # BERT
        self._bind = Binder(BERT_SIGNATURE)
        self._layout = Layout(True, True, True, False, None)
        self._buffers_checked = True
        self._device_cache = _DeviceViews()

    def _apply(self, fn, *args, **kwargs):
        # .to(), .cuda(), .cpu(), .float(): the cached views would keep the old tensors alive.
        self._device_cache.clear()
        return super()._apply(fn, *args, **kwargs)

    @classmethod
    def from_hf(cls, module: nn.Module) -> BertEmbeddings:
        """The drop-in for a BERT-family embeddings module, made of that module's own objects.

        Its submodules and Parameters are adopted as they are (not copied): ties,
        hooks, ``requires_grad`` flags, optimizer references and parameter names
        survive. Its mode (train or eval) is kept. A module built on the meta
        device is accepted; its id buffers are checked at the first call that has
        their values.

        Raises
        ------
        TypeError
            ``module`` is not one whose computation the kernels reproduce exactly
            (the message names its class and why; :mod:`bert_embedding_kernels.families`).
        """
        drop_in = cls.__new__(cls)
        nn.Module.__init__(drop_in)
        drop_in._adopt(module)
        return drop_in

    def _adopt(self, module: nn.Module) -> None:
        """Take ``module``'s objects as this module's own (after accepting it)."""
        found = inspect_module(module)
        for name, child in module.named_children():
            self.add_module(name, child)
        non_persistent = module._non_persistent_buffers_set
        for name, buffer in module.named_buffers(recurse=False):
            self.register_buffer(name, buffer, persistent=name not in non_persistent)
        for name, value in vars(module).items():
            if "hook" in name:  # the same hook dicts: handles made on the old module still work
                setattr(self, name, value)
            elif not name.startswith("_") and name not in _NOT_ADOPTED:
                setattr(self, name, value)  # padding_idx, config, ...
        for klass in type(module).__mro__:
            if klass in (nn.Module, BertEmbeddings):
                break
            for name, value in vars(klass).items():
                if isinstance(value, staticmethod) and not hasattr(self, name):
                    setattr(self, name, value.__func__)
        self.family = found.family
        self._bind = module._bind if isinstance(module, BertEmbeddings) else binder_of(module)
        self._layout = _layout(found)
        self._buffers_checked = found.buffers_checked
        self._device_cache = _DeviceViews()
        self.train(module.training)  # swapped into an eval() model, it stays in eval

    def forward(self, *args, **kwargs) -> torch.Tensor:
        """The family's embeddings of the ids (or of ``inputs_embeds``); (batch, seq, hidden).

        Takes the family's own call (BERT's: ``input_ids``, ``token_type_ids``,
        ``position_ids``, ``inputs_embeds``, ``cache_length`` /
        ``past_key_values_length``; DistilBERT's positional ``(input_ids,
        inputs_embeds)``; DeBERTa-v2's ``mask``...). Defaults as in transformers:
        token types zeros, positions by the family's rule. ``token_type_ids`` and
        ``position_ids`` may have any shape that broadcasts to the ids' (``(1, seq)``,
        ``(batch, 1)``). With ``inputs_embeds`` the sum runs in torch (there are no ids
        to gather).
        """
        if not self._buffers_checked:
            self._check_deferred_buffers()
        call = self._bind(*args, **kwargs)
        input_ids, inputs_embeds = call.get("input_ids"), call.get("inputs_embeds")
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("give exactly one of input_ids and inputs_embeds")
        past = next((call[n] for n in PAST_NAMES if call.get(n) is not None), 0)
        layout = self._layout
        token_type_ids = call.get("token_type_ids") if layout.segment else None
        position_ids = call.get("position_ids") if layout.position else None
        if inputs_embeds is not None:
            hidden = self._sum_embeds(inputs_embeds, token_type_ids, position_ids, past)
        else:
            hidden = self._sum_ids(input_ids, token_type_ids, position_ids, past)
        if layout.embed_proj:
            hidden = self.embed_proj(hidden)
        if layout.layer_norm and (inputs_embeds is not None or not layout.fused_norm):
            hidden = self.LayerNorm(hidden)
        mask = call.get("mask")
        if self.family.deberta and mask is not None:
            if mask.dim() != hidden.dim():
                mask = mask.squeeze(1).squeeze(1) if mask.dim() == 4 else mask
                mask = mask.unsqueeze(2)
            hidden = hidden * mask.to(hidden.dtype)
        return self.dropout(hidden)

    def extra_repr(self) -> str:
        return f"family={self.family.name}, positions={self._layout.rule.name.replace('_', ' ')}"

    def _check_deferred_buffers(self) -> None:
        buffers = [b for _, b in self.named_buffers(recurse=False)]
        if any(b.device.type == "meta" for b in buffers):
            return  # still no values (a forward on the meta device computes shapes only)
        check_buffers(self, self.family)
        self._buffers_checked = True

    def _rules(self) -> dict:
        rule, pad = self._layout.rule, self._layout.padding_positions
        return {} if rule is ABSOLUTE else {"position_rule": rule.name, "padding_idx": pad}

    def _sum_ids(self, input_ids, token_type_ids, position_ids, past):
        layout = self._layout
        if layout.segment:
            if token_type_ids is None:
                token_type_ids = torch.zeros_like(input_ids)
            token_type_ids = _broadcast("token_type_ids", token_type_ids, input_ids)
        if layout.position:
            if position_ids is not None:
                position_ids = _broadcast_positions(position_ids, input_ids)
            elif layout.rule.padding:
                # The core numbers them by the tables' rule (past 0, CPU); the GPU path and a
                # past length take them as ids.
                if input_ids.is_cuda or past:
                    pad = layout.padding_positions
                    position_ids = _positions_after_padding(input_ids, pad, past)
            else:
                first, seq = past + layout.rule.offset, input_ids.shape[1]
                position_ids = torch.arange(
                    first, first + seq, dtype=input_ids.dtype, device=input_ids.device
                )[None, :]
        if input_ids.is_cuda and not (layout.segment and layout.position and layout.fused_norm):
            raise NotImplementedError(
                f"the {self.family.name} drop-in runs on CPU tensors; on CUDA only families with "
                "token types, positions and LayerNorm right after the sum (BERT, RoBERTa, ...) "
                "run through the GPU kernels. Keep transformers' module on the GPU."
            )
        norm = self.LayerNorm if layout.fused_norm else None
        tables = (
            self.word_embeddings.weight,
            self.token_type_embeddings.weight if layout.segment else None,
            self.position_embeddings.weight if layout.position else None,
            None if norm is None else norm.weight,
            None if norm is None else norm.bias,
        )
        if self.word_embeddings.weight.is_cuda:
            from .cuda import FusedEmbeddings  # initialises the CUDA driver: only when needed

            return FusedEmbeddings.apply(
                input_ids,
                token_type_ids,
                position_ids,
                self.word_embeddings.padding_idx,
                self._rules(),
                *tables,
                norm.eps,
                self._device_cache,
            )
        hidden, _ = ops.embed(
            input_ids,
            token_type_ids,
            position_ids,
            *tables,
            0.0 if norm is None else float(norm.eps),
            layout.rule.name,
            layout.padding_positions,
            self.word_embeddings.padding_idx,
            # the pre-norm sums only where a backward will need them
            torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tables),
        )
        return hidden

    def _sum_embeds(self, inputs_embeds, token_type_ids, position_ids, past):
        """The family's sum in torch, in its own order, for ``inputs_embeds``."""
        layout = self._layout
        shape, device = inputs_embeds.shape[:2], inputs_embeds.device
        parts = {}
        if layout.segment:
            if token_type_ids is None:
                token_type_ids = torch.zeros(shape, dtype=torch.long, device=device)
            parts["s"] = self.token_type_embeddings(token_type_ids)
        if layout.position:
            if position_ids is None:
                # RoBERTa's rule has no ids to count: sequential from padding_idx + 1, no past
                pad = layout.padding_positions
                first = pad + 1 if layout.rule.padding else past + layout.rule.offset
                position_ids = torch.arange(first, first + shape[1], device=device)[None, :]
            parts["p"] = self.position_embeddings(position_ids)
        hidden = inputs_embeds
        for table in self.family.sum_order[1:]:
            if table in parts:
                hidden = hidden + parts[table]
        return hidden


def _broadcast(name: str, ids: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """``ids`` at the shape of ``input_ids``, as transformers broadcasts them (a view)."""
    if ids.shape == input_ids.shape:
        return ids
    try:
        return ids.expand(input_ids.shape)
    except RuntimeError:
        raise ValueError(
            f"{name} has shape {tuple(ids.shape)}; it must match or broadcast to input_ids' "
            f"shape {tuple(input_ids.shape)}"
        ) from None


def _broadcast_positions(position_ids: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    # (seq,) and (1, seq) go to the kernels as they are: one position row shared by the batch.
    seq = input_ids.shape[-1]
    if position_ids.shape in ((seq,), (1, seq)):
        return position_ids
    return _broadcast("position_ids", position_ids, input_ids)


def _positions_after_padding(input_ids, padding_idx: int, past: int):
    """RoBERTa's position ids (transformers' ``create_position_ids_from_input_ids``), in torch."""
    kept = input_ids.ne(padding_idx).int()
    return ((torch.cumsum(kept, dim=1).type_as(kept) + past) * kept).long() + padding_idx
