"""The pass/fail rules, pinned: relaxing one in the package must fail here.

tests/rules.py pins which methods are bit-identical to the naive reference and
the bounds; these tests hold the package to the same rules (the registry's
declarations, ``Agreement.ok`` and ``Reference``'s bound in
:mod:`bert_embedding_kernels.bench.engine.reference`, which ``embench`` and the benchmarks use), on
cases computed by hand, and pin the naive references themselves.
"""

import numpy as np
import pytest
import scripts_loader
from rules import (
    BITWISE,
    BOUNDED,
    EXPECTED_AGREEMENT,
    EXPECTED_BUDGETED,
    agreement_rule,
    gradient_bound,
    sum_bound,
)

import bert_embedding_kernels as bek
from bert_embedding_kernels.bench.engine.reference import (
    Agreement,
    Reference,
    exact_embed,
    naive_embed,
    naive_embed_backward,
    naive_layer_norm,
)
from bert_embedding_kernels.registry import REGISTRY

EPS = {np.float32: 2.0**-23, np.float64: 2.0**-52}


def test_the_registry_declares_the_pinned_rules():
    for method, rule in EXPECTED_AGREEMENT.items():
        assert method in bek.METHODS, f"{method} is no longer registered"
        assert REGISTRY[method].agreement == rule, method
    for method, chunked in EXPECTED_BUDGETED.items():
        assert REGISTRY[method].budgeted is chunked, method


def test_every_method_has_a_rule_the_tests_apply():
    # Unpinned methods (a new registration) are held to their record's rule.
    for method in bek.METHODS:
        assert agreement_rule(method) in (BITWISE, BOUNDED), method


def hand_tables(dtype):
    # One row each; every value and every partial sum below is exact in float32.
    return bek.EmbeddingTables(
        np.array([[1.0, 3.0]], dtype),
        np.array([[0.5, -2.0]], dtype),
        np.array([[-0.25, 0.125]], dtype),
    )


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_reference_bound_on_a_hand_computed_case(dtype):
    eps = EPS[dtype]
    reference = Reference(hand_tables(dtype), [[0]])
    # (1 + 0.5) - 0.25 = 1.25 and (3 - 2) + 0.125 = 1.125, exactly.
    np.testing.assert_array_equal(reference.naive, [[[1.25, 1.125]]])
    np.testing.assert_array_equal(reference.exact, [[[1.25, 1.125]]])
    # eps (|a| + |b| + |c|): 1.75 eps and 5.125 eps.
    np.testing.assert_array_equal(reference.bound, [[[1.75 * eps, 5.125 * eps]]])
    np.testing.assert_array_equal(
        sum_bound(np.array([1.75, 5.125]), dtype), [1.75 * eps, 5.125 * eps]
    )

    one_ulp = reference.compare("any", np.array([[[1.25 + eps, 1.125]]], dtype))
    assert one_ulp.bound_ratio == pytest.approx(1 / 1.75, rel=1e-12)
    assert one_ulp.max_abs_diff == eps and not one_ulp.bitwise
    two_ulps = reference.compare("any", np.array([[[1.25 + 2 * eps, 1.125]]], dtype))
    assert two_ulps.bound_ratio == pytest.approx(2 / 1.75, rel=1e-12)
    same = reference.compare("any", np.array([[[1.25, 1.125]]], dtype))
    assert same.bitwise and same.bound_ratio == 0 and same.max_abs_diff == 0

    for method, rule in EXPECTED_AGREEMENT.items():
        assert reference.compare(method, np.array([[[1.25, 1.125]]], dtype)).ok, method
        within = reference.compare(method, np.array([[[1.25 + eps, 1.125]]], dtype))
        assert within.ok is (rule == BOUNDED), method
        beyond = reference.compare(method, np.array([[[1.25 + 2 * eps, 1.125]]], dtype))
        assert beyond.ok is False, method


def test_an_all_zero_sum_leaves_no_room():
    zero = bek.EmbeddingTables(np.zeros((1, 1)), np.zeros((1, 1)), np.zeros((1, 1)))
    reference = Reference(zero, [[0]])
    assert reference.compare("onehot", np.zeros((1, 1, 1))).ok
    assert reference.compare("onehot", np.full((1, 1, 1), 1e-300)).bound_ratio == np.inf
    assert not reference.compare("onehot", np.full((1, 1, 1), 1e-300)).ok


def test_agreement_ok_applies_the_pinned_rules():
    for method, rule in EXPECTED_AGREEMENT.items():
        assert Agreement(method, 0.0, 0.0, True).ok, method
        # Bounded: the bound is inclusive, and nothing beyond it passes.
        assert Agreement(method, 1e-7, 1.0, False).ok is (rule == BOUNDED), method
        assert not Agreement(method, 1e-7, 1.0 + 2**-20, False).ok, method
        assert Agreement(method, 1e-7, 0.25, False).ok is (rule == BOUNDED), method


def test_the_naive_sum_adds_token_and_segment_first():
    # (1 + 2**-24) + 2**-24 rounds to 1 twice; 1 + (2**-24 + 2**-24) would be 1 + 2**-23.
    tiny = 2.0**-24
    tables = bek.EmbeddingTables(
        np.ones((1, 1), np.float32),
        np.full((1, 1), tiny, np.float32),
        np.full((1, 1), tiny, np.float32),
    )
    assert naive_embed(tables, [[0]])[0, 0, 0] == np.float32(1.0)
    exact, magnitude = exact_embed(tables, [[0]])
    assert exact[0, 0, 0] == np.longdouble(1) + np.longdouble(2 * tiny)
    assert magnitude[0, 0, 0] == exact[0, 0, 0]


def test_the_naive_layer_norm_on_a_hand_computed_row():
    # mean 2.5, variance 1.25; eps 0.75 makes the scale 1 / sqrt(2).
    row = np.array([[[1.0, 2.0, 3.0, 4.0]]])
    y = naive_layer_norm(row, np.array([2.0, 1.0, 1.0, 1.0]), np.array([0, 0, 0, 1.0]), 0.75)
    root2 = np.sqrt(2.0)
    expected = [-3 / root2, -0.5 / root2, 0.5 / root2, 1.5 / root2 + 1]
    np.testing.assert_allclose(y[0, 0], expected, rtol=1e-15, atol=0)


def test_the_naive_backward_on_a_hand_computed_case():
    tables = bek.EmbeddingTables.random(3, 1, max_positions=3)
    grad = np.array([[[1.0], [2.0], [-4.0]]], np.float32)
    sums, magnitudes, counts = naive_embed_backward(tables, grad, [[1, 1, 2]], padding_idx=2)
    np.testing.assert_array_equal(sums.token[:, 0], [0, 3, 0])  # row 2 is padding
    np.testing.assert_array_equal(counts.token, [0, 2, 0])
    np.testing.assert_array_equal(magnitudes.token[:, 0], [0, 3, 0])
    np.testing.assert_array_equal(sums.segment[:, 0], [-1, 0])  # padding still reaches it
    np.testing.assert_array_equal(counts.segment, [3, 0])
    np.testing.assert_array_equal(magnitudes.segment[:, 0], [7, 0])
    np.testing.assert_array_equal(sums.position[:, 0], [1, 2, -4])
    np.testing.assert_array_equal(counts.position, [1, 1, 1])


def test_the_tests_gradient_bound_on_a_hand_computed_case():
    # n eps sum(|g|): 0 for an unused row, 2 eps 3 for a row of two tokens.
    bound = gradient_bound(np.array([0, 2]), np.array([[0.0], [3.0]]), np.float32)
    np.testing.assert_array_equal(bound, [[0.0], [6 * 2.0**-23]])


def test_the_asv_suite_pins_the_same_bitwise_methods():
    common = scripts_loader.load("benchmarks/common.py", "asv_benchmarks_common")
    pinned = {m for m, rule in EXPECTED_AGREEMENT.items() if rule == BITWISE}
    assert set(common.BITWISE_METHODS) == pinned
