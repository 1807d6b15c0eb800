import warnings

import numpy as np
import pytest

import bert_embedding_kernels as bek
from bert_embedding_kernels.bench.engine.reference import naive_embed
from bert_embedding_kernels.tables import CopiedTableWarning


def test_random_is_reproducible_and_shaped_like_bert():
    a = bek.EmbeddingTables.random(1000, 64, seed=3)
    b = bek.EmbeddingTables.random(1000, 64, seed=3)
    c = bek.EmbeddingTables.random(1000, 64, seed=4)
    assert (a.vocab_size, a.hidden_size, a.max_positions, a.type_vocab_size) == (1000, 64, 512, 2)
    assert a.dtype == np.float32
    np.testing.assert_array_equal(a.token, b.token)
    assert not np.array_equal(a.token, c.token)
    # BERT initialises with std 0.02: 64k samples pin the estimate to about 0.3%.
    assert abs(a.token.std() - 0.02) < 0.0005
    assert abs(a.token.mean()) < 0.0005


def test_random_float64():
    assert bek.EmbeddingTables.random(5, 3, dtype=np.float64).dtype == np.float64


def test_tables_are_read_only_and_c_contiguous():
    token = np.asfortranarray(np.ones((5, 3), np.float32))
    with pytest.warns(CopiedTableWarning, match="token is not C-contiguous"):
        tables = bek.EmbeddingTables(
            token, np.ones((2, 3), np.float32), np.ones((4, 3), np.float32)
        )
    assert tables.token.flags.c_contiguous
    assert not tables.token.flags.writeable
    assert token.flags.writeable  # the caller's array is left alone


def test_c_contiguous_tables_are_not_copied():
    token = np.ones((5, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no CopiedTableWarning: nothing was copied
        tables = bek.EmbeddingTables(token, np.ones((2, 3)), np.ones((4, 3)))
    assert np.shares_memory(tables.token, token)


@pytest.mark.parametrize("name", ["token", "segment", "position"])
def test_a_copied_table_warns_that_updates_will_not_be_seen(name):
    """The promised live view cannot hold for a strided table: say so, once, by name."""
    arrays = {k: np.ones((6, 8), np.float32) for k in ("token", "segment", "position")}
    original = arrays[name]
    arrays[name] = original[:, ::2]
    with pytest.warns(CopiedTableWarning, match=rf"{name} is not C-contiguous .*will not be seen"):
        tables = bek.EmbeddingTables(**{k: v if k == name else v[:, :4] for k, v in arrays.items()})
    original[:] = 2  # an in-place update the tables no longer see
    assert (getattr(tables, name) == 1).all()


GOOD = {"token": np.ones((5, 3)), "segment": np.ones((2, 3)), "position": np.ones((4, 3))}


@pytest.mark.parametrize(
    ("name", "value", "error", "message"),
    [
        ("token", np.ones((5, 3), np.int64), TypeError, r"token has dtype int64.*float32"),
        ("segment", np.ones((2, 3), np.int8), TypeError, r"segment has dtype int8.*bfloat16"),
        ("position", np.ones(3), ValueError, r"position has shape \(3,\).*2-D"),
        ("token", np.ones((0, 3)), ValueError, r"token has shape \(0, 3\).*at least one row"),
        ("segment", np.ones((2, 0)), ValueError, r"segment.*at least one row and one column"),
        ("position", np.ones((4, 5)), ValueError, r"same width"),
        ("token", np.ones((5, 3), np.float32), TypeError, r"mixed dtypes"),
        ("token", [["a"]], TypeError, r"token has dtype <U1"),
        ("segment", np.ones((2, 3, 1)), ValueError, r"segment has shape \(2, 3, 1\)"),
    ],
)
def test_bad_tables(name, value, error, message):
    with pytest.raises(error, match=message):
        bek.EmbeddingTables(**{**GOOD, name: value})


@pytest.mark.parametrize(
    "argument", ["vocab_size", "hidden_size", "max_positions", "type_vocab_size"]
)
def test_random_rejects_bad_sizes(argument):
    sizes = {"vocab_size": 5, "hidden_size": 3, "max_positions": 4, "type_vocab_size": 2}
    sizes[argument] = 0
    with pytest.raises(ValueError, match=argument):
        bek.EmbeddingTables.random(sizes.pop("vocab_size"), sizes.pop("hidden_size"), **sizes)


def test_random_rejects_int_dtype():
    with pytest.raises(TypeError, match="must be one of float32, float64, float16, bfloat16"):
        bek.EmbeddingTables.random(5, 3, dtype=np.int32)


@pytest.mark.parametrize("method", bek.METHODS)
def test_an_in_place_update_is_seen_by_every_method(method):
    """Tables are live views: after W[1] += 100 no method may serve the old weights."""
    rng = np.random.default_rng(0)
    token = rng.standard_normal((40, 8)).astype(np.float32)
    segment = rng.standard_normal((2, 8)).astype(np.float32)
    position = rng.standard_normal((16, 8)).astype(np.float32)
    tables = bek.EmbeddingTables(token, segment, position)
    ids = np.array([[1, 5, 1], [7, 1, 2]])
    before = bek.embed(tables, ids, method=method)  # builds whatever a method might keep
    token[1] += 100
    segment[0] -= 3
    position[2] *= 2
    after = bek.embed(tables, ids, method=method)
    expected = naive_embed(tables, ids)
    np.testing.assert_allclose(after, expected, rtol=0, atol=1e-4)
    assert abs(after[0, 0, 0] - before[0, 0, 0] - 97) < 1e-3  # +100 in token, -3 in segment


def test_an_unknown_device_backend_is_named_with_the_choices():
    from bert_embedding_kernels import devices

    with pytest.raises(ValueError, match=r"device is 'tpu'; it must be one of \('cuda',\)"):
        devices.backend("tpu")
