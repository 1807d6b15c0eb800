"""Time the fused backward at BERT-base against torch and np.add.at; print a Markdown table.

    .venv/bin/python scripts/measure_backward.py               # the comparison in docs/BACKWARD.md
    .venv/bin/python scripts/measure_backward.py --alternatives  # plus the rejected designs

BERT-base: batch 32 x seq 512, hidden 768, vocab 30522, float32, Zipf ids
(exponent 1, ``bert_embedding_kernels.bench.engine.cases.zipf_ids``), token types 0 then 1 for each
half of a sequence, default positions. Every contender produces all three
gradients. Each is checked against the naive reference first, then timed by the
one timing engine (``bert_embedding_kernels.bench.engine.timing.interleave``: interleaved rounds in
rotating order, buffers re-zeroed untimed before a sample where a contender
needs it); the table reports medians with 95% intervals and paired ratios.
"""

from __future__ import annotations

import argparse
import mmap
import os
import platform
import sys

import numpy as np
from backward_alternatives import (  # beside this script
    BATCH,
    HIDDEN,
    SEQ,
    VOCAB,
    SmallPages,
    WarmBuffers,
    _three_loops,
    columns_into_empty,
    counting_sort_rows,
    rows_by_range,
    without_fault_in,
)

import bert_embedding_kernels as bek
from bert_embedding_kernels import EmbeddingGradients, embed_backward
from bert_embedding_kernels.bench.engine import machine
from bert_embedding_kernels.bench.engine.cases import BERT_BASE, zipf_ids
from bert_embedding_kernels.bench.engine.reference import naive_embed_backward
from bert_embedding_kernels.bench.engine.roofline import CopyReference
from bert_embedding_kernels.bench.engine.timing import interleave

POSITIONS, TYPES = BERT_BASE.max_positions, BERT_BASE.type_vocab

try:
    import torch
except ImportError:
    torch = None


def make_inputs(dtype=np.float32):
    tables = bek.EmbeddingTables.random(VOCAB, HIDDEN, dtype=dtype)
    input_ids = zipf_ids(VOCAB, (BATCH, SEQ), seed=0)
    token_type_ids = np.zeros((BATCH, SEQ), np.int64)
    token_type_ids[:, SEQ // 2 :] = 1
    grad = np.random.default_rng(1).standard_normal((BATCH, SEQ, HIDDEN)).astype(dtype)
    return tables, grad, input_ids, token_type_ids


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


def load_average() -> str:
    """The 1-, 5- and 15-minute load averages (Linux): is someone else using the cores?"""
    try:
        with open("/proc/loadavg") as file:
            return " ".join(file.read().split()[:3])
    except OSError:
        return "unknown"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--budget", type=float, default=60.0, help="seconds of interleaved rounds (default 60)"
    )
    parser.add_argument("--alternatives", action="store_true", help="also time rejected designs")
    arguments = parser.parse_args(argv)

    tables, grad, input_ids, token_type_ids = make_inputs()
    call = (grad, input_ids, token_type_ids)
    contenders = {
        "fused (bek.embed_backward)": lambda: embed_backward(tables, *call, method="fused"),
        "np.add.at x3 (method='gather')": lambda: embed_backward(tables, *call, method="gather"),
    }
    bitwise = {"fused (bek.embed_backward)", "np.add.at x3 (method='gather')"}
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
    timings = interleave(contenders, budget=arguments.budget, setup=before)
    load_after = load_average()
    estimates = {name: timings.estimate(name) for name in contenders}
    fused_name = "fused (bek.embed_backward)"

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
        f"{timings.rounds} interleaved rounds (bek.bench.engine.timing) "
        f"in {timings.seconds:.0f} s; "
        f"times in ms; load average before {load_before}, after {load_after}\n"
    )
    print("| contender | median | 95% CI | / fused [95% CI] | check |")
    print("|---|---:|---:|---:|---|")
    for name, estimate in estimates.items():
        ratio = timings.ratio(name, fused_name)
        print(
            f"| {name} | {estimate.median * 1e3:.2f} | +-{estimate.half_width:.1%} | "
            f"{ratio.median:.2f}x [{ratio.low:.2f}, {ratio.high:.2f}] | {checks[name]} |"
        )
    print()
    gather = timings.ratio("np.add.at x3 (method='gather')", fused_name)
    print(f"fused vs np.add.at: {gather.median:.1f}x faster [{gather.low:.1f}, {gather.high:.1f}]")
    if torch is not None:
        speedup = timings.ratio("torch embedding_dense_backward x3", fused_name)
        print(
            f"fused vs torch embedding_dense_backward: {speedup.median:.2f}x faster "
            f"[{speedup.low:.2f}, {speedup.high:.2f}] (target >= 3x)"
        )
    else:
        print("torch is not installed: pip install -e '.[peers]' to compare with it")
    return 0


if __name__ == "__main__":
    sys.exit(main())
