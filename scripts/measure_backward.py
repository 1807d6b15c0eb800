"""Time the fused backward at BERT-base against torch and np.add.at; print a Markdown table.

    .venv/bin/python scripts/measure_backward.py               # the comparison in docs/BACKWARD.md
    .venv/bin/python scripts/measure_backward.py --alternatives  # plus the rejected designs

BERT-base: batch 32 x seq 512, hidden 768, vocab 30522, float32, Zipf ids
(exponent 1, ``kernels.backward.zipf_ids``), token types 0 then 1 for each half
of a sequence, default positions. Every contender produces all three gradients.
Each is checked against the naive reference first, warmed up, then timed in
interleaved rounds (every contender once per round, in rotating order, so a
noisy neighbour hits all of them alike); the table reports medians of one run
in one process, and ratios of those medians.
"""

from __future__ import annotations

import argparse
import mmap
import os
import platform
import statistics
import sys
import time

import numba
import numpy as np
from numba import prange

import kernels
from kernels import EmbeddingGradients, embed_backward
from kernels._jit import parallel_kernel, serial_kernel
from kernels.bench import machine
from kernels.bench.cases import zipf_ids
from kernels.bench.reference import naive_embed_backward
from kernels.bench.roofline import CopyReference
from kernels.gradients import aligned_zeros as _aligned_zeros
from kernels.methods.fused_backward import _scatter_add_columns_parallel, column_block

try:
    import torch
except ImportError:
    torch = None

BATCH, SEQ, HIDDEN, VOCAB, POSITIONS, TYPES = 32, 512, 768, 30522, 512, 2
PAUSE = 0.02  # seconds between timed calls


def make_inputs(dtype=np.float32):
    tables = kernels.EmbeddingTables.random(VOCAB, HIDDEN, dtype=dtype)
    input_ids = zipf_ids(VOCAB, (BATCH, SEQ), seed=0)
    token_type_ids = np.zeros((BATCH, SEQ), np.int64)
    token_type_ids[:, SEQ // 2 :] = 1
    grad = np.random.default_rng(1).standard_normal((BATCH, SEQ, HIDDEN)).astype(dtype)
    return tables, grad, input_ids, token_type_ids


# --------------------------------------------------------------------------- rejected designs
# Kept here, not in the library, so the numbers in docs/BACKWARD.md that
# rejected them can be reproduced. All give the same bits as the fused kernel,
# and all write into cache-line-aligned arrays as the library does.


def aligned_empty(shape, dtype):
    """``np.empty`` starting on a cache line (as ``_aligned_zeros``, without the zeros)."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape)) * dtype.itemsize
    raw = np.empty(nbytes + 64, np.uint8)
    offset = -raw.ctypes.data % 64
    return raw[offset : offset + nbytes].view(dtype).reshape(shape)


def aligned_zeros_like(tables):
    return EmbeddingGradients(
        *(_aligned_zeros(t.shape, t.dtype) for t in (tables.token, tables.segment, tables.position))
    )


@serial_kernel
def _first_uses(ids, rows):
    """Per token: is it the first to use its row? And the rows no token used."""
    seen = np.zeros(rows, np.bool_)
    first = np.zeros(ids.size, np.bool_)
    for t in range(ids.size):
        if not seen[ids[t]]:
            seen[ids[t]] = True
            first[t] = True
    return first, np.flatnonzero(~seen)


@parallel_kernel
def _columns_into_empty(grad, ids, types, first, untouched, block, token, segment, position):
    """Column ownership with ``token`` from ``np.empty``: zero the untouched rows,
    write each row's first use, add the rest (segment and position as in fused)."""
    tokens, hidden = grad.shape
    for c in prange((hidden + block - 1) // block):
        c0 = c * block
        c1 = min(hidden, c0 + block)
        width = c1 - c0
        for u in range(untouched.size):
            row = token[untouched[u], c0:c1]
            for h in range(width):
                row[h] = 0.0
        for t in range(tokens):
            g = grad[t, c0:c1]
            token_row = token[ids[t], c0:c1]
            segment_row = segment[types[t], c0:c1]
            position_row = position[t % SEQ, c0:c1]  # default positions: 0 .. SEQ-1
            if first[t]:
                for h in range(width):
                    value = g[h]
                    token_row[h] = 0.0 + value  # the sum from zero: -0.0 becomes +0.0
                    segment_row[h] += value
                    position_row[h] += value
            else:
                for h in range(width):
                    value = g[h]
                    token_row[h] += value
                    segment_row[h] += value
                    position_row[h] += value


def columns_into_empty(tables, grad, input_ids, token_type_ids):
    ids = input_ids.reshape(-1)
    first, untouched = _first_uses(ids, VOCAB)
    gradients = EmbeddingGradients(
        aligned_empty(tables.token.shape, tables.dtype),
        _aligned_zeros(tables.segment.shape, tables.dtype),
        _aligned_zeros(tables.position.shape, tables.dtype),
    )
    block = column_block(HIDDEN, tables.dtype.itemsize, numba.get_num_threads())
    flat = grad.reshape(-1, HIDDEN)
    _columns_into_empty(flat, ids, token_type_ids.reshape(-1), first, untouched, block, *gradients)
    return gradients


@serial_kernel
def _counting_sort(ids, rows):
    """Token indices grouped by row (stable: token order within a row), and row starts."""
    starts = np.zeros(rows + 1, np.int64)
    for t in range(ids.size):
        starts[ids[t] + 1] += 1
    for r in range(rows):
        starts[r + 1] += starts[r]
    order = np.empty(ids.size, np.int64)
    fill = starts[:-1].copy()
    for t in range(ids.size):
        order[fill[ids[t]]] = t
        fill[ids[t]] += 1
    return starts, order


@parallel_kernel
def _rows_by_owner(grad, starts, order, out):
    """Row ownership: each row summed by one thread in token order, untouched rows zeroed."""
    hidden = grad.shape[1]
    for r in prange(out.shape[0]):
        row = out[r]
        for h in range(hidden):
            row[h] = 0.0
        for q in range(starts[r], starts[r + 1]):
            g = grad[order[q]]
            for h in range(hidden):
                row[h] += g[h]


def counting_sort_rows(tables, grad, input_ids, token_type_ids):
    flat = grad.reshape(-1, HIDDEN)
    positions = np.broadcast_to(np.arange(SEQ), (BATCH, SEQ))
    gradients = []
    for table, ids in zip(
        (tables.token, tables.segment, tables.position),
        (input_ids, token_type_ids, positions),
        strict=True,
    ):
        starts, order = _counting_sort(np.ascontiguousarray(ids).reshape(-1), table.shape[0])
        out = aligned_empty(table.shape, table.dtype)
        _rows_by_owner(flat, starts, order, out)
        gradients.append(out)
    return EmbeddingGradients(*gradients)


@parallel_kernel
def _three_loops(grad, input_ids, token_type_ids, position_ids, padding_idx, block, *gradients):
    """The fused kernel with one inner loop per table (``g`` loaded three times)."""
    token, segment, position = gradients
    tokens, hidden = grad.shape
    seq = input_ids.shape[1]
    for c in prange((hidden + block - 1) // block):
        c0 = c * block
        c1 = min(hidden, c0 + block)
        width = c1 - c0
        for t in range(tokens):
            b = t // seq
            s = t - b * seq
            g = grad[t, c0:c1]
            row = token[input_ids[b, s], c0:c1]
            for h in range(width):
                row[h] += g[h]
            row = segment[token_type_ids[b, s], c0:c1]
            for h in range(width):
                row[h] += g[h]
            row = position[position_ids[0, s], c0:c1]
            for h in range(width):
                row[h] += g[h]


@parallel_kernel
def _rows_by_range(grad, input_ids, token_type_ids, position_ids, parts, *gradients):
    """Row ownership without sorting: part ``p`` owns the ``p``-th slice of each table's
    rows, scans every token in order and adds whole rows into the rows it owns."""
    token, segment, position = gradients
    tokens, hidden = grad.shape
    seq = input_ids.shape[1]
    for p in prange(parts):
        t_lo, t_hi = token.shape[0] * p // parts, token.shape[0] * (p + 1) // parts
        s_lo, s_hi = segment.shape[0] * p // parts, segment.shape[0] * (p + 1) // parts
        p_lo, p_hi = position.shape[0] * p // parts, position.shape[0] * (p + 1) // parts
        for t in range(tokens):
            b = t // seq
            s = t - b * seq
            rows = (
                (token, input_ids[b, s], t_lo, t_hi),
                (segment, token_type_ids[b, s], s_lo, s_hi),
                (position, position_ids[0, s], p_lo, p_hi),
            )
            for table, row, lo, hi in rows:
                if lo <= row < hi:
                    target = table[row]
                    g = grad[t]
                    for h in range(hidden):
                        target[h] += g[h]


def rows_by_range(tables, grad, input_ids, token_type_ids):
    gradients = aligned_zeros_like(tables)
    positions = np.arange(SEQ)[None, :]
    flat = grad.reshape(-1, HIDDEN)
    parts = numba.get_num_threads()
    _rows_by_range(flat, input_ids, token_type_ids, positions, parts, *gradients)
    return gradients


def without_fault_in(tables, grad, input_ids, token_type_ids):
    """The fused kernel straight into ``np.zeros``: pages faulted by the column owners."""
    gradients = aligned_zeros_like(tables)
    block = column_block(HIDDEN, tables.dtype.itemsize, numba.get_num_threads())
    positions = np.arange(SEQ)[None, :]
    flat = grad.reshape(-1, HIDDEN)
    _scatter_add_columns_parallel(flat, input_ids, token_type_ids, positions, -1, block, *gradients)
    return gradients


class SmallPages:
    """The fused kernel into a fresh gradient on 4 KiB pages (``MADV_NOHUGEPAGE``).

    numpy asks for transparent huge pages on large arrays, so the first touch
    of any row zeroes its whole 2 MiB page; on small pages only the pages of
    touched rows are faulted (and zeroed) at all. Linux only.
    """

    def __init__(self, tables, grad, input_ids, token_type_ids):
        self.warm = WarmBuffers(tables, grad, input_ids, token_type_ids)
        self.nbytes = tables.token.nbytes
        self.shape, self.dtype = tables.token.shape, tables.dtype

    def __call__(self):
        memory = mmap.mmap(-1, self.nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        memory.madvise(mmap.MADV_NOHUGEPAGE)
        token = np.frombuffer(memory, self.dtype).reshape(self.shape)
        segment, position = (_aligned_zeros(b.shape, b.dtype) for b in self.warm.buffers[1:])
        _scatter_add_columns_parallel(*self.warm.arguments, token, segment, position)
        return EmbeddingGradients(token, segment, position)


class WarmBuffers:
    """The fused kernel into zeroed, already-faulted buffers: the kernel's own time.

    Not a usable API (the caller would have to zero the buffers); it shows how
    much of ``fused`` is first-touch page faults of the fresh gradient.
    """

    def __init__(self, tables, grad, input_ids, token_type_ids, kernel=None, block=None):
        self.kernel = kernel or _scatter_add_columns_parallel
        self.arguments = (
            grad.reshape(-1, HIDDEN),
            input_ids,
            token_type_ids,
            np.arange(SEQ)[None, :],
            -1,
            block or column_block(HIDDEN, tables.dtype.itemsize, numba.get_num_threads()),
        )
        self.buffers = aligned_zeros_like(tables)

    def zero(self):
        for buffer in self.buffers:
            buffer.fill(0)

    def __call__(self):
        self.kernel(*self.arguments, *self.buffers)
        return self.buffers


# --------------------------------------------------------------------------- measuring


def torch_backward(grad, input_ids, token_type_ids):
    """torch's CPU kernel behind nn.Embedding's backward, once per table."""
    grad_t = torch.from_numpy(grad)
    ids = [
        (torch.from_numpy(input_ids), VOCAB),
        (torch.from_numpy(token_type_ids), TYPES),
        (torch.arange(SEQ).expand(BATCH, SEQ).contiguous(), POSITIONS),
    ]

    def run():
        return EmbeddingGradients(
            *(
                torch.ops.aten.embedding_dense_backward(grad_t, i, n, -1, False).numpy()
                for i, n in ids
            )
        )

    return run


def check(name, gradients, reference, bitwise_reference, magnitudes, counts, bitwise):
    """'bitwise' or 'within bound', or raise: a contender is never timed wrong."""
    for field in EmbeddingGradients._fields:
        ours = getattr(gradients, field)
        if bitwise:
            if not np.array_equal(ours, getattr(bitwise_reference, field)):
                raise AssertionError(f"{name}: {field} differs from the naive loop")
            continue
        bound = getattr(counts, field)[:, None] * np.finfo(ours.dtype).eps
        bound = bound * getattr(magnitudes, field)
        if not np.all(np.abs(ours - getattr(reference, field)) <= bound):
            raise AssertionError(f"{name}: {field} outside n * eps * sum|g|")
    return "bitwise" if bitwise else "within bound"


def interleaved(contenders, repeats, before=None):
    """Median seconds of each contender, timed in rotating order round by round."""
    names = list(contenders)
    seconds = {name: [] for name in names}
    for round_ in range(repeats):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            if before and name in before:
                before[name]()
            # Let the previous contender's thread pool (numba's TBB, torch's
            # OpenMP) stop spinning, so it does not steal a core from this one.
            time.sleep(PAUSE)
            start = time.perf_counter()
            contenders[name]()
            seconds[name].append(time.perf_counter() - start)
    return seconds


def load_average() -> str:
    """The 1-, 5- and 15-minute load averages (Linux): is someone else using the cores?"""
    try:
        with open("/proc/loadavg") as file:
            return " ".join(file.read().split()[:3])
    except OSError:
        return "unknown"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=21, help="timed rounds (default 21)")
    parser.add_argument("--alternatives", action="store_true", help="also time rejected designs")
    arguments = parser.parse_args(argv)

    tables, grad, input_ids, token_type_ids = make_inputs()
    call = (grad, input_ids, token_type_ids)
    contenders = {
        "fused (kernels.embed_backward)": lambda: embed_backward(tables, *call, method="fused"),
        "np.add.at x3 (method='gather')": lambda: embed_backward(tables, *call, method="gather"),
    }
    bitwise = {"fused (kernels.embed_backward)", "np.add.at x3 (method='gather')"}
    if torch is not None:
        contenders["torch embedding_dense_backward x3"] = torch_backward(*call)
    copy = CopyReference((BATCH, SEQ, HIDDEN), tables.dtype)
    contenders["copy of grad_output (parallel, roofline)"] = copy
    before = {}
    if arguments.alternatives:
        warm = WarmBuffers(tables, grad, input_ids, token_type_ids)
        contenders["alt: fused without the row-owned fault-in pass"] = lambda: without_fault_in(
            tables, grad, input_ids, token_type_ids
        )
        contenders["alt: column ownership, np.empty + zero untouched rows"] = lambda: (
            columns_into_empty(tables, grad, input_ids, token_type_ids)
        )
        contenders["alt: row ownership by row range (scan all ids, no sort)"] = lambda: (
            rows_by_range(tables, grad, input_ids, token_type_ids)
        )
        contenders["alt: counting sort by id, one owner per row"] = lambda: counting_sort_rows(
            tables, grad, input_ids, token_type_ids
        )
        if hasattr(mmap, "MADV_NOHUGEPAGE"):
            contenders["alt: fused, token gradient on 4 KiB pages"] = SmallPages(
                tables, grad, input_ids, token_type_ids
            )
        warm_variants = {
            "alt: fused kernel into warm pre-zeroed buffers": warm,
            "alt: three inner loops, into warm pre-zeroed buffers": WarmBuffers(
                tables, grad, input_ids, token_type_ids, kernel=_three_loops
            ),
            "alt: 128-column blocks (6, not 2), into warm pre-zeroed buffers": WarmBuffers(
                tables, grad, input_ids, token_type_ids, block=128
            ),
        }
        for name, variant in warm_variants.items():
            contenders[name] = variant
            before[name] = variant.zero
        bitwise |= {name for name in contenders if name.startswith("alt:")}

    reference, magnitudes, counts = naive_embed_backward(tables, *call)
    same_dtype, _, _ = naive_embed_backward(tables, *call, dtype=tables.dtype)
    checks = {}
    for name, run in contenders.items():
        if name in before:
            before[name]()
        result = run()  # also the warm-up: compiles, faults the inputs in
        if name.startswith("copy"):
            checks[name] = "(reference)"
            continue
        checks[name] = check(
            name, result, reference, same_dtype, magnitudes, counts, name in bitwise
        )

    load_before = load_average()
    seconds = interleaved(contenders, arguments.repeats, before)
    load_after = load_average()
    median = {name: statistics.median(times) for name, times in seconds.items()}
    fused = median["fused (kernels.embed_backward)"]

    unique = len(np.unique(input_ids))
    top = np.bincount(input_ids.ravel()).max() / input_ids.size
    print(
        f"BERT-base backward: batch {BATCH} x seq {SEQ}, hidden {HIDDEN}, vocab {VOCAB}, "
        f"float32, Zipf ids ({unique} distinct rows, the most frequent {top:.1%} of tokens)"
    )
    print(f"command: {' '.join([os.path.basename(sys.executable), *sys.argv])}")
    described = machine.describe()
    if torch is not None:
        described["torch"] = f"{torch.__version__} ({torch.get_num_threads()} threads)"
    described["platform"] += f" ({platform.release()})"
    print(" | ".join(f"{key}: {value}" for key, value in described.items()))
    print(
        f"{arguments.repeats} interleaved rounds; times in ms; load average before "
        f"{load_before}, after {load_after}\n"
    )
    print("| contender | median | min | max | median / fused | check |")
    print("|---|---:|---:|---:|---:|---|")
    for name, times in seconds.items():
        print(
            f"| {name} | {median[name] * 1e3:.2f} | {min(times) * 1e3:.2f} | "
            f"{max(times) * 1e3:.2f} | {median[name] / fused:.2f}x | {checks[name]} |"
        )
    print()
    gather = median["np.add.at x3 (method='gather')"] / fused
    print(f"fused vs np.add.at: {gather:.1f}x faster (target >= 20x)")
    if torch is not None:
        speedup = median["torch embedding_dense_backward x3"] / fused
        print(f"fused vs torch embedding_dense_backward: {speedup:.2f}x faster (target >= 3x)")
    else:
        print("torch is not installed: pip install -e '.[peers]' to compare with it")
    return 0


if __name__ == "__main__":
    sys.exit(main())
