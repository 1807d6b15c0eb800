"""The three embedding tables of BERT's input layer, validated once."""

from __future__ import annotations

import numpy as np

from . import devices
from ._table_arrays import (
    CopiedTableWarning,
    as_norm_vector,
    as_table,
    check_rule,
    read_only_c_order,
)
from .checkpoint import read_embedding_layer
from .dtypes import parse
from .families import inspect_module
from .position_rules import ABSOLUTE

__all__ = ["CopiedTableWarning", "EmbeddingTables"]

BERT_INIT_STD = 0.02  # BERT's initializer_range: weights start as N(0, 0.02**2)


class EmbeddingTables:
    """The token, segment (token type) and position tables of a BERT input layer.

    Parameters
    ----------
    token : array_like, shape (vocab_size, hidden_size)
        Word embeddings, ``W_t``.
    segment : array_like, shape (type_vocab_size, hidden_size), or None
        Token-type embeddings, ``W_s``; None for a family without token types
        (DistilBERT, MPNet): then ``token_type_ids`` must be omitted.
    position : array_like, shape (max_positions, hidden_size), or None
        Position embeddings, ``W_p``; None for a family without absolute positions
        (DeBERTa-v3): then ``position_ids`` must be omitted.
    norm_weight, norm_bias : array_like, shape (hidden_size,), optional
        The embedding LayerNorm's scale and shift, in the tables' dtype; both or
        neither. Needed by ``embed(..., layer_norm=True)``.
    norm_eps : float, default 1e-12
        LayerNorm's epsilon (BERT's ``layer_norm_eps``); finite and > 0, so a
        constant row (zero variance) normalises to the bias instead of NaN.
    position_rule : str, default "absolute"
        How default positions are numbered: the name of a rule of
        :data:`bert_embedding_kernels.position_rules.RULES` (held as ``rule``, the
        record). ``"absolute"``: ``past_length .. past_length + seq - 1`` (BERT).
        ``"after_padding"``: RoBERTa's rule, which needs ``padding_idx``: a token's
        position is ``padding_idx + past_length +`` the count of non-padding tokens
        up to and including it, and a padding token's is ``padding_idx``.
    padding_idx : int, optional
        The padding token's id (for a rule that numbers after the padding).
    norm_by_default : bool, default False
        What ``embed(..., layer_norm=None)`` (its default) does: True for tables
        read from a module or checkpoint whose embeddings end in LayerNorm, so that
        the default call reproduces the module.
    masks_output : bool, default False
        The family multiplies its output by the attention mask (DeBERTa-v2): then
        ``embed(..., attention_mask=...)`` does too.
    family : str, optional
        The model family the tables came from (the README's table), for messages.

    Notes
    -----
    All three tables must be 2-D, of one dtype (float32, float64, float16 or
    ``ml_dtypes.bfloat16``; the 16-bit ones are widened to float32 inside every
    method and the result rounded once), the
    same width and at least one row. Non-C-contiguous input is copied once to C
    order; C-contiguous input (numpy arrays, CPU torch tensors) is kept by
    reference as a read-only view.

    A missing segment or position table is held as one row of zeros (``segment``
    and ``position`` are that row), so every method adds it unchanged: ``x + 0 ==
    x`` exactly, up to the sign of a zero. ``has_segment`` / ``has_position`` say
    which tables exist.

    **Live views, never stale.** The tables hold no derived data: every call of
    every method reads the arrays as they are at that moment, so an in-place
    update of the caller's arrays (an optimizer step on the weights) is seen by
    the next call of any method, and all methods keep agreeing. The view itself
    is read-only, so the kernels cannot change the caller's weights. (The
    ``concat`` method once cached its stacked table here and served stale
    results after an in-place update; it now stacks on every call, which costs
    one copy of the tables next to its one-hot product.)
    """

    __slots__ = (
        "family",
        "has_position",
        "has_segment",
        "masks_output",
        "norm_bias",
        "norm_by_default",
        "norm_eps",
        "norm_weight",
        "padding_idx",
        "position",
        "rule",
        "segment",
        "token",
    )

    def __init__(
        self,
        token,
        segment=None,
        position=None,
        *,
        norm_weight=None,
        norm_bias=None,
        norm_eps=1e-12,
        position_rule="absolute",
        padding_idx=None,
        norm_by_default=False,
        masks_output=False,
        family=None,
    ):
        self.token = as_table("token", token)
        self.has_segment, self.has_position = segment is not None, position is not None
        self.segment = as_table("segment", segment) if self.has_segment else self._zero_row()
        self.position = as_table("position", position) if self.has_position else self._zero_row()
        tables = {"token": self.token}
        tables |= {"segment": self.segment} if self.has_segment else {}
        tables |= {"position": self.position} if self.has_position else {}
        dtypes = {name: str(t.dtype) for name, t in tables.items()}
        if len(set(dtypes.values())) != 1:
            raise TypeError(
                f"tables have mixed dtypes {dtypes}; all tables must share one dtype. "
                "Convert them with .astype(np.float32) (or float64)."
            )
        widths = {name: t.shape for name, t in tables.items()}
        if len({shape[1] for shape in widths.values()}) != 1:
            raise ValueError(
                f"tables have shapes {widths}; all must have the same width (hidden_size)."
            )
        if (norm_weight is None) != (norm_bias is None):
            missing = "norm_bias" if norm_bias is None else "norm_weight"
            raise ValueError(f"{missing} is missing; give norm_weight and norm_bias together.")
        hidden, dtype = self.token.shape[1], self.token.dtype
        self.norm_weight = (
            None
            if norm_weight is None
            else as_norm_vector("norm_weight", norm_weight, dtype, hidden)
        )
        self.norm_bias = (
            None if norm_bias is None else as_norm_vector("norm_bias", norm_bias, dtype, hidden)
        )
        if isinstance(norm_eps, bool) or not isinstance(norm_eps, (int, float, np.floating)):
            raise TypeError(f"norm_eps is {type(norm_eps).__name__}; it must be a float > 0.")
        if not (np.isfinite(norm_eps) and norm_eps > 0):
            raise ValueError(f"norm_eps is {norm_eps}; it must be finite and > 0.")
        self.norm_eps = float(norm_eps)
        self.rule, self.padding_idx = check_rule(
            position_rule, padding_idx, self.has_position, self.vocab_size, self.max_positions
        )
        self.norm_by_default = bool(norm_by_default)
        if self.norm_by_default and self.norm_weight is None:
            raise ValueError("norm_by_default=True needs norm_weight and norm_bias.")
        self.masks_output = bool(masks_output)
        self.family = family

    @property
    def position_rule(self) -> str:
        """The name of the tables' position rule (``rule`` is the record)."""
        return self.rule.name

    def _zero_row(self) -> np.ndarray:
        """The stand-in for a missing table: one read-only row of zeros (position 0, type 0)."""
        return read_only_c_order(np.zeros((1, self.token.shape[1]), self.token.dtype))

    @classmethod
    def random(
        cls,
        vocab_size: int,
        hidden_size: int,
        *,
        max_positions: int = 512,
        type_vocab_size: int = 2,
        dtype=np.float32,
        seed: int = 0,
    ) -> EmbeddingTables:
        """Reproducible tables drawn from N(0, 0.02**2), as BERT initialises them.

        The LayerNorm starts as BERT's does: weight ones, bias zeros, eps 1e-12.

        Parameters
        ----------
        vocab_size, hidden_size, max_positions, type_vocab_size : int
            Table shapes; each at least 1.
        dtype : float32, float64, float16 or bfloat16 (``ml_dtypes.bfloat16`` or "bfloat16")
            The 16-bit tables are the float32 draw rounded to nearest.
        seed : int
            Seed of ``numpy.random.default_rng``; the same seed gives the same tables.
        """
        sizes = {
            "vocab_size": vocab_size,
            "hidden_size": hidden_size,
            "max_positions": max_positions,
            "type_vocab_size": type_vocab_size,
        }
        for name, size in sizes.items():
            if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {size!r}")
        dtype = parse(dtype)
        rng = np.random.default_rng(seed)
        drawn = dtype if dtype == np.float64 else np.dtype(np.float32)

        def draw(rows):
            values = rng.standard_normal((rows, hidden_size), dtype=drawn)
            return (values * drawn.type(BERT_INIT_STD)).astype(dtype)

        return cls(
            draw(vocab_size),
            draw(type_vocab_size),
            draw(max_positions),
            norm_weight=np.ones(hidden_size, dtype),
            norm_bias=np.zeros(hidden_size, dtype),
        )

    @classmethod
    def from_safetensors(
        cls, path, *, prefix: str | None = None, dtype=None, model_type: str | None = None
    ) -> EmbeddingTables:
        """The embedding layer of a Hugging Face BERT-family checkpoint.

        Reads only the embedding tensors of ``model.safetensors`` (a reader of the
        format is built in: no torch, no safetensors package), by the rules of the
        family that ``config.json``'s ``model_type`` names (BERT, RoBERTa, XLM-R,
        DistilBERT, ...; :mod:`bert_embedding_kernels.families`): which tables
        exist, the position rule and padding index, LayerNorm (then applied by the
        default ``embed(tables, ids)``, so that it equals the model's embeddings)
        and its ``layer_norm_eps``. Keys with or without the model's prefix
        (``bert.``, ``roberta.``, ``distilbert.``, ...), ``gamma``/``beta`` for old
        checkpoints.

        Parameters
        ----------
        path : str or path-like
            The ``model.safetensors`` file or the directory holding it.
        prefix : str, optional
            What precedes ``embeddings.`` in the tensor names; found by default.
        dtype : float32, float64, float16 or bfloat16, optional
            Convert the tables to this dtype on load; by default they keep the
            dtype stored (F32, F64, F16 or BF16).
        model_type : str, optional
            The family, for a checkpoint without ``config.json`` (``"bert"``,
            ``"roberta"``, ...); must agree with ``config.json`` where there is one.

        Raises
        ------
        TypeError
            A ``model_type`` whose embeddings the kernels do not reproduce, or none
            known (no ``config.json`` and no ``model_type``).
        FileNotFoundError, KeyError, ValueError
            No checkpoint there, a missing tensor (named), a shape that disagrees
            (both shapes named); see
            :func:`bert_embedding_kernels.checkpoint.read_embedding_layer`.
        """
        return cls(**read_embedding_layer(path, prefix=prefix, dtype=dtype, model_type=model_type))

    @classmethod
    def from_torch(cls, module) -> EmbeddingTables:
        """The tables of a BERT-family embeddings module, such as transformers' ``BertEmbeddings``.

        Accepts exactly the modules whose computation the kernels reproduce
        (:mod:`bert_embedding_kernels.families`: BERT, RoBERTa, XLM-R, DistilBERT,
        ...), and carries their rules: which tables exist, the position rule and
        padding index, and LayerNorm, which the default ``embed(tables, ids)`` then
        applies, so that it equals ``module(ids)`` in eval mode. The weights are
        detached and shared, not copied (CPU tensors, C-contiguous): an optimizer
        step on the module is seen by the next call. torch itself is not imported.

        Raises
        ------
        TypeError
            A module of another class, or one holding what the kernels do not
            compute (an extra table, a projection between the sum and LayerNorm, a
            different position rule); the message names the class and the reason.
        """
        found = inspect_module(module)
        family = found.family
        if found.embed_proj is not None:
            raise TypeError(
                f"{type(module).__name__} ({family.name}) projects the sum (embed_proj) before "
                "its LayerNorm, which tables cannot hold; use "
                "bert_embedding_kernels.nn.BertEmbeddings.from_hf(module) instead."
            )
        parts = {
            "token": found.word.weight,
            "segment": None if found.segment is None else found.segment.weight,
            "position": None if found.position is None else found.position.weight,
            "position_rule": (family.positions or ABSOLUTE).name,
            # the token padding index: the position rule's where it has one
            "padding_idx": found.padding_idx
            if found.padding_idx is not None
            else found.word.padding_idx,
            "masks_output": family.deberta,
            "family": family.name,
        }
        norm = found.layer_norm
        if norm is not None:
            parts |= {"norm_weight": norm.weight, "norm_bias": norm.bias, "norm_eps": norm.eps}
            parts["norm_by_default"] = True
        return cls(**parts)

    device = "cpu"

    def to_device(self, stream=0):
        """These tables in GPU memory (a ``cuda.DeviceTables``), for the CUDA kernels.

        The backend is imported here, on first use (:mod:`bert_embedding_kernels.devices`).

        ``embed`` and ``embed_backward`` take the result like host tables and return
        device arrays; ``.to_host()`` brings the tables
        back. Needs numba's CUDA support and a GPU (or ``NUMBA_ENABLE_CUDASIM=1``);
        float32, float64, float16 and bfloat16 tables (16-bit ones give the CPU's bits,
        docs/GPU.md).
        """
        return devices.backend("cuda").DeviceTables.from_tables(self, stream=stream)

    def to_host(self) -> EmbeddingTables:
        """These tables (already in host memory)."""
        return self

    @property
    def dtype(self) -> np.dtype:
        return self.token.dtype

    @property
    def vocab_size(self) -> int:
        return self.token.shape[0]

    @property
    def type_vocab_size(self) -> int:
        return self.segment.shape[0]

    @property
    def max_positions(self) -> int:
        return self.position.shape[0]

    @property
    def hidden_size(self) -> int:
        return self.token.shape[1]

    @property
    def has_layer_norm(self) -> bool:
        return self.norm_weight is not None

    @property
    def nbytes(self) -> int:
        return self.token.nbytes + self.segment.nbytes + self.position.nbytes

    def __repr__(self) -> str:
        return (
            f"EmbeddingTables(vocab_size={self.vocab_size}, hidden_size={self.hidden_size}, "
            f"max_positions={self.max_positions}, type_vocab_size={self.type_vocab_size}, "
            f"dtype={self.dtype})"
        )
