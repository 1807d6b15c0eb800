"""embed_backward(..., accumulate_into=...): gradients added into the caller's arrays."""

import numpy as np
import pytest

import bert_embedding_kernels as bek

TABLES = bek.EmbeddingTables.random(300, 96, max_positions=64, seed=5)


def _case(seed, batch=8, seq=48):
    rng = np.random.default_rng(seed)
    grad = rng.standard_normal((batch, seq, 96)).astype(np.float32)
    return grad, rng.integers(0, 30, (batch, seq)), rng.integers(0, 2, (batch, seq))


@pytest.mark.parametrize("method", bek.BACKWARD_METHODS)
@pytest.mark.parametrize("batch", [1, 8])  # 8 x 48 x 96 x 4 bytes: the parallel kernel
def test_two_steps_accumulate_like_the_sum_of_two_calls(method, batch):
    into = bek.EmbeddingGradients(
        *(
            np.full(t.shape, 0.5, np.float32)
            for t in (TABLES.token, TABLES.segment, TABLES.position)
        )
    )
    padding_row = into.token[3].copy()
    expected = [g.copy() for g in into]
    for seed in (1, 2):
        grad, ids, types = _case(seed, batch)
        fresh = bek.embed_backward(TABLES, grad, ids, types, method=method, padding_idx=3)
        expected = [e + f for e, f in zip(expected, fresh, strict=True)]
        returned = bek.embed_backward(
            TABLES, grad, ids, types, method=method, padding_idx=3, accumulate_into=into
        )
        assert all(r is i for r, i in zip(returned, into, strict=True))
    for got, want in zip(into, expected, strict=True):
        # fused adds each token after the value already there, the expectation adds a
        # fresh sum: float32 rounding in other orders, over up to 384 terms a row.
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)
    np.testing.assert_array_equal(into.token[3], padding_row)  # the padding row: untouched


def test_fused_adds_each_element_in_token_order_after_the_value_there():
    grad, ids, types = _case(3)
    start = np.random.default_rng(9).standard_normal(TABLES.token.shape).astype(np.float32)
    into = bek.EmbeddingGradients(
        start.copy(), np.zeros_like(TABLES.segment), np.zeros_like(TABLES.position)
    )
    bek.embed_backward(TABLES, grad, ids, types, accumulate_into=into)
    expected = start.copy()
    for b in range(ids.shape[0]):  # a naive loop in float32, token order
        for s in range(ids.shape[1]):
            expected[ids[b, s]] += grad[b, s]
    np.testing.assert_array_equal(into.token, expected)


def test_bad_targets_are_refused_by_name():
    grad, ids, _ = _case(4, batch=1)
    good = [np.zeros(t.shape, np.float32) for t in (TABLES.token, TABLES.segment, TABLES.position)]
    with pytest.raises(TypeError, match="three arrays"):
        bek.embed_backward(TABLES, grad, ids, accumulate_into=good[:2])
    with pytest.raises(TypeError, match=r"accumulate_into.segment is float64"):
        bad = [good[0], good[1].astype(np.float64), good[2]]
        bek.embed_backward(TABLES, grad, ids, accumulate_into=bad)
    with pytest.raises(
        ValueError, match=r"accumulate_into.position overlaps accumulate_into.token"
    ):
        bek.embed_backward(TABLES, grad, ids, accumulate_into=[good[0], good[1], good[0][:64]])
    with pytest.raises(ValueError, match="writable"):
        frozen = good[1].copy()
        frozen.flags.writeable = False
        bek.embed_backward(TABLES, grad, ids, accumulate_into=[good[0], frozen, good[2]])
