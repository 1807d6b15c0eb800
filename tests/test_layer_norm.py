"""embed(..., layer_norm=True): BERT's LayerNorm(token + segment + position), every method.

Each result is checked against
:func:`bert_embedding_kernels.bench.engine.reference.naive_layer_norm` (exactly rounded
float64 statistics) of the naive sum, within the per-element bound pinned and derived in
tests/rules.py (``layer_norm_bound``): the final rounding, plus the effect of the method's sum
differing from the reference sum (0 for the bit-identical methods, the BLAS bound for the
others) and of the float64 statistics' own error. Outputs are poisoned first (tests/poison.py).
"""

import numpy as np
import pytest
from poison import embed, nan_array
from rules import assert_forward_matches, assert_layer_norm_matches, tables_with_norm

import bert_embedding_kernels as bek


@pytest.mark.parametrize("method", bek.METHODS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("hidden", [1, 3, 7, 130])
def test_every_method_normalises_like_the_reference(method, dtype, hidden):
    rng = np.random.default_rng(hidden)
    tables = tables_with_norm(300, hidden, dtype)
    ids = rng.integers(0, 300, (3, 11))
    types = rng.integers(0, 2, (3, 11))
    y = embed(tables, ids, types, method=method, layer_norm=True)
    assert_layer_norm_matches(y, tables, method, ids, types)


@pytest.mark.parametrize("method", bek.METHODS)
def test_large_enough_for_the_parallel_kernel(method):
    rng = np.random.default_rng(1)
    tables = tables_with_norm(2000, 768)
    ids = rng.integers(0, 2000, (4, 64))  # 768 KiB of output: the parallel path
    types = rng.integers(0, 2, (4, 64))
    y = embed(tables, ids, types, method=method, layer_norm=True)
    assert_layer_norm_matches(y, tables, method, ids, types)


@pytest.mark.parametrize("method", bek.METHODS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_large_mean_small_spread_does_not_cancel(method, dtype):
    # Rows around 3000 with a spread near float32's resolution there: E[x^2] - E[x]^2
    # would lose every digit (even go negative); two-pass float64 statistics do not.
    rng = np.random.default_rng(2)
    hidden = 64
    token = (1000 + 1e-3 * rng.standard_normal((50, hidden))).astype(dtype)
    tables = tables_with_norm(
        50,
        hidden,
        dtype,
        token=token,
        segment=np.full((2, hidden), 1000, dtype),
        position=np.full((64, hidden), 1000, dtype),
    )
    ids = rng.integers(0, 50, (2, 9))
    y = embed(tables, ids, method=method, layer_norm=True)
    assert_layer_norm_matches(y, tables, method, ids)


@pytest.mark.parametrize("method", bek.METHODS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("mean", [0, 3000])
def test_an_outlier_first_in_the_row_does_not_cancel(method, dtype, mean):
    # The fused kernel's one-pass statistics sum deviations from each row's first
    # element; an outlier there is the furthest that shift can be from the mean
    # (sqrt(n) standard deviations), the worst case for their cancellation.
    rng = np.random.default_rng(3)
    hidden = 768
    token = (mean + 1e-2 * rng.standard_normal((20, hidden))).astype(dtype)
    token[:, 0] = mean + 1e3
    tables = tables_with_norm(
        20,
        hidden,
        dtype,
        token=token,
        segment=np.zeros((2, hidden), dtype),
        position=np.zeros((64, hidden), dtype),
    )
    ids = rng.integers(0, 20, (2, 9))
    y = embed(tables, ids, method=method, layer_norm=True)
    assert_layer_norm_matches(y, tables, method, ids)


@pytest.mark.parametrize("method", bek.METHODS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_constant_row_normalises_to_the_bias(method, dtype):
    # zero variance: only eps keeps 1 / sqrt(var + eps) finite
    hidden = 16
    tables = tables_with_norm(
        4,
        hidden,
        dtype,
        token=np.full((4, hidden), 0.5, dtype),
        segment=np.zeros((2, hidden), dtype),
        position=np.zeros((8, hidden), dtype),
    )
    y = embed(tables, [[0, 1, 2]], method=method, layer_norm=True)
    np.testing.assert_array_equal(y, np.broadcast_to(tables.norm_bias, y.shape))


@pytest.mark.parametrize("method", bek.METHODS)
def test_return_sum_gives_the_sum_and_out_gets_the_norm(method):
    rng = np.random.default_rng(3)
    tables = tables_with_norm(100, 24)
    ids = rng.integers(0, 100, (2, 5))
    out = nan_array((2, 5, 24), np.float32)
    y, sums = embed(tables, ids, method=method, layer_norm=True, return_sum=True, out=out)
    assert y is out
    assert not np.shares_memory(sums, out)
    assert_layer_norm_matches(y, tables, method, ids)
    assert_forward_matches(sums, tables, method, ids)
    np.testing.assert_array_equal(sums, embed(tables, ids, method=method))
    np.testing.assert_array_equal(y, embed(tables, ids, method=method, layer_norm=True))


@pytest.mark.parametrize("method", bek.METHODS)
def test_empty_batch(method):
    tables = tables_with_norm(10, 4)
    y, sums = embed(tables, np.zeros((0, 3), int), method=method, layer_norm=True, return_sum=True)
    assert y.shape == sums.shape == (0, 3, 4)


@pytest.mark.parametrize("method", bek.METHODS)
def test_layer_norm_without_parameters_is_refused(method):
    base = bek.EmbeddingTables.random(10, 4, max_positions=8)
    bare = bek.EmbeddingTables(base.token, base.segment, base.position)
    with pytest.raises(ValueError, match=r"layer_norm=True needs.*norm_weight and norm_bias"):
        embed(bare, [[1, 2]], method=method, layer_norm=True)


@pytest.mark.parametrize("method", bek.METHODS)
def test_bad_norm_options(method):
    tables = tables_with_norm(10, 4)
    with pytest.raises(ValueError, match="return_sum=True needs layer_norm=True"):
        embed(tables, [[1]], method=method, return_sum=True)
    with pytest.raises(TypeError, match="layer_norm is str"):
        embed(tables, [[1]], method=method, layer_norm="yes")


def test_random_tables_start_like_bert():
    tables = bek.EmbeddingTables.random(10, 4)
    np.testing.assert_array_equal(tables.norm_weight, np.ones(4, np.float32))
    np.testing.assert_array_equal(tables.norm_bias, np.zeros(4, np.float32))
    assert tables.norm_eps == 1e-12


GOOD = {"token": np.ones((5, 3)), "segment": np.ones((2, 3)), "position": np.ones((4, 3))}


@pytest.mark.parametrize(
    ("norm", "error", "message"),
    [
        ({"norm_weight": np.ones(3)}, ValueError, "norm_bias is missing"),
        ({"norm_bias": np.ones(3)}, ValueError, "norm_weight is missing"),
        (
            {"norm_weight": np.ones(4), "norm_bias": np.ones(3)},
            ValueError,
            r"norm_weight has shape \(4,\).*\(3,\)",
        ),
        (
            {"norm_weight": np.ones(3, np.float32), "norm_bias": np.ones(3)},
            TypeError,
            "norm_weight has dtype float32.*float64",
        ),
        (
            {"norm_weight": np.ones(3), "norm_bias": np.ones((3, 1))},
            ValueError,
            "norm_bias has shape",
        ),
        ({"norm_eps": 0.0}, ValueError, "norm_eps is 0.0"),
        ({"norm_eps": float("nan")}, ValueError, "norm_eps is nan"),
        ({"norm_eps": "1e-12"}, TypeError, "norm_eps is str"),
    ],
)
def test_bad_norm_parameters(norm, error, message):
    with pytest.raises(error, match=message):
        bek.EmbeddingTables(**GOOD, **norm)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "kind", ["ordinary", "mean far from zero", "outlier first", "constant rows", "one column"]
)
def test_the_backward_matches_the_float64_formulas(dtype, kind):
    """LayerNorm's CPU backward (methods/fused/norm_backward.py: the statistics and both
    projections in one pass of sums of deviations from the row's first element) against the
    textbook formulas in float64, on the rows where cancellation would show: a mean far
    from zero next to the spread, the first element (the shift) an outlier, zero variance."""
    from bert_embedding_kernels.bench.engine.reference import naive_layer_norm_backward
    from bert_embedding_kernels.methods.fused.norm_backward import layer_norm_backward

    rng = np.random.default_rng(7)
    rows, hidden = 40, 1 if kind == "one column" else 96
    sums = rng.standard_normal((rows, hidden))
    if kind == "mean far from zero":
        sums = sums + 1e3
    elif kind == "outlier first":
        sums[:, 0] = 300.0  # ~300 standard deviations from the rest
    elif kind == "constant rows":
        sums[:] = sums[:, :1]
    sums = sums.astype(dtype)
    grad = rng.standard_normal((rows, hidden)).astype(dtype)
    weight = rng.uniform(0.5, 1.5, hidden).astype(dtype)
    got = layer_norm_backward(sums, grad, weight, 1e-12 if dtype == np.float64 else 1e-5)
    want = naive_layer_norm_backward(sums, grad, weight, 1e-12 if dtype == np.float64 else 1e-5)
    if kind == "constant rows":  # xhat is exactly 0; the reference's mean of n equal values
        want = (want[0], np.zeros_like(want[1]), want[2])  # is not always exactly that value
    tolerance = 4e-6 if dtype == np.float32 else 1e-10
    for name, a, b in zip(("sums", "weight", "bias"), got, want, strict=True):
        assert a.dtype == dtype, name
        scale = max(float(np.abs(b).max()), 1.0)
        np.testing.assert_allclose(a, b, rtol=0, atol=tolerance * scale, err_msg=name)


def test_the_backward_streams_a_large_gradient_with_the_same_bits(monkeypatch):
    """A LayerNorm input gradient too large for the cache is written with streaming stores
    from a scratch row (norm_backward._streams): the same bits as plain stores."""
    from bert_embedding_kernels.methods.fused import norm_backward

    rng = np.random.default_rng(8)
    rows, hidden = 1 << 14, 512  # 32 MiB of float32
    sums = rng.standard_normal((rows, hidden), dtype=np.float32)
    grad = rng.standard_normal((rows, hidden), dtype=np.float32)
    weight = rng.uniform(0.5, 1.5, hidden).astype(np.float32)
    streamed = norm_backward.layer_norm_backward(sums, grad, weight, 1e-12)
    assert norm_backward._streams(streamed[0])
    monkeypatch.setattr(norm_backward, "_streams", lambda grad_sums: False)
    plain = norm_backward.layer_norm_backward(sums, grad, weight, 1e-12)
    for a, b in zip(streamed, plain, strict=True):
        np.testing.assert_array_equal(a, b)


def test_kept_sums_of_a_large_call_are_streamed_with_the_same_bits():
    """``return_sum=True`` at 32 MiB or more writes the kept sums with streaming stores
    (methods/fused/forward.py): the sums equal the plain sum's bits, the output the
    normalised output's without them."""
    tables = tables_with_norm(5000, 512, np.float32, max_positions=256)
    rng = np.random.default_rng(9)
    ids, types = rng.integers(0, 5000, (64, 256)), rng.integers(0, 2, (64, 256))
    out, sums = bek.embed(tables, ids, types, layer_norm=True, return_sum=True)
    assert sums.nbytes >= 32 << 20
    np.testing.assert_array_equal(sums, bek.embed(tables, ids, types, layer_norm=False))
    np.testing.assert_array_equal(out, bek.embed(tables, ids, types, layer_norm=True))
