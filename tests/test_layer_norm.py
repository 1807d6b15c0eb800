"""embed(..., layer_norm=True): BERT's LayerNorm(token + segment + position), every method.

The bound tested (per element): with x the method's pre-norm sum, mu and sigma
its row's mean and standard deviation, w and b the norm parameters,

    |y - y_ref| <= 4 (eps (|w| |z| + |b|) + |w| D (2 + |z|) / sigma),  z = (x - mu) / sigma

- ``eps (|w| |z| + |b|)`` covers the final rounding of y to the tables' dtype;
- ``D`` is the row's largest distance between the method's sum and the
  reference sum: 0 for gather and fused (bit-identical sums), at most
  ``eps (|a| + |b| + |c|)`` per element for the BLAS paths (README,
  "Equivalence"), plus the float64 statistics' own error, which acts like a
  shift of the mean by at most ``n eps64 max|x|`` (negligible for float32
  tables, the same order as the rounding for float64 ones). Since
  dz_i/dx_j = (delta_ij - 1/n - z_i z_j / n) / sigma and sum_j |z_j| / n <= 1,
  moving every x_j by up to D moves z_i by at most D (2 + |z_i|) / sigma;
- the factor 4 is slack for the few roundings in between (x - mu, the scaling).
"""

import numpy as np
import pytest

import kernels
from kernels.bench.reference import exact_embed, naive_embed, naive_layer_norm

# Pinned here, not imported from the package: which methods must equal the naive
# reference bit for bit is a rule the tests hold the code to (README, "Equivalence").
BITWISE_METHODS = ("gather", "fused")


def tables_with_norm(vocab, hidden, dtype=np.float32, seed=0, max_positions=64, **overrides):
    rng = np.random.default_rng(seed)
    base = kernels.EmbeddingTables.random(
        vocab, hidden, max_positions=max_positions, dtype=dtype, seed=seed
    )
    parts = {
        "token": base.token,
        "segment": base.segment,
        "position": base.position,
        "norm_weight": (1 + 0.1 * rng.standard_normal(hidden)).astype(dtype),
        "norm_bias": (0.1 * rng.standard_normal(hidden)).astype(dtype),
    }
    parts.update(overrides)
    token, segment, position = parts.pop("token"), parts.pop("segment"), parts.pop("position")
    return kernels.EmbeddingTables(token, segment, position, **parts)


def assert_layer_norm_matches(y, tables, method, input_ids, token_type_ids=None):
    sums = naive_embed(tables, input_ids, token_type_ids)
    expected = naive_layer_norm(sums, tables.norm_weight, tables.norm_bias, tables.norm_eps)
    eps = np.finfo(tables.dtype).eps
    centred = sums.astype(np.float64) - sums.astype(np.float64).mean(-1, keepdims=True)
    sigma = np.sqrt(np.mean(centred**2, -1, keepdims=True) + tables.norm_eps)
    row_size = sums.shape[-1]
    largest = np.abs(sums.astype(np.float64)).max(axis=-1, keepdims=True)
    distance = row_size * np.finfo(np.float64).eps * largest  # the statistics' error
    if method not in BITWISE_METHODS:
        magnitude = exact_embed(tables, input_ids, token_type_ids)[1].astype(np.float64)
        distance = distance + eps * magnitude.max(axis=-1, keepdims=True)
    w, b = np.abs(tables.norm_weight.astype(np.float64)), np.abs(tables.norm_bias)
    z = np.abs(centred) / sigma
    bound = 4 * (eps * (w * z + b) + w * distance * (2 + z) / sigma)
    error = np.abs(y.astype(np.float64) - expected)
    assert y.dtype == tables.dtype
    assert np.all(np.isfinite(y))
    assert np.all(error <= bound), f"{method}: max excess {np.max(error - bound):.3g}"


@pytest.mark.parametrize("method", kernels.METHODS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("hidden", [1, 3, 7, 130])
def test_every_method_normalises_like_the_reference(method, dtype, hidden):
    rng = np.random.default_rng(hidden)
    tables = tables_with_norm(300, hidden, dtype)
    ids = rng.integers(0, 300, (3, 11))
    types = rng.integers(0, 2, (3, 11))
    y = kernels.embed(tables, ids, types, method=method, layer_norm=True)
    assert_layer_norm_matches(y, tables, method, ids, types)


@pytest.mark.parametrize("method", kernels.METHODS)
def test_large_enough_for_the_parallel_kernel(method):
    rng = np.random.default_rng(1)
    tables = tables_with_norm(2000, 768)
    ids = rng.integers(0, 2000, (4, 64))  # 768 KiB of output: the parallel path
    types = rng.integers(0, 2, (4, 64))
    y = kernels.embed(tables, ids, types, method=method, layer_norm=True)
    assert_layer_norm_matches(y, tables, method, ids, types)


@pytest.mark.parametrize("method", kernels.METHODS)
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
    y = kernels.embed(tables, ids, method=method, layer_norm=True)
    assert_layer_norm_matches(y, tables, method, ids)


@pytest.mark.parametrize("method", kernels.METHODS)
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
    y = kernels.embed(tables, [[0, 1, 2]], method=method, layer_norm=True)
    np.testing.assert_array_equal(y, np.broadcast_to(tables.norm_bias, y.shape))


@pytest.mark.parametrize("method", kernels.METHODS)
def test_return_sum_gives_the_sum_and_out_gets_the_norm(method):
    rng = np.random.default_rng(3)
    tables = tables_with_norm(100, 24)
    ids = rng.integers(0, 100, (2, 5))
    out = np.empty((2, 5, 24), np.float32)
    y, sums = kernels.embed(tables, ids, method=method, layer_norm=True, return_sum=True, out=out)
    assert y is out
    assert not np.shares_memory(sums, out)
    np.testing.assert_array_equal(sums, kernels.embed(tables, ids, method=method))
    np.testing.assert_array_equal(y, kernels.embed(tables, ids, method=method, layer_norm=True))


@pytest.mark.parametrize("method", kernels.METHODS)
def test_empty_batch(method):
    tables = tables_with_norm(10, 4)
    y, sums = kernels.embed(
        tables, np.zeros((0, 3), int), method=method, layer_norm=True, return_sum=True
    )
    assert y.shape == sums.shape == (0, 3, 4)


@pytest.mark.parametrize("method", kernels.METHODS)
def test_layer_norm_without_parameters_is_refused(method):
    base = kernels.EmbeddingTables.random(10, 4, max_positions=8)
    bare = kernels.EmbeddingTables(base.token, base.segment, base.position)
    with pytest.raises(ValueError, match=r"layer_norm=True needs.*norm_weight and norm_bias"):
        kernels.embed(bare, [[1, 2]], method=method, layer_norm=True)


@pytest.mark.parametrize("method", kernels.METHODS)
def test_bad_norm_options(method):
    tables = tables_with_norm(10, 4)
    with pytest.raises(ValueError, match="return_sum=True needs layer_norm=True"):
        kernels.embed(tables, [[1]], method=method, return_sum=True)
    with pytest.raises(TypeError, match="layer_norm is str"):
        kernels.embed(tables, [[1]], method=method, layer_norm="yes")


def test_random_tables_start_like_bert():
    tables = kernels.EmbeddingTables.random(10, 4)
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
        kernels.EmbeddingTables(**GOOD, **norm)
