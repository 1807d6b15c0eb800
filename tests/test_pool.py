"""The output pool: allocating calls reuse buffers, and never one a live result still uses."""

import gc
import threading

import ml_dtypes
import numpy as np
import pytest

import bert_embedding_kernels as bek
from bert_embedding_kernels.bench.engine.reference import naive_embed
from bert_embedding_kernels.pool import MIN_BYTES, OutputPool

# 4 x 256 x 256 float32 = 1 MiB: the smallest output the pool takes.
TABLES = bek.EmbeddingTables.random(500, 256, max_positions=256, seed=4)


def _ids(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 500, (4, 256))


def test_results_kept_alive_stay_intact_across_calls():
    results = [(seed, bek.embed(TABLES, _ids(seed))) for seed in range(6)]
    assert results[0][1].nbytes >= MIN_BYTES  # the pooled path is the one tested
    for _ in range(6):  # calls whose results die at once: their buffers recycle
        bek.embed(TABLES, _ids(99))
    for seed, result in results:
        np.testing.assert_array_equal(result, naive_embed(TABLES, _ids(seed)))
    addresses = {r.ctypes.data for _, r in results}
    assert len(addresses) == len(results)  # no two live results share memory


def test_a_view_keeps_its_buffer_out_of_the_pool():
    pool = OutputPool()
    view = pool.empty((1 << 18,), np.float32)[10:20]
    view[:] = 7
    gc.collect()
    other = pool.empty((1 << 18,), np.float32)
    other[:] = 0
    assert pool.reused == 0 and (view == 7).all()
    del view
    gc.collect()
    again = pool.empty((1 << 18,), np.float32)
    assert pool.reused == 1 and not np.shares_memory(again, other)


def test_threads_keep_their_results():
    errors = []

    def work(seed):
        mine = [(s, bek.embed(TABLES, _ids(s))) for s in range(seed, seed + 4)]
        for s, result in mine:
            if not np.array_equal(result, naive_embed(TABLES, _ids(s))):
                errors.append(s)

    threads = [threading.Thread(target=work, args=(10 * i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors


def test_a_loop_that_keeps_nothing_reuses_one_buffer():
    pool = bek.pool.OUTPUTS
    before = pool.reused
    for seed in range(20):
        bek.embed(TABLES, _ids(seed))
    assert pool.reused - before >= 19  # every call after the first reused a buffer
    assert pool.retained_bytes <= pool.max_bytes


def test_cap_and_switch():
    pool = OutputPool(max_bytes=3 << 20)
    arrays = [pool.empty((1 << 18,), np.float32) for _ in range(5)]  # 1 MiB each
    del arrays
    gc.collect()
    assert pool.retained_bytes == 3 << 20  # two of five dropped: the cap holds
    pool.configure(enabled=False)
    assert pool.retained_bytes == 0
    plain = pool.empty((1 << 18,), np.float32)
    assert plain.base is None or not hasattr(plain.base, "raw")
    with pytest.raises(ValueError, match="max_bytes"):
        pool.configure(max_bytes=-1)


def test_small_outputs_are_not_pooled():
    pool = OutputPool()
    small = pool.empty((8, 8), np.float32)
    assert small.base is None


@pytest.mark.parametrize("dtype", [np.float32, np.float16, ml_dtypes.bfloat16, np.int64])
def test_pooled_arrays_have_the_dtype_and_shape_asked_for(dtype):
    pool = OutputPool()
    array = pool.empty((4, 256, 512), dtype)
    assert array.nbytes >= MIN_BYTES and hasattr(array.base.base, "raw")  # pooled
    assert array.dtype == np.dtype(dtype) and array.shape == (4, 256, 512)
    assert array.flags.c_contiguous and array.flags.writeable
    array[...] = 3
    assert (array.astype(np.float64) == 3).all()
