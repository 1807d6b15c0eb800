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


@parallel_kernel
def _copy_rows(source, destination):
    for row in prange(source.shape[0]):
        for column in range(source.shape[1]):
            destination[row, column] = source[row, column]


class CopyReference:
    """A parallel copy of ``nbytes`` (the output's size), timed as the roofline.

    Parameters
    ----------
    shape : tuple of int
        The output's shape ``(batch, seq, hidden)``.
    dtype : numpy dtype
    """

    def __init__(self, shape, dtype):
        rows = int(np.prod(shape[:-1]))
        # Copied as unsigned integers of the dtype's width: the same bytes move,
        # and numba has no 16-bit float arrays to copy bfloat16 or float16 with.
        itemsize = np.dtype(dtype).itemsize
        self.source = np.ones((rows, shape[-1]), dtype=dtype).view(f"u{itemsize}")
        self.destination = np.empty_like(self.source)
        self.nbytes = self.source.nbytes
        self()  # compile and fault the pages in before anyone times it

    def __call__(self):
        _copy_rows(self.source, self.destination)
        return self.destination
