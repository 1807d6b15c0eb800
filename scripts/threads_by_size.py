"""The fused kernel at small and middle sizes: serial build against the parallel one at
1, 2, 4, ... threads, to choose ``SERIAL_MAX_BYTES`` and a thread count per call size
on a machine with many cores (docs/FORWARD.md, "the serial threshold").

    .venv/bin/python scripts/threads_by_size.py          # prints a Markdown table

hidden 768, vocab 30522, float32, uniform ids, into a preallocated output (plain
stores: every size here is under ``STREAM_MIN_BYTES``). The kernels are called
directly, without validation, so the table shows the kernel and the pool's
wake-up alone. One timing engine per size (bek.bench.engine.timing.interleave):
medians of interleaved rounds; ``bert_embedding_kernels.embed(..., out=)`` at the default
thread count is timed beside them as the public call. Then the same with LayerNorm.
"""

from __future__ import annotations

import numba
import numpy as np

import bert_embedding_kernels as bek
from bert_embedding_kernels.bench.engine import machine
from bert_embedding_kernels.bench.engine.cases import Shape, make_inputs
from bert_embedding_kernels.bench.engine.timing import interleave
from bert_embedding_kernels.bench.perf.scaling import default_threads
from bert_embedding_kernels.methods.fused import forward as fused
from bert_embedding_kernels.validate.prepare import prepare

SIZES = ((1, 32), (1, 64), (1, 128), (1, 256), (1, 512), (4, 128), (8, 128), (4, 512))


def _at(threads, call):
    def run():
        numba.set_num_threads(threads)
        return call()

    return run


def _calls(batch: int, seq: int, threads, layer_norm: bool) -> tuple[dict, np.ndarray, np.ndarray]:
    """(calls by column, the output they write, the result to check it against)."""
    tables, ids, types = make_inputs(Shape(batch=batch, seq=seq, hidden=768, vocab=30522))
    out = np.empty((batch, seq, 768), np.float32)
    arguments = fused._arguments(tables, prepare(tables, ids, types, out=out))
    if layer_norm:
        norm = (tables.norm_weight, tables.norm_bias, tables.norm_eps, out, False, out)
        arguments, serial, parallel = (
            (*arguments, *norm),
            fused._sum_norm_rows_serial,
            fused._sum_norm_rows_parallel,
        )
        expected = bek.embed(tables, ids, types, layer_norm=True)
    else:
        arguments, serial, parallel = (
            (*arguments, -1, out),
            fused._sum_rows_serial,
            fused._sum_rows_parallel,
        )
        expected = bek.embed(tables, ids, types, method="gather")
    calls = {"serial": lambda: serial(*arguments)}
    for k in threads:
        calls[f"{k} thr"] = _at(k, lambda: parallel(*arguments))
    calls["embed(out=)"] = _at(
        threads[-1], lambda: bek.embed(tables, ids, types, out=out, layer_norm=layer_norm)
    )
    return calls, out, expected


def main() -> None:
    threads = default_threads()
    print(machine.summary())
    header = ["batch x seq", "KiB", "serial", *(f"{k} thr" for k in threads), "embed(out=)"]
    for layer_norm in (False, True):
        print(f"\n{'with' if layer_norm else 'without'} LayerNorm, median us per call\n")
        print("| " + " | ".join(header) + " |\n|" + "---:|" * len(header))
        for batch, seq in SIZES:
            calls, out, expected = _calls(batch, seq, threads, layer_norm)
            for name, call in calls.items():
                out[...] = np.nan
                call()
                if not np.array_equal(out, expected):
                    raise AssertionError(f"{name} at {batch} x {seq} differs from its reference")
            timings = interleave(calls, budget=1.5, target=0.02)
            medians = [f"{timings.estimate(name).median * 1e6:.1f}" for name in calls]
            print(f"| {batch} x {seq} | {out.nbytes >> 10} | " + " | ".join(medians) + " |")
    numba.set_num_threads(threads[-1])
    print("\nthe fewest in each row is the best choice at that size; embed(out=) is the public")
    print("call at the default thread count (validation, and fused.launch's thread cap)")


if __name__ == "__main__":
    main()
