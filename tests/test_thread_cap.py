"""A parallel forward call wakes at most one thread per ``fused.BYTES_PER_THREAD`` of output
(``NORM_BYTES_PER_THREAD`` with LayerNorm).

The cap binds only where numba has more threads than the call wants, so the check
runs in a child with ``NUMBA_NUM_THREADS=4`` (numba allows more threads than
cores): there an output of two such shares (or a little more) wants two threads.
Every forward kernel (float32 and 16-bit, with and without LayerNorm) must then
ask numba for two threads, give the caller back its own count afterwards (also
when the kernel raises), leave a caller who set two threads or fewer alone, and
compute the same bits (as gather; with LayerNorm, as the same loop compiled
serially).
"""

import os
import subprocess
import sys
import textwrap

_CHILD = textwrap.dedent("""
    import numba, numpy as np, bert_embedding_kernels as bek
    from bert_embedding_kernels.methods.fused import forward as fused

    assert numba.get_num_threads() == 4
    requested = []
    set_num_threads = numba.set_num_threads
    def recording(n):
        requested.append(n)
        set_num_threads(n)
    numba.set_num_threads = recording

    for dtype in ("float32", "bfloat16"):
        tables = bek.EmbeddingTables.random(50, 512, max_positions=128, dtype=dtype)
        for layer_norm, per_thread in ((False, fused.BYTES_PER_THREAD),
                                       (True, fused.NORM_BYTES_PER_THREAD)):
            # two shares of output or a little more: two threads wanted
            batch = -(-2 * per_thread // (128 * 512 * tables.dtype.itemsize))
            ids = np.random.default_rng(0).integers(0, 50, (batch, 128))
            out = np.empty((batch, 128, 512), tables.dtype)
            assert 2 * per_thread <= out.nbytes < 3 * per_thread
            assert out.nbytes >= fused.SERIAL_MAX_BYTES
            requested.clear()
            bek.embed(tables, ids, out=out, layer_norm=layer_norm)
            assert requested == [2, 4], (dtype, layer_norm, requested)
            assert numba.get_num_threads() == 4
            if layer_norm:  # LayerNorm's reference: the same loop compiled serially
                fused.SERIAL_MAX_BYTES, serial_max = float("inf"), fused.SERIAL_MAX_BYTES
                expected = bek.embed(tables, ids, layer_norm=True)
                fused.SERIAL_MAX_BYTES = serial_max
            else:
                expected = bek.embed(tables, ids, method="gather")
            assert np.array_equal(out.view(np.uint8), expected.view(np.uint8)), dtype

    # The caller's own, lower count is a ceiling: nothing is set.
    set_num_threads(2)
    requested.clear()
    bek.embed(tables, ids, out=out)
    assert requested == [] and numba.get_num_threads() == 2
    set_num_threads(4)

    # A kernel that raises still gives the count back.
    def failing(*args):
        raise RuntimeError("planted")
    try:
        fused.launch(failing, failing, 2 * fused.BYTES_PER_THREAD, fused.BYTES_PER_THREAD)
    except RuntimeError:
        pass
    assert numba.get_num_threads() == 4
    print("ok")
""")


def _run_child(code: str, numba_threads: int) -> None:
    """Run ``code`` in a fresh interpreter with ``numba_threads``; it must print "ok"."""
    environment = dict(os.environ, NUMBA_NUM_THREADS=str(numba_threads))
    result = subprocess.run(
        [sys.executable, "-c", code], env=environment, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "ok"


def test_calls_wake_one_thread_per_share_of_output():
    _run_child(_CHILD, numba_threads=4)


_ONE_THREAD_CHILD = textwrap.dedent("""
    import numpy as np, bert_embedding_kernels as bek
    from bert_embedding_kernels.methods.fused import forward as fused

    def refused(*args):
        raise AssertionError("the parallel build ran on one thread")
    fused._sum_rows_parallel = fused._sum_norm_rows_parallel = refused
    tables = bek.EmbeddingTables.random(50, 512, max_positions=128)
    ids = np.random.default_rng(0).integers(0, 50, (8, 128))  # 2 MiB of output
    out = np.empty((8, 128, 512), np.float32)
    bek.embed(tables, ids, out=out)
    assert np.array_equal(out, bek.embed(tables, ids, method="gather"))
    bek.embed(tables, ids, out=out, layer_norm=True)
    print("ok")
""")


def test_one_numba_thread_runs_the_serial_build():
    # The parallel build on one thread only adds its launch (1 x 128: 20.0 us against 17.4).
    _run_child(_ONE_THREAD_CHILD, numba_threads=1)
