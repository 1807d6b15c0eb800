"""On a GPU: where the backward's time goes, and what a host call of the forward costs.

    NUMBA_ENABLE_CUDASIM=0 python scripts/gpu_diagnose.py

1. At BERT-base (32 x 512, hidden 768, vocab 30522, Zipf ids): the sort
   (counting sort of the token indices by row) and the segmented sums at
   several unroll depths, each the median of 20 event-timed runs, and the
   unroll variants checked bit for bit against the shipped one.
2. At 1 x 128: cProfile of 300 host calls of ``kc.fused_sum`` (prepared batch,
   ``out=``) and of ``bert_embedding_kernels.embed`` on device tables and device ids (with and
   without the range check): the functions that cost the host most.
"""

import cProfile
import pstats
import statistics
import sys

import numpy as np

import bert_embedding_kernels as bek
import bert_embedding_kernels.cuda as kc
from bert_embedding_kernels.bench.engine.cases import zipf_ids
from bert_embedding_kernels.bench.perf.gpu import Timer
from bert_embedding_kernels.cuda import backward

cuda = kc.cuda


SMOKE = "--smoke" in sys.argv  # tiny shapes, for the simulator
RUNS = 1 if SMOKE else 9
BERT = (50, 33, 2, 5, 16) if SMOKE else (30522, 768, 32, 512, 512)


TIMER = Timer(getattr(cuda, "default_stream", cuda.stream)(), SMOKE)


def event_median(function, runs=RUNS):
    """Median GPU time per call (us): CUDA events around back-to-back calls queued
    behind a spin kernel, so the host's launch overhead stays out (bench/perf/gpu.py's Timer)."""
    return statistics.median(TIMER.sample(function)[0] * 1e6 for _ in range(runs))


def backward_stages():
    rng = np.random.default_rng(0)
    vocab, hidden, batch_size, seq, positions = BERT
    host = bek.EmbeddingTables.random(vocab, hidden, max_positions=positions, seed=0)
    device = host.to_device()
    ids = cuda.to_device(zipf_ids(vocab, (batch_size, seq)))
    types = cuda.to_device(rng.integers(0, 2, (batch_size, seq)))
    batch = kc.prepare(device, ids, types)
    grad = cuda.to_device(rng.standard_normal((batch_size, seq, hidden)).astype(np.float32))
    rows = backward.rows_of(device)
    order, starts, counts = backward._sort(device, batch, None, 0)
    sorted_ms = event_median(lambda: backward._sort(device, batch, None, 0))
    print(f"sort (5 kernels): {sorted_ms:.1f} us")
    longest = int(counts.copy_to_host().max())
    print(f"rows {rows}, longest row {longest} tokens")
    outputs = [cuda.device_array((n, hidden), np.float32) for n in (vocab, 2, positions)]
    flat = grad.reshape(batch_size * seq, hidden)
    grid = (4, 1) if SMOKE else (rows, 3)
    lanes = 33 if SMOKE else 256
    reference = None
    for unroll in (4, 8) if SMOKE else (8, 16, 32):
        kernel = backward._segment_sums_kernel(np.dtype(np.float32), unroll)

        def run(kernel=kernel):
            kernel[grid, lanes](flat, order, starts, counts, False, *outputs)

        took = event_median(run)
        got = np.concatenate([o.copy_to_host() for o in outputs])
        reference = got if reference is None else reference
        print(
            f"segment sums, unroll {unroll}: {took:.1f} us, same bits: "
            f"{np.array_equal(got, reference)}"
        )
    into = kc.fused_backward(device, batch, grad)
    full = event_median(lambda: kc.fused_backward(device, batch, grad, accumulate_into=into))
    fresh = event_median(lambda: kc.fused_backward(device, batch, grad))
    print(f"fused_backward accumulate_into: {full:.1f} us; allocating: {fresh:.1f} us")


def sum_launch_shapes():
    """The sum kernels at several elements per thread (threads per token: hidden / that):
    float32 pairs as 8-byte words (the default for float32), and one element at a time."""
    from bert_embedding_kernels.cuda import forward

    vocab, hidden, batch_size, seq, positions = BERT
    host = bek.EmbeddingTables.random(vocab, hidden, max_positions=positions, seed=0)
    device = host.to_device()
    batch = kc.prepare(device, cuda.to_device(zipf_ids(vocab, (batch_size, seq))))
    out = cuda.device_array((batch_size, seq, hidden), np.float32)
    reference = kc.fused_sum(device, batch).copy_to_host()
    shipped = forward.ELEMENTS_PER_THREAD, forward.PAIR_ELEMENTS_PER_THREAD, forward._as_pairs
    for kind in ("pairs", "single"):
        if kind == "single":
            forward._as_pairs = lambda tables, result: None
        for per_thread in (4, 8, 16):
            forward.ELEMENTS_PER_THREAD = forward.PAIR_ELEMENTS_PER_THREAD = per_thread
            for store in ("plain", "streaming") if kc.HAS_STREAMING_STORE else ("plain",):
                took = event_median(lambda s=store: kc.fused_sum(device, batch, out, store=s))
                same = np.array_equal(out.copy_to_host(), reference)
                print(
                    f"sum, {kind}, {per_thread} elements per thread, {store}: {took:.1f} us, "
                    f"same bits: {same}"
                )
    forward.ELEMENTS_PER_THREAD, forward.PAIR_ELEMENTS_PER_THREAD, forward._as_pairs = shipped


def host_profile():
    rng = np.random.default_rng(1)
    vocab, hidden, _, _, positions = BERT
    seq = 5 if SMOKE else 128
    host = bek.EmbeddingTables.random(vocab, hidden, max_positions=positions, seed=0)
    device = host.to_device()
    ids = cuda.to_device(rng.integers(0, vocab, (1, seq)))
    out = cuda.device_array((1, seq, hidden), np.float32)
    batch = kc.prepare(device, ids)
    calls = {
        "kc.fused_sum(prepared, out=)": lambda: kc.fused_sum(device, batch, out),
        "bert_embedding_kernels.embed(device ids, out=, check=False)": lambda: kc.embed(
            device, ids, out=out, check=False
        ),
        "bert_embedding_kernels.embed(device ids, out=)": lambda: bek.embed(device, ids, out=out),
    }
    for label, call in calls.items():
        for _ in range(20):
            call()
        cuda.synchronize()
        profile = cProfile.Profile()
        profile.enable()
        for _ in range(3 if SMOKE else 300):
            call()
        cuda.synchronize()
        profile.disable()
        stats = pstats.Stats(profile)
        print(f"\n## {label}: {stats.total_tt / 300 * 1e6:.0f} us per call (profiled)")
        stats.sort_stats("tottime").print_stats(12)


if __name__ == "__main__":
    sum_launch_shapes()
    backward_stages()
    if "--profile" in sys.argv:
        host_profile()
