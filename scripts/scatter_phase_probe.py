"""Issue 39: the scatter-add's two speeds on this project's VM, and what its threads share.

In some stretches of time (seconds to minutes) the fused backward's scatter-add at
BERT-base ran about three times slower than in the others, with identical code and
data, while a parallel copy of the output ran faster. This probe times, in alternating
calls for ``SECONDS`` seconds, and sorts every round by the copy's time (a copy under
``SLOW_COPY_MS`` marks the slow stretches):

1. the shipped scatter with two threads: one adds into the token rows, the other into the
   segment and position rows (``scatter_block``);
2. the same kernel with one thread (both parts in turn);
3. the layout before (commit 550610f): each thread owns a column block of all three
   tables and adds every token into its three rows, so the two threads write side by side
   in the same segment, position and token rows all the time;
4. the parallel copy of the output's bytes;
5. the whole training step of the drop-in (``embench perf``'s ``drop-in step``: zero_grad,
   forward, backward), where torch and transformers are installed.

All three scatters give the same bits (checked). Run it on a quiet machine:

    PYTHONPATH=kernels .venv/bin/python scripts/scatter_phase_probe.py [SECONDS]
"""

from __future__ import annotations

import statistics
import sys
import time

import numba
import numpy as np
from numba import prange

from bert_embedding_kernels import hugepages
from bert_embedding_kernels._jit import parallel_kernel, row_helper
from bert_embedding_kernels.bench.engine.cases import BERT_BASE, zipf_ids
from bert_embedding_kernels.bench.engine.roofline import CopyReference
from bert_embedding_kernels.bench.perf import training_step
from bert_embedding_kernels.methods.fused.backward import (
    _ids_of,
    _scatter_add_columns_parallel,
    column_block,
    scatter_block,
)
from bert_embedding_kernels.pool import aligned_zeros

SLOW_COPY_MS = 2.3
SECONDS = float(sys.argv[1]) if len(sys.argv) > 1 else 60.0


@row_helper
def _add_to_three(grad, t, i, j, k, c0, c1, token, segment, position):
    """The layout before: one token's columns into its three rows in one loop."""
    g = grad[t, c0:c1]
    token_row, segment_row, position_row = token[i, c0:c1], segment[j, c0:c1], position[k, c0:c1]
    for h in range(c1 - c0):
        value = g[h]
        token_row[h] += value
        segment_row[h] += value
        position_row[h] += value


@row_helper
def _add_four_to_three(grad, t, i0, i1, i2, i3, j, k0, k1, k2, k3, c0, c1, tables):
    """The layout before: four tokens (four token rows, four position rows, one segment)."""
    token, segment, position = tables
    g0, g1, g2, g3 = grad[t, c0:c1], grad[t + 1, c0:c1], grad[t + 2, c0:c1], grad[t + 3, c0:c1]
    r0, r1, r2, r3 = token[i0, c0:c1], token[i1, c0:c1], token[i2, c0:c1], token[i3, c0:c1]
    p0, p1 = position[k0, c0:c1], position[k1, c0:c1]
    p2, p3 = position[k2, c0:c1], position[k3, c0:c1]
    segment_row = segment[j, c0:c1]
    for h in range(c1 - c0):
        v0, v1, v2, v3 = g0[h], g1[h], g2[h], g3[h]
        r0[h] += v0
        r1[h] += v1
        r2[h] += v2
        r3[h] += v3
        p0[h] += v0
        p1[h] += v1
        p2[h] += v2
        p3[h] += v3
        segment_row[h] = (((segment_row[h] + v0) + v1) + v2) + v3


@parallel_kernel
def _scatter_before(grad, input_ids, token_type_ids, position_ids, block, token, segment, position):
    """The layout before (no padding token here): a column block of all three tables each."""
    tokens, hidden = grad.shape
    seq = input_ids.shape[1]
    ids = (input_ids, token_type_ids, position_ids)
    tables = (token, segment, position)
    for c in prange(-(-hidden // block)):
        c0, c1 = c * block, min(hidden, (c + 1) * block)
        t = 0
        while t + 3 < tokens:
            i0, j0, k0 = _ids_of(ids, t, seq)
            i1, j1, k1 = _ids_of(ids, t + 1, seq)
            i2, j2, k2 = _ids_of(ids, t + 2, seq)
            i3, j3, k3 = _ids_of(ids, t + 3, seq)
            rows_apart = _four_different(i0, i1, i2, i3) and _four_different(k0, k1, k2, k3)
            if rows_apart and j0 == j1 and j0 == j2 and j0 == j3:
                _add_four_to_three(grad, t, i0, i1, i2, i3, j0, k0, k1, k2, k3, c0, c1, tables)
                t += 4
            else:
                _add_to_three(grad, t, i0, j0, k0, c0, c1, token, segment, position)
                t += 1
        while t < tokens:
            i, j, k = _ids_of(ids, t, seq)
            _add_to_three(grad, t, i, j, k, c0, c1, token, segment, position)
            t += 1


def _gradients(shape):
    """Token, segment and position gradients, as the shipped backward allocates them."""
    token = hugepages.empty((shape.vocab, shape.hidden), np.float32)
    token[...] = 0
    rows = (2, shape.max_positions)
    return (token, *(aligned_zeros((n, shape.hidden), np.float32) for n in rows))


@row_helper
def _four_different(a, b, c, d):
    return a != b and a != c and a != d and b != c and b != d and c != d


def main() -> None:
    shape = BERT_BASE
    ids = zipf_ids(shape.vocab, (shape.batch, shape.seq), seed=0)
    half = shape.seq // 2
    types = np.repeat([[0] * half + [1] * (shape.seq - half)], shape.batch, 0).astype(np.int64)
    positions = np.arange(shape.seq, dtype=np.int64)[None, :]
    rng = np.random.default_rng(1)
    grad = hugepages.empty((shape.batch * shape.seq, shape.hidden), np.float32)
    grad[...] = rng.standard_normal(grad.shape, dtype=np.float32)
    threads = numba.get_num_threads()
    block = scatter_block(shape.hidden, 4, threads)
    before_block = column_block(shape.hidden, 4, threads)
    shared, before = _gradients(shape), _gradients(shape)
    copy = CopyReference((shape.batch, shape.seq, shape.hidden), np.float32)

    def timed(call, *arrays, threads_now=threads):
        for array in arrays:
            array[...] = 0
        numba.set_num_threads(threads_now)
        start = time.perf_counter()
        call()
        numba.set_num_threads(threads)
        return (time.perf_counter() - start) * 1e3

    args = (grad, ids, types, positions)
    calls = {
        "shipped, two threads": lambda: timed(
            lambda: _scatter_add_columns_parallel(*args, -1, block, *shared), *shared
        ),
        "shipped, one thread": lambda: timed(
            lambda: _scatter_add_columns_parallel(*args, -1, shape.hidden, *shared),
            *shared,
            threads_now=1,
        ),
        "the layout before, two threads": lambda: timed(
            lambda: _scatter_before(*args, before_block, *before), *before
        ),
        "copy": lambda: timed(copy),
    }
    step = training_step.calls(include_compile=False).get("drop-in step")
    if step is not None:
        calls["drop-in step"] = lambda: timed(step)
    for call in calls.values():
        call()
    reference = [array.copy() for array in shared]
    calls["shipped, one thread"]()
    for got in (shared, before):
        assert all(map(np.array_equal, got, reference)), "a scatter gave other bits"
    times = {name: [] for name in calls}
    end = time.time() + SECONDS
    while time.time() < end:
        for name, call in calls.items():
            times[name].append(call())
    slow = [copy_ms < SLOW_COPY_MS for copy_ms in times["copy"]]
    print(f"{len(slow)} rounds of {threads} threads; median ms (the copy sorts the rounds):")
    labels = (f"copy >= {SLOW_COPY_MS} ms", False), (f"copy < {SLOW_COPY_MS} ms", True)
    for label, wanted in labels:
        picked = [i for i, s in enumerate(slow) if s == wanted]
        if not picked:
            print(f"  {label}: no round")
            continue
        cells = ", ".join(
            f"{name} {statistics.median(times[name][i] for i in picked):.2f}" for name in calls
        )
        print(f"  {label} ({len(picked)} rounds): {cells}")
        if step is not None:
            ratio = statistics.median(times["drop-in step"][i] / times["copy"][i] for i in picked)
            print(f"    drop-in step / copy, median of per-round ratios: {ratio:.2f}")


if __name__ == "__main__":
    main()
