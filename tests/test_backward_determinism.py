"""The fused backward's determinism, its column blocks, and agreement with torch's autograd.

Every gradient element is summed in token order whatever the number of threads
and the width of a thread's column block, so the fused backward gives the same
bits for every thread count (checked in fresh interpreters) and equals numpy's
``np.add.at``. torch's autograd sums the same terms, each within the bound of
tests/rules.py (``gradient_bound``).
"""

import hashlib
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from rules import gradient_bound, random_case

import bert_embedding_kernels as bek
from bert_embedding_kernels import BACKWARD_METHODS, EmbeddingGradients, embed_backward
from bert_embedding_kernels.bench.engine.cases import zipf_ids
from bert_embedding_kernels.bench.engine.reference import naive_embed_backward
from bert_embedding_kernels.methods.fused.backward import column_block

try:
    import torch
except ImportError:  # the `peers` extra is not installed
    torch = None

DTYPES = (np.float32, np.float64)


def test_fused_does_not_depend_on_the_column_block():
    # Every element is summed in token order whatever the block width, so any
    # split of the columns between threads gives the same bits.
    rng = np.random.default_rng(8)
    tables = bek.EmbeddingTables.random(500, 100, max_positions=64)
    grad, ids, types = random_case(rng, tables, (8, 64), zipf=True)
    expected = embed_backward(tables, grad, ids, types, method="gather")
    from bert_embedding_kernels.methods.fused.backward import _scatter_add_columns_parallel

    for block in (1, 16, 48, 99, 100):
        grads = EmbeddingGradients(*(np.zeros_like(g) for g in expected))
        positions = np.arange(64)[None, :]
        _scatter_add_columns_parallel(
            grad.reshape(-1, 100), ids, types, positions, -1, block, *grads
        )
        for got, want in zip(grads, expected, strict=True):
            np.testing.assert_array_equal(got, want)


def test_fused_adds_after_what_is_there_for_every_column_block():
    # With more than one block, the segment and position parts add into rows of their own;
    # those must start from the gradients' values (accumulate_into) and be copied back.
    rng = np.random.default_rng(9)
    tables = bek.EmbeddingTables.random(500, 100, max_positions=64)
    grad, ids, types = random_case(rng, tables, (8, 64), zipf=True)
    flat = grad.reshape(-1, 100)
    positions = np.arange(64)[None, :]
    shapes = (tables.token, tables.segment, tables.position)
    start = [rng.standard_normal(t.shape).astype(t.dtype) for t in shapes]
    expected = [s.copy() for s in start]
    all_ids = (ids.reshape(-1), types.reshape(-1), np.tile(np.arange(64), 8))
    for want, table_ids in zip(expected, all_ids, strict=True):
        np.add.at(want, table_ids, flat)  # numpy's unbuffered add, in token order
    from bert_embedding_kernels.methods.fused.backward import _scatter_add_columns_parallel

    for block in (1, 16, 48, 99, 100):
        grads = [s.copy() for s in start]
        _scatter_add_columns_parallel(flat, ids, types, positions, -1, block, *grads)
        for got, want in zip(grads, expected, strict=True):
            np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("method", BACKWARD_METHODS)
def test_gradients_start_on_a_cache_line(method):
    # Column blocks are whole 64-byte lines counted from the row start; with the
    # rows on line boundaries, no two threads write into one line.
    tables = bek.EmbeddingTables.random(3000, 768, max_positions=64)
    grad = np.ones((2, 64, 768), np.float32)
    grads = embed_backward(tables, grad, np.ones((2, 64), np.int64), method=method)
    if method in ("fused", "gather"):
        assert all(g.ctypes.data % 64 == 0 for g in grads)
    assert all(g.flags.c_contiguous and g.flags.writeable for g in grads)


def test_column_block_is_whole_cache_lines():
    assert column_block(768, 4, 2) == 384
    assert column_block(768, 8, 2) == 384
    assert column_block(100, 4, 2) == 64  # 7 lines of 16: 4 and 3
    assert column_block(100, 4, 64) == 16
    assert column_block(3, 8, 2) == 8


_DETERMINISM_SCRIPT = textwrap.dedent(
    """
    import hashlib, sys
    import numba, numpy as np
    import bert_embedding_kernels as bek
    from bert_embedding_kernels import embed_backward
    from bert_embedding_kernels.bench.engine.cases import zipf_ids

    threads = int(sys.argv[1])
    assert numba.get_num_threads() == threads, numba.get_num_threads()
    tables = bek.EmbeddingTables.random(4000, 200, max_positions=128)
    ids = zipf_ids(4000, (16, 128), seed=1)
    types = np.zeros((16, 128), np.int64)
    types[:, 64:] = 1
    grad = np.random.default_rng(2).standard_normal((16, 128, 200)).astype(np.float32)
    grads = embed_backward(tables, grad, ids, types, method="fused", padding_idx=int(ids[0, 0]))
    print(hashlib.sha256(b"".join(g.tobytes() for g in grads)).hexdigest())
    # and LayerNorm's backward, whose weight and bias sums run over row chunks
    from bert_embedding_kernels.methods.fused.norm_backward import layer_norm_backward
    sums = bek.embed(tables, ids, types)
    weight = np.random.default_rng(3).uniform(0.5, 1.5, 200).astype(np.float32)
    norm = layer_norm_backward(sums, grad, weight, 1e-12)
    print(hashlib.sha256(b"".join(g.tobytes() for g in norm)).hexdigest())
    """
)


def test_fused_and_norm_backward_are_bitwise_deterministic_across_thread_counts():
    digests = {}
    for threads in (1, 2, 3):
        environment = {**os.environ, "NUMBA_NUM_THREADS": str(threads)}
        run = subprocess.run(
            [sys.executable, "-c", _DETERMINISM_SCRIPT, str(threads)],
            env=environment,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert run.returncode == 0, run.stderr
        digests[threads] = run.stdout.strip()
    assert len(set(digests.values())) == 1, digests
    # ... and the same bits as numpy's np.add.at in this process.
    tables = bek.EmbeddingTables.random(4000, 200, max_positions=128)
    ids = zipf_ids(4000, (16, 128), seed=1)
    types = np.zeros((16, 128), np.int64)
    types[:, 64:] = 1
    grad = np.random.default_rng(2).standard_normal((16, 128, 200)).astype(np.float32)
    grads = embed_backward(tables, grad, ids, types, method="gather", padding_idx=int(ids[0, 0]))
    assert hashlib.sha256(b"".join(g.tobytes() for g in grads)).hexdigest() == digests[1].split()[0]


@pytest.mark.skipif(
    torch is None and not os.environ.get("CI"),
    reason="torch is not installed (pip install -e '.[peers]'); CI installs it and runs this",
)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("padding_idx", [None, 3])
def test_agrees_with_torch_autograd(dtype, padding_idx):
    assert torch is not None, "CI must install the peers extra (torch) so this test runs"
    functional = torch.nn.functional
    rng = np.random.default_rng(9)
    tables = bek.EmbeddingTables.random(300, 96, max_positions=64, dtype=dtype, seed=4)
    grad, ids, types = random_case(rng, tables, (8, 64), zipf=True)
    ids[:, -7:] = 3
    weights = [
        torch.tensor(t, requires_grad=True) for t in (tables.token, tables.segment, tables.position)
    ]
    positions = torch.arange(64).expand(8, 64)
    output = (
        functional.embedding(torch.from_numpy(ids), weights[0], padding_idx=padding_idx)
        + functional.embedding(torch.from_numpy(types), weights[1])
        + functional.embedding(positions, weights[2])
    )
    output.backward(torch.from_numpy(grad))
    _, magnitudes, counts = naive_embed_backward(tables, grad, ids, types, padding_idx=padding_idx)
    for method in BACKWARD_METHODS:
        grads = embed_backward(tables, grad, ids, types, method=method, padding_idx=padding_idx)
        for name, ours, weight in zip(EmbeddingGradients._fields, grads, weights, strict=True):
            theirs = weight.grad.numpy()
            # Two sums of the same n terms, each within (n - 1) u sum|g| of exact.
            bound = gradient_bound(getattr(counts, name), getattr(magnitudes, name), dtype)
            assert np.all(np.abs(ours - theirs) <= bound), (method, name)
    if padding_idx is not None:
        assert not np.any(weights[0].grad.numpy()[padding_idx])
