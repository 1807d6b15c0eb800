"""The three embedding tables of BERT's input layer, validated once."""

from __future__ import annotations

import numpy as np

from . import devices
from ._arrays import as_numpy
from .checkpoint import read_embedding_layer
from .dtypes import FLOAT_DTYPES, NAMES, parse

BERT_INIT_STD = 0.02  # BERT's initializer_range: weights start as N(0, 0.02**2)


def _as_table(name: str, value) -> np.ndarray:
    """Check one table and return a read-only, C-contiguous view (or copy) of it."""
    try:
        array = as_numpy(name, value)
    except ValueError as error:  # ragged nested lists
        raise ValueError(f"{name} is not a rectangular array: {error}") from None
    if array.dtype not in FLOAT_DTYPES:
        raise TypeError(
            f"{name} has dtype {array.dtype}; embedding tables must be one of {NAMES}. "
            f"Convert it with {name}.astype(np.float32)."
        )
    if array.ndim != 2:
        raise ValueError(
            f"{name} has shape {array.shape}; an embedding table must be 2-D (rows, hidden_size)."
        )
    if array.shape[0] < 1 or array.shape[1] < 1:
        raise ValueError(
            f"{name} has shape {array.shape}; a table needs at least one row and one column."
        )
    return _read_only_c_order(array)


def _read_only_c_order(array: np.ndarray) -> np.ndarray:
    # Copy once here (if needed) so every kernel can assume C order and contiguous rows.
    view = np.ascontiguousarray(array).view()
    view.flags.writeable = False
    return view


def _as_norm_vector(name: str, value, dtype: np.dtype, hidden: int) -> np.ndarray:
    """Check a LayerNorm weight or bias: a float vector of the tables' dtype and width."""
    array = as_numpy(name, value)
    if array.dtype not in FLOAT_DTYPES or array.dtype != dtype:
        raise TypeError(
            f"{name} has dtype {array.dtype}; it must have the tables' dtype {dtype}. "
            f"Convert it with {name}.astype(np.{dtype})."
        )
    if array.shape != (hidden,):
        raise ValueError(
            f"{name} has shape {array.shape}; it must be (hidden_size,) = ({hidden},)."
        )
    return _read_only_c_order(array)


class EmbeddingTables:
    """The token, segment (token type) and position tables of a BERT input layer.

    Parameters
    ----------
    token : array_like, shape (vocab_size, hidden_size)
        Word embeddings, ``W_t``.
    segment : array_like, shape (type_vocab_size, hidden_size)
        Token-type embeddings, ``W_s``.
    position : array_like, shape (max_positions, hidden_size)
        Absolute position embeddings, ``W_p``.
    norm_weight, norm_bias : array_like, shape (hidden_size,), optional
        The embedding LayerNorm's scale and shift, in the tables' dtype; both or
        neither. Needed by ``embed(..., layer_norm=True)``.
    norm_eps : float, default 1e-12
        LayerNorm's epsilon (BERT's ``layer_norm_eps``); finite and > 0, so a
        constant row (zero variance) normalises to the bias instead of NaN.

    Notes
    -----
    All three tables must be 2-D, of one dtype (float32, float64, float16 or
    ``ml_dtypes.bfloat16``; the 16-bit ones are widened to float32 inside every
    method and the result rounded once), the
    same width and at least one row. Non-C-contiguous input is copied once to C
    order; C-contiguous input (numpy arrays, CPU torch tensors) is kept by
    reference as a read-only view.

    **Live views, never stale.** The tables hold no derived data: every call of
    every method reads the arrays as they are at that moment, so an in-place
    update of the caller's arrays (an optimizer step on the weights) is seen by
    the next call of any method, and all methods keep agreeing. The view itself
    is read-only, so the kernels cannot change the caller's weights. (The
    ``concat`` method once cached its stacked table here and served stale
    results after an in-place update; it now stacks on every call, which costs
    one copy of the tables next to its one-hot product.)
    """

    __slots__ = ("norm_bias", "norm_eps", "norm_weight", "position", "segment", "token")

    def __init__(
        self, token, segment, position, *, norm_weight=None, norm_bias=None, norm_eps=1e-12
    ):
        self.token = _as_table("token", token)
        self.segment = _as_table("segment", segment)
        self.position = _as_table("position", position)
        tables = {"token": self.token, "segment": self.segment, "position": self.position}
        dtypes = {name: str(t.dtype) for name, t in tables.items()}
        if len(set(dtypes.values())) != 1:
            raise TypeError(
                f"tables have mixed dtypes {dtypes}; all three must share one dtype. "
                "Convert them with .astype(np.float32) (or float64)."
            )
        widths = {name: t.shape for name, t in tables.items()}
        if len({shape[1] for shape in widths.values()}) != 1:
            raise ValueError(
                f"tables have shapes {widths}; all three must have the same width (hidden_size)."
            )
        if (norm_weight is None) != (norm_bias is None):
            missing = "norm_bias" if norm_bias is None else "norm_weight"
            raise ValueError(f"{missing} is missing; give norm_weight and norm_bias together.")
        hidden, dtype = self.token.shape[1], self.token.dtype
        self.norm_weight = (
            None
            if norm_weight is None
            else _as_norm_vector("norm_weight", norm_weight, dtype, hidden)
        )
        self.norm_bias = (
            None if norm_bias is None else _as_norm_vector("norm_bias", norm_bias, dtype, hidden)
        )
        if isinstance(norm_eps, bool) or not isinstance(norm_eps, (int, float, np.floating)):
            raise TypeError(f"norm_eps is {type(norm_eps).__name__}; it must be a float > 0.")
        if not (np.isfinite(norm_eps) and norm_eps > 0):
            raise ValueError(f"norm_eps is {norm_eps}; it must be finite and > 0.")
        self.norm_eps = float(norm_eps)

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
    def from_safetensors(cls, path, *, prefix: str | None = None, dtype=None) -> EmbeddingTables:
        """The embedding layer of a Hugging Face BERT-family checkpoint.

        Reads ``model.safetensors`` with ``safetensors``' numpy loader (no torch):
        the word, token-type and position tables and the embedding LayerNorm's
        weight and bias, with or without the ``bert.`` prefix, ``gamma``/``beta``
        accepted for old checkpoints; ``norm_eps`` is the ``layer_norm_eps`` of a
        ``config.json`` beside the weights (else 1e-12).

        Parameters
        ----------
        path : str or path-like
            The ``model.safetensors`` file or the directory holding it.
        prefix : str, optional
            What precedes ``embeddings.`` in the tensor names; by default ``""``
            and then ``"bert."`` are tried.
        dtype : float32, float64, float16 or bfloat16, optional
            Convert the tables to this dtype on load; by default they keep the
            dtype stored (F32, F64, F16 or BF16).

        Returns
        -------
        EmbeddingTables

        Raises
        ------
        ImportError
            ``safetensors`` is missing: ``pip install 'bert-embedding-kernels[real]'``.
        FileNotFoundError, KeyError, ValueError
            No checkpoint there, a missing tensor (named), a shape that disagrees
            (both shapes named); see :func:`bert_embedding_kernels.checkpoint.read_embedding_layer`.
        """
        return cls(**read_embedding_layer(path, prefix=prefix, dtype=dtype))

    @classmethod
    def from_torch(cls, module) -> EmbeddingTables:
        """The tables of a torch embeddings module, such as transformers' ``BertEmbeddings``.

        Reads ``word_embeddings``, ``token_type_embeddings`` and
        ``position_embeddings`` (``torch.nn.Embedding``) and, where present, the
        ``LayerNorm`` (weight, bias, eps). The weights are detached and shared,
        not copied (CPU tensors, C-contiguous): an optimizer step on the module
        is seen by the next call. torch itself is not imported here.

        Raises
        ------
        TypeError
            ``module`` lacks one of the three embeddings (the message names it).
        """
        parts = {}
        for argument, attribute in (
            ("token", "word_embeddings"),
            ("segment", "token_type_embeddings"),
            ("position", "position_embeddings"),
        ):
            embedding = getattr(module, attribute, None)
            if getattr(embedding, "weight", None) is None:
                raise TypeError(
                    f"module is {type(module).__name__} without {attribute}.weight; pass a "
                    "BERT-style embeddings module (e.g. transformers' BertModel.embeddings)."
                )
            parts[argument] = embedding.weight
        norm = getattr(module, "LayerNorm", None)
        if getattr(norm, "weight", None) is not None and getattr(norm, "bias", None) is not None:
            parts |= {"norm_weight": norm.weight, "norm_bias": norm.bias, "norm_eps": norm.eps}
        return cls(**parts)

    device = "cpu"

    def to_device(self, stream=0):
        """These tables in GPU memory (a ``cuda.DeviceTables``), for the CUDA kernels.

        The backend is imported here, on first use (:mod:`bert_embedding_kernels.devices`).

        ``embed`` and ``embed_backward`` take the result like host tables and return
        device arrays; ``.to_host()`` brings the tables
        back. Needs numba's CUDA support and a GPU (or ``NUMBA_ENABLE_CUDASIM=1``);
        float32 and float64 tables.
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
