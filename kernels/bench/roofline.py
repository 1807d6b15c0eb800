"""The memory roofline: the cheapest possible forward pass.

Any embedding forward must at least write every output row, and read at least
as many bytes of table rows, so it can never beat copying an array of the
output's size once. ``copy_reference`` is that copy, run in parallel by the
same numba machinery as the fused kernel, into a preallocated destination;
every benchmark times it beside the methods, so the fraction of the roofline a
method reaches is known in every run.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from .._jit import parallel_kernel
from .streaming import ALIGNMENT, LANES, stream32


@parallel_kernel
def _copy_rows(source, destination):
    for row in prange(source.shape[0]):
        for column in range(source.shape[1]):
            destination[row, column] = source[row, column]


# Bytes per parallel chunk of the streaming copy: whole 32-byte stores, many per thread.
_CHUNK_FLOATS = 4096


@parallel_kernel
def _stream_copy(source, destination):
    """Copy flat float32 ``source`` to 32-byte-aligned ``destination`` with streaming stores."""
    chunks = source.size // _CHUNK_FLOATS
    for chunk in prange(chunks):
        for i in range(chunk * _CHUNK_FLOATS, (chunk + 1) * _CHUNK_FLOATS, LANES):
            stream32(destination, i, source, i)
    for i in range(chunks * _CHUNK_FLOATS, source.size):  # the tail, plainly
        destination[i] = source[i]


def _aligned(nbytes: int) -> np.ndarray:
    block = np.empty(nbytes + ALIGNMENT, np.uint8)
    offset = -block.ctypes.data % ALIGNMENT
    return block[offset : offset + nbytes]


class CopyReference:
    """A parallel copy of ``nbytes`` (the output's size), timed as the roofline.

    Parameters
    ----------
    shape : tuple of int
        The output's shape ``(batch, seq, hidden)``.
    dtype : numpy dtype
    nontemporal : bool, default False
        Store with streaming stores (:mod:`kernels.bench.streaming`), which skip the
        read-for-ownership of each output line: the limit of writing, below the
        plain copy that every forward call is compared with.
    """

    def __init__(self, shape, dtype, nontemporal: bool = False):
        rows = int(np.prod(shape[:-1]))
        # Copied as unsigned integers of the dtype's width (or as float32 words for
        # the streaming copy): the same bytes move, and numba has no 16-bit float
        # arrays to copy bfloat16 or float16 with.
        itemsize = np.dtype(dtype).itemsize
        self.source = np.ones((rows, shape[-1]), dtype=dtype).view(f"u{itemsize}")
        self.nbytes = self.source.nbytes
        self.nontemporal = nontemporal and self.nbytes % 4 == 0
        if self.nontemporal:
            self.source = self.source.reshape(-1).view(np.float32)
            self.destination = _aligned(self.nbytes).view(np.float32)
        else:
            self.destination = np.empty_like(self.source)
        self()  # compile and fault the pages in before anyone times it

    def __call__(self):
        if self.nontemporal:
            _stream_copy(self.source, self.destination)
        else:
            _copy_rows(self.source, self.destination)
        return self.destination
