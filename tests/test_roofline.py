"""The roofline copy: it copies, and its layout is the same in every run."""

import ml_dtypes
import numpy as np
import pytest

from bert_embedding_kernels.bench.engine.roofline import CopyReference


@pytest.mark.parametrize(
    ("dtype", "nontemporal"),
    [(np.float32, False), (np.float32, True), (ml_dtypes.bfloat16, False), (np.float64, False)],
)
def test_the_copy_copies_every_byte(dtype, nontemporal):
    copy = CopyReference((3, 5, 70), dtype, nontemporal=nontemporal)
    pattern = np.arange(copy.nbytes, dtype=np.uint64).astype(np.uint8)
    copy.source.view(np.uint8)[...] = pattern.reshape(copy.source.view(np.uint8).shape)
    copy.destination.view(np.uint8)[...] = 0
    copy()
    np.testing.assert_array_equal(copy.destination.view(np.uint8), copy.source.view(np.uint8))
    assert copy.nbytes == 3 * 5 * 70 * np.dtype(dtype).itemsize


@pytest.mark.parametrize("rows", [1, 64, 2048])
def test_source_and_destination_are_half_a_page_apart_whatever_the_allocator_gives(rows):
    # A whole number of pages apart, stores alias loads ("4K aliasing") and the copy slows
    # down by 1.4x-1.6x; whether np.empty gave that layout used to vary from run to run.
    copy = CopyReference((rows, 1, 768), np.float32)
    assert copy.source.ctypes.data % 4096 == 0
    assert (copy.destination.ctypes.data - copy.source.ctypes.data) % 4096 == 2048


def test_outputs_for_out_are_half_a_page_from_the_table():
    from bert_embedding_kernels.bench.engine.roofline import apart_from

    table = np.empty((1000, 768), np.float32)[3:]  # any placement
    out = apart_from(table, (4, 128, 768), np.float32)
    assert out.shape == (4, 128, 768) and out.dtype == np.float32 and out.flags.c_contiguous
    assert (out.ctypes.data - table.ctypes.data) % 4096 == 2048
