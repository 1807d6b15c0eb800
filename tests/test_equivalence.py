"""Every method against the naive reference, within the bound the README states.

The rules (pinned in tests/rules.py, not read from the package):
- ``gather`` and ``fused`` add in the same order as the reference,
  ``(token + segment) + position`` in the tables' dtype, so they agree with it
  bit for bit.
- ``onehot`` and ``concat`` go through BLAS, which may sum the three rows (and
  exact zeros) in any order, with or without FMA. Any order of summing three
  terms is within 2u(|a| + |b| + |c|) of the exact sum, u = eps / 2 the unit
  roundoff, so we test ``|y - exact| <= eps * (|a| + |b| + |c|)``.

Every call's output is poisoned first (tests/poison.py): an element a method
does not write is NaN, never the previous method's answer left in reused memory.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from poison import embed
from rules import assert_forward_matches as assert_matches_reference
from rules import is_bitwise

import bert_embedding_kernels as bek
from bert_embedding_kernels.bench.engine.reference import naive_embed


def random_ids(rng, high, shape, dtype=np.int64):
    return rng.integers(0, high, size=shape).astype(dtype)


@pytest.mark.parametrize("method", bek.METHODS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("id_dtype", [np.int32, np.int64, np.uint8, np.uint16, np.uint64])
def test_dtypes(method, dtype, id_dtype):
    rng = np.random.default_rng(1)
    tables = bek.EmbeddingTables.random(200, 24, max_positions=40, dtype=dtype, seed=2)
    ids = random_ids(rng, 200, (3, 17), id_dtype)
    types = random_ids(rng, 2, (3, 17), id_dtype)
    y = embed(tables, ids, types, method=method)
    assert_matches_reference(y, tables, method, ids, types)


@pytest.mark.parametrize("method", bek.METHODS)
@pytest.mark.parametrize("hidden", [1, 3, 100, 130])
@pytest.mark.parametrize("vocab", [1, 7, 5000])
def test_widths_and_vocab_sizes(method, hidden, vocab):
    rng = np.random.default_rng(hidden * vocab)
    tables = bek.EmbeddingTables.random(vocab, hidden, max_positions=16, type_vocab_size=3)
    ids = random_ids(rng, vocab, (2, 9))
    types = random_ids(rng, 3, (2, 9))
    y = embed(tables, ids, types, method=method)
    assert_matches_reference(y, tables, method, ids, types)


@pytest.mark.parametrize("method", bek.METHODS)
@pytest.mark.parametrize("shape", [(0, 5), (4, 0), (0, 0)])
def test_empty_batches(method, shape):
    tables = bek.EmbeddingTables.random(10, 6, max_positions=8)
    y = embed(tables, np.zeros(shape, np.int64), method=method)
    assert y.shape == (*shape, 6)
    assert y.dtype == np.float32


@pytest.mark.parametrize("method", bek.METHODS)
def test_empty_python_list(method):
    tables = bek.EmbeddingTables.random(10, 6, max_positions=8)
    assert embed(tables, [[]], method=method).shape == (1, 0, 6)


@pytest.mark.parametrize("method", bek.METHODS)
def test_python_lists(method):
    tables = bek.EmbeddingTables.random(10, 5, max_positions=8)
    ids, types, positions = [[1, 2, 3], [4, 5, 9]], [[0, 1, 0], [1, 1, 0]], [7, 0, 3]
    y = embed(tables, ids, types, positions, method=method)
    assert_matches_reference(y, tables, method, ids, types, positions)


@pytest.mark.parametrize("method", bek.METHODS)
@pytest.mark.parametrize("table_order", ["C", "F", "strided"])
@pytest.mark.parametrize("id_layout", ["C", "F", "strided"])
def test_memory_layouts(method, table_order, id_layout):
    rng = np.random.default_rng(3)
    base = bek.EmbeddingTables.random(50, 20, max_positions=30, type_vocab_size=4)

    def relayout(table):
        if table_order == "F":
            return np.asfortranarray(table)
        if table_order == "strided":
            wide = np.zeros((table.shape[0], 2 * table.shape[1]), table.dtype)
            wide[:, ::2] = table
            return wide[:, ::2]
        return table

    tables = bek.EmbeddingTables(*(relayout(t) for t in (base.token, base.segment, base.position)))
    ids = random_ids(rng, 50, (6, 11))
    types = random_ids(rng, 4, (6, 11))
    positions = random_ids(rng, 30, (6, 11))
    if id_layout == "F":
        ids, types, positions = (np.asfortranarray(a) for a in (ids, types, positions))
    elif id_layout == "strided":
        ids, types, positions = (np.repeat(a, 2, axis=1)[:, ::2] for a in (ids, types, positions))
        assert not ids.flags.c_contiguous
    y = embed(tables, ids, types, positions, method=method)
    assert_matches_reference(y, base, method, ids, types, positions)


@pytest.mark.parametrize("method", bek.METHODS)
@pytest.mark.parametrize("form", ["default", "seq", "1xseq", "batchxseq"])
@pytest.mark.parametrize("past_length", [0, 5])
def test_position_forms_and_past_length(method, form, past_length):
    rng = np.random.default_rng(4)
    tables = bek.EmbeddingTables.random(30, 8, max_positions=20)
    ids = random_ids(rng, 30, (3, 7))
    positions = {
        "default": None,
        "seq": random_ids(rng, 20, (7,)),
        "1xseq": random_ids(rng, 20, (1, 7)),
        "batchxseq": random_ids(rng, 20, (3, 7)),
    }[form]
    y = embed(tables, ids, position_ids=positions, past_length=past_length, method=method)
    assert_matches_reference(y, tables, method, ids, None, positions, past_length)


def test_past_length_shifts_default_positions():
    tables = bek.EmbeddingTables.random(30, 8, max_positions=20)
    ids = np.array([[3, 4, 5]])
    shifted = embed(tables, ids, past_length=4)
    explicit = embed(tables, ids, position_ids=[4, 5, 6])
    np.testing.assert_array_equal(shifted, explicit)


@pytest.mark.parametrize("method", bek.METHODS)
def test_out_is_written_and_returned(method):
    tables = bek.EmbeddingTables.random(30, 8, max_positions=20, dtype=np.float64)
    ids = np.array([[1, 2], [3, 4]])
    out = np.full((2, 2, 8), np.nan)
    y = embed(tables, ids, method=method, out=out)
    assert y is out
    assert_matches_reference(out, tables, method, ids)


@pytest.mark.parametrize("method", bek.METHODS)
def test_inputs_are_not_modified(method):
    rng = np.random.default_rng(5)
    tables = bek.EmbeddingTables.random(30, 8, max_positions=20)
    arrays = {
        "token": tables.token.copy(),
        "segment": tables.segment.copy(),
        "position": tables.position.copy(),
    }
    ids, types, positions = (random_ids(rng, n, (2, 5)) for n in (30, 2, 20))
    before = [a.copy() for a in (ids, types, positions)]
    embed(tables, ids, types, positions, method=method)
    for a, b in zip((ids, types, positions), before, strict=True):
        np.testing.assert_array_equal(a, b)
    for name, copy in arrays.items():
        np.testing.assert_array_equal(getattr(tables, name), copy)


@pytest.mark.parametrize("method", bek.METHODS)
def test_method_functions_match_embed(method):
    tables = bek.EmbeddingTables.random(30, 8, max_positions=20)
    ids = np.array([[1, 2, 29]])
    np.testing.assert_array_equal(
        getattr(bek, method)(tables, ids), bek.embed(tables, ids, method=method)
    )


def test_one_hot_paths_agree_with_gather_to_the_bound_at_bert_width():
    # A wide row (768) with real-sized magnitudes: BLAS blocks the sum differently here.
    rng = np.random.default_rng(6)
    tables = bek.EmbeddingTables.random(3000, 768, max_positions=64, seed=7)
    ids = random_ids(rng, 3000, (4, 64))
    types = random_ids(rng, 2, (4, 64))
    for method in bek.METHODS:
        assert_matches_reference(
            embed(tables, ids, types, method=method), tables, method, ids, types
        )


@settings(max_examples=60, deadline=None)
@given(
    method=st.sampled_from(bek.METHODS),
    dtype=st.sampled_from([np.float32, np.float64]),
    id_dtype=st.sampled_from([np.int8, np.int32, np.int64, np.uint32, np.uint64]),
    vocab=st.integers(1, 120),
    type_vocab=st.integers(1, 4),
    max_positions=st.integers(1, 20),
    hidden=st.integers(1, 40),
    batch=st.integers(0, 4),
    data=st.data(),
)
def test_property_every_method_matches_reference(
    method, dtype, id_dtype, vocab, type_vocab, max_positions, hidden, batch, data
):
    seq = data.draw(st.integers(0, max_positions))
    past_length = data.draw(st.integers(0, max_positions - seq))
    seed = data.draw(st.integers(0, 2**32 - 1))
    tables = bek.EmbeddingTables.random(
        vocab,
        hidden,
        max_positions=max_positions,
        type_vocab_size=type_vocab,
        dtype=dtype,
        seed=seed,
    )
    top = min(np.iinfo(id_dtype).max, 127)

    def ids(high):
        values = st.integers(0, min(high, top + 1) - 1)
        return np.array(
            data.draw(
                st.lists(
                    st.lists(values, min_size=seq, max_size=seq), min_size=batch, max_size=batch
                )
            ),
            dtype=id_dtype,
        ).reshape(batch, seq)

    input_ids, types = ids(vocab), ids(type_vocab)
    positions = ids(max_positions) if data.draw(st.booleans()) else None
    y = embed(tables, input_ids, types, positions, past_length=past_length, method=method)
    assert_matches_reference(y, tables, method, input_ids, types, positions, past_length)


@pytest.mark.filterwarnings("ignore:invalid value encountered in matmul:RuntimeWarning")
def test_inf_in_an_unused_row_spreads_only_through_the_one_hot_paths():
    """Where the identity stops holding: 0 * inf = NaN.

    The one-hot codes multiply every table row, the unused ones by zero, so an
    inf anywhere in a table makes every output NaN; a gather reads only the rows
    it needs and stays finite.
    """
    base = bek.EmbeddingTables.random(10, 4, max_positions=8)
    token = base.token.copy()
    token[9] = np.inf  # row 9 is never used below
    tables = bek.EmbeddingTables(token, base.segment, base.position)
    ids = np.array([[0, 1, 2], [3, 4, 5]])
    for method in bek.METHODS:
        y = embed(tables, ids, method=method)
        if is_bitwise(method):
            assert np.all(np.isfinite(y)), method
            np.testing.assert_array_equal(y, naive_embed(tables, ids))
        else:
            assert np.all(np.isnan(y)), method
