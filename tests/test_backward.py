"""The backward pass: every method against a naive float64 loop, over dtypes, shapes and layouts.

The rule (tests/rules.py, ``gradient_bound``): row ``r`` of a gradient is a sum
of the ``n`` output-gradient rows of the tokens that used it, and any order of
summing ``n`` terms lies within ``(n - 1) u sum(|g|)`` of the exact sum, so each
element must lie within ``n * eps * sum(|g|)`` of the float64 loop; a row no
token used (n = 0) must be exactly zero. ``fused`` and ``gather`` add in token
order in the tables' dtype, so they must match the same loop run in that dtype
bit for bit. Calls go through tests/poison.py: a gradient row a one-hot path
never writes is NaN, not a previous call's answer.

Determinism across thread counts and torch's autograd: test_backward_determinism.py;
refused arguments and the one-hot memory budget: test_backward_errors.py.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from poison import embed_backward
from rules import assert_gradients_match as assert_matches_reference
from rules import is_bitwise, random_case

import bert_embedding_kernels as bek
from bert_embedding_kernels import BACKWARD_METHODS
from bert_embedding_kernels.bench.engine.cases import zipf_ids

DTYPES = (np.float32, np.float64)


@pytest.mark.parametrize("method", BACKWARD_METHODS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("id_dtype", [np.int32, np.int64, np.uint16, np.uint64])
def test_dtypes(method, dtype, id_dtype):
    rng = np.random.default_rng(1)
    tables = bek.EmbeddingTables.random(200, 24, max_positions=40, dtype=dtype, seed=2)
    grad, ids, types = random_case(rng, tables, (3, 17), id_dtype=id_dtype)
    grads = embed_backward(tables, grad, ids, types, method=method)
    assert_matches_reference(grads, tables, method, grad, ids, types)


@pytest.mark.parametrize("method", BACKWARD_METHODS)
@pytest.mark.parametrize("hidden", [1, 3, 100, 130])
@pytest.mark.parametrize("vocab", [1, 7, 5000])
def test_widths_and_vocab_sizes(method, hidden, vocab):
    rng = np.random.default_rng(hidden * vocab)
    tables = bek.EmbeddingTables.random(vocab, hidden, max_positions=16, type_vocab_size=3)
    grad, ids, types = random_case(rng, tables, (2, 9))
    grads = embed_backward(tables, grad, ids, types, method=method)
    assert_matches_reference(grads, tables, method, grad, ids, types)


@pytest.mark.parametrize("method", BACKWARD_METHODS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_parallel_path_at_bert_width(method, dtype):
    # Large enough for the parallel kernel (grad above SERIAL_MAX_BYTES), with a
    # width that is not a multiple of the column block.
    rng = np.random.default_rng(11)
    tables = bek.EmbeddingTables.random(3000, 776, max_positions=64, dtype=dtype, seed=3)
    grad, ids, types = random_case(rng, tables, (4, 64), zipf=True)
    grads = embed_backward(tables, grad, ids, types, method=method)
    assert_matches_reference(grads, tables, method, grad, ids, types)


@pytest.mark.parametrize("method", BACKWARD_METHODS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_zipf_skew_many_tokens_on_few_rows(method, dtype):
    # 1536 tokens over a vocabulary of 40 with exponent 1.5: the top row takes
    # about 40% of the tokens, so long sums exercise the n-dependent bound.
    rng = np.random.default_rng(2)
    tables = bek.EmbeddingTables.random(40, 33, max_positions=64, dtype=dtype)
    ids = zipf_ids(40, (24, 64), exponent=1.5, seed=3)
    assert np.bincount(ids.ravel()).max() > 500
    grad = rng.standard_normal((24, 64, 33)).astype(dtype)
    grads = embed_backward(tables, grad, ids, method=method)
    assert_matches_reference(grads, tables, method, grad, ids)


@pytest.mark.parametrize("method", BACKWARD_METHODS)
def test_every_token_on_one_row(method):
    tables = bek.EmbeddingTables.random(10, 48, max_positions=64)
    ids = np.full((16, 64), 7)
    grad = np.random.default_rng(4).standard_normal((16, 64, 48)).astype(np.float32)
    grads = embed_backward(tables, grad, ids, method=method)
    assert_matches_reference(grads, tables, method, grad, ids)
    assert np.count_nonzero(np.any(grads.token != 0, axis=1)) == 1


@pytest.mark.parametrize("method", BACKWARD_METHODS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_padding_idx_row_is_zero(method, dtype):
    rng = np.random.default_rng(5)
    tables = bek.EmbeddingTables.random(20, 16, max_positions=32, dtype=dtype)
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
    tables = bek.EmbeddingTables.random(10, 6, max_positions=8)
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
    tables = bek.EmbeddingTables.random(30, 8, max_positions=20)
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
    tables = bek.EmbeddingTables.random(50, 20, max_positions=30, type_vocab_size=4)
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
    tables = bek.EmbeddingTables.random(10, 2, max_positions=8, dtype=np.float64)
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
    tables = bek.EmbeddingTables.random(4, 3, max_positions=4)
    grad = np.full((1, 2, 3), -0.0, np.float32)
    for method in BACKWARD_METHODS:
        grads = embed_backward(tables, grad, [[1, 2]], method=method)
        assert not np.any(np.signbit(grads.token)), method


@pytest.mark.parametrize("method", BACKWARD_METHODS)
def test_non_finite_gradients(method):
    # Where the identity stops: 0 * inf = NaN, so the one-hot products spread an
    # inf in one token's gradient to every row of that column; a scatter-add
    # only reaches the rows that token used.
    tables = bek.EmbeddingTables.random(6, 4, max_positions=4)
    grad = np.ones((1, 2, 4), np.float32)
    grad[0, 0, 1] = np.inf
    with np.errstate(invalid="ignore"):  # the one-hot paths' 0 * inf
        grads = embed_backward(tables, grad, [[2, 3]], method=method)
    if not is_bitwise(method):  # the one-hot products
        assert np.all(np.isnan(grads.token[[0, 1, 4, 5], 1]))
    else:
        assert grads.token[2, 1] == np.inf
        np.testing.assert_array_equal(grads.token[[0, 1, 4, 5]], 0)


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
    tables = bek.EmbeddingTables.random(vocab, hidden, max_positions=16, dtype=dtype)
    grad, ids, types = random_case(rng, tables, (batch, seq), zipf=zipf and batch * seq > 0)
    padding_idx = int(rng.integers(vocab)) if seed % 2 else None
    grads = embed_backward(tables, grad, ids, types, method=method, padding_idx=padding_idx)
    assert_matches_reference(grads, tables, method, grad, ids, types, padding_idx=padding_idx)
