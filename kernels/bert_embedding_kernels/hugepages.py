"""Arrays in transparent huge pages, for large outputs.

Why: the fused kernel writes its output rows one sequence apart (1.5 MiB at
BERT-base: position-major blocks, docs/FORWARD.md), so with 4 KiB pages nearly
every row it writes costs a TLB miss and a page walk. An output in 2 MiB pages
made the kernel 1.05x faster at BERT-base (the token table, read at random rows,
gained nothing measurable from them; docs/FORWARD.md).

How: an anonymous ``mmap`` advised with ``MADV_HUGEPAGE``, a hint on these
pages only; nothing process-wide changes. Linux backs them with huge pages
where its setting (``/sys/kernel/mm/transparent_hugepage/enabled``) is
``always`` or ``madvise``; with ``never``, or off Linux, the array is an
ordinary one.

The output pool (:mod:`bert_embedding_kernels.pool`) takes its large buffers from here, so
allocating calls get them; for ``out=``:

>>> out = bert_embedding_kernels.hugepages.empty((32, 512, 768), np.float32)   # doctest: +SKIP
>>> bert_embedding_kernels.embed(tables, ids, out=out)                          # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import mmap

import numpy as np

HUGE_PAGE = 2 << 20  # bytes: x86-64's and most aarch64 kernels' transparent huge page
# Smaller arrays come from np.empty: a huge page would round them up by up to half
# their size, and a few hundred 4 KiB pages fit the TLB anyway.
MIN_BYTES = 4 << 20
# The hint exists on Linux only (Python 3.8+); elsewhere every array is np.empty's.
SUPPORTED = hasattr(mmap, "MADV_HUGEPAGE") and hasattr(mmap.mmap, "madvise")


def empty(shape, dtype=np.float32) -> np.ndarray:
    """An uninitialised C-contiguous array, like ``np.empty``, in huge pages where it pays.

    Arrays of ``MIN_BYTES`` (4 MiB) or more start on a 2 MiB boundary of memory
    advised for huge pages; smaller ones, and every array where the hint does
    not exist, are ``np.empty(shape, dtype)``. The memory is returned to the
    operating system when the array and every view of it are gone.
    """
    shape, dtype, nbytes = _described(shape, dtype)
    if not maps_fresh(nbytes):
        return np.empty(shape, dtype)
    return _advised(nbytes, mmap.MADV_HUGEPAGE, HUGE_PAGE).view(dtype).reshape(shape)


def _described(shape, dtype) -> tuple[tuple, np.dtype, int]:
    """``shape`` as a tuple, ``dtype`` as a numpy dtype, and the array's bytes."""
    dtype = np.dtype(dtype)
    shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape)
    return shape, dtype, int(np.prod(shape)) * dtype.itemsize


def _advised(nbytes: int, advice: int, boundary: int) -> np.ndarray:
    """``nbytes`` of a fresh anonymous mapping given ``advice``, starting on ``boundary``.

    A boundary above a page maps that much more, so the bytes can start on it; the pages
    before them are never touched and never backed. A kernel that refuses the hint (one
    built without transparent huge pages) leaves ordinary pages.
    """
    extra = boundary if boundary > mmap.PAGESIZE else 0
    mapping = mmap.mmap(-1, nbytes + extra, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    with contextlib.suppress(OSError):
        mapping.madvise(advice)
    raw = np.frombuffer(mapping, np.uint8)  # keeps the mapping alive as its base
    start = -raw.ctypes.data % boundary
    return raw[start : start + nbytes]


def sparse_zeros(shape, dtype=np.float32) -> np.ndarray:
    """A zeroed array for memory of which only a few scattered rows will be written.

    ``np.zeros`` of a large array asks for huge pages (numpy advises them itself), so
    the first store into each row makes the operating system zero a whole 2 MiB page:
    a gradient of the 94 MB word table that a 1 x 128 batch adds into touched about
    50 such pages, 6 ms a step on this project's 2-core VM (docs/BACKWARD.md). Here the
    mapping is advised ``MADV_NOHUGEPAGE``, so a store zeroes its 4 KiB page only. The
    array starts on a page boundary (so on a cache line). Where the hint does not
    exist, or below :data:`MIN_BYTES`, it is an ordinary ``np.zeros`` with that start.
    """
    shape, dtype, nbytes = _described(shape, dtype)
    if not maps_fresh(nbytes) or not hasattr(mmap, "MADV_NOHUGEPAGE"):
        raw = np.zeros(nbytes + mmap.PAGESIZE, np.uint8)
        start = -raw.ctypes.data % mmap.PAGESIZE
        return raw[start : start + nbytes].view(dtype).reshape(shape)
    return _advised(nbytes, mmap.MADV_NOHUGEPAGE, mmap.PAGESIZE).view(dtype).reshape(shape)


def maps_fresh(nbytes: int) -> bool:
    """Whether :func:`empty` gives ``nbytes`` a fresh mapping (zero until written), not
    ``np.empty``'s memory (whatever was there)."""
    return SUPPORTED and nbytes >= MIN_BYTES


def huge_bytes(array: np.ndarray) -> int | None:
    """Bytes in huge pages now of the memory mappings that hold any of ``array``'s bytes.

    Read from ``/proc/self/smaps``; None where it cannot be read (not Linux). A mapping
    may be larger than the array (Linux merges neighbouring ones), so this says whether
    huge pages are used there, not how many hold the array. Every mapping the array
    spans counts: numpy's advice splits a large ``np.zeros`` into a small mapping that
    holds its first bytes and a large advised one. For tests and for checking a
    machine's setting.
    """
    start = array.__array_interface__["data"][0]
    end = start + max(array.nbytes, 1)
    total, inside = None, False
    try:
        with open("/proc/self/smaps") as smaps:
            for line in smaps:
                fields = line.split()
                if not fields[0].endswith(":"):  # a mapping's header: "low-high perms ..."
                    low, high = (int(part, 16) for part in fields[0].split("-"))
                    inside = low < end and start < high
                elif inside and fields[0] == "AnonHugePages:":
                    total = (total or 0) + int(fields[1]) * 1024
    except (OSError, ValueError):
        return None
    return total
