"""Huge-page arrays (bek.hugepages): what they hold, where they start, who uses them."""

import gc
import mmap
import weakref
from pathlib import Path

import numpy as np
import pytest

import bert_embedding_kernels as bek
from bert_embedding_kernels import hugepages
from bert_embedding_kernels.bench.engine.reference import naive_embed
from bert_embedding_kernels.pool import OutputPool

LARGE = (4, 256, 1024)  # float32: 4 MiB, the smallest array that gets huge pages
SETTING = Path("/sys/kernel/mm/transparent_hugepage/enabled")


def _huge_pages_granted() -> bool:
    """This machine's kernel backs advised memory with huge pages ("always" or "madvise")."""
    try:
        return hugepages.SUPPORTED and "[never]" not in SETTING.read_text()
    except OSError:
        return False


needs_huge_pages = pytest.mark.skipif(
    not _huge_pages_granted(), reason="this machine's kernel grants no transparent huge pages"
)
needs_the_hint = pytest.mark.skipif(
    not hugepages.SUPPORTED, reason="no MADV_HUGEPAGE here (not Linux)"
)


@pytest.mark.parametrize("shape", [(3, 5), 7, LARGE, (1 << 22) + 3])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.uint8])
@pytest.mark.parametrize("make", [hugepages.empty, hugepages.sparse_zeros])
def test_empty_and_sparse_zeros_are_like_numpys(shape, dtype, make):
    array = make(shape, dtype)
    expected = np.empty(shape, dtype)
    assert array.shape == expected.shape and array.dtype == expected.dtype
    assert array.flags.c_contiguous and array.flags.writeable
    if make is hugepages.sparse_zeros:
        assert array.ctypes.data % 64 == 0  # starts a cache line
        assert not array.any()
    array[...] = 1
    assert (array == 1).all()


@needs_the_hint
def test_large_arrays_start_a_huge_page_and_small_ones_do_not_pay_for_one():
    large = hugepages.empty(LARGE, np.float32)
    assert large.ctypes.data % hugepages.HUGE_PAGE == 0
    assert hugepages.empty((1 << 10,), np.float32).base is None  # np.empty's own


@needs_the_hint
def test_two_large_arrays_never_overlap_and_their_memory_is_released():
    first, second = hugepages.empty(LARGE, np.float32), hugepages.empty(LARGE, np.float32)
    assert not np.may_share_memory(first, second)
    first[...], second[...] = 1, 2
    assert (first == 1).all() and (second == 2).all()
    mapping = first.base
    while isinstance(mapping, np.ndarray):
        mapping = mapping.base
    released = weakref.ref(mapping)
    del first, mapping
    gc.collect()
    assert released() is None  # the mmap (and so its memory) went with the last view


@needs_the_hint
def test_a_kernel_without_huge_pages_gives_ordinary_ones(monkeypatch):
    class Refusing(mmap.mmap):
        def madvise(self, *args):
            raise OSError(22, "Invalid argument")  # madvise's EINVAL without THP support

    monkeypatch.setattr(mmap, "mmap", Refusing)
    array = hugepages.empty(LARGE, np.float32)
    array[...] = 3
    assert array.shape == LARGE and (array == 3).all()


@needs_huge_pages
def test_the_kernel_backs_them_with_huge_pages():
    array = hugepages.empty(LARGE, np.float32)
    array[...] = 0  # pages are backed when first touched
    assert hugepages.huge_bytes(array) >= hugepages.HUGE_PAGE


@needs_the_hint
def test_large_pooled_outputs_come_from_huge_pages_and_stay_intact():
    tables = bek.EmbeddingTables.random(500, LARGE[2], max_positions=LARGE[1], seed=2)
    pool = OutputPool()
    assert pool.empty(LARGE, np.float32).ctypes.data % hugepages.HUGE_PAGE == 0

    def ids(seed):
        return np.random.default_rng(seed).integers(0, 500, LARGE[:2])

    results = [(seed, bek.embed(tables, ids(seed))) for seed in range(4)]
    for _ in range(4):  # calls whose results die at once: their buffers recycle
        bek.embed(tables, ids(99))
    for seed, result in results:
        np.testing.assert_array_equal(result, naive_embed(tables, ids(seed)))
    assert len({r.ctypes.data for _, r in results}) == len(results)


@needs_huge_pages
def test_rows_written_into_sparse_zeros_fault_small_pages_only():
    rows = (30522, 768)  # BERT's word table: a gradient that a short batch adds into
    touched = np.random.default_rng(0).choice(rows[0], 100, replace=False)
    sparse = hugepages.sparse_zeros(rows, np.float32)
    sparse[touched] = 1
    assert hugepages.huge_bytes(sparse) == 0
    assert sparse.sum() == 100 * rows[1]


@needs_huge_pages
def test_a_short_batchs_word_gradient_faults_no_huge_pages():
    tables = bek.EmbeddingTables.random(30522, 768, max_positions=128, seed=1)
    ids = np.random.default_rng(1).integers(0, 30522, (1, 128))
    grad = np.random.default_rng(2).standard_normal((1, 128, 768)).astype(np.float32)
    gradients = bek.embed_backward(tables, grad, ids)
    assert hugepages.huge_bytes(gradients.token) == 0
    expected = np.zeros_like(tables.token)
    np.add.at(expected, ids[0], grad[0])
    np.testing.assert_allclose(gradients.token, expected, rtol=1e-6, atol=1e-6)
