"""Forward shapes that reach every code path, each method against the naive reference.

The fused kernels split the work into blocks of one position across up to
``BATCH_BLOCK`` (64) sequences, and run serially below ``SERIAL_MAX_BYTES`` of
output and in parallel above (kernels/bert_embedding_kernels/methods/fused/forward.py). A
mutation audit
found that no test crossed a block boundary: a kernel that never wrote the
sequences from 64 on passed every test. The cases below cross every boundary
(batch 1, 63, 64, 65, 130) on both kernels, with a sequence of one token and a
long one, widths of 1 and odd widths, token types shared (omitted) and per
sequence, positions in every accepted form. ``test_cases_reach_the_kernels_they_name``
proves each case reaches the kernel it names, so a change of the thresholds
cannot quietly leave a path untested.

Outputs are poisoned (tests/poison.py): an element a method never writes is NaN
and fails.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import pytest
from poison import embed, nan_array
from rules import SumReference, tables_with_norm

import bert_embedding_kernels as bek
from bert_embedding_kernels.methods.fused import forward as fused


@dataclass(frozen=True)
class Case:
    batch: int
    seq: int
    hidden: int
    types: bool  # token_type_ids given per sequence; else omitted (shared zeros)
    positions: str  # "default", "seq", "1xseq" (shared) or "batchxseq"
    path: str  # the fused kernel it reaches: "serial" or "parallel"
    dtype: str = "float32"
    past_length: int = 0

    @property
    def id(self) -> str:
        types = "types" if self.types else "notypes"
        return (
            f"b{self.batch}-s{self.seq}-h{self.hidden}-{types}-pos_{self.positions}"
            f"-{self.path}-{self.dtype}"
        )


VOCAB, MAX_POSITIONS = 37, 320

# Parallel cases have out.nbytes >= fused.SERIAL_MAX_BYTES (256 KiB): e.g.
# 130 x 1 x 513 x 4 bytes = 260 KiB.
CASES = [
    Case(1, 1, 1, False, "default", "serial"),
    Case(1, 1, 5, True, "batchxseq", "serial", "float64"),
    Case(63, 5, 3, True, "batchxseq", "serial"),
    Case(64, 3, 7, True, "1xseq", "serial"),
    Case(65, 4, 5, False, "seq", "serial", past_length=3),
    Case(130, 2, 9, True, "batchxseq", "serial"),
    Case(130, 3, 1, True, "default", "serial", "float64"),
    Case(2, 300, 1, True, "batchxseq", "serial"),
    Case(63, 3, 347, True, "1xseq", "parallel"),
    Case(64, 2, 1025, False, "default", "parallel"),
    Case(65, 2, 513, True, "seq", "parallel"),
    Case(130, 1, 513, True, "batchxseq", "parallel"),
    Case(130, 1, 259, True, "batchxseq", "parallel", "float64"),
    Case(1, 300, 223, False, "default", "parallel", past_length=11),
]


@functools.cache
def inputs(case: Case):
    """Tables (with a LayerNorm that is not the identity) and ids for ``case``."""
    rng = np.random.default_rng([case.batch, case.seq, case.hidden])
    tables = tables_with_norm(
        VOCAB, case.hidden, np.dtype(case.dtype), seed=case.hidden, max_positions=MAX_POSITIONS
    )
    shape = (case.batch, case.seq)
    ids = rng.integers(0, VOCAB, shape)
    types = rng.integers(0, 2, shape) if case.types else None
    positions = {
        "default": None,
        "seq": rng.integers(0, MAX_POSITIONS, case.seq),
        "1xseq": rng.integers(0, MAX_POSITIONS, (1, case.seq)),
        "batchxseq": rng.integers(0, MAX_POSITIONS, shape),
    }[case.positions]
    return tables, ids, types, positions


@functools.cache
def reference(case: Case) -> SumReference:
    tables, ids, types, positions = inputs(case)
    return SumReference(tables, ids, types, positions, case.past_length)


def call(case: Case, method: str, **options):
    tables, ids, types, positions = inputs(case)
    return embed(
        tables, ids, types, positions, past_length=case.past_length, method=method, **options
    )


@pytest.mark.parametrize("method", bek.METHODS)
@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_sum(case, method):
    reference(case).check(method, call(case, method))


@pytest.mark.parametrize("method", bek.METHODS)
@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_sum_into_out(case, method):
    tables = inputs(case)[0]
    out = nan_array((case.batch, case.seq, case.hidden), tables.dtype)
    assert call(case, method, out=out) is out
    reference(case).check(method, out)


@pytest.mark.parametrize("method", bek.METHODS)
@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_layer_norm(case, method):
    reference(case).check_layer_norm(method, call(case, method, layer_norm=True))


@pytest.mark.parametrize("method", bek.METHODS)
@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_layer_norm_and_sum(case, method):
    # The fused kernel writes the sum as well only when it is asked for (keep_sum).
    tables = inputs(case)[0]
    out = nan_array((case.batch, case.seq, case.hidden), tables.dtype)
    y, sums = call(case, method, layer_norm=True, return_sum=True, out=out)
    assert y is out
    reference(case).check_layer_norm(method, y)
    reference(case).check(method, sums)


# Last: the value tests above fail first when a kernel is wrong.
@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_cases_reach_the_kernels_they_name(case, monkeypatch):
    ran = []
    for name in (
        "_sum_rows_serial",
        "_sum_rows_parallel",
        "_sum_norm_rows_serial",
        "_sum_norm_rows_parallel",
    ):
        kernel = getattr(fused, name)

        def spy(*arguments, kernel=kernel, name=name):
            ran.append(name)
            return kernel(*arguments)

        monkeypatch.setattr(fused, name, spy)
    call(case, "fused")
    call(case, "fused", layer_norm=True)
    assert ran == [f"_sum_rows_{case.path}", f"_sum_norm_rows_{case.path}"]


def test_cases_cross_every_batch_block_boundary():
    block = fused.BATCH_BLOCK
    for path in ("serial", "parallel"):
        batches = {case.batch for case in CASES if case.path == path}
        assert {1, block - 1, block, block + 1} <= batches, path
        assert any(b > 2 * block for b in batches), path  # a third, partial block


# -- streaming stores ------------------------------------------------------------------------
# Outputs of fused.STREAM_MIN_BYTES (32 MiB) or more are written with streaming stores from
# the first 64-byte boundary of each row (kernels/bert_embedding_kernels/methods/fused/
# vectors.py); the threshold is lowered to
# 0 here so that small outputs take that path, both kernels, from every kind of offset.
VECTOR_BYTES = 64


def offset_out(shape, dtype, offset: int) -> np.ndarray:
    """A NaN-filled C-contiguous array starting ``offset`` elements past a 64-byte boundary."""
    itemsize = np.dtype(dtype).itemsize
    count = int(np.prod(shape))
    block = nan_array(count + 2 * VECTOR_BYTES // itemsize, dtype)
    start = (-block.ctypes.data % VECTOR_BYTES) // itemsize + offset
    return block[start : start + count].reshape(shape)


def misaligned_out(shape, dtype) -> np.ndarray:
    """A NaN-filled array whose elements start one byte past their natural alignment."""
    count = int(np.prod(shape))
    itemsize = np.dtype(dtype).itemsize
    buffer = bytearray(count * itemsize + VECTOR_BYTES)
    first = -np.frombuffer(buffer, np.uint8).ctypes.data % VECTOR_BYTES + 1
    out = np.frombuffer(buffer, dtype, count, offset=first).reshape(shape)
    out[...] = np.nan
    return out


def spy_on_stream_from(monkeypatch) -> list:
    """The ``stream_from`` argument of each fused sum kernel call, in order."""
    passed = []
    for name in ("_sum_rows_serial", "_sum_rows_parallel"):
        kernel = getattr(fused, name)

        def spy(*arguments, kernel=kernel):
            passed.append(arguments[-2])
            return kernel(*arguments)

        monkeypatch.setattr(fused, name, spy)
    return passed


# (dtype, hidden, offset of out in elements): rows a whole number of vectors (48 and 16
# float32, 24 float64), starting at the boundary or past it; hidden 50 (200-byte rows, whose
# offsets differ row to row) must fall back to plain stores.
STREAM_LAYOUTS = [
    ("float32", 48, 0),
    ("float32", 48, 1),
    ("float32", 48, 15),
    ("float32", 16, 9),
    ("float64", 24, 0),
    ("float64", 24, 5),
    ("float32", 50, 0),
]


@pytest.mark.parametrize("batch", [5, 130], ids=["serial", "parallel"])
@pytest.mark.parametrize(("dtype", "hidden", "offset"), STREAM_LAYOUTS)
def test_streaming_stores(dtype, hidden, offset, batch, monkeypatch):
    monkeypatch.setattr(fused, "STREAM_MIN_BYTES", 0)
    passed = spy_on_stream_from(monkeypatch)
    tables = tables_with_norm(VOCAB, hidden, np.dtype(dtype), seed=hidden)
    rng = np.random.default_rng([batch, hidden, offset])
    ids = rng.integers(0, VOCAB, (batch, 12))
    types = rng.integers(0, 2, (batch, 12))
    out = offset_out((batch, 12, hidden), dtype, offset)
    assert bek.embed(tables, ids, types, out=out) is out
    SumReference(tables, ids, types).check("fused", out)
    lanes = VECTOR_BYTES // np.dtype(dtype).itemsize
    whole_vectors = hidden % lanes == 0
    assert passed == [(lanes - offset) % lanes if whole_vectors else -1]


@pytest.mark.parametrize("batch", [5, 130], ids=["serial", "parallel"])
def test_misaligned_elements_get_plain_stores(batch, monkeypatch):
    monkeypatch.setattr(fused, "STREAM_MIN_BYTES", 0)
    passed = spy_on_stream_from(monkeypatch)
    tables = tables_with_norm(VOCAB, 48, np.float32, seed=1)
    ids = np.random.default_rng(batch).integers(0, VOCAB, (batch, 12))
    out = misaligned_out((batch, 12, 48), np.float32)
    assert not out.flags.aligned
    assert bek.embed(tables, ids, out=out) is out
    SumReference(tables, ids).check("fused", out)
    assert passed == [-1]


def test_small_outputs_get_plain_stores(monkeypatch):
    passed = spy_on_stream_from(monkeypatch)
    tables = tables_with_norm(VOCAB, 48, np.float32, seed=1)
    out = offset_out((130, 12, 48), np.float32, 0)
    bek.embed(tables, np.ones((130, 12), np.int64), out=out)
    assert out.nbytes < fused.STREAM_MIN_BYTES
    assert passed == [-1]
