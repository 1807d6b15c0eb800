"""The embedding tables (and the LayerNorm's weight and bias) in GPU memory."""

from __future__ import annotations

import threading

import numpy as np

from ..tables import EmbeddingTables
from ._runtime import as_device, cuda, memory_span

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
_MAX_DEFAULTS = 64  # cached default id arrays per tables, oldest dropped first


def _to_device(name: str, value, stream):
    array = as_device(value, name)
    if array is None:  # host data: one copy to the device, in C order
        array = cuda.to_device(np.ascontiguousarray(value), stream=stream)
    if np.dtype(array.dtype) not in FLOAT_DTYPES:
        raise TypeError(
            f"{name} has dtype {array.dtype}; the CUDA kernels take float32 or float64 tables."
        )
    return array


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
        self.token = _to_device("token", token, stream)
        self.segment = _to_device("segment", segment, stream)
        self.position = _to_device("position", position, stream)
        tables = (self.token, self.segment, self.position)
        if len({np.dtype(t.dtype) for t in tables}) != 1:
            raise TypeError("token, segment and position must share one dtype.")
        shapes = [tuple(t.shape) for t in tables]
        if any(len(shape) != 2 for shape in shapes) or len({s[1] for s in shapes}) != 1:
            raise ValueError(f"tables have shapes {shapes}; they must be 2-D of one width.")
        if (norm_weight is None) != (norm_bias is None):
            raise ValueError("give norm_weight and norm_bias together, or neither.")
        self.norm_weight = self.norm_bias = None
        if norm_weight is not None:
            self.norm_weight = _to_device("norm_weight", norm_weight, stream)
            self.norm_bias = _to_device("norm_bias", norm_bias, stream)
            for name, vector in (("norm_weight", self.norm_weight), ("norm_bias", self.norm_bias)):
                if tuple(vector.shape) != (self.hidden_size,) or vector.dtype != self.dtype:
                    raise ValueError(
                        f"{name} has shape {tuple(vector.shape)} and dtype {vector.dtype}; "
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

        The device kernels number positions from ``past_length`` and never multiply by a
        mask: tables of a family with another rule (RoBERTa's positions, DeBERTa's mask)
        are refused rather than computed differently on the GPU.
        """
        if tables.position_rule != "absolute" or tables.masks_output:
            rule = "its mask" if tables.masks_output else "RoBERTa's position rule"
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
        host = {
            name: getattr(self, name).copy_to_host() for name in ("token", "segment", "position")
        }
        for name in ("norm_weight", "norm_bias"):
            vector = getattr(self, name)
            host[name] = None if vector is None else vector.copy_to_host()
        host["norm_eps"] = self.norm_eps
        return host

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.token.dtype)

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
