"""The one-hot paths process tokens in chunks to keep extra memory within a budget.

Chunked results are checked against the naive reference (tests/rules.py), not
against the same method run in one chunk: a bug shared by both would pass that.
The chunk count is checked too, so each case really runs the chunks it claims
(one token per chunk, three per chunk with a last chunk of one token, ...).
"""

import math
import re
import tracemalloc

import numpy as np
import pytest
from poison import embed, fill_nan, poison_allocations
from rules import assert_forward_matches, budgeted_methods

import bert_embedding_kernels as bek
from bert_embedding_kernels.methods import onehot

BUDGETED = budgeted_methods()


def budget_for(tables, method, tokens_per_chunk: int) -> int:
    """The budget that gives chunks of ``tokens_per_chunk`` tokens, from the refusal message.

    A budget too small for one token is refused with the bytes one token needs and
    the least budget that fits one; each further token adds the former.
    """
    with pytest.raises(ValueError, match="memory_budget") as refused:
        bek.embed(tables, [[0]], method=method, memory_budget=1)
    message = str(refused.value)
    per_token = int(re.search(r"one token needs (\d+) bytes", message).group(1))
    least = int(re.search(r"at least (\d+)", message).group(1))
    return least + (tokens_per_chunk - 1) * per_token


@pytest.fixture
def chunks(monkeypatch):
    """The (start, stop) of every chunk the one-hot paths compute."""
    seen = []
    chunk_ids = onehot._chunk_ids

    def spy(batch, start, stop):
        seen.append((start, stop))
        return chunk_ids(batch, start, stop)

    monkeypatch.setattr(onehot, "_chunk_ids", spy)
    return seen


@pytest.mark.parametrize("method", BUDGETED)
@pytest.mark.parametrize("tokens_per_chunk", [1, 3, 16])
def test_many_chunks_match_the_reference(method, tokens_per_chunk, chunks):
    rng = np.random.default_rng(tokens_per_chunk)
    tables = bek.EmbeddingTables.random(300, 16, max_positions=64, type_vocab_size=3)
    budget = budget_for(tables, method, tokens_per_chunk)
    # 200 tokens (67 chunks of 3: the last one partial), and n x 1 for every n up to
    # 2 chunks + 1: a last chunk of one token, full last chunks, a single partial one.
    shapes = [(5, 40), *((n, 1) for n in range(1, 2 * tokens_per_chunk + 2))]
    for shape in shapes:
        ids = rng.integers(0, 300, shape)
        types = rng.integers(0, 3, shape)
        positions = rng.integers(0, 64, shape)
        chunks.clear()
        y = embed(tables, ids, types, positions, method=method, memory_budget=budget)
        assert_forward_matches(y, tables, method, ids, types, positions)
        tokens = shape[0] * shape[1]
        assert len(chunks) == math.ceil(tokens / tokens_per_chunk), (shape, chunks)
        assert max(stop - start for start, stop in chunks) == min(tokens, tokens_per_chunk)


@pytest.mark.parametrize("method", BUDGETED)
def test_budget_below_one_token_is_refused(method):
    tables = bek.EmbeddingTables.random(300, 16, max_positions=64)
    with pytest.raises(ValueError, match=r"memory_budget is 100 bytes.*at least"):
        bek.embed(tables, [[1, 2]], method=method, memory_budget=100)


@pytest.mark.parametrize("method", BUDGETED)
def test_budget_must_be_an_int(method):
    tables = bek.EmbeddingTables.random(300, 16, max_positions=64)
    with pytest.raises(TypeError, match="memory_budget is float"):
        bek.embed(tables, [[1, 2]], method=method, memory_budget=1e6)


@pytest.mark.parametrize("method", BUDGETED)
@pytest.mark.parametrize("budget_mib", [1, 4])
def test_peak_extra_memory_stays_within_budget(method, budget_mib):
    # numpy reports its buffers to tracemalloc, so the traced peak covers the
    # one-hot codes, the product buffer and the index arrays of every chunk.
    rng = np.random.default_rng(1)
    tables = bek.EmbeddingTables.random(20000, 64, max_positions=128)
    ids = rng.integers(0, 20000, (8, 128))
    out = np.empty((8, 128, 64), np.float32)
    # The least budget (one token per chunk, and whatever copy of the tables the
    # method makes) plus 1 or 4 MiB of chunks.
    budget = budget_for(tables, method, 1) + budget_mib * 2**20
    bek.embed(tables, ids, method=method, out=out, memory_budget=budget)  # warm up
    fill_nan(out)
    poison_allocations(((8, 128, 64), np.float32))  # before tracing: not the call's memory
    tracemalloc.start()
    try:
        bek.embed(tables, ids, method=method, out=out, memory_budget=budget)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # A whole one-hot matrix would be 1024 x 20000 x 4 bytes = 78 MiB.
    assert peak <= budget
    assert peak > budget // 4  # the chunks really used the budget (the check is live)
    assert_forward_matches(out, tables, method, ids)  # ... and they add up to the sum
