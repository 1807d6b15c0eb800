"""Hostile arguments, named case by case: refused by name, or computed right.

Ids of every non-integer dtype, ids outside every table, shapes that do not fit,
either byte order; ``out`` arrays that overlap an input, have the wrong layout
or are unaligned; bad ``past_length``, ``method`` and ``memory_budget``;
malformed tables; and the regressions this battery found. The contract is
:func:`hostile.check_contract`.
"""

from __future__ import annotations

import numba
import numpy as np
import pytest
from hostile import GOOD_TABLES, HIDDEN, IDS, MAX_POSITIONS, TABLES, VOCAB, check_contract
from rules import budgeted_methods

import bert_embedding_kernels as bek

BUDGETED = budgeted_methods()

# -- dtypes and shapes for every id argument ----------------------------------------------

ID_ARGUMENTS = {
    "input_ids": IDS,
    "token_type_ids": np.zeros_like(IDS),
    "position_ids": np.array([0, 1, 2]),
}
NOT_INTEGERS = {
    "float16": lambda a: a.astype(np.float16),
    "float32 NaN": lambda a: np.full(a.shape, np.nan, np.float32),
    "float64 inf": lambda a: np.full(a.shape, np.inf),
    "complex": lambda a: a.astype(np.complex128),
    "datetime64": lambda a: a.astype("datetime64[s]"),
    "timedelta64": lambda a: a.astype("timedelta64[s]"),
    "bytes": lambda a: a.astype("S2"),
    "str": lambda a: a.astype("U2"),
    "bool": lambda a: a > 0,
    "object of ints": lambda a: a.astype(object),
    "object with None": lambda a: np.where(a > 0, None, 0).astype(object),
    "structured": lambda a: np.zeros(a.shape, dtype=[("id", np.int64)]),
    "python ints beyond uint64": lambda a: np.full(a.shape, 2**64, dtype=object).tolist(),
}


@pytest.mark.parametrize("method", bek.METHODS)
@pytest.mark.parametrize("argument", ID_ARGUMENTS)
@pytest.mark.parametrize("case", NOT_INTEGERS)
def test_ids_that_are_not_integers(method, argument, case):
    value = NOT_INTEGERS[case](ID_ARGUMENTS[argument])
    with pytest.raises(TypeError, match=argument):
        bek.embed(TABLES, **{**{"input_ids": IDS}, argument: value}, method=method)


EXTREMES = {
    "int64 min": np.iinfo(np.int64).min,
    "uint64 max": np.iinfo(np.uint64).max,
    "-1": -1,
    "int32 max": np.iinfo(np.int32).max,
}


@pytest.mark.parametrize("method", bek.METHODS)
@pytest.mark.parametrize("argument", ["token_type_ids", "position_ids"])
@pytest.mark.parametrize("extreme", EXTREMES)
def test_extreme_ids_outside_every_table(method, argument, extreme):
    value = ID_ARGUMENTS[argument].copy()
    dtype = np.uint64 if extreme == "uint64 max" else np.int64
    value = value.astype(dtype)
    value.flat[-1] = EXTREMES[extreme]
    with pytest.raises(IndexError, match=rf"{argument}\[.*is {EXTREMES[extreme]}"):
        bek.embed(TABLES, IDS, **{argument: value}, method=method)


@pytest.mark.parametrize("method", bek.METHODS)
@pytest.mark.parametrize("argument", ["token_type_ids", "position_ids"])
@pytest.mark.parametrize("shape", [(), (1, 2, 3), (2, 3, 1), (4,), (2, 4)])
def test_id_shapes_that_do_not_fit(method, argument, shape):
    with pytest.raises(ValueError, match=rf"{argument} has shape"):
        bek.embed(TABLES, IDS, **{argument: np.zeros(shape, np.int64)}, method=method)


@pytest.mark.parametrize("method", bek.METHODS)
@pytest.mark.parametrize("byte_order", [">", "<"])
@pytest.mark.parametrize("dtype", ["i2", "i4", "i8", "u4", "u8"])
def test_ids_in_either_byte_order(method, byte_order, dtype):
    dtype = np.dtype(byte_order + dtype)
    y = check_contract(
        method,
        "input_ids",
        input_ids=IDS.astype(dtype),
        token_type_ids=np.ones_like(IDS).astype(dtype),
        position_ids=np.array([7, 0, 3], dtype),
    )
    assert y is not None
    bad = IDS.astype(dtype)
    bad[1, 2] = VOCAB
    with pytest.raises(IndexError, match=r"input_ids\[1, 2\].*is 10"):
        bek.embed(TABLES, bad, method=method)


# -- out: what test_errors.py does not reach ---------------------------------------------


def writable_table_base():
    """Tables built from caller-owned writable arrays, and those arrays."""
    token = np.array(TABLES.token)
    tables = bek.EmbeddingTables(token, TABLES.segment, TABLES.position)
    return tables, token


@pytest.mark.parametrize("method", bek.METHODS)
def test_out_overlapping_a_table_through_its_writable_base(method):
    # The table is a read-only view, but the caller still holds the writable array.
    tables, token = writable_table_base()
    out = token.reshape(-1)[: 2 * 3 * HIDDEN].reshape(2, 3, HIDDEN)
    with pytest.raises(ValueError, match=r"out overlaps tables\.token"):
        bek.embed(tables, IDS, method=method, out=out)


@pytest.mark.parametrize("method", bek.METHODS)
@pytest.mark.parametrize("argument", ["token_type_ids", "position_ids"])
def test_out_overlapping_other_ids(method, argument):
    out = np.zeros((2, 3, HIDDEN), np.float32)
    ids = out.view(np.int32)[:, :, 0]  # zeros: valid ids living inside out
    if argument == "position_ids":
        ids = ids[0]
    with pytest.raises(ValueError, match=f"out overlaps {argument}"):
        bek.embed(TABLES, IDS, **{argument: ids}, method=method, out=out)


@pytest.mark.parametrize("method", bek.METHODS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("argument", ["norm_weight", "norm_bias", "attention_mask"])
def test_out_overlapping_the_layer_norm_parameters_or_the_mask(method, dtype, argument):
    # Issue 37: accepted, and silently wrong: the sum was written into out before LayerNorm
    # read its parameters there (a row [0, 0, 1.73, 0] for [-0.577, -0.577, 1.73, -0.577]),
    # or before the mask (DeBERTa-v2's masks_output) multiplied it.
    out = np.ones((2, 3, HIDDEN), dtype)
    norm = {"norm_weight": np.ones(HIDDEN, dtype), "norm_bias": np.zeros(HIDDEN, dtype)}
    mask = np.ones((2, 3), dtype)
    if argument == "attention_mask":
        mask = out.reshape(-1)[:6].reshape(2, 3)  # ones: a valid mask inside out
    else:
        norm[argument] = out[1, 2]  # out's last row, written before it is read
    tables = bek.EmbeddingTables(
        *(np.asarray(t, dtype) for t in GOOD_TABLES.values()), **norm, masks_output=True
    )
    name = argument if argument == "attention_mask" else f"tables.{argument}"
    with pytest.raises(ValueError, match=rf"^out overlaps {name}; pass an array that shares"):
        bek.embed(tables, IDS, method=method, layer_norm=True, out=out, attention_mask=mask)
    assert np.all(out == 1)  # refused before any method ran


BAD_OUTS = {
    "Fortran order": (lambda: np.zeros((2, 3, HIDDEN), np.float32, order="F"), ValueError),
    "byte-swapped float32": (lambda: np.zeros((2, 3, HIDDEN), ">f4"), TypeError),
    "int32": (lambda: np.zeros((2, 3, HIDDEN), np.int32), TypeError),
    "0-d": (lambda: np.zeros((), np.float32), ValueError),
    "numpy scalar": (lambda: np.float32(0), TypeError),
    "matrix": (lambda: np.asmatrix(np.zeros((6, HIDDEN), np.float32)), ValueError),
    "2-D": (lambda: np.zeros((6, HIDDEN), np.float32), ValueError),
}


@pytest.mark.filterwarnings("ignore:the matrix subclass:PendingDeprecationWarning")
@pytest.mark.parametrize("method", bek.METHODS)
@pytest.mark.parametrize("case", BAD_OUTS)
def test_bad_out(method, case):
    make, error = BAD_OUTS[case]
    with pytest.raises(error, match="out"):
        bek.embed(TABLES, IDS, method=method, out=make())


@pytest.mark.parametrize("method", bek.METHODS)
def test_unaligned_out_is_written_correctly(method):
    raw = np.zeros(2 * 3 * HIDDEN * 4 + 1, np.uint8)
    out = raw[1:].view(np.float32).reshape(2, 3, HIDDEN)
    assert not out.flags.aligned
    assert check_contract(method, "out", out=out) is out


# -- past_length, method, memory_budget ---------------------------------------------------


@pytest.mark.parametrize("method", bek.METHODS)
@pytest.mark.parametrize("value", [np.int64(-1), np.int8(-128), -(2**70), -(2**63)], ids=repr)
def test_negative_past_length(method, value):
    with pytest.raises(ValueError, match=r"past_length is -\d+; it must be >= 0"):
        bek.embed(TABLES, IDS, past_length=value, method=method)


@pytest.mark.parametrize("method", bek.METHODS)
@pytest.mark.parametrize(
    "value", [None, "1", 1.5, np.float64(1.0), 1 + 0j, np.bool_(True), [1]], ids=repr
)
def test_past_length_that_is_not_an_int(method, value):
    with pytest.raises(TypeError, match="past_length"):
        bek.embed(TABLES, IDS, past_length=value, method=method)


ROBERTA = bek.EmbeddingTables(
    TABLES.token, None, TABLES.position, position_rule="after_padding", padding_idx=1
)
HUGE_PAST_LENGTHS = [
    MAX_POSITIONS,
    2**62,
    2**63 - 1,
    2**63,
    2**64 - 1,
    2**64,
    2**70,
    np.int64(2**63 - 1),
    np.uint64(2**63),
    np.uint64(2**64 - 1),
]


@pytest.mark.parametrize("method", bek.METHODS)
@pytest.mark.parametrize("value", HUGE_PAST_LENGTHS, ids=repr)
def test_past_length_of_any_size_with_robertas_rule(method, value):
    # Issue 37: at or above 2**63 the rule's positions wrapped to negative numbers, or the
    # kernel's argument failed to convert (numba's OverflowError or TypingError, by what the
    # process had compiled): nothing named. Now BERT's IndexError, naming past_length,
    # with the true position: padding_idx 1 + past_length + 1 for the first real token.
    ids = np.array([[1, 1, 5], [7, 1, 2]])  # the first non-padding token is [0, 2]
    message = (
        rf"^position_ids\[0, 2\] \(batch 0, position 2; default, past_length={value}, "
        rf"position_rule='after_padding' from padding_idx=1\) is {1 + int(value) + 1}, "
        rf"out of range: valid ids satisfy 0 <= id < {MAX_POSITIONS} \(max_positions\)\.$"
    )
    with pytest.raises(IndexError, match=message):
        bek.embed(ROBERTA, ids, past_length=value, method=method)
    grad = np.zeros((2, 3, HIDDEN), np.float32)
    with pytest.raises(IndexError, match=message):
        bek.embed_backward(ROBERTA, grad, ids, past_length=value, method=method)


@pytest.mark.parametrize("method", bek.METHODS)
@pytest.mark.parametrize("value", HUGE_PAST_LENGTHS, ids=repr)
def test_padding_only_under_robertas_rule_takes_any_past_length(method, value):
    # Padding tokens sit at position padding_idx whatever past_length is: nothing overflows.
    ids = np.ones((2, 3), np.int64)
    expected = TABLES.token[1] + TABLES.position[1]  # no segment table: its row of zeros
    y = bek.embed(ROBERTA, ids, past_length=value, method=method)
    np.testing.assert_allclose(y, np.broadcast_to(expected, y.shape), rtol=1e-6)


@pytest.mark.parametrize("value", [None, 1, b"fused", "Fused", ""], ids=repr)
def test_unknown_method(value):
    with pytest.raises(ValueError, match="method"):
        bek.embed(TABLES, IDS, method=value)


@pytest.mark.parametrize("method", BUDGETED)
@pytest.mark.parametrize(
    ("value", "error"),
    [(-1, ValueError), (0, ValueError), (None, TypeError), (True, TypeError), ("1e9", TypeError)],
    ids=repr,
)
def test_bad_memory_budget(method, value, error):
    with pytest.raises(error, match="memory_budget"):
        bek.embed(TABLES, IDS, method=method, memory_budget=value)


@pytest.mark.parametrize("method", BUDGETED)
def test_huge_memory_budget_is_one_chunk(method):
    check_contract(method, "memory_budget", memory_budget=2**70)


# -- malformed tables ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("case", "value", "error"),
    [
        ("str", "table", TypeError),
        ("dict", {"w": 1}, TypeError),
        ("complex", np.zeros((VOCAB, HIDDEN), np.complex64), TypeError),
        ("bool", np.zeros((VOCAB, HIDDEN), bool), TypeError),
        ("object floats", np.zeros((VOCAB, HIDDEN), object), TypeError),
        ("int8", np.zeros((VOCAB, HIDDEN), np.int8), TypeError),
        ("uint64", np.zeros((VOCAB, HIDDEN), np.uint64), TypeError),
        ("longdouble", np.zeros((VOCAB, HIDDEN), np.longdouble), TypeError),
        ("byte-swapped float32", np.zeros((VOCAB, HIDDEN), ">f4"), TypeError),
        ("0-d", np.float32(1), ValueError),
        ("1-D", np.zeros(HIDDEN, np.float32), ValueError),
        ("empty 2-D", np.zeros((0, 0), np.float32), ValueError),
    ],
)
@pytest.mark.parametrize("name", ["token", "segment", "position"])
def test_malformed_table(name, case, value, error):
    with pytest.raises(error, match=name):
        bek.EmbeddingTables(**{**GOOD_TABLES, name: value})


def test_a_missing_token_table_is_refused():
    with pytest.raises(TypeError, match="token"):
        bek.EmbeddingTables(**{**GOOD_TABLES, "token": None})


@pytest.mark.parametrize("name, ids", [("segment", "token_type_ids"), ("position", "position_ids")])
def test_ids_for_a_missing_table_are_refused(name, ids):
    """segment=None / position=None: the family has no such table (DistilBERT, DeBERTa-v3);
    ids for it cannot mean anything, so they are refused rather than ignored."""
    tables = bek.EmbeddingTables(**{**GOOD_TABLES, name: None})
    assert not getattr(tables, f"has_{name}")
    input_ids = np.zeros((1, 3), np.int64)
    with pytest.raises(ValueError, match=rf"{ids} were given, but .* no {name}"):
        bek.embed(tables, input_ids, **{ids: np.zeros((1, 3), np.int64)})


# -- regressions: bugs this battery found (ragged lists, masked ids, unhashable method) ---


@pytest.mark.parametrize("argument", ["input_ids", "token_type_ids", "position_ids"])
def test_ragged_nested_lists_are_refused_by_name(argument):
    value = [[1, 2], [3]] if argument != "position_ids" else [[0, 1, 2], [0]]
    with pytest.raises(ValueError, match=argument):
        bek.embed(TABLES, **{"input_ids": IDS, argument: value}, method="fused")


@pytest.mark.parametrize("method", bek.METHODS)
@pytest.mark.parametrize("dtype", [np.int8, np.uint16, np.int32, np.int64])
def test_masked_ids_hiding_a_bad_id(method, dtype):
    data = IDS.astype(dtype)
    data[1, 1] = 200 if np.dtype(dtype).kind == "u" else -5
    mask = np.zeros(data.shape, bool)
    mask[1, 1] = True  # the bad id is hidden from min() and max()
    # The kernels read the data, mask or not: masked ids are refused outright
    # (min() and max() would skip the hidden bad id; int8 wrapped around silently).
    with pytest.raises(TypeError, match="input_ids is a masked array"):
        bek.embed(TABLES, np.ma.array(data, mask=mask), method=method)


@pytest.mark.parametrize("name", ["token", "segment", "position"])
def test_ragged_table_rows_are_refused_by_name(name):
    with pytest.raises(ValueError, match=name):
        bek.EmbeddingTables(**{**GOOD_TABLES, name: [[0.0] * HIDDEN, [0.0]]})


def test_unhashable_method_is_refused_by_name():
    with pytest.raises(ValueError, match="method"):
        bek.embed(TABLES, IDS, method=["fused"])


# -- the bounds-checked run is live -------------------------------------------------------


@pytest.mark.skipif(not numba.config.BOUNDSCHECK, reason="only under NUMBA_BOUNDSCHECK=1")
def test_boundscheck_is_compiled_in():
    # A stale cache entry compiled without bounds checks would be loaded silently
    # (numba's cache key ignores the flag): an out-of-bounds write must raise here.
    from bert_embedding_kernels.bench.engine.roofline import _copy_rows

    with pytest.raises((IndexError, SystemError)):
        _copy_rows(np.ones((64, 4), np.float32), np.empty((2, 4), np.float32))
