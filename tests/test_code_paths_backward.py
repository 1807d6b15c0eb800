"""Backward shapes that reach every code path, each method against the naive float64 loop.

The fused backward (kernels/bert_embedding_kernels/methods/fused/backward.py) runs one serial pass
below ``SERIAL_MAX_BYTES`` of output gradient, and above it a parallel pass in
which each thread owns a block of whole cache lines of columns (``column_block``),
after a pass that faults in the touched rows. The cases below reach both, with a
last column block that is partial, widths of 1 and odd widths, batches around the
forward's block of 64 sequences, a sequence of one token and a long one, shared and
per-sequence token types and positions, with and without ``padding_idx``.
``test_cases_reach_the_kernels_they_name`` proves each case takes the path it names.

The one-hot paths allocate their gradients with ``np.empty``; calls go through
tests/poison.py so that a row they never write is NaN and fails.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numba
import numpy as np
import pytest
from poison import embed_backward
from rules import assert_gradients_match

import bert_embedding_kernels as bek
from bert_embedding_kernels.methods.fused import backward as fused_backward


@dataclass(frozen=True)
class Case:
    batch: int
    seq: int
    hidden: int
    types: bool  # token_type_ids given per sequence; else omitted (shared zeros)
    positions: str  # "default", "seq", "1xseq" (shared) or "batchxseq"
    padding_idx: int | None
    path: str  # the fused kernel it reaches: "serial" or "parallel"
    dtype: str = "float32"
    past_length: int = 0

    @property
    def id(self) -> str:
        types = "types" if self.types else "notypes"
        return (
            f"b{self.batch}-s{self.seq}-h{self.hidden}-{types}-pos_{self.positions}"
            f"-pad{self.padding_idx}-{self.path}-{self.dtype}"
        )


VOCAB, MAX_POSITIONS = 37, 320

# Parallel cases have a gradient of at least fused_backward.SERIAL_MAX_BYTES (96 KiB):
# 130 x 1 x 193 x 4 bytes = 98 KiB.
CASES = [
    Case(1, 1, 1, False, "default", None, "serial"),
    Case(63, 5, 3, True, "batchxseq", 0, "serial"),
    Case(65, 4, 5, False, "seq", None, "serial", past_length=2),
    Case(130, 2, 9, True, "batchxseq", 3, "serial"),
    Case(2, 300, 1, True, "1xseq", None, "serial"),
    Case(3, 7, 6, True, "default", 2, "serial", "float64"),
    Case(130, 1, 193, True, "batchxseq", 5, "parallel"),
    Case(64, 3, 129, False, "1xseq", None, "parallel"),
    Case(2, 300, 41, True, "default", 7, "parallel"),
    Case(65, 2, 97, True, "batchxseq", 1, "parallel", "float64"),
]


@functools.cache
def inputs(case: Case):
    rng = np.random.default_rng([case.batch, case.seq, case.hidden])
    tables = bek.EmbeddingTables.random(
        VOCAB, case.hidden, max_positions=MAX_POSITIONS, dtype=case.dtype, seed=case.seq
    )
    shape = (case.batch, case.seq)
    ids = rng.integers(0, VOCAB, shape)
    if case.padding_idx is not None:
        ids[:, -1] = case.padding_idx  # padded tails, as a tokenizer pads
    types = rng.integers(0, 2, shape) if case.types else None
    positions = {
        "default": None,
        "seq": rng.integers(0, MAX_POSITIONS, case.seq),
        "1xseq": rng.integers(0, MAX_POSITIONS, (1, case.seq)),
        "batchxseq": rng.integers(0, MAX_POSITIONS, shape),
    }[case.positions]
    grad = rng.standard_normal((*shape, case.hidden)).astype(case.dtype)
    return tables, grad, ids, types, positions


def call(case: Case, method: str):
    tables, grad, ids, types, positions = inputs(case)
    return embed_backward(
        tables,
        grad,
        ids,
        types,
        positions,
        past_length=case.past_length,
        padding_idx=case.padding_idx,
        method=method,
    )


@pytest.mark.parametrize("method", bek.BACKWARD_METHODS)
@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_gradients(case, method):
    tables, grad, ids, types, positions = inputs(case)
    assert_gradients_match(
        call(case, method),
        tables,
        method,
        grad,
        ids,
        types,
        positions,
        case.past_length,
        padding_idx=case.padding_idx,
    )


# Last: the value tests above fail first when a kernel is wrong.
@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_cases_reach_the_kernels_they_name(case, monkeypatch):
    ran = []
    for path in ("serial", "parallel"):
        name = f"_scatter_add_columns_{path}"
        kernel = getattr(fused_backward, name)

        def spy(*arguments, kernel=kernel, path=path):
            ran.append(path)
            return kernel(*arguments)

        monkeypatch.setattr(fused_backward, name, spy)
    call(case, "fused")
    assert ran == [case.path]


def test_parallel_cases_end_in_a_partial_column_block():
    threads = numba.get_num_threads()
    partial = []
    for case in CASES:
        if case.path == "parallel":
            itemsize = np.dtype(case.dtype).itemsize
            block = fused_backward.scatter_block(case.hidden, itemsize, threads)
            partial.append(case.hidden % block != 0)
    assert partial and all(partial), partial
