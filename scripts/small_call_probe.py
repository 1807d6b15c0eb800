"""What a small forward call is made of: each layer timed alone (issue 39's probe).

For each sequence length given (batch 1, hidden 768, vocab 30522, float32, the same ids
every call, cache warm): the whole ``embed(tables, ids, out=out)``, its validation alone,
the kernel through ``fused_sum``, a parallel copy of the output's bytes (the roofline's
unit), numpy indexing (``token[ids] + segment[0] + position[:seq]``, allocating) and our
allocating call. Best of 7 ``timeit`` repeats, microseconds per call. Run it on a quiet
machine:

    PYTHONPATH=kernels .venv/bin/python scripts/small_call_probe.py 8 16 128
"""

from __future__ import annotations

import argparse
import timeit

import numpy as np

import bert_embedding_kernels as bek
from bert_embedding_kernels import api
from bert_embedding_kernels.bench.engine.roofline import CopyReference
from bert_embedding_kernels.methods.fused import forward
from bert_embedding_kernels.validate.calls import check_forward


def best_us(call, number: int) -> float:
    call()
    return min(timeit.repeat(call, number=number, repeat=7)) / number * 1e6


def rows(tables, seq: int, number: int) -> dict[str, float]:
    ids = np.random.default_rng(0).integers(0, tables.vocab_size, (1, seq))
    out = np.empty((1, seq, tables.hidden_size), np.float32)

    def validate():
        return check_forward(
            tables,
            (ids, None, None, 0),
            method="fused",
            method_dtypes=api.FORWARD_DTYPES,
            out=out,
            out_dtype=None,
            layer_norm=None,
            return_sum=False,
            attention_mask=None,
        )

    batch = validate().batch
    return {
        "`embed(tables, ids, out=out)`, all of it": best_us(
            lambda: bek.embed(tables, ids, out=out), number
        ),
        "validation alone (`validate.calls.check_forward`)": best_us(validate, number),
        "`fused_sum` (argument preparation, dispatch, the kernel)": best_us(
            lambda: forward.fused_sum(tables, batch, out), number
        ),
        "a parallel copy of the output's bytes (`CopyReference`)": best_us(
            CopyReference(out.shape, np.float32), number
        ),
        "numpy indexing, allocating": best_us(
            lambda: tables.token[ids] + tables.segment[0] + tables.position[:seq], number
        ),
        "`embed(tables, ids)`, allocating": best_us(lambda: bek.embed(tables, ids), number),
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("seq", nargs="*", type=int, default=[8, 16, 128], help="sequence lengths")
    parser.add_argument("--number", type=int, default=2000, help="calls per repeat")
    options = parser.parse_args(argv)
    tables = bek.EmbeddingTables.random(30522, 768)
    measured = {seq: rows(tables, seq, options.number) for seq in options.seq}
    print("| part | " + " | ".join(f"1 x {seq}, us" for seq in options.seq) + " |")
    print("|---|" + "---:|" * len(options.seq))
    for name in next(iter(measured.values())):
        cells = " | ".join(f"{measured[seq][name]:.1f}" for seq in options.seq)
        print(f"| {name} | {cells} |")


if __name__ == "__main__":
    main()
