"""Outputs and accumulators that share memory with an input, drawn at random: all refused.

The rule (README, "Errors"): an ``out`` of ``embed``, or an ``accumulate_into`` array of
``embed_backward``, that shares memory with anything the call reads -- a table, the
LayerNorm parameters, the attention mask, the ids, ``grad_output`` -- is refused with a
ValueError naming both, on every method and table dtype, before anything is written.

hypothesis draws which inputs overlap the output (none, one or several) and where
(from one shared element to the whole output), in one buffer. The inputs that do not
overlap it lie right beside it in the same buffer, or in memory of their own: a check
that compared addresses one element off would refuse those, so a call with none
overlapping must be accepted, and give what the same call gives on fresh copies.
The named cases (the holes issue 37 found) are in test_hostile_arguments.py and
test_backward_errors.py.
"""

from __future__ import annotations

import math
import re

import ml_dtypes  # its finfo knows bfloat16 (numpy's does not at the lowest versions)
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import bert_embedding_kernels as bek
from bert_embedding_kernels.dtypes import FLOAT_DTYPES, accumulator

BATCH, SEQ, HIDDEN = 2, 3, 4
VOCAB, TYPES, POSITIONS = 10, 2, 8
ALIGN = 8  # every array starts on an 8-byte boundary: aligned for any dtype used here

TABLE_INPUTS = {  # name: (shape, kind), kind "table" for the tables' dtype
    "tables.token": ((VOCAB, HIDDEN), "table"),
    "tables.segment": ((TYPES, HIDDEN), "table"),
    "tables.position": ((POSITIONS, HIDDEN), "table"),
    "tables.norm_weight": ((HIDDEN,), "table"),
    "tables.norm_bias": ((HIDDEN,), "table"),
}
ID_INPUTS = {  # name: (shape, upper bound); position_ids' shape is drawn
    "input_ids": ((BATCH, SEQ), VOCAB),
    "token_type_ids": ((BATCH, SEQ), TYPES),
    "position_ids": (None, POSITIONS),
}
POSITION_SHAPES = [(SEQ,), (1, SEQ), (BATCH, SEQ)]
FORWARD_INPUTS = [*TABLE_INPUTS, *ID_INPUTS, "attention_mask"]
BACKWARD_INPUTS = [*TABLE_INPUTS, *ID_INPUTS, "grad_output"]
ACCUMULATORS = {"token": VOCAB, "segment": TYPES, "position": POSITIONS}


def aliasings(inputs):
    """Sets of inputs to overlap the output: one alone half the time, so that every input
    is drawn by itself often; else none (the accepted call) up to three together."""
    alone = st.sampled_from(inputs).map(lambda name: {name})
    return st.one_of(alone, st.sets(st.sampled_from(inputs), max_size=3))


ALIASING = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _nbytes(shape, dtype) -> int:
    return math.prod(shape) * np.dtype(dtype).itemsize


def _specs(data, names, table_dtype) -> dict:
    """``name: (shape, dtype)`` of every input, the ids' dtype and shapes drawn."""
    id_dtype = np.dtype(data.draw(st.sampled_from([np.int32, np.int64]), label="id dtype"))
    specs = {}
    for name in names:
        if name in TABLE_INPUTS:
            specs[name] = (TABLE_INPUTS[name][0], np.dtype(table_dtype))
        elif name == "position_ids":
            specs[name] = (data.draw(st.sampled_from(POSITION_SHAPES), label=name), id_dtype)
        elif name in ID_INPUTS:
            specs[name] = (ID_INPUTS[name][0], id_dtype)
        elif name == "attention_mask":
            mask_dtype = data.draw(st.sampled_from([np.int64, np.float32]), label="mask dtype")
            specs[name] = ((BATCH, SEQ), np.dtype(mask_dtype))
        else:  # grad_output, in the tables' dtype
            specs[name] = ((BATCH, SEQ, HIDDEN), np.dtype(table_dtype))
    return specs


def _lay_out(data, target_shape, target_dtype, specs, aliased):
    """One zeroed buffer holding the target and the inputs, and the arrays laid in it.

    Each aliased input starts at a drawn offset where it shares at least one byte with
    the target; each other input lies just below or just above the target (and those
    before it on that side), or in memory of its own.
    """
    room = sum(-(-_nbytes(*spec) // ALIGN) * ALIGN for spec in specs.values())
    size = _nbytes(target_shape, target_dtype)
    raw = np.zeros(room + size + room, np.uint8)
    below, above = room, room + size  # the free edges on either side of the target
    arrays = {}
    for name, (shape, dtype) in specs.items():
        n = _nbytes(shape, dtype)
        if name in aliased:
            starts = range(0, raw.size - n + 1, ALIGN)
            overlapping = [s for s in starts if s < room + size and s + n > room]
            start = data.draw(st.sampled_from(overlapping), label=f"{name} at")
        else:
            side = data.draw(st.sampled_from(["below", "above", "apart"]), label=name)
            if side == "apart":
                arrays[name] = np.zeros(shape, dtype)
                continue
            if side == "below":  # ends where the target (or the last input below) starts
                start = below - n
                below = start - start % ALIGN
            else:
                start, above = above, above + -(-n // ALIGN) * ALIGN
        arrays[name] = np.ndarray(shape, dtype, buffer=raw, offset=start)
    return raw, np.ndarray(target_shape, target_dtype, buffer=raw, offset=room), arrays


def _fill(arrays, aliased, rng) -> None:
    """Valid values in the inputs that overlap nothing; zeros (valid ids too) in the others.

    Zeros last: an aliased input may cover part of a neighbour, and zeroing bytes of a
    small non-negative id or of a 0/1 mask leaves a valid id or a number.
    """
    for name, array in arrays.items():
        if name in aliased:
            continue
        if name in ID_INPUTS:
            array[...] = rng.integers(0, ID_INPUTS[name][1], array.shape)
        elif name == "attention_mask":
            array[...] = rng.integers(0, 2, array.shape)
        else:
            array[...] = rng.standard_normal(array.shape).astype(array.dtype)
    for name in aliased:
        arrays[name][...] = 0


def _tables(arrays) -> bek.EmbeddingTables:
    table = {name: arrays[f"tables.{name}"] for name in ("token", "segment", "position")}
    return bek.EmbeddingTables(
        **table,
        norm_weight=arrays["tables.norm_weight"],
        norm_bias=arrays["tables.norm_bias"],
        masks_output=True,  # DeBERTa-v2's rule: the mask is read, after out is written
    )


def _check_premise(tables, arrays, target, aliased) -> None:
    """Each aliased input shares memory with the target as the call sees it: the tables
    keep the caller's arrays (read-only views), not copies."""
    held = {
        **arrays,
        **{name: getattr(tables, name.removeprefix("tables.")) for name in TABLE_INPUTS},
    }
    for name in aliased:
        assert np.may_share_memory(held[name], target), name


def _fresh(arrays) -> dict:
    return {name: np.array(array) for name, array in arrays.items()}


def _assert_refused(call, raw, label, aliased) -> None:
    """``call()`` raises the README's ValueError naming ``label`` and an aliased input,
    and writes nothing (the buffer holds every input and the target)."""
    before = raw.copy()
    with pytest.raises(ValueError, match=rf"^{re.escape(label)} overlaps ") as refused:
        call()
    named = re.match(r"\S+ overlaps (\S+);", str(refused.value)).group(1)
    assert named in aliased, f"{named} is not one of {sorted(aliased)}"
    np.testing.assert_array_equal(raw, before)


def _assert_close(got, want, dtype) -> None:
    # The same method on the same values at other addresses: only BLAS may add the
    # (up to 3 in the forward, 6 in the backward) terms of an element in another order,
    # and LayerNorm's statistics are float64: a few roundings of the output's dtype.
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    scale = max(1.0, float(np.max(np.abs(want), initial=0.0)))
    np.testing.assert_allclose(got, want, rtol=0, atol=8 * ml_dtypes.finfo(dtype).eps * scale)


@ALIASING
@given(
    data=st.data(),
    method=st.sampled_from(bek.METHODS),
    dtype=st.sampled_from(FLOAT_DTYPES),
    layer_norm=st.booleans(),
    aliased=aliasings(FORWARD_INPUTS),
)
def test_out_sharing_memory_with_what_embed_reads_is_refused(
    data, method, dtype, layer_norm, aliased
):
    specs = _specs(data, FORWARD_INPUTS, dtype)
    raw, out, arrays = _lay_out(data, (BATCH, SEQ, HIDDEN), dtype, specs, aliased)
    _fill(arrays, aliased, np.random.default_rng(data.draw(st.integers(0, 2**32 - 1))))

    def call(tables, arrays, out):
        ids = [arrays[name] for name in ID_INPUTS]
        mask = arrays["attention_mask"]
        options = {"method": method, "layer_norm": layer_norm, "attention_mask": mask}
        return bek.embed(tables, *ids, out=out, **options)

    tables = _tables(arrays)
    _check_premise(tables, arrays, out, aliased)
    if aliased:
        _assert_refused(lambda: call(tables, arrays, out), raw, "out", aliased)
        return
    inputs_before = {name: array.copy() for name, array in arrays.items()}
    fresh = _fresh(arrays)
    expected = call(_tables(fresh), fresh, None)
    assert call(tables, arrays, out) is out
    _assert_close(out, expected, dtype)
    for name, array in arrays.items():  # out written, no input touched
        np.testing.assert_array_equal(array, inputs_before[name], err_msg=name)


@ALIASING
@given(
    data=st.data(),
    method=st.sampled_from(bek.BACKWARD_METHODS),
    dtype=st.sampled_from(FLOAT_DTYPES),
    target=st.sampled_from(list(ACCUMULATORS)),
    aliased=aliasings(BACKWARD_INPUTS),
)
def test_accumulate_into_sharing_memory_with_what_the_backward_reads_is_refused(
    data, method, dtype, target, aliased
):
    specs = _specs(data, BACKWARD_INPUTS, dtype)
    wide = accumulator(dtype)  # gradients add up in float32 for 16-bit tables
    shape = (ACCUMULATORS[target], HIDDEN)
    raw, into_target, arrays = _lay_out(data, shape, wide, specs, aliased)
    _fill(arrays, aliased, np.random.default_rng(data.draw(st.integers(0, 2**32 - 1))))

    def call(tables, arrays, into_target):
        into = [
            into_target if name == target else np.zeros((rows, HIDDEN), wide)
            for name, rows in ACCUMULATORS.items()
        ]
        ids = [arrays[name] for name in ID_INPUTS]
        grad = arrays["grad_output"]
        return bek.embed_backward(tables, grad, *ids, method=method, accumulate_into=into)

    tables = _tables(arrays)
    _check_premise(tables, arrays, into_target, aliased)
    if aliased:
        label = f"accumulate_into.{target}"
        _assert_refused(lambda: call(tables, arrays, into_target), raw, label, aliased)
        return
    inputs_before = {name: array.copy() for name, array in arrays.items()}
    fresh = _fresh(arrays)
    expected = call(_tables(fresh), fresh, np.zeros(shape, wide))
    got = call(tables, arrays, into_target)
    assert getattr(got, target) is into_target
    for name in ACCUMULATORS:
        _assert_close(getattr(got, name), getattr(expected, name), wide)
    for name, array in arrays.items():
        np.testing.assert_array_equal(array, inputs_before[name], err_msg=name)
