"""Every bad input gets the same exception and a message naming the argument, whatever method."""

import numpy as np
import pytest
from hostile import NOT_FLOAT_DTYPES

import bert_embedding_kernels as bek
from bert_embedding_kernels.dtypes import FLOAT_DTYPES

TABLES = bek.EmbeddingTables.random(10, 4, max_positions=8, type_vocab_size=2)
IDS = np.array([[1, 2, 3], [4, 5, 6]])


def call(method, input_ids=IDS, token_type_ids=None, position_ids=None, **options):
    return bek.embed(TABLES, input_ids, token_type_ids, position_ids, method=method, **options)


# (case id, keyword arguments, exception, regex that the message must match)
BAD_CALLS = [
    ("float ids", {"input_ids": IDS.astype(float)}, TypeError, r"input_ids.*float64.*astype"),
    ("bool ids", {"input_ids": IDS > 2}, TypeError, r"input_ids.*bool"),
    ("object ids", {"input_ids": IDS.astype(object)}, TypeError, r"input_ids.*object"),
    ("string ids", {"input_ids": [["a", "b"]]}, TypeError, r"input_ids.*<U1"),
    (
        "float token types",
        {"token_type_ids": np.zeros((2, 3))},
        TypeError,
        r"token_type_ids.*float64",
    ),
    ("float positions", {"position_ids": np.zeros(3)}, TypeError, r"position_ids.*float64"),
    ("1-D ids", {"input_ids": np.array([1, 2])}, ValueError, r"input_ids.*\(2,\).*2-D"),
    ("0-d ids", {"input_ids": np.array(1)}, ValueError, r"input_ids.*\(\).*2-D"),
    ("3-D ids", {"input_ids": np.ones((1, 2, 3), int)}, ValueError, r"input_ids.*\(1, 2, 3\)"),
    (
        "token types shape",
        {"token_type_ids": np.zeros((1, 3), int)},
        ValueError,
        r"token_type_ids.*\(1, 3\).*\(2, 3\)",
    ),
    (
        "positions shape",
        {"position_ids": np.zeros((2, 4), int)},
        ValueError,
        r"position_ids.*\(2, 4\).*\(2, 3\)",
    ),
    (
        "positions batch",
        {"position_ids": np.zeros((3, 3), int)},
        ValueError,
        r"position_ids.*\(3, 3\)",
    ),
    (
        "id too large",
        {"input_ids": np.array([[1, 2, 3], [4, 10, 6]])},
        IndexError,
        r"input_ids\[1, 1\].*batch 1, position 1.*is 10.*0 <= id < 10.*vocab_size",
    ),
    (
        "negative id",
        {"input_ids": np.array([[1, -1, 3], [4, 5, 6]])},
        IndexError,
        r"input_ids\[0, 1\].*is -1",
    ),
    (
        "int64 min id",
        {"input_ids": np.array([[np.iinfo(np.int64).min, 1, 1]] * 2)},
        IndexError,
        r"input_ids\[0, 0\].*-9223372036854775808",
    ),
    (
        "huge uint64 id",
        {"input_ids": np.array([[1, 2, 2**64 - 1]] * 2, dtype=np.uint64)},
        IndexError,
        r"input_ids\[0, 2\].*18446744073709551615",
    ),
    (
        "token type too large",
        {"token_type_ids": np.array([[0, 0, 0], [0, 0, 2]])},
        IndexError,
        r"token_type_ids\[1, 2\].*is 2.*type_vocab_size",
    ),
    (
        "position too large",
        {"position_ids": np.array([0, 8, 1])},
        IndexError,
        r"position_ids\[1\].*is 8.*max_positions",
    ),
    (
        "negative position",
        {"position_ids": np.array([[0, 1, 2], [0, -3, 1]])},
        IndexError,
        r"position_ids\[1, 1\].*is -3",
    ),
    (
        "past_length runs past the table",
        {"past_length": 6},
        IndexError,
        r"position_ids.*past_length=6.*position 8.*max_positions",
    ),
    ("negative past_length", {"past_length": -1}, ValueError, r"past_length.*-1.*>= 0"),
    ("float past_length", {"past_length": 1.0}, TypeError, r"past_length.*float"),
    ("out dtype", {"out": np.empty((2, 3, 4), np.float64)}, TypeError, r"out.*float64.*float32"),
    (
        "out shape",
        {"out": np.empty((2, 3, 5), np.float32)},
        ValueError,
        r"out.*\(2, 3, 5\).*\(2, 3, 4\)",
    ),
    (
        "out read-only",
        {"out": np.broadcast_to(np.float32(0), (2, 3, 4))},
        ValueError,
        r"out is read-only",
    ),
    (
        "out not contiguous",
        {"out": np.empty((2, 3, 8), np.float32)[:, :, ::2]},
        ValueError,
        r"out is not C-contiguous",
    ),
    ("out a list", {"out": [[0.0]]}, TypeError, r"out is list"),
    ("out overlaps a table", {"out": TABLES.token.reshape(2, 5, 4)[:, :3]}, ValueError, r"out"),
    ("unknown method", {"method": "magic"}, ValueError, r"method.*'magic'.*onehot"),
]


@pytest.mark.parametrize("method", bek.METHODS)
@pytest.mark.parametrize(
    ("case", "arguments", "error", "message"), BAD_CALLS, ids=[c[0] for c in BAD_CALLS]
)
def test_bad_input_raises_the_same_for_every_method(method, case, arguments, error, message):
    with pytest.raises(error, match=message):
        call(**{"method": method, **arguments})


def test_out_overlapping_ids_is_refused():
    ids = np.zeros((2, 3, 4), np.float32)  # memory reused as out below
    int_view = ids.view(np.int32)[:, :, 0]
    with pytest.raises(ValueError, match="out overlaps input_ids"):
        bek.embed(TABLES, int_view, out=ids)


@pytest.mark.parametrize("method", bek.METHODS)
@pytest.mark.parametrize("table_dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("value", NOT_FLOAT_DTYPES, ids=repr)
def test_an_out_dtype_that_is_no_float_is_refused_for_every_table_dtype(method, table_dtype, value):
    # Issue 37: with float64 tables out_dtype="int8" returned float64: a dtype that failed
    # to parse became None, and numpy compares float64 == None as True.
    tables = bek.EmbeddingTables.random(10, 4, max_positions=8, dtype=table_dtype)
    with pytest.raises(TypeError, match=rf"^out_dtype is .*; with {tables.dtype} tables it"):
        bek.embed(tables, IDS, method=method, out_dtype=value)


def test_tables_argument_must_be_embedding_tables():
    with pytest.raises(TypeError, match=r"tables is dict.*EmbeddingTables"):
        bek.embed({"token": np.zeros((3, 3))}, IDS)


def test_a_failed_call_leaves_out_untouched():
    out = np.full((2, 3, 4), 7.0, np.float32)
    with pytest.raises(IndexError):
        call("fused", input_ids=np.array([[1, 2, 3], [4, 5, 99]]), out=out)
    assert np.all(out == 7.0)
