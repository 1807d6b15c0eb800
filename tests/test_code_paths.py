"""Forward shapes that reach every code path, each method against the naive reference.

The fused kernels split the work into blocks of one position across up to
``BATCH_BLOCK`` (64) sequences, and run serially below ``SERIAL_MAX_BYTES`` of
output and in parallel above (kernels/methods/fused.py). A mutation audit
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

import kernels
from kernels.methods import fused


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


@pytest.mark.parametrize("method", kernels.METHODS)
@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_sum(case, method):
    reference(case).check(method, call(case, method))


@pytest.mark.parametrize("method", kernels.METHODS)
@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_sum_into_out(case, method):
    tables = inputs(case)[0]
    out = nan_array((case.batch, case.seq, case.hidden), tables.dtype)
    assert call(case, method, out=out) is out
    reference(case).check(method, out)


@pytest.mark.parametrize("method", kernels.METHODS)
@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_layer_norm(case, method):
    reference(case).check_layer_norm(method, call(case, method, layer_norm=True))


@pytest.mark.parametrize("method", kernels.METHODS)
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
