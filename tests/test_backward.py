"""The backward pass: every method against a naive float64 loop, determinism, torch, errors.

The bound (stated in kernels/backward.py and docs/BACKWARD.md): row ``r`` of a
gradient is a sum of the ``n`` output-gradient rows of the tokens that used it.
Any order of summing ``n`` terms in floating point is within
``(n - 1) u sum(|g|)`` of the exact sum (u = eps / 2, the unit roundoff, to
first order; Higham, "Accuracy and Stability of Numerical Algorithms", 4.2),
BLAS blocking and FMA included, since every product ``1 * g`` or ``0 * g`` is
exact. The float64 reference is itself a sum in token order, off by at most
``(n - 1) u64 sum(|g|)``. So we test, per element and per dtype,

    |grad - reference64| <= n * eps * sum(|g|)

which covers both roundings with room for the second-order terms: for float32
the reference's own error is 2**-29 times smaller and vanishes in the margin;
for float64 the two errors add up to at most ``(n - 1) eps sum(|g|)``. A row
no token used (n = 0) must be exactly zero. ``fused`` and ``gather`` add in
token order in the tables' dtype, so they must match the same loop run in that
dtype bit for bit.
"""

import hashlib
import os
import subprocess
import sys
import textwrap
import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import kernels
from kernels import BACKWARD_METHODS, EmbeddingGradients, embed_backward
from kernels.bench.cases import zipf_ids
from kernels.bench.reference import naive_embed_backward
from kernels.methods.fused_backward import column_block

# Pinned here, not imported from the package: which methods must equal the naive
# reference bit for bit is a rule the tests hold the code to (README, "Equivalence").
BITWISE_METHODS = ("gather", "fused")


try:
    import torch
except ImportError:  # the `peers` extra is not installed
    torch = None

DTYPES = (np.float32, np.float64)


def assert_matches_reference(
    grads,
    tables,
    method,
    grad_output,
    input_ids,
    token_type_ids=None,
    position_ids=None,
    past_length=0,
    padding_idx=None,
):
    arguments = (tables, grad_output, input_ids, token_type_ids, position_ids, past_length)
    reference, magnitudes, counts = naive_embed_backward(*arguments, padding_idx=padding_idx)
    assert isinstance(grads, EmbeddingGradients)
    eps = np.finfo(tables.dtype).eps
    for name in EmbeddingGradients._fields:
        grad, table = getattr(grads, name), getattr(tables, name)
        assert grad.shape == table.shape, name
        assert grad.dtype == tables.dtype, name
        assert grad.flags.c_contiguous, name
        count = getattr(counts, name)[:, None]
        bound = count * eps * getattr(magnitudes, name)
        error = np.abs(grad.astype(np.float64) - getattr(reference, name))
        assert np.all(error <= bound), (name, float(np.max(error - bound)))
        assert np.all(grad[count[:, 0] == 0] == 0), name  # untouched rows exactly zero
    if method in BITWISE_METHODS:
        same_dtype, _, _ = naive_embed_backward(
            *arguments, padding_idx=padding_idx, dtype=tables.dtype
        )
        for name in EmbeddingGradients._fields:
            np.testing.assert_array_equal(getattr(grads, name), getattr(same_dtype, name))


def random_case(rng, tables, shape, *, id_dtype=np.int64, zipf=False):
    batch, seq = shape
    if zipf:
        ids = zipf_ids(tables.vocab_size, shape, seed=int(rng.integers(1 << 30)))
    else:
        ids = rng.integers(0, tables.vocab_size, size=shape)
    types = rng.integers(0, tables.type_vocab_size, size=shape)
    grad = rng.standard_normal((batch, seq, tables.hidden_size)).astype(tables.dtype)
    return grad, ids.astype(id_dtype), types.astype(id_dtype)


@pytest.mark.parametrize("method", BACKWARD_METHODS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("id_dtype", [np.int32, np.int64, np.uint16, np.uint64])
def test_dtypes(method, dtype, id_dtype):
    rng = np.random.default_rng(1)
    tables = kernels.EmbeddingTables.random(200, 24, max_positions=40, dtype=dtype, seed=2)
    grad, ids, types = random_case(rng, tables, (3, 17), id_dtype=id_dtype)
    grads = embed_backward(tables, grad, ids, types, method=method)
    assert_matches_reference(grads, tables, method, grad, ids, types)


@pytest.mark.parametrize("method", BACKWARD_METHODS)
@pytest.mark.parametrize("hidden", [1, 3, 100, 130])
@pytest.mark.parametrize("vocab", [1, 7, 5000])
def test_widths_and_vocab_sizes(method, hidden, vocab):
    rng = np.random.default_rng(hidden * vocab)
    tables = kernels.EmbeddingTables.random(vocab, hidden, max_positions=16, type_vocab_size=3)
    grad, ids, types = random_case(rng, tables, (2, 9))
    grads = embed_backward(tables, grad, ids, types, method=method)
    assert_matches_reference(grads, tables, method, grad, ids, types)


@pytest.mark.parametrize("method", BACKWARD_METHODS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_parallel_path_at_bert_width(method, dtype):
    # Large enough for the parallel kernel (grad above SERIAL_MAX_BYTES), with a
    # width that is not a multiple of the column block.
    rng = np.random.default_rng(11)
    tables = kernels.EmbeddingTables.random(3000, 776, max_positions=64, dtype=dtype, seed=3)
    grad, ids, types = random_case(rng, tables, (4, 64), zipf=True)
    grads = embed_backward(tables, grad, ids, types, method=method)
    assert_matches_reference(grads, tables, method, grad, ids, types)


@pytest.mark.parametrize("method", BACKWARD_METHODS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_zipf_skew_many_tokens_on_few_rows(method, dtype):
    # 1536 tokens over a vocabulary of 40 with exponent 1.5: the top row takes
    # about 40% of the tokens, so long sums exercise the n-dependent bound.
    rng = np.random.default_rng(2)
    tables = kernels.EmbeddingTables.random(40, 33, max_positions=64, dtype=dtype)
    ids = zipf_ids(40, (24, 64), exponent=1.5, seed=3)
    assert np.bincount(ids.ravel()).max() > 500
    grad = rng.standard_normal((24, 64, 33)).astype(dtype)
    grads = embed_backward(tables, grad, ids, method=method)
    assert_matches_reference(grads, tables, method, grad, ids)


@pytest.mark.parametrize("method", BACKWARD_METHODS)
def test_every_token_on_one_row(method):
    tables = kernels.EmbeddingTables.random(10, 48, max_positions=64)
    ids = np.full((16, 64), 7)
    grad = np.random.default_rng(4).standard_normal((16, 64, 48)).astype(np.float32)
    grads = embed_backward(tables, grad, ids, method=method)
    assert_matches_reference(grads, tables, method, grad, ids)
    assert np.count_nonzero(np.any(grads.token != 0, axis=1)) == 1


@pytest.mark.parametrize("method", BACKWARD_METHODS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_padding_idx_row_is_zero(method, dtype):
    rng = np.random.default_rng(5)
    tables = kernels.EmbeddingTables.random(20, 16, max_positions=32, dtype=dtype)
    grad, ids, types = random_case(rng, tables, (4, 32))
    ids[:, -5:] = 0  # padded tail, as a tokenizer pads with id 0
    grads = embed_backward(tables, grad, ids, types, method=method, padding_idx=0)
    plain = embed_backward(tables, grad, ids, types, method=method)
    assert np.all(grads.token[0] == 0)
    assert np.any(plain.token[0] != 0)
    np.testing.assert_array_equal(grads.token[1:], plain.token[1:])
    # Padding tokens still reach the segment and position tables, as in torch.
    np.testing.assert_array_equal(grads.segment, plain.segment)
    np.testing.assert_array_equal(grads.position, plain.position)
    assert_matches_reference(grads, tables, method, grad, ids, types, padding_idx=0)


@pytest.mark.parametrize("method", BACKWARD_METHODS)
@pytest.mark.parametrize("shape", [(0, 5), (4, 0), (0, 0)])
def test_empty_batches(method, shape):
    tables = kernels.EmbeddingTables.random(10, 6, max_positions=8)
    grads = embed_backward(
        tables, np.zeros((*shape, 6), np.float32), np.zeros(shape, np.int64), method=method
    )
    for grad, table in zip(grads, (tables.token, tables.segment, tables.position), strict=True):
        assert grad.shape == table.shape
        assert grad.dtype == np.float32
        assert not np.any(grad)


@pytest.mark.parametrize("method", BACKWARD_METHODS)
@pytest.mark.parametrize("form", ["default", "seq", "1xseq", "batchxseq"])
@pytest.mark.parametrize("past_length", [0, 5])
def test_position_forms_and_past_length(method, form, past_length):
    rng = np.random.default_rng(6)
    tables = kernels.EmbeddingTables.random(30, 8, max_positions=20)
    grad, ids, _ = random_case(rng, tables, (3, 7))
    positions = {
        "default": None,
        "seq": rng.integers(0, 20, (7,)),
        "1xseq": rng.integers(0, 20, (1, 7)),
        "batchxseq": rng.integers(0, 20, (3, 7)),
    }[form]
    grads = embed_backward(
        tables, grad, ids, position_ids=positions, past_length=past_length, method=method
    )
    assert_matches_reference(grads, tables, method, grad, ids, None, positions, past_length)


@pytest.mark.parametrize("method", BACKWARD_METHODS)
@pytest.mark.parametrize("layout", ["F", "strided"])
def test_grad_and_id_layouts(method, layout):
    rng = np.random.default_rng(7)
    tables = kernels.EmbeddingTables.random(50, 20, max_positions=30, type_vocab_size=4)
    grad, ids, types = random_case(rng, tables, (6, 11))
    if layout == "F":
        grad, ids, types = (np.asfortranarray(a) for a in (grad, ids, types))
    else:
        grad = np.repeat(grad, 2, axis=2)[:, :, ::2]
        ids, types = (np.repeat(a, 2, axis=1)[:, ::2] for a in (ids, types))
        assert not grad.flags.c_contiguous and not ids.flags.c_contiguous
    grads = embed_backward(tables, grad, ids, types, method=method)
    assert_matches_reference(grads, tables, method, grad, ids, types)


@pytest.mark.parametrize("method", BACKWARD_METHODS)
def test_python_lists_and_inputs_unmodified(method):
    tables = kernels.EmbeddingTables.random(10, 2, max_positions=8, dtype=np.float64)
    grad = [[[1.0, -2.0], [0.5, 3.0]]]
    ids = np.array([[3, 3]])
    before = ids.copy()
    grads = embed_backward(tables, grad, ids.tolist(), method=method)
    np.testing.assert_array_equal(grads.token[3], [1.5, 1.0])
    np.testing.assert_array_equal(grads.segment[0], [1.5, 1.0])
    np.testing.assert_array_equal(grads.position[:2], grad[0])
    np.testing.assert_array_equal(ids, before)


def test_methods_agree_on_signed_zeros():
    # A row reached only by -0.0 sums to +0.0 (0 + -0.0), as in torch and np.add.at.
    tables = kernels.EmbeddingTables.random(4, 3, max_positions=4)
    grad = np.full((1, 2, 3), -0.0, np.float32)
    for method in BACKWARD_METHODS:
        grads = embed_backward(tables, grad, [[1, 2]], method=method)
        assert not np.any(np.signbit(grads.token)), method


@pytest.mark.parametrize("method", BACKWARD_METHODS)
def test_non_finite_gradients(method):
    # Where the identity stops: 0 * inf = NaN, so the one-hot products spread an
    # inf in one token's gradient to every row of that column; a scatter-add
    # only reaches the rows that token used.
    tables = kernels.EmbeddingTables.random(6, 4, max_positions=4)
    grad = np.ones((1, 2, 4), np.float32)
    grad[0, 0, 1] = np.inf
    with np.errstate(invalid="ignore"):  # the one-hot paths' 0 * inf
        grads = embed_backward(tables, grad, [[2, 3]], method=method)
    if method in ("onehot", "concat"):
        assert np.all(np.isnan(grads.token[[0, 1, 4, 5], 1]))
    else:
        assert grads.token[2, 1] == np.inf
        np.testing.assert_array_equal(grads.token[[0, 1, 4, 5]], 0)


def test_fused_does_not_depend_on_the_column_block():
    # Every element is summed in token order whatever the block width, so any
    # split of the columns between threads gives the same bits.
    rng = np.random.default_rng(8)
    tables = kernels.EmbeddingTables.random(500, 100, max_positions=64)
    grad, ids, types = random_case(rng, tables, (8, 64), zipf=True)
    expected = embed_backward(tables, grad, ids, types, method="gather")
    from kernels.methods.fused_backward import _scatter_add_columns_parallel

    for block in (1, 16, 48, 99, 100):
        grads = EmbeddingGradients(*(np.zeros_like(g) for g in expected))
        positions = np.arange(64)[None, :]
        _scatter_add_columns_parallel(
            grad.reshape(-1, 100), ids, types, positions, -1, block, *grads
        )
        for got, want in zip(grads, expected, strict=True):
            np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("method", BACKWARD_METHODS)
def test_gradients_start_on_a_cache_line(method):
    # Column blocks are whole 64-byte lines counted from the row start; with the
    # rows on line boundaries, no two threads write into one line.
    tables = kernels.EmbeddingTables.random(3000, 768, max_positions=64)
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
    import kernels
    from kernels import embed_backward
    from kernels.bench.cases import zipf_ids

    threads = int(sys.argv[1])
    assert numba.get_num_threads() == threads, numba.get_num_threads()
    tables = kernels.EmbeddingTables.random(4000, 200, max_positions=128)
    ids = zipf_ids(4000, (16, 128), seed=1)
    types = np.zeros((16, 128), np.int64)
    types[:, 64:] = 1
    grad = np.random.default_rng(2).standard_normal((16, 128, 200)).astype(np.float32)
    grads = embed_backward(tables, grad, ids, types, method="fused", padding_idx=int(ids[0, 0]))
    print(hashlib.sha256(b"".join(g.tobytes() for g in grads)).hexdigest())
    """
)


def test_fused_is_bitwise_deterministic_across_thread_counts():
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
    tables = kernels.EmbeddingTables.random(4000, 200, max_positions=128)
    ids = zipf_ids(4000, (16, 128), seed=1)
    types = np.zeros((16, 128), np.int64)
    types[:, 64:] = 1
    grad = np.random.default_rng(2).standard_normal((16, 128, 200)).astype(np.float32)
    grads = embed_backward(tables, grad, ids, types, method="gather", padding_idx=int(ids[0, 0]))
    assert hashlib.sha256(b"".join(g.tobytes() for g in grads)).hexdigest() == digests[1]


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
    tables = kernels.EmbeddingTables.random(300, 96, max_positions=64, dtype=dtype, seed=4)
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
    eps = np.finfo(dtype).eps
    for method in BACKWARD_METHODS:
        grads = embed_backward(tables, grad, ids, types, method=method, padding_idx=padding_idx)
        for name, ours, weight in zip(EmbeddingGradients._fields, grads, weights, strict=True):
            theirs = weight.grad.numpy()
            # Two sums of the same n terms, each within (n - 1) u sum|g| of exact.
            bound = getattr(counts, name)[:, None] * eps * getattr(magnitudes, name)
            assert np.all(np.abs(ours - theirs) <= bound), (method, name)
    if padding_idx is not None:
        assert not np.any(weights[0].grad.numpy()[padding_idx])


# --------------------------------------------------------------------------- errors

TABLES = kernels.EmbeddingTables.random(10, 4, max_positions=8, type_vocab_size=2)
IDS = np.array([[1, 2, 3], [4, 5, 6]])
GRAD = np.zeros((2, 3, 4), np.float32)

# Inputs that embed refuses: embed_backward must refuse them with the same
# exception and the same message, because both call kernels.validate.prepare.
BAD_IDS = [
    {"input_ids": IDS.astype(float)},
    {"input_ids": IDS > 2},
    {"input_ids": np.array([1, 2])},
    {"token_type_ids": np.zeros((1, 3), int)},
    {"position_ids": np.zeros((2, 4), int)},
    {"input_ids": np.array([[1, 2, 3], [4, 10, 6]])},
    {"input_ids": np.array([[1, -1, 3], [4, 5, 6]])},
    {"token_type_ids": np.array([[0, 0, 0], [0, 0, 2]])},
    {"position_ids": np.array([0, 8, 1])},
    {"past_length": 6},
    {"past_length": -1},
    {"past_length": 1.0},
]


@pytest.mark.parametrize("method", BACKWARD_METHODS)
@pytest.mark.parametrize("bad", BAD_IDS, ids=lambda bad: f"{next(iter(bad))}")
def test_same_errors_as_embed(method, bad):
    arguments = {"input_ids": IDS, **bad}
    with pytest.raises(Exception) as forward:
        kernels.embed(TABLES, **arguments)
    with pytest.raises(forward.type) as backward:
        embed_backward(TABLES, GRAD, method=method, **arguments)
    assert str(backward.value) == str(forward.value)


BAD_BACKWARD_CALLS = [
    ({"grad_output": GRAD.astype(np.float64)}, TypeError, r"grad_output.*float64.*float32"),
    ({"grad_output": GRAD[:, :, :3]}, ValueError, r"grad_output.*\(2, 3, 3\).*\(2, 3, 4\)"),
    ({"grad_output": GRAD[0]}, ValueError, r"grad_output.*\(3, 4\).*\(2, 3, 4\)"),
    ({"padding_idx": 10}, ValueError, r"padding_idx is 10.*0 <= padding_idx < 10"),
    ({"padding_idx": -1}, ValueError, r"padding_idx is -1"),
    ({"padding_idx": 1.0}, TypeError, r"padding_idx is float"),
    ({"padding_idx": True}, TypeError, r"padding_idx is bool"),
    ({"method": "magic"}, ValueError, r"method.*'magic'.*onehot"),
    ({"memory_budget": 1e6}, TypeError, r"memory_budget is float"),
    ({"tables": {"token": None}}, TypeError, r"tables is dict"),
]


@pytest.mark.parametrize("method", BACKWARD_METHODS)
@pytest.mark.parametrize(
    ("arguments", "error", "message"),
    BAD_BACKWARD_CALLS,
    ids=[message for _, _, message in BAD_BACKWARD_CALLS],
)
def test_bad_backward_arguments(method, arguments, error, message):
    call = {"tables": TABLES, "grad_output": GRAD, "input_ids": IDS, "method": method}
    with pytest.raises(error, match=message):
        embed_backward(**{**call, **arguments})


def test_ids_are_checked_before_grad_output():
    # One order for every method: the checks embed shares come first.
    with pytest.raises(IndexError):
        embed_backward(TABLES, GRAD.astype(np.float64), np.array([[1, 2, 3], [4, 5, 99]]))


# --------------------------------------------------------------------------- one-hot budget


@pytest.mark.parametrize("method", ["onehot", "concat"])
@pytest.mark.parametrize("budget", [64 * 1024 + 15_000, 64 * 1024 + 40_000])
def test_tiny_budget_gives_the_same_result(method, budget):
    # 15 kB forces token chunks summed through the product buffer (row blocks of
    # one); 40 kB takes every token at once in row blocks of 18.
    rng = np.random.default_rng(10)
    tables = kernels.EmbeddingTables.random(300, 16, max_positions=64)
    grad, ids, types = random_case(rng, tables, (5, 40))
    whole = embed_backward(tables, grad, ids, types, method=method)
    tiled = embed_backward(tables, grad, ids, types, method=method, memory_budget=budget)
    assert_matches_reference(tiled, tables, method, grad, ids, types)
    for a, b in zip(tiled, whole, strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)


@pytest.mark.parametrize("method", ["onehot", "concat"])
def test_budget_below_one_token_is_refused(method):
    with pytest.raises(ValueError, match=r"memory_budget is 100 bytes.*at least"):
        embed_backward(TABLES, GRAD, IDS, method=method, memory_budget=100)


@pytest.mark.parametrize("method", ["onehot", "concat"])
@pytest.mark.parametrize("budget_mib", [1, 4])
def test_peak_extra_memory_stays_within_budget(method, budget_mib):
    # numpy reports its buffers to tracemalloc; the returned gradients are the
    # result, not extra memory, so they are added to the allowance.
    rng = np.random.default_rng(12)
    tables = kernels.EmbeddingTables.random(20000, 64, max_positions=128)
    grad, ids, types = random_case(rng, tables, (8, 128))
    budget = budget_mib * 2**20
    result_bytes = tables.nbytes
    embed_backward(tables, grad, ids, types, method=method, memory_budget=budget)
    tracemalloc.start()
    try:
        embed_backward(tables, grad, ids, types, method=method, memory_budget=budget)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # A whole one-hot matrix would be 1024 x 20000 x 4 bytes = 78 MiB.
    assert peak <= budget + result_bytes
    assert peak > budget // 4 + result_bytes  # the tiles really used the budget


# --------------------------------------------------------------------------- properties


@settings(max_examples=40, deadline=None)
@given(
    method=st.sampled_from(BACKWARD_METHODS),
    dtype=st.sampled_from(DTYPES),
    vocab=st.integers(1, 60),
    hidden=st.integers(1, 40),
    batch=st.integers(0, 4),
    seq=st.integers(0, 12),
    zipf=st.booleans(),
    seed=st.integers(0, 2**31),
)
def test_property_matches_reference(method, dtype, vocab, hidden, batch, seq, zipf, seed):
    rng = np.random.default_rng(seed)
    tables = kernels.EmbeddingTables.random(vocab, hidden, max_positions=16, dtype=dtype)
    grad, ids, types = random_case(rng, tables, (batch, seq), zipf=zipf and batch * seq > 0)
    padding_idx = int(rng.integers(vocab)) if seed % 2 else None
    grads = embed_backward(tables, grad, ids, types, method=method, padding_idx=padding_idx)
    assert_matches_reference(grads, tables, method, grad, ids, types, padding_idx=padding_idx)
