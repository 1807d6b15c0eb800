"""Hostile input, drawn at random: every method either refuses it by name or gets it right.

hypothesis draws garbage for every argument (any dtype, shape and layout, Python
lists and scalars); the contract is :func:`hostile.check_contract`. The named
cases are in test_hostile_arguments.py (dtypes, shapes, ``out``, ``past_length``,
``method``, ``memory_budget``, malformed tables, regressions) and
test_hostile_values.py (tables full of NaN or inf); test_errors.py and
test_tables.py hold the messages.
"""

from __future__ import annotations

import numpy as np
from hostile import HIDDEN, MAX_POSITIONS, TYPE_VOCAB, VOCAB, check_contract
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import bert_embedding_kernels as bek

# -- random garbage in every argument (hypothesis) ---------------------------------------

ANY_DTYPE = st.one_of(
    hnp.integer_dtypes(endianness="?"),
    hnp.unsigned_integer_dtypes(endianness="?"),
    hnp.floating_dtypes(endianness="?"),
    hnp.boolean_dtypes(),
    hnp.complex_number_dtypes(),
    hnp.datetime64_dtypes(),
    hnp.timedelta64_dtypes(),
    hnp.byte_string_dtypes(max_len=3),
    hnp.unicode_string_dtypes(max_len=3),
)
SHAPES = hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4)
SCALARS = st.one_of(
    st.integers(-(2**70), 2**70),
    st.integers(0, 9),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.text(max_size=2),
    st.none(),
)


def id_arrays(high):
    """Arrays that are mostly garbage, and often valid ids in an odd dtype or layout."""
    valid = st.one_of(hnp.integer_dtypes(endianness="?"), hnp.unsigned_integer_dtypes()).flatmap(
        lambda dtype: hnp.arrays(dtype, SHAPES, elements=st.integers(0, high - 1))
    )
    garbage = ANY_DTYPE.flatmap(lambda dtype: hnp.arrays(dtype, SHAPES))
    return st.one_of(valid, garbage)


def rectangular_lists():
    # Ragged nested lists are a named case below (a known bug), not drawn here.
    return st.integers(0, 3).flatmap(
        lambda width: st.lists(st.lists(SCALARS, min_size=width, max_size=width), max_size=3)
    )


def garbage(high):
    return st.one_of(id_arrays(high), rectangular_lists(), SCALARS)


FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(method=st.sampled_from(bek.METHODS), value=garbage(VOCAB))
def test_random_input_ids(method, value):
    check_contract(method, "input_ids", input_ids=value)


@FUZZ
@given(method=st.sampled_from(bek.METHODS), value=garbage(TYPE_VOCAB))
def test_random_token_type_ids(method, value):
    check_contract(method, "token_type_ids", token_type_ids=value)


@FUZZ
@given(method=st.sampled_from(bek.METHODS), value=garbage(MAX_POSITIONS))
def test_random_position_ids(method, value):
    check_contract(method, "position_ids", position_ids=value)


@FUZZ
@given(
    method=st.sampled_from(bek.METHODS),
    value=st.one_of(
        SCALARS,
        st.integers(-(2**63), 2**63 - 1).map(np.int64),
        st.integers(0, 2**64 - 1).map(np.uint64),
        st.floats().map(np.float64),
    ),
)
def test_random_past_length(method, value):
    # Too large a past_length is refused as "position_ids (default, past_length=...)".
    check_contract(method, "past_length", past_length=value)


@FUZZ
@given(
    method=st.sampled_from(bek.METHODS),
    value=st.one_of(
        hnp.arrays(st.sampled_from([np.float32, np.float64, np.int32, ">f4"]), SHAPES),
        hnp.arrays(np.float32, st.just((2, 3, HIDDEN))),  # the right one: accepted
        SCALARS,
    ),
    read_only=st.booleans(),
)
def test_random_out(method, value, read_only):
    if isinstance(value, np.ndarray) and read_only:
        value.flags.writeable = False
    check_contract(method, "out", out=value)
