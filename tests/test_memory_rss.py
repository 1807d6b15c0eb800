"""Memory at real size: what the operating system sees, not only what numpy reports.

``tests/test_memory_budget.py`` checks the one-hot paths' budget with tracemalloc
at a small size. Here the resident set size (RSS) of a fresh interpreter is
measured around one call at batch 16 x seq 512 x vocab 30522 x hidden 768, where
a whole one-hot matrix would take 1 GiB, with the output preallocated: the
peak RSS during the call over the RSS before it is all the extra memory the call
touched, whoever allocated it (numpy, BLAS, the allocator's rounding).

The fused path is also checked with tracemalloc at BERT-base size: with ``out=``
it allocates nothing, and without it only its output.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from rules import assert_forward_matches

import bert_embedding_kernels as bek
from bert_embedding_kernels.bench.engine.cases import BERT_BASE, make_inputs
from bert_embedding_kernels.registry import REGISTRY

MIB = 2**20
BATCH, SEQ, VOCAB, HIDDEN = 16, 512, 30522, 768
# RSS the budget does not count: OpenBLAS's packing buffers, touched as a GEMM
# runs, and the allocator's page rounding. Measured here at 1.5-3.3 MiB above
# the budget (the numpy buffers themselves fit it: test_memory_budget.py).
RUNTIME_SLACK = 8 * MIB
TESTS = str(Path(__file__).resolve().parent)  # rules.py, for the value check

MEASURE = """
import json, sys
import numpy as np
import bert_embedding_kernels as bek
method, budget, tests = sys.argv[1], int(sys.argv[2]), sys.argv[3]
BATCH, SEQ, VOCAB, HIDDEN = {shape}
rng = np.random.default_rng(0)


def table(rows):
    # Filled in place: a temporary here would raise the peak RSS before the call.
    array = np.empty((rows, HIDDEN), np.float32)
    rng.standard_normal(dtype=np.float32, out=array)
    return array


def status(field):
    with open("/proc/self/status") as lines:
        for line in lines:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024  # kB


def rss():
    return status("VmRSS")


def peak_rss():
    # VmHWM, not getrusage's ru_maxrss: after fork + exec, ru_maxrss keeps the
    # parent's high-water mark (a large pytest process made a call look 800 MiB
    # bigger), while VmHWM belongs to this process's own memory map.
    return status("VmHWM")


tables = bek.EmbeddingTables(table(VOCAB), table(2), table(SEQ))
ids = rng.integers(0, VOCAB, (BATCH, SEQ))
types = rng.integers(0, 2, (BATCH, SEQ))
out = np.full((BATCH, SEQ, HIDDEN), np.nan, np.float32)  # preallocated, paged in, poisoned
# Warm up on 256 tokens: compiled kernels, BLAS threads, the concat method's
# stacked table (built once per EmbeddingTables, not per call).
bek.embed(tables, ids[:1, :256], types[:1, :256], method=method, memory_budget=budget)
before, peak_before = rss(), peak_rss()
bek.embed(tables, ids, types, method=method, out=out, memory_budget=budget)
print(json.dumps({{"before": before, "peak_before": peak_before, "peak_after": peak_rss()}}))
# Measured; now the values, against the naive reference (its memory comes after the peak):
# at this size the one-hot paths run in several chunks of the budget.
sys.path.insert(0, tests)
from rules import assert_forward_matches

assert_forward_matches(out, tables, method, ids, types)
"""


def measure_rss(method: str, budget: int) -> dict:
    script = MEASURE.format(shape=(BATCH, SEQ, VOCAB, HIDDEN))
    completed = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script), method, str(budget), TESTS],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    measured = json.loads(completed.stdout.strip().splitlines()[-1])
    # Peak RSS during the call over the RSS just before it. (If something
    # before the call had gone higher, this would overstate the call: it can
    # fail a good call, never pass a bad one.)
    measured["extra"] = measured["peak_after"] - measured["before"]
    return measured


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
@pytest.mark.parametrize("method", [m for m in bek.METHODS if REGISTRY[m].budgeted])
def test_one_hot_peak_rss_stays_within_the_budget_at_bert_size(method):
    budget = bek.DEFAULT_MEMORY_BUDGET
    measured = measure_rss(method, budget)
    extra = measured["extra"]
    assert extra <= budget + RUNTIME_SLACK, f"{extra / MIB:.1f} MiB"
    # The measurement is live: the peak rose during the call by more than the pages
    # the chunks must write (a product buffer and a page of codes per token row,
    # about 15 MiB), far below a whole one-hot matrix (1 GiB). How much more depends
    # on BLAS: zero pages it only reads map the shared zero page and cost no RSS
    # (numpy 1.24's OpenBLAS: 42.7 MiB in all; numpy 2.4's touched over half the budget).
    assert measured["peak_after"] > measured["peak_before"], measured
    assert extra > budget // 16, f"{extra / MIB:.1f} MiB"
    assert extra < BATCH * SEQ * VOCAB * 4 // 2


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_fused_peak_rss_with_out_is_only_runtime_overhead():
    extra = measure_rss("fused", bek.DEFAULT_MEMORY_BUDGET)["extra"]
    assert extra <= RUNTIME_SLACK, f"{extra / MIB:.1f} MiB"


def traced_peak(call) -> int:
    call()  # warm up: compilation, cached default ids
    tracemalloc.start()
    try:
        call()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak


# Python objects of one call (the Batch tuple, call frames): measured 536 bytes
# with out= and 624 bytes beyond the output without, against a 48 MiB output.
PYTHON_OVERHEAD = 64 * 1024


@pytest.mark.parametrize("id_dtype", [np.int32, np.int64])
def test_fused_allocates_nothing_but_its_output(id_dtype):
    tables, input_ids, token_type_ids = make_inputs(BERT_BASE)
    input_ids, token_type_ids = input_ids.astype(id_dtype), token_type_ids.astype(id_dtype)
    out = np.full((BERT_BASE.batch, BERT_BASE.seq, BERT_BASE.hidden), np.nan, tables.dtype)

    with_out = traced_peak(lambda: bek.fused(tables, input_ids, token_type_ids, out=out))
    assert with_out <= PYTHON_OVERHEAD
    assert_forward_matches(out, tables, "fused", input_ids, token_type_ids)

    # Without out=, the output pool (bek.pool) hands the warm-up call's buffer
    # back to the timed call, which then allocates nothing; with the pool off it
    # allocates exactly its output.
    without_out = traced_peak(lambda: bek.fused(tables, input_ids, token_type_ids))
    assert without_out <= PYTHON_OVERHEAD
    bek.pool.configure(enabled=False)
    try:
        unpooled = traced_peak(lambda: bek.fused(tables, input_ids, token_type_ids))
    finally:
        bek.pool.configure(enabled=True)
    assert out.nbytes <= unpooled <= out.nbytes + PYTHON_OVERHEAD
