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


SIZES_IN_MIB = {"spare": 1, "small": 1, "large": 2, "newest": 1}


def test_the_buffer_given_back_longest_ago_is_dropped_whatever_its_size():
    # A training loop's spare word-table gradient sits in the pool unused; over the cap, it
    # must go before the buffers the next step takes (dropping by size dropped those).
    mib = 1 << 18  # float32 elements
    pool = OutputPool(max_bytes=4 << 20)
    arrays = {name: pool.empty((n * mib,), np.float32) for name, n in SIZES_IN_MIB.items()}
    spare_address = arrays["spare"].ctypes.data
    for name in ("spare", "large", "small", "newest"):  # given back in this order
        del arrays[name]
        gc.collect()
    assert pool.retained_bytes == 4 << 20  # 5 MiB given back: one 1 MiB buffer dropped
    reused = pool.reused
    taken = [pool.empty((n * mib,), np.float32) for n in (2, 1, 1)]
    assert pool.reused - reused == 3  # the large one and two small ones were kept
    assert spare_address not in {array.ctypes.data for array in taken}  # the spare went
    assert pool.retained_bytes == 0
    del taken


def test_a_call_takes_the_buffer_given_back_last():
    pool = OutputPool()
    first, second = pool.empty((1 << 18,), np.float32), pool.empty((1 << 18,), np.float32)
    last_address = second.ctypes.data
    del first
    gc.collect()
    del second
    gc.collect()
    assert pool.empty((1 << 18,), np.float32).ctypes.data == last_address  # its pages are warm


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


def test_zeros_zeroes_a_reused_buffer_and_leaves_a_new_one_to_the_os():
    pool = OutputPool()
    filled = []

    def fill(array):
        filled.append(array.shape)
        array[...] = 0

    shape = (1 << 11, 1 << 10)  # 8 MiB of float32: a fresh mapping where huge pages exist
    first, fresh = pool.zeros(shape, np.float32, fill)
    assert not first.any() and first.ctypes.data % 64 == 0
    assert fresh is bek.hugepages.maps_fresh(first.nbytes + 64)
    assert filled == ([] if fresh else [shape])  # np.empty's bytes are zeroed by fill
    filled.clear()
    first[:] = 3.5  # what a user's weight decay or clipping leaves in a gradient
    del first
    gc.collect()
    again, fresh = pool.zeros(shape, np.float32, fill)
    assert pool.reused == 1 and not fresh and filled == [shape]
    assert not again.any()


def test_zeros_below_the_pool_or_switched_off_are_lazily_zeroed_arrays():
    pool = OutputPool(enabled=False)
    array, fresh = pool.zeros((4, 1 << 20), np.float32, fill=None)  # fill never called
    assert fresh and not array.any() and array.ctypes.data % 64 == 0
    small, fresh = OutputPool().zeros((3, 5), np.float64, fill=None)
    assert fresh and small.shape == (3, 5) and not small.any()


@pytest.mark.parametrize("layer_norm", [False, True])
def test_a_training_loop_reuses_its_gradients_and_never_sees_old_values(layer_norm):
    """The fused backward's token gradient and LayerNorm's input gradient come back from the
    pool step after step; whatever the last step left in them (an optimizer's in-place
    update) must not leak into the next gradient."""
    from bert_embedding_kernels.methods.fused.norm_backward import layer_norm_backward

    tables = bek.EmbeddingTables.random(1024, 2048, max_positions=512, seed=5)  # 8 MiB
    rng = np.random.default_rng(6)
    reused = bek.pool.OUTPUTS.reused
    for _ in range(4):
        ids = rng.integers(0, 1024, (2, 256))
        grad = rng.standard_normal((2, 256, 2048)).astype(np.float32)
        if layer_norm:  # 4 MiB of LayerNorm input gradient: a pooled buffer
            sums = rng.standard_normal(grad.shape).astype(np.float32)
            grad, *_ = layer_norm_backward(sums, grad, tables.norm_weight, 1e-12)
            grad = grad.copy()  # the pooled result itself goes back as the loop drops it
        tables_grads = bek.embed_backward(tables, grad, ids)
        expected = bek.embed_backward(tables, grad, ids, method="gather")
        for got, want in zip(tables_grads, expected, strict=True):
            np.testing.assert_array_equal(got, want)
        tables_grads.token[:] = np.nan  # left behind, as an in-place update would
        del tables_grads
        gc.collect()
    assert bek.pool.OUTPUTS.reused - reused >= 3 * (1 + layer_norm)
