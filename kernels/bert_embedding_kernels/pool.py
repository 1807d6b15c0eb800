"""Output buffers reused across allocating calls, so a loop does not fault in fresh pages each time.

glibc hands every allocation above its mmap threshold (at most 32 MiB) back to
the operating system when it is freed, and the next call's ``np.empty`` faults
in fresh zeroed pages: at BERT-base (48 MiB) an allocating ``embed`` took 12.4
ms against 4.9 ms into ``out=`` (issue 16; with glibc's mmap threshold raised
process-wide the two were equal, which is the cost this pool removes without
touching the process's allocator).

How it stays safe: a pooled result is a numpy array whose base is a small
holder object; the buffer goes back to the pool only when that holder is
garbage, that is when the result and every view of it are gone. So a result
never shares memory with a live earlier result, whatever the threads do.
A call takes the free buffer of its size returned last (its pages are the
warmest), and at most ``max_bytes`` are retained in all: past that, the buffer
returned longest ago is dropped, whatever its size. Why by buffer, not by size:
a training loop that holds two word-table gradients at a moment (the last
step's until ``zero_grad``) leaves one spare in the pool; dropping by size
dropped the step's 48 MiB buffers instead of that spare, and every step of an
interleaved BERT-base benchmark faulted in two of them afresh (23 against 17.6
ms a step, docs/BACKWARD.md).
Buffers of ``hugepages.MIN_BYTES`` (4 MiB) or more are in transparent huge pages
(:mod:`bert_embedding_kernels.hugepages`), which spares the fused kernel a page walk per
output row.

>>> import bert_embedding_kernels as bek
>>> bek.pool.configure(max_bytes=512 * 2**20)   # retain up to 512 MiB   # doctest: +SKIP
>>> bek.pool.configure(enabled=False)            # plain np.empty again  # doctest: +SKIP
"""

from __future__ import annotations

import os
import threading
import weakref
from collections import OrderedDict, deque

import numpy as np

from . import hugepages

# Outputs smaller than this are allocated as usual: the allocator reuses them
# itself (below its mmap threshold) and a holder costs ~2 us a small call lacks.
MIN_BYTES = 1 << 20
# Retained free buffers, all sizes together: a BERT-large training step at 32 x 512 (hidden
# 1024) cycles three 64 MiB buffers and a 125 MB word-table gradient through the pool.
DEFAULT_MAX_BYTES = 1 << 30
ALIGNMENT = 64  # bytes: every pooled buffer starts a cache line


def _new_buffer(nbytes: int) -> np.ndarray:
    """Cache-line-aligned bytes for a pooled output, in huge pages where hugepages.empty puts
    them (a large output is written a sequence apart, row by row: fewer TLB misses)."""
    block = hugepages.empty(nbytes + ALIGNMENT, np.uint8)
    offset = -block.ctypes.data % ALIGNMENT
    return block[offset : offset + nbytes]


def aligned_zeros(shape, dtype) -> np.ndarray:
    """``np.zeros(shape, dtype)`` whose first element starts a cache line.

    Large numpy arrays start 16 bytes into a page (the allocator's header), so a column
    block of whole lines counted from a row's start would end mid-line, shared by two
    threads of the fused backward (BERT-base, warm buffers, 2 threads: 11.9 ms unaligned,
    10.4 ms aligned). The pages stay lazily zeroed: the padding is never written.
    """
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape)) * dtype.itemsize
    raw = np.zeros(nbytes + ALIGNMENT, np.uint8)
    offset = -raw.ctypes.data % ALIGNMENT
    return raw[offset : offset + nbytes].view(dtype).reshape(shape)


class _Holder:
    """Owns one pooled buffer while any array made from it is alive.

    It shows numpy the buffer's bytes only; :meth:`OutputPool.empty` views them as
    the dtype. An interface in the dtype's own type string would lose any dtype
    numpy does not know by it: ml_dtypes' bfloat16 says ``<V2`` and came back as
    raw two-byte voids, which numpy's arithmetic then filled with garbage.
    """

    __slots__ = ("__array_interface__", "__weakref__", "raw")

    def __init__(self, raw: np.ndarray):
        self.raw = raw
        self.__array_interface__ = {
            "shape": (raw.nbytes,),
            "typestr": "|u1",
            "data": (raw.ctypes.data, False),
            "version": 3,
        }


class OutputPool:
    """A bounded, thread-safe pool of output buffers; see the module docstring."""

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES, enabled: bool = True):
        self._lock = threading.Lock()
        self._free: OrderedDict[int, np.ndarray] = OrderedDict()  # in the order given back
        self._by_size: dict[int, deque[int]] = {}  # nbytes: keys of _free, oldest first
        self._returns = 0  # numbers the buffers given back, the keys of _free
        self._retained = 0
        self.max_bytes = max_bytes
        self.enabled = enabled
        self.reused = 0  # buffers handed out again (for tests and curious users)

    @property
    def retained_bytes(self) -> int:
        return self._retained

    def configure(self, *, max_bytes: int | None = None, enabled: bool | None = None) -> None:
        """Change the cap on retained bytes or switch pooling off (dropping what it holds)."""
        with self._lock:
            if max_bytes is not None:
                if max_bytes < 0:
                    raise ValueError(f"max_bytes is {max_bytes}; it must be >= 0.")
                self.max_bytes = int(max_bytes)
            if enabled is not None:
                self.enabled = bool(enabled)
            self._trim(0 if not self.enabled else self.max_bytes)

    def empty(self, shape, dtype) -> np.ndarray:
        """An uninitialised array, like ``np.empty(shape, dtype)``, from the pool where it pays."""
        dtype = np.dtype(dtype)
        nbytes = int(np.prod(shape)) * dtype.itemsize
        if not self.enabled or nbytes < MIN_BYTES:
            return np.empty(shape, dtype)
        raw = self._take(nbytes)
        if raw is None:
            raw = _new_buffer(nbytes)
        else:
            self.reused += 1
        return self._held(raw, shape, dtype)

    def _held(self, raw: np.ndarray, shape, dtype: np.dtype) -> np.ndarray:
        """``raw`` as an array of ``shape``, back in the pool once it and its views are gone."""
        holder = _Holder(raw)
        weakref.finalize(holder, self._give_back, raw)
        return np.asarray(holder).view(dtype).reshape(shape)

    def zeros(self, shape, dtype, fill) -> tuple[np.ndarray, bool]:
        """A zeroed, cache-line-aligned array from the pool, and whether its pages are new.

        Why: a training loop's gradient is freed every step (``zero_grad(set_to_none=True)``)
        and a new one faults in every page it touches; a reused buffer's pages are mapped
        already, and zeroing them again costs a fraction of the faults (issue 39). A reused
        buffer holds what its last owner left there, so ``fill(array)`` zeroes all of it.
        A new one is a fresh mapping, or ``np.zeros``, that the operating system zeroes on
        first touch: it is not written here (True), so a caller may touch only what it uses.
        """
        dtype = np.dtype(dtype)
        nbytes = int(np.prod(shape)) * dtype.itemsize
        if not self.enabled or nbytes < MIN_BYTES:
            return aligned_zeros(shape, dtype), True
        raw = self._take(nbytes)
        if raw is not None:
            self.reused += 1
            fresh = False
        else:
            raw = _new_buffer(nbytes)
            fresh = hugepages.maps_fresh(nbytes + ALIGNMENT)  # else np.empty's old bytes
        array = self._held(raw, shape, dtype)
        if not fresh:
            fill(array)
        return array, fresh

    def _take(self, nbytes: int) -> np.ndarray | None:
        with self._lock:
            keys = self._by_size.get(nbytes)
            if not keys:
                return None
            self._retained -= nbytes
            return self._free.pop(keys.pop())  # the warmest

    def _give_back(self, raw: np.ndarray) -> None:
        with self._lock:
            if not self.enabled or raw.nbytes > self.max_bytes:
                return
            self._returns += 1
            self._free[self._returns] = raw
            self._by_size.setdefault(raw.nbytes, deque()).append(self._returns)
            self._retained += raw.nbytes
            self._trim(self.max_bytes)

    def _trim(self, limit: int) -> None:
        # The buffer given back longest ago goes first.
        while self._retained > limit and self._free:
            _, raw = self._free.popitem(last=False)
            self._by_size[raw.nbytes].popleft()
            self._retained -= raw.nbytes

    def _after_fork_in_child(self) -> None:
        # A thread of the parent may have held the lock at the fork; it does not
        # exist in the child, so the lock would never be released there.
        self._lock = threading.Lock()


OUTPUTS = OutputPool()
configure = OUTPUTS.configure
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=OUTPUTS._after_fork_in_child)
