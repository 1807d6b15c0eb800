"""The pass/fail rules the tests hold every method to, pinned here, and the checks built on them.

The rules must not come from the code under test: if they did, relaxing one in the
package (a method re-declared ``bounded``, a looser ``Agreement.ok``, a wider bound
in ``bert_embedding_kernels.bench.engine.reference``) would relax the tests with it. So:

- ``EXPECTED_AGREEMENT`` pins which methods equal the naive reference bit for bit
  (README, "Equivalence"); tests/test_rules.py asserts that the registry declares
  the same, and pins the package's own bound formula on hand-computed cases.
- A method this dict does not name (a new or throwaway registration) is held to
  the rule its registry record declares, so it is still tested without editing
  the tests.
- The bounds below are written out here, not read from the package.

The references themselves (``naive_embed``, ``exact_embed``, ``naive_layer_norm``,
``naive_embed_backward`` in :mod:`bert_embedding_kernels.bench.engine.reference`) are
deliberately naive Python loops, independent of every method; tests/test_rules.py pins them on
hand-computed values too.
"""

from __future__ import annotations

import functools

import numpy as np

import bert_embedding_kernels as bek
from bert_embedding_kernels import EmbeddingGradients
from bert_embedding_kernels.bench.engine.cases import zipf_ids
from bert_embedding_kernels.bench.engine.reference import (
    contender,
    exact_embed,
    naive_embed,
    naive_embed_backward,
    naive_layer_norm,
)
from bert_embedding_kernels.registry import REGISTRY

BITWISE, BOUNDED = "bitwise", "bounded"

# README, "Equivalence": gather and fused add (token + segment) + position in the
# tables' dtype, like the naive loop; the one-hot paths go through BLAS.
EXPECTED_AGREEMENT = {
    "onehot": BOUNDED,
    "concat": BOUNDED,
    "gather": BITWISE,
    "fused": BITWISE,
}


# The methods that chunk their work to stay within memory_budget (their one-hot
# codes would not fit otherwise); the budget tests run on these.
EXPECTED_BUDGETED = {"onehot": True, "concat": True, "gather": False, "fused": False}


def budgeted(method: str) -> bool:
    """Pinned, or the record's declaration for a method not pinned here."""
    return EXPECTED_BUDGETED.get(method, REGISTRY[method].budgeted)


def budgeted_methods(methods=None) -> tuple[str, ...]:
    return tuple(m for m in (bek.METHODS if methods is None else methods) if budgeted(m))


def agreement_rule(method: str) -> str:
    """The pinned rule of ``method``; an unpinned method or peer falls back to its record's."""
    if method in EXPECTED_AGREEMENT:
        return EXPECTED_AGREEMENT[method]
    rule = contender(method).agreement
    assert rule in (BITWISE, BOUNDED), f"{method} declares an unknown rule {rule!r}"
    return rule


def is_bitwise(method: str) -> bool:
    return agreement_rule(method) == BITWISE


def sum_bound(magnitude: np.ndarray, dtype) -> np.ndarray:
    """``2u (|a| + |b| + |c|)`` with u = eps / 2: any order of adding three terms lies within it."""
    return np.finfo(dtype).eps * magnitude


class SumReference:
    """The naive sum of one set of inputs, and the exact sum with its magnitude on demand."""

    def __init__(self, tables, input_ids, token_type_ids=None, position_ids=None, past_length=0):
        self.tables = tables
        self.arguments = (tables, input_ids, token_type_ids, position_ids, past_length)
        self.shape = (*np.shape(input_ids), tables.hidden_size)

    @functools.cached_property
    def naive(self) -> np.ndarray:
        return naive_embed(*self.arguments)

    @functools.cached_property
    def exact(self) -> tuple[np.ndarray, np.ndarray]:
        return exact_embed(*self.arguments)

    def check(self, method: str, y: np.ndarray) -> None:
        """``y`` is ``method``'s sum: bit for bit, or within :func:`sum_bound` of the exact sum.

        A NaN where the reference has a number fails either way, so an output
        element the method never wrote (left NaN by :mod:`poison`) always fails.
        """
        assert y.shape == self.shape, (method, y.shape, self.shape)
        assert y.dtype == self.tables.dtype, (method, y.dtype)
        if is_bitwise(method):
            np.testing.assert_array_equal(y, self.naive, err_msg=method)
            return
        exact, magnitude = self.exact
        with np.errstate(invalid="ignore"):
            error = np.abs(y.astype(np.longdouble) - exact)
            within = error <= sum_bound(magnitude, self.tables.dtype)
        assert np.all(within), (method, float(np.nanmax(error)), int(np.count_nonzero(~within)))

    @functools.cached_property
    def layer_norm(self) -> np.ndarray:
        """:func:`naive_layer_norm` (exactly rounded float64 statistics) of the naive sum."""
        t = self.tables
        return naive_layer_norm(self.naive, t.norm_weight, t.norm_bias, t.norm_eps)

    def check_layer_norm(self, method: str, y: np.ndarray, statistics=np.float64) -> None:
        """``y`` is LayerNorm of ``method``'s sum, within :func:`layer_norm_bound`.

        ``statistics`` is the dtype ``method`` computes the mean and variance in:
        float64 for ours (documented), the tables' dtype for the outside peers.
        """
        assert y.shape == self.shape, (method, y.shape, self.shape)
        assert y.dtype == self.tables.dtype, (method, y.dtype)
        assert np.all(np.isfinite(y)), f"{method}: {np.count_nonzero(~np.isfinite(y))} not finite"
        bound = layer_norm_bound(self, method, statistics)
        excess = np.abs(y.astype(np.float64) - self.layer_norm) - bound
        assert np.all(excess <= 0), f"{method}: max excess {np.max(excess):.3g}"


def assert_forward_matches(
    y, tables, method, input_ids, token_type_ids=None, position_ids=None, past_length=0
):
    """``y`` is ``method``'s sum of these inputs (see :meth:`SumReference.check`)."""
    SumReference(tables, input_ids, token_type_ids, position_ids, past_length).check(method, y)


def assert_layer_norm_matches(y, tables, method, input_ids, token_type_ids=None, position_ids=None):
    """``y`` is LayerNorm of ``method``'s sum (see :meth:`SumReference.check_layer_norm`)."""
    reference = SumReference(tables, input_ids, token_type_ids, position_ids)
    reference.check_layer_norm(method, y)


def layer_norm_bound(reference: SumReference, method: str, statistics=np.float64) -> np.ndarray:
    """Per element (float64), how far ``method``'s LayerNorm output may be from the reference.

    With x the method's pre-norm sum, mu and sigma its row's mean and standard
    deviation, w and b the norm parameters,

        |y - y_ref| <= 4 (eps (|w| |z| + |b|) + |w| D (2 + |z|) / sigma),  z = (x - mu) / sigma

    - ``eps (|w| |z| + |b|)`` covers the final rounding of y to the tables' dtype;
    - ``D`` is the row's largest distance between the method's sum and the
      reference sum: 0 for bit-identical sums, at most ``eps (|a| + |b| + |c|)``
      per element for the bounded ones, plus the statistics' own error, which
      acts like a shift of the mean by at most ``n eps_s max|x|`` (eps_s of the
      dtype the statistics are computed in: float64 for ours, the tables' dtype
      for torch's and onnxruntime's LayerNorm). Since
      dz_i/dx_j = (delta_ij - 1/n - z_i z_j / n) / sigma and sum_j |z_j| / n <= 1,
      moving every x_j by up to D moves z_i by at most D (2 + |z_i|) / sigma;
    - the factor 4 is slack for the few roundings in between (x - mu, the scaling).
    """
    tables = reference.tables
    eps = np.finfo(tables.dtype).eps
    x = reference.naive.astype(np.float64)
    centred = x - x.mean(-1, keepdims=True)
    sigma = np.sqrt(np.mean(centred**2, -1, keepdims=True) + tables.norm_eps)
    largest = np.abs(x).max(axis=-1, keepdims=True)
    distance = x.shape[-1] * np.finfo(statistics).eps * largest  # the statistics' error
    if not is_bitwise(method):
        magnitude = reference.exact[1].astype(np.float64)
        distance = distance + eps * magnitude.max(axis=-1, keepdims=True)
    w, b = np.abs(tables.norm_weight.astype(np.float64)), np.abs(tables.norm_bias)
    z = np.abs(centred) / sigma
    return 4 * (eps * (w * z + b) + w * distance * (2 + z) / sigma)


def gradient_bound(counts: np.ndarray, magnitudes: np.ndarray, dtype) -> np.ndarray:
    """``n eps sum(|g|)`` per element of a gradient row summed from ``n`` tokens.

    Any order of summing ``n`` terms is within ``(n - 1) u sum(|g|)`` of the exact
    sum (u = eps / 2; Higham, "Accuracy and Stability of Numerical Algorithms",
    4.2), BLAS blocking and FMA included, since every product ``1 * g`` or
    ``0 * g`` is exact. The float64 reference is itself off by at most
    ``(n - 1) u64 sum(|g|)``: ``n eps`` covers both with room for second-order terms.
    """
    return counts[:, None] * np.finfo(dtype).eps * magnitudes


def assert_gradients_match(
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
    """Every gradient within :func:`gradient_bound` of a float64 naive loop, unused rows zero.

    Bit-identical methods must also equal the same loop run in the tables' dtype.
    """
    arguments = (tables, grad_output, input_ids, token_type_ids, position_ids, past_length)
    reference, magnitudes, counts = naive_embed_backward(*arguments, padding_idx=padding_idx)
    assert isinstance(grads, EmbeddingGradients)
    for name in EmbeddingGradients._fields:
        grad, table = getattr(grads, name), getattr(tables, name)
        assert grad.shape == table.shape, name
        assert grad.dtype == tables.dtype, name
        assert grad.flags.c_contiguous, name
        count = getattr(counts, name)
        bound = gradient_bound(count, getattr(magnitudes, name), tables.dtype)
        error = np.abs(grad.astype(np.float64) - getattr(reference, name))
        assert np.all(error <= bound), (method, name, float(np.nanmax(error - bound)))
        assert np.all(grad[count == 0] == 0), (method, name)  # untouched rows exactly zero
    if is_bitwise(method):
        same_dtype, _, _ = naive_embed_backward(
            *arguments, padding_idx=padding_idx, dtype=tables.dtype
        )
        for name in EmbeddingGradients._fields:
            np.testing.assert_array_equal(
                getattr(grads, name), getattr(same_dtype, name), err_msg=f"{method} {name}"
            )


def random_case(rng, tables, shape, *, id_dtype=np.int64, zipf=False):
    """Output gradient, token ids and token types for a backward call of ``shape``."""
    batch, seq = shape
    if zipf:
        ids = zipf_ids(tables.vocab_size, shape, seed=int(rng.integers(1 << 30)))
    else:
        ids = rng.integers(0, tables.vocab_size, size=shape)
    types = rng.integers(0, tables.type_vocab_size, size=shape)
    grad = rng.standard_normal((batch, seq, tables.hidden_size)).astype(tables.dtype)
    return grad, ids.astype(id_dtype), types.astype(id_dtype)


def tables_with_norm(vocab, hidden, dtype=np.float32, seed=0, max_positions=64, **overrides):
    """Random tables with a LayerNorm whose weight and bias are not the identity."""
    rng = np.random.default_rng(seed)
    base = bek.EmbeddingTables.random(
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
    return bek.EmbeddingTables(token, segment, position, **parts)
