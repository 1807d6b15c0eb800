"""The tree-order backward: the same bits for any launch shape, close to the exact sum."""

import math

import numpy as np
import pytest
from cuda_naive import gradients, tables

kc = pytest.importorskip("bert_embedding_kernels.cuda")
# The simulator computes NaNs and infinities with numpy scalars, which warn.
pytestmark = pytest.mark.filterwarnings(
    "ignore:(invalid value|overflow) encountered:RuntimeWarning"
)
tree = pytest.importorskip("bert_embedding_kernels.cuda.tree")

SHAPE, HIDDEN = (2, 8), 16
LAUNCHES = [(1, 1), (2, 7), (5, 32)]  # (blocks, threads)


def setup(dtype=np.float32):
    token, segment, position, _, _ = tables(12, HIDDEN, 8, dtype=dtype, seed=0)
    return kc.DeviceTables(token, segment, position), [token.shape, segment.shape, position.shape]


def batch():
    rng = np.random.default_rng(1)
    ids = rng.integers(0, 4, SHAPE)  # few ids: rows of 2 to 9 tokens
    ids[1, :7] = 9  # a row of 7 tokens: the tree's odd carries
    return ids, rng.integers(0, 2, SHAPE)


def host(grads):
    return [g.copy_to_host() for g in grads]


def level_tree(terms):
    """Adjacent pairs level by level, an odd one carried: the documented tree."""
    terms = list(terms)
    while len(terms) > 1:
        pairs = [terms[n] + terms[n + 1] for n in range(0, len(terms) - 1, 2)]
        terms = pairs + terms[len(terms) - len(terms) % 2 :]
    return terms[0]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_tree_bits_do_not_depend_on_the_launch(dtype):
    device, _ = setup(dtype)
    ids, types = batch()
    g = (np.random.default_rng(2).standard_normal((*SHAPE, HIDDEN)) * 1e3).astype(dtype)
    prepared = kc.prepare(device, ids, types)
    runs = [host(kc.embed_backward(device, g, ids, types, order="tree"))]
    for shape in LAUNCHES:
        runs.append(host(kc.fused_backward(device, prepared, g, order="tree", tree_launch=shape)))
    for run in runs[1:]:
        for got, want in zip(run, runs[0], strict=True):
            np.testing.assert_array_equal(got.view(np.uint8), want.view(np.uint8))


def test_tree_is_the_documented_tree_and_near_the_exact_sum():
    device, shapes = setup()
    ids, types = batch()
    g = (np.random.default_rng(3).standard_normal((*SHAPE, HIDDEN)) * 1e3).astype(np.float32)
    got = host(kc.embed_backward(device, g, ids, types, order="tree"))
    flat = g.reshape(-1, HIDDEN)
    row = np.nonzero(ids.reshape(-1) == 9)[0]  # token row 9's tokens, in token order
    np.testing.assert_array_equal(got[0][9], level_tree([flat[t] for t in row]))
    exact = gradients(
        shapes, g.astype(np.float64), ids, types, np.arange(8)[None], None, np.float64
    )
    magnitude = gradients(
        shapes, np.abs(g).astype(np.float64), ids, types, np.arange(8)[None], None, np.float64
    )
    eps = np.finfo(np.float32).eps
    for got_table, exact_table, size in zip(got, exact, magnitude, strict=True):
        bound = math.ceil(math.log2(2 * SHAPE[0] * SHAPE[1])) * eps * size
        assert (np.abs(got_table - exact_table) <= bound).all()


def test_tree_and_token_order_differ_where_the_rounding_does():
    # One token row read by four tokens: 1 + 2**-24 rounds back to 1 at every step of the
    # token order; the tree adds 2**-24 + 2**-24 = 2**-23 first, which shows.
    device, _ = setup()
    ids = np.full((1, 4), 5)
    g = np.zeros((1, 4, HIDDEN), np.float32)
    g[0, :, 0] = [1.0, 2.0**-24, 2.0**-24, 2.0**-24]
    cpu_order = host(kc.embed_backward(device, g, ids))[0][5, 0]
    tree_order = host(kc.embed_backward(device, g, ids, order="tree"))[0][5, 0]
    assert cpu_order == np.float32(1.0) and tree_order == np.float32(1.0 + 2.0**-23)


def test_tree_accumulates_after_the_value_there_and_keeps_the_padding_row():
    device, shapes = setup()
    ids, types = batch()
    ids[0, 0] = 3
    g = np.random.default_rng(4).standard_normal((*SHAPE, HIDDEN)).astype(np.float32)
    start = [np.random.default_rng(5).standard_normal(s).astype(np.float32) for s in shapes]
    start[0][3] = -0.0
    fresh = host(kc.embed_backward(device, g, ids, types, padding_idx=3, order="tree"))
    into = [kc.cuda.to_device(s) for s in start]
    kc.embed_backward(device, g, ids, types, padding_idx=3, order="tree", accumulate_into=into)
    for got, before, added in zip(host(into), start, fresh, strict=True):
        np.testing.assert_array_equal(got, before + added)
    assert not fresh[0][3].any() and np.signbit(host(into)[0][3]).all()  # kept as it was


@pytest.mark.parametrize("order", ["sequential", "TREE", None, 1])
def test_order_is_checked(order):
    device, _ = setup()
    with pytest.raises(ValueError, match=r"order is .*'cpu'.*'tree'"):
        kc.embed_backward(device, np.zeros((1, 2, HIDDEN), np.float32), [[1, 2]], order=order)


def test_tree_launch_needs_the_tree_order():
    device, _ = setup()
    prepared = kc.prepare(device, [[1, 2]])
    with pytest.raises(ValueError, match="tree_launch"):
        kc.fused_backward(
            device, prepared, np.zeros((1, 2, HIDDEN), np.float32), tree_launch=(1, 32)
        )


def test_the_stack_tree_is_the_level_tree_for_every_count():
    # The kernel's binary counter, in Python, against the level-by-level definition.
    def stack_tree(terms):
        stack = []
        for m, term in enumerate(terms):
            stack.append(term)
            pairs = m + 1
            while pairs % 2 == 0:
                right = stack.pop()
                stack[-1] = f"({stack[-1]}+{right})"
                pairs //= 2
        total = stack[-1]
        for left in reversed(stack[:-1]):
            total = f"({left}+{total})"
        return total

    def level_strings(terms):
        terms = list(terms)
        while len(terms) > 1:
            pairs = [f"({terms[n]}+{terms[n + 1]})" for n in range(0, len(terms) - 1, 2)]
            terms = pairs + terms[len(terms) - len(terms) % 2 :]
        return terms[0]

    for n in range(1, 200):
        names = [f"g{m}" for m in range(n)]
        assert stack_tree(names) == level_strings(names), n
