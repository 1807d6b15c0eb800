"""The one-hot paths process tokens in chunks to keep extra memory within a budget."""

import tracemalloc

import numpy as np
import pytest

import kernels

BUDGETED = ("onehot", "concat")


@pytest.mark.parametrize("method", BUDGETED)
def test_tiny_budget_gives_the_same_result(method):
    rng = np.random.default_rng(0)
    tables = kernels.EmbeddingTables.random(300, 16, max_positions=64)
    ids = rng.integers(0, 300, (5, 40))
    types = rng.integers(0, 2, (5, 40))
    whole = kernels.embed(tables, ids, types, method=method)
    # Budget for about 3 tokens per chunk: 67 chunks, the last one partial.
    chunked = kernels.embed(tables, ids, types, method=method, memory_budget=64 * 1024 + 3 * 1500)
    np.testing.assert_array_equal(chunked, whole)


@pytest.mark.parametrize("method", BUDGETED)
def test_budget_below_one_token_is_refused(method):
    tables = kernels.EmbeddingTables.random(300, 16, max_positions=64)
    with pytest.raises(ValueError, match=r"memory_budget is 100 bytes.*at least"):
        kernels.embed(tables, [[1, 2]], method=method, memory_budget=100)


@pytest.mark.parametrize("method", BUDGETED)
def test_budget_must_be_an_int(method):
    tables = kernels.EmbeddingTables.random(300, 16, max_positions=64)
    with pytest.raises(TypeError, match="memory_budget is float"):
        kernels.embed(tables, [[1, 2]], method=method, memory_budget=1e6)


@pytest.mark.parametrize("method", BUDGETED)
@pytest.mark.parametrize("budget_mib", [1, 4])
def test_peak_extra_memory_stays_within_budget(method, budget_mib):
    # numpy reports its buffers to tracemalloc, so the traced peak covers the
    # one-hot codes, the product buffer and the index arrays of every chunk.
    rng = np.random.default_rng(1)
    tables = kernels.EmbeddingTables.random(20000, 64, max_positions=128)
    ids = rng.integers(0, 20000, (8, 128))
    out = np.empty((8, 128, 64), np.float32)
    budget = budget_mib * 2**20
    kernels.embed(tables, ids, method=method, out=out, memory_budget=budget)  # build caches
    tracemalloc.start()
    try:
        kernels.embed(tables, ids, method=method, out=out, memory_budget=budget)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # A whole one-hot matrix would be 1024 x 20000 x 4 bytes = 78 MiB.
    assert peak <= budget
    assert peak > budget // 4  # the chunks really used the budget (the check is live)
