"""Issue 39: the scatter-add's two speeds on this project's VM, and what its threads share.

In some stretches of time (seconds to minutes) the fused backward's scatter-add at
BERT-base runs about three times slower than in the others, with identical code and
data, while a parallel copy of the output runs faster. This probe times, in alternating
calls for ``SECONDS`` seconds, and sorts every call by the copy's time of its round (a
copy under ``SLOW_COPY_MS`` marks the slow stretches):

1. the shipped scatter with two threads (each owns a column block of every row; since
   this probe's commit each also adds into segment and position rows of its own);
2. the same kernel with one thread (one block: nothing shared);
3. two threads, each adding into token, segment and position gradients of its own (no
   memory written by both; not a product: the two halves would have to be merged);
4. the parallel copy of the output's bytes;
5. the whole training step of the drop-in (``embench perf``'s ``drop-in step``: zero_grad,
   forward, backward), where torch and transformers are installed.

If (1) is slow only where (3) is not, what the two threads share (the token rows they
write side by side) costs the time, not the machine's memory. Run it on a quiet machine:

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
from bert_embedding_kernels._jit import parallel_kernel
from bert_embedding_kernels.bench.engine.cases import BERT_BASE, zipf_ids
from bert_embedding_kernels.bench.engine.roofline import CopyReference
from bert_embedding_kernels.bench.perf import training_step
from bert_embedding_kernels.methods.fused.backward import (
    _add_four_tokens,
    _add_token,
    _four_apart,
    _ids_of,
    _scatter_add_columns_parallel,
    column_block,
)
from bert_embedding_kernels.pool import aligned_zeros

SLOW_COPY_MS = 2.3
SECONDS = float(sys.argv[1]) if len(sys.argv) > 1 else 60.0


@parallel_kernel
def _scatter_apart(grad, input_ids, token_type_ids, position_ids, block, apart):
    """The shipped loop, block ``c`` adding into gradients ``apart[k][c]`` of its own."""
    tokens, hidden = grad.shape
    seq = input_ids.shape[1]
    ids = (input_ids, token_type_ids, position_ids)
    token, segment, position = apart
    for c in prange(token.shape[0]):
        c0, c1 = c * block, min(hidden, (c + 1) * block)
        rows = (token[c], segment[c], position[c])
        t = 0
        while t + 3 < tokens:
            i0, j0, k0 = _ids_of(ids, t, seq)
            i1, j1, k1 = _ids_of(ids, t + 1, seq)
            i2, j2, k2 = _ids_of(ids, t + 2, seq)
            i3, j3, k3 = _ids_of(ids, t + 3, seq)
            if _four_apart(i0, i1, i2, i3, j0, j1, j2, j3, k0, k1, k2, k3, -1):
                _add_four_tokens(grad, t, i0, i1, i2, i3, j0, k0, k1, k2, k3, c0, c1, rows, c0)
                t += 4
            else:
                _add_token(grad, t, i0, j0, k0, -1, c0, c1, rows, c0)
                t += 1
        while t < tokens:
            i, j, k = _ids_of(ids, t, seq)
            _add_token(grad, t, i, j, k, -1, c0, c1, rows, c0)
            t += 1


def _gradients(shape, *copies):
    """Token, segment and position gradients (``copies`` of each, stacked, where given)."""
    token = hugepages.empty((*copies, shape.vocab, shape.hidden), np.float32)
    token[...] = 0
    rows = (2, shape.max_positions)
    return (token, *(aligned_zeros((*copies, n, shape.hidden), np.float32) for n in rows))


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
    block = column_block(shape.hidden, 4, threads)
    shared, apart = _gradients(shape), _gradients(shape, threads)
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
        "two threads, nothing shared": lambda: timed(
            lambda: _scatter_apart(*args, block, apart), *apart
        ),
        "copy": lambda: timed(copy),
    }
    step = training_step.calls(include_compile=False).get("drop-in step")
    if step is not None:
        calls["drop-in step"] = lambda: timed(step)
    for call in calls.values():
        call()
    reference = shared[0].copy()
    calls["shipped, one thread"]()
    assert np.array_equal(shared[0], reference), "one thread gave other bits"
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
