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

from ... import hugepages
from ..._jit import parallel_kernel
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


# The destination starts this far past a page boundary, the source on one. When the two
# are a whole number of 4 KiB pages apart, each store looks like it may alias the load
# of the same page offset ("4K aliasing"), and the copy ran 1.4x (1.5 MiB) to 1.6x
# (6 MiB) slower on this project's EPYC; np.empty gives page-aligned memory or not
# depending on the allocator's history, which made the roofline, and every ratio to it,
# change between runs (issue 13). Half a page apart, every run gets the fast layout.
_PAGE = 4096
_DESTINATION_OFFSET = _PAGE // 2


def _empty(nbytes: int, huge_pages: bool) -> np.ndarray:
    return hugepages.empty(nbytes, np.uint8) if huge_pages else np.empty(nbytes, np.uint8)


def _apart(nbytes: int, huge_pages: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Source and destination byte buffers of one block: page-aligned, and half a page past.

    With ``huge_pages`` the block comes from :func:`bert_embedding_kernels.hugepages.empty`.
    """
    block = _empty(2 * nbytes + 3 * _PAGE, huge_pages)
    first = -block.ctypes.data % _PAGE
    second = first + nbytes + (-nbytes % _PAGE) + _DESTINATION_OFFSET
    return block[first : first + nbytes], block[second : second + nbytes]


def apart_from(table: np.ndarray, shape, dtype, huge_pages: bool = False) -> np.ndarray:
    """An empty array for ``out=``, half a page from ``table`` modulo the page size.

    The same rule as the copy's, for the fused kernel's output against the token
    table: at in-cache sizes a whole number of KiB between them made fused run
    1.4x slower at batch 4 x seq 128 (4K aliasing between its stores and the next
    rows' loads), and np.empty's placement varies from run to run. Every
    measured ``out=`` gets this layout, so that runs compare.
    """
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    block = _empty(
        nbytes + _PAGE, huge_pages
    )  # with huge_pages, bert_embedding_kernels.hugepages.empty's
    first = (table.ctypes.data + _DESTINATION_OFFSET - block.ctypes.data) % _PAGE
    return block[first : first + nbytes].view(dtype).reshape(shape)


class CopyReference:
    """A parallel copy of ``nbytes`` (the output's size), timed as the roofline.

    Parameters
    ----------
    shape : tuple of int
        The output's shape ``(batch, seq, hidden)``.
    dtype : numpy dtype
    nontemporal : bool, default False
        Store with streaming stores (:mod:`.streaming`), which skip the
        read-for-ownership of each output line: the limit of writing, below the
        plain copy that every forward call is compared with.
    huge_pages : bool, default False
        Both buffers from :func:`bert_embedding_kernels.hugepages.empty`: the roofline of an
        ``out=`` in huge pages.
    """

    def __init__(self, shape, dtype, nontemporal: bool = False, huge_pages: bool = False):
        rows = int(np.prod(shape[:-1]))
        # Copied as unsigned integers of the dtype's width (or as float32 words for
        # the streaming copy): the same bytes move, and numba has no 16-bit float
        # arrays to copy bfloat16 or float16 with.
        itemsize = np.dtype(dtype).itemsize
        self.nbytes = rows * shape[-1] * itemsize
        self.nontemporal = nontemporal and self.nbytes % 4 == 0
        source, destination = _apart(self.nbytes, huge_pages)
        assert destination.ctypes.data % ALIGNMENT == 0  # as streaming stores need
        source[:] = 1  # any bytes but fresh zero pages
        if self.nontemporal:
            self.source, self.destination = source.view(np.float32), destination.view(np.float32)
        else:
            words = f"u{itemsize}"
            self.source = source.view(words).reshape(rows, shape[-1])
            self.destination = destination.view(words).reshape(rows, shape[-1])
        self()  # compile and fault the pages in before anyone times it

    def __call__(self):
        if self.nontemporal:
            _stream_copy(self.source, self.destination)
        else:
            _copy_rows(self.source, self.destination)
        return self.destination
