"""The embedding tables (and the LayerNorm's weight and bias) in GPU memory."""

from __future__ import annotations

import threading

import numpy as np

from ..dtypes import BFLOAT16, FLOAT16, accumulator
from ..tables import EmbeddingTables
from ._runtime import as_device, cuda, memory_span
from .halfbits import KIND

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
HALF_DTYPES = (FLOAT16, BFLOAT16)
_MAX_DEFAULTS = 64  # cached default id arrays per tables, oldest dropped first


def _to_device(name: str, value, stream) -> tuple:
    """``(device array, dtype)``: 16-bit data is held as its ``uint16`` patterns (halfbits)."""
    array = as_device(value, name)
    if array is None:  # host data: one copy to the device, in C order
        host = np.ascontiguousarray(value)
        dtype = np.dtype(host.dtype)
        if dtype in HALF_DTYPES:
            host = host.view(np.uint16)
        array = cuda.to_device(host, stream=stream)
    else:
        dtype = np.dtype(array.dtype)
        if dtype == FLOAT16:
            array = array.view(np.uint16)
    if dtype not in FLOAT_DTYPES and dtype not in HALF_DTYPES:
        raise TypeError(
            f"{name} has dtype {array.dtype}; the CUDA kernels take float32, float64, float16 "
            "or bfloat16 tables (bfloat16 as host arrays: numba has no bfloat16 device arrays)."
        )
    return array, dtype


class DeviceTables:
    """Token, segment and position tables (and optional LayerNorm parameters) on the GPU.

    Parameters
    ----------
    token, segment, position : array_like or CUDA array, shape (rows, hidden_size)
        Host arrays are copied to the device once; device arrays (numba's, or
        anything with ``__cuda_array_interface__``) are used in place, not copied.
    norm_weight, norm_bias : array_like or CUDA array, shape (hidden_size,), optional
        The embedding LayerNorm's scale and shift; both or neither.
    norm_eps : float, default 1e-12
    stream : numba stream or 0
        The stream the host-to-device copies are queued on.

    Notes
    -----
    float16 and bfloat16 tables are held as their ``uint16`` bit patterns
    (``dtype`` still names the format; ``array_dtype`` is the device arrays'
    dtype, uint16 for bfloat16, which numba lacks; :mod:`.half` has the kernels).
    The checks are the few the kernels rely on (float dtype shared by all,
    2-D tables of one width); the full validation with its messages is
    :class:`bert_embedding_kernels.EmbeddingTables`', whose ``to_device()`` builds this with
    :meth:`from_tables`. Default id arrays (zeros, ``arange``) are cached here
    per shape, so they live on the same device as the tables and die with them.
    """

    device = (
        "cuda"  # what bert_embedding_kernels.embed dispatches on, without importing this package
    )

    __slots__ = (
        "_defaults",
        "_dtype",
        "_scratch",
        "_spans",
        "norm_bias",
        "norm_by_default",
        "norm_eps",
        "norm_weight",
        "position",
        "scratch_lock",
        "segment",
        "token",
    )

    def __init__(
        self,
        token,
        segment,
        position,
        *,
        norm_weight=None,
        norm_bias=None,
        norm_eps=1e-12,
        stream=0,
    ):
        (self.token, dtype), (self.segment, segment_dtype), (self.position, position_dtype) = (
            _to_device(name, value, stream)
            for name, value in (("token", token), ("segment", segment), ("position", position))
        )
        tables = (self.token, self.segment, self.position)
        if len({dtype, segment_dtype, position_dtype}) != 1:
            raise TypeError("token, segment and position must share one dtype.")
        self._dtype = dtype
        shapes = [tuple(t.shape) for t in tables]
        if any(len(shape) != 2 for shape in shapes) or len({s[1] for s in shapes}) != 1:
            raise ValueError(f"tables have shapes {shapes}; they must be 2-D of one width.")
        if (norm_weight is None) != (norm_bias is None):
            raise ValueError("give norm_weight and norm_bias together, or neither.")
        self.norm_weight = self.norm_bias = None
        if norm_weight is not None:
            self.norm_weight, weight_dtype = _to_device("norm_weight", norm_weight, stream)
            self.norm_bias, bias_dtype = _to_device("norm_bias", norm_bias, stream)
            for name, vector, vector_dtype in (
                ("norm_weight", self.norm_weight, weight_dtype),
                ("norm_bias", self.norm_bias, bias_dtype),
            ):
                if tuple(vector.shape) != (self.hidden_size,) or vector_dtype != self.dtype:
                    raise ValueError(
                        f"{name} has shape {tuple(vector.shape)} and dtype {vector_dtype}; "
                        f"it must be ({self.hidden_size},) of {self.dtype}."
                    )
        self.norm_eps = float(norm_eps)
        self.norm_by_default = False  # what embed(..., layer_norm=None) does (from_tables)
        self._defaults = {}
        self._scratch = {}
        self._spans = None
        # Held while a backward pass queues its kernels on the shared scratch arrays.
        self.scratch_lock = threading.Lock()

    @classmethod
    def from_tables(cls, tables, stream=0) -> DeviceTables:
        """Copy an :class:`~bert_embedding_kernels.EmbeddingTables` (validated) to the device.

        The device kernels number positions from ``past_length`` (the position rules
        marked ``on_device``) and never multiply by a mask: tables of a family with another
        rule (RoBERTa's positions, DeBERTa's mask) are refused rather than computed
        differently on the GPU.
        """
        if not tables.rule.on_device or tables.masks_output:
            rule = "its mask" if tables.masks_output else tables.rule.title
            raise ValueError(
                f"tables of {tables.family or 'this family'} cannot go to the device yet: the "
                f"GPU kernels do not apply {rule}; keep them on the host."
            )
        device = cls(
            tables.token,
            tables.segment,
            tables.position,
            norm_weight=tables.norm_weight,
            norm_bias=tables.norm_bias,
            norm_eps=tables.norm_eps,
            stream=stream,
        )
        device.norm_by_default = tables.norm_by_default
        return device

    def to_host(self):
        """The tables back in host memory: a :class:`bert_embedding_kernels.EmbeddingTables`."""
        return EmbeddingTables(**self.host_arrays())

    def host_arrays(self) -> dict:
        """The keyword arguments of ``EmbeddingTables(**...)``, as host arrays."""
        host = {name: self._host(getattr(self, name)) for name in ("token", "segment", "position")}
        for name in ("norm_weight", "norm_bias"):
            vector = getattr(self, name)
            host[name] = None if vector is None else self._host(vector)
        host["norm_eps"] = self.norm_eps
        return host

    def _host(self, array) -> np.ndarray:
        return array.copy_to_host().view(self._dtype)  # 16-bit patterns seen as their format

    @property
    def dtype(self) -> np.dtype:
        """The tables' format (float16 and bfloat16 are held as uint16 patterns)."""
        return self._dtype

    @property
    def half_kind(self):
        """:data:`halfbits.BF16` or :data:`halfbits.F16` for 16-bit tables, else None."""
        return KIND.get(self._dtype)

    @property
    def array_dtype(self) -> np.dtype:
        """The dtype of device arrays of the tables' values: bfloat16's is uint16 (patterns)."""
        return np.dtype(np.uint16) if self._dtype == BFLOAT16 else self._dtype

    @property
    def grad_dtype(self) -> np.dtype:
        """The gradients' dtype: float32 for 16-bit tables (as the CPU), else the tables'."""
        return accumulator(self._dtype)

    @property
    def hidden_size(self) -> int:
        return int(self.token.shape[1])

    @property
    def vocab_size(self) -> int:
        return int(self.token.shape[0])

    @property
    def type_vocab_size(self) -> int:
        return int(self.segment.shape[0])

    @property
    def max_positions(self) -> int:
        return int(self.position.shape[0])

    def named_spans(self) -> list:
        """``("tables.token", memory span)`` and so on for every array held.

        Computed once, and again only if an attribute is given another array.
        """
        names = ("token", "segment", "position", "norm_weight", "norm_bias")
        held = tuple(getattr(self, name) for name in names)
        if self._spans is None or any(
            a is not b for a, b in zip(held, self._spans[0], strict=True)
        ):
            spans = [
                (f"tables.{name}", memory_span(array))
                for name, array in zip(names, held, strict=True)
                if array is not None
            ]
            self._spans = (held, spans)
        return list(self._spans[1])

    def scratch(self, key, make):
        """Device work arrays cached per ``key`` (the backward's sort buffers), made by ``make()``.

        Reused call after call, so the backward pays no device allocation for
        them (numba has no caching allocator; each cudaMalloc and cudaFree of
        megabytes took longer than the kernels, docs/GPU.md). The key holds the
        stream: work queued on one stream runs in order, so a call never
        overwrites arrays an earlier call on that stream still reads; calls on
        different streams get arrays of their own. Callers hold
        ``scratch_lock`` while they queue work on them, so two host threads do
        not interleave their launches. At most four sets are kept.
        """
        if key not in self._scratch:
            if len(self._scratch) >= 4:
                del self._scratch[next(iter(self._scratch))]
            self._scratch[key] = make()
        return self._scratch[key]

    def default_ids(self, kind: str, start: int, seq: int, dtype: np.dtype):
        """Cached (1, seq) device ids: ``"types"`` zeros or ``"positions"`` from ``start``.

        Cached so that a small call does not pay a host-to-device copy per default
        array (about 10 us each, as long as a 1 x 128 kernel).
        """
        key = (kind, start, seq, np.dtype(dtype))
        if key not in self._defaults:
            if len(self._defaults) >= _MAX_DEFAULTS:  # generation moves start every step
                del self._defaults[next(iter(self._defaults))]
            values = np.arange(start, start + seq) if kind == "positions" else np.zeros(seq)
            self._defaults[key] = cuda.to_device(values.astype(dtype).reshape(1, seq))
        return self._defaults[key]
