"""embed_backward refuses what embed refuses, and its one-hot paths keep to the memory budget.

Inputs both refuse get the same exception and message (both call
``bert_embedding_kernels.validate.prepare.prepare``). The budgeted methods work in tiles
of the one-hot code; at budgets that force many tiles their gradients must still match the
naive float64 loop (tests/rules.py), not merely the same method run untiled.
"""

import tracemalloc

import numpy as np
import pytest
from hostile import NOT_FLOAT_DTYPES
from poison import embed_backward as poisoned_backward
from poison import gradient_allocations, poison_allocations
from rules import assert_gradients_match as assert_matches_reference
from rules import budgeted_methods, random_case

import bert_embedding_kernels as bek
from bert_embedding_kernels import BACKWARD_METHODS, embed_backward
from bert_embedding_kernels.dtypes import FLOAT_DTYPES

BUDGETED = budgeted_methods(BACKWARD_METHODS)


TABLES = bek.EmbeddingTables.random(10, 4, max_positions=8, type_vocab_size=2)
IDS = np.array([[1, 2, 3], [4, 5, 6]])
GRAD = np.zeros((2, 3, 4), np.float32)

# Inputs that embed refuses: embed_backward must refuse them with the same
# exception and the same message, because both call bert_embedding_kernels.validate.prepare.prepare.
BAD_IDS = [
    {"input_ids": IDS.astype(float)},
    {"input_ids": IDS > 2},
    {"input_ids": np.array([1, 2])},
    {"token_type_ids": np.zeros((1, 3), int)},
    {"position_ids": np.zeros((2, 4), int)},
    {"input_ids": np.array([[1, 2, 3], [4, 10, 6]])},
    {"input_ids": np.array([[1, -1, 3], [4, 5, 6]])},
    {"token_type_ids": np.array([[0, 0, 0], [0, 0, 2]])},
    {"position_ids": np.array([0, 8, 1])},
    {"past_length": 6},
    {"past_length": -1},
    {"past_length": 1.0},
]


@pytest.mark.parametrize("method", BACKWARD_METHODS)
@pytest.mark.parametrize("bad", BAD_IDS, ids=lambda bad: f"{next(iter(bad))}")
def test_same_errors_as_embed(method, bad):
    arguments = {"input_ids": IDS, **bad}
    with pytest.raises(Exception) as forward:
        bek.embed(TABLES, **arguments)
    with pytest.raises(forward.type) as backward:
        embed_backward(TABLES, GRAD, method=method, **arguments)
    assert str(backward.value) == str(forward.value)


BAD_BACKWARD_CALLS = [
    ({"grad_output": GRAD.astype(np.float64)}, TypeError, r"grad_output.*float64.*float32"),
    ({"grad_output": GRAD[:, :, :3]}, ValueError, r"grad_output.*\(2, 3, 3\).*\(2, 3, 4\)"),
    ({"grad_output": GRAD[0]}, ValueError, r"grad_output.*\(3, 4\).*\(2, 3, 4\)"),
    ({"padding_idx": 10}, ValueError, r"padding_idx is 10.*0 <= padding_idx < 10"),
    ({"padding_idx": -1}, ValueError, r"padding_idx is -1"),
    ({"padding_idx": 1.0}, TypeError, r"padding_idx is float"),
    ({"padding_idx": True}, TypeError, r"padding_idx is bool"),
    ({"method": "magic"}, ValueError, r"method.*'magic'.*onehot"),
    ({"memory_budget": 1e6}, TypeError, r"memory_budget is float"),
    ({"tables": {"token": None}}, TypeError, r"tables is dict"),
    ({"order": "tree"}, ValueError, r"order='tree' is the GPU backward's.*host tables"),
    ({"order": "sorted"}, ValueError, r"order is 'sorted'; it must be 'cpu'"),
    ({"order": None}, ValueError, r"order is None; it must be 'cpu'"),
]


@pytest.mark.parametrize("method", BACKWARD_METHODS)
@pytest.mark.parametrize(
    ("arguments", "error", "message"),
    BAD_BACKWARD_CALLS,
    ids=[message for _, _, message in BAD_BACKWARD_CALLS],
)
def test_bad_backward_arguments(method, arguments, error, message):
    call = {"tables": TABLES, "grad_output": GRAD, "input_ids": IDS, "method": method}
    with pytest.raises(error, match=message):
        embed_backward(**{**call, **arguments})


def _accumulators():
    return [np.zeros(t.shape, np.float32) for t in (TABLES.token, TABLES.segment, TABLES.position)]


# What the backward reads, laid inside the token accumulator (zeros there: valid ids).
INSIDE_THE_ACCUMULATOR = {
    "input_ids": lambda token: {"input_ids": token.view(np.int32)[:2, :3]},
    "token_type_ids": lambda token: {"token_type_ids": token.view(np.int32)[:2, 1:4]},
    "position_ids": lambda token: {"position_ids": token.view(np.int32)[0, :3]},
    "grad_output": lambda token: {"grad_output": token.reshape(-1)[:24].reshape(2, 3, 4)},
    "tables.token": lambda token: {"tables": bek.EmbeddingTables(token, None, None)},
    "tables.norm_weight": lambda token: {
        "tables": bek.EmbeddingTables(
            TABLES.token,
            TABLES.segment,
            TABLES.position,
            norm_weight=token[0],
            norm_bias=np.zeros(4, np.float32),
        )
    },
}


@pytest.mark.parametrize("method", BACKWARD_METHODS)
@pytest.mark.parametrize("argument", INSIDE_THE_ACCUMULATOR)
def test_accumulate_into_sharing_memory_with_an_input_is_refused(method, argument):
    # Issue 37: accumulate_into over input_ids was accepted, and the fused backward
    # crashed (exit code 139): adding into the token rows overwrote the ids it indexed
    # them by. embed refuses the same overlap of its out.
    into = _accumulators()
    call = {"tables": TABLES, "grad_output": GRAD, "input_ids": IDS, "method": method}
    call |= INSIDE_THE_ACCUMULATOR[argument](into[0])
    with pytest.raises(
        ValueError, match=rf"^accumulate_into\.token overlaps {argument}; pass an array that"
    ):
        embed_backward(**call, accumulate_into=into)
    assert not any(a.any() for a in into)  # refused before any method ran


def test_accumulate_into_sharing_memory_with_a_copied_grad_output_is_refused():
    # A Fortran-ordered grad_output is copied before the sums read it; it is still an input.
    into = _accumulators()
    fortran = into[0].reshape(-1)[:24].reshape(4, 3, 2).T  # (2, 3, 4), Fortran order
    with pytest.raises(ValueError, match=r"^accumulate_into\.token overlaps grad_output"):
        embed_backward(TABLES, fortran, IDS, accumulate_into=into)


@pytest.mark.parametrize("method", BACKWARD_METHODS)
@pytest.mark.parametrize("table_dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("value", NOT_FLOAT_DTYPES, ids=repr)
def test_a_grad_dtype_that_is_no_float_is_refused_for_every_table_dtype(method, table_dtype, value):
    # Issue 37: with float64 tables grad_dtype="int8" returned float64 gradients: a dtype
    # that failed to parse became None, and numpy compares float64 == None as True.
    tables = bek.EmbeddingTables.random(10, 4, max_positions=8, dtype=table_dtype)
    grad = np.zeros((2, 3, 4), tables.dtype)
    with pytest.raises(TypeError, match=rf"^grad_dtype is .*; with {tables.dtype} tables it"):
        embed_backward(tables, grad, IDS, method=method, grad_dtype=value)


def test_ids_are_checked_before_grad_output():
    # One order for every method: the checks embed shares come first.
    with pytest.raises(IndexError):
        embed_backward(TABLES, GRAD.astype(np.float64), np.array([[1, 2, 3], [4, 5, 99]]))


# --------------------------------------------------------------------------- one-hot budget


@pytest.mark.parametrize("method", BUDGETED)
@pytest.mark.parametrize("budget", [64 * 1024 + 15_000, 64 * 1024 + 40_000])
def test_tiny_budget_matches_the_reference(method, budget):
    # 15 kB forces token chunks summed through the product buffer (row blocks of
    # one); 40 kB takes every token at once in row blocks of 18.
    rng = np.random.default_rng(10)
    tables = bek.EmbeddingTables.random(300, 16, max_positions=64)
    grad, ids, types = random_case(rng, tables, (5, 40))
    tiled = poisoned_backward(tables, grad, ids, types, method=method, memory_budget=budget)
    assert_matches_reference(tiled, tables, method, grad, ids, types)


@pytest.mark.parametrize("method", BUDGETED)
def test_budget_below_one_token_is_refused(method):
    with pytest.raises(ValueError, match=r"memory_budget is 100 bytes.*at least"):
        embed_backward(TABLES, GRAD, IDS, method=method, memory_budget=100)


@pytest.mark.parametrize("method", BUDGETED)
@pytest.mark.parametrize("budget_mib", [1, 4])
def test_peak_extra_memory_stays_within_budget(method, budget_mib):
    # numpy reports its buffers to tracemalloc; the returned gradients are the
    # result, not extra memory, so they are added to the allowance.
    rng = np.random.default_rng(12)
    tables = bek.EmbeddingTables.random(20000, 64, max_positions=128)
    grad, ids, types = random_case(rng, tables, (8, 128))
    budget = budget_mib * 2**20
    result_bytes = tables.nbytes
    embed_backward(tables, grad, ids, types, method=method, memory_budget=budget)
    poison_allocations(*gradient_allocations(tables))  # before tracing: not the call's memory
    tracemalloc.start()
    try:
        grads = embed_backward(tables, grad, ids, types, method=method, memory_budget=budget)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # A whole one-hot matrix would be 1024 x 20000 x 4 bytes = 78 MiB.
    assert peak <= budget + result_bytes
    assert peak > budget // 4 + result_bytes  # the tiles really used the budget
    # ... and the many tiles add up to the right gradients.
    assert_matches_reference(grads, tables, method, grad, ids, types)
