"""Hostile values in the tables: NaN, inf and overflow, every method against the reference.

Where the identity stops holding (README): 0 * inf and 0 * NaN are NaN, so the
one-hot paths spread a non-finite value anywhere in a table to every output row;
the bit-identical methods (tests/rules.py) read only the rows they need and
match the naive reference bit for bit, NaN and inf included.
"""

from __future__ import annotations

import numpy as np
import pytest
from hostile import GOOD_TABLES, IDS, tables_with
from poison import embed
from rules import is_bitwise

import bert_embedding_kernels as bek
from bert_embedding_kernels.bench.engine.reference import naive_embed


@pytest.mark.parametrize("method", bek.METHODS)
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_tables_filled_with_non_finite_values(method, value):
    arrays = {name: np.full_like(table, value) for name, table in GOOD_TABLES.items()}
    tables = bek.EmbeddingTables(**arrays)
    with np.errstate(invalid="ignore"):
        y = embed(tables, IDS, method=method)
    if is_bitwise(method) or np.isnan(value):
        # (v + v) + v: NaN stays NaN, inf stays inf, exactly as the reference.
        np.testing.assert_array_equal(y, naive_embed(tables, IDS))
    else:
        # The one-hot codes' zeros times inf are NaN: the identity stops here (README).
        assert np.all(np.isnan(y))


@pytest.mark.parametrize("method", bek.METHODS)
@pytest.mark.parametrize("table", ["token", "segment", "position"])
@pytest.mark.parametrize("used", [True, False])
def test_one_nan_row(method, table, used):
    # Row 1 is read by the call below, the last row is not.
    row = {"token": (1, 9), "segment": (0, 1), "position": (1, 7)}[table][0 if used else 1]
    tables = tables_with(**{table: (row, np.nan)})
    ids, types = np.array([[1, 2, 3], [4, 5, 6]]), np.zeros((2, 3), np.int64)
    with np.errstate(invalid="ignore"):
        y = embed(tables, ids, types, method=method)
    expected = naive_embed(tables, ids, types)
    if is_bitwise(method):
        # NaN exactly where the NaN row was read, bit for bit elsewhere.
        np.testing.assert_array_equal(y, expected)
        assert np.isnan(y).any() == used
    else:
        # 0 * NaN = NaN: every output row of a one-hot path reads every table row.
        assert np.all(np.isnan(y))


@pytest.mark.parametrize("method", [m for m in bek.METHODS if is_bitwise(m)])
def test_overflow_to_inf_matches_the_reference(method):
    huge = np.finfo(np.float32).max
    tables = tables_with(token=(1, huge), segment=(0, huge), position=(1, -huge))
    # (max + max) + -max: inf in this order, as the reference adds.
    with np.errstate(over="ignore", invalid="ignore"):
        y = embed(tables, IDS, method=method)
        np.testing.assert_array_equal(y, naive_embed(tables, IDS))
    assert np.isinf(y[0, 0]).all()
