"""What RoBERTa's position rule costs the fused sum: the same call with BERT's positions and
with positions numbered from the ids (tables' ``position_rule="after_padding"``), paired in
interleaved rounds, at BERT-base's batch 32 x seq 512 and at a small call (1 x 128),
hidden 768, RoBERTa's vocabulary.

    .venv/bin/python scripts/position_rule_cost.py [--budget 20]
"""

import argparse

import numpy as np

import bert_embedding_kernels as bek
from bert_embedding_kernels.bench.engine.machine import summary
from bert_embedding_kernels.bench.engine.timing import interleave

HIDDEN, VOCAB, PAD = 768, 50265, 1
SHAPES = ((32, 512), (1, 128))  # (batch, seq): BERT-base, a small call


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", type=float, default=20.0, help="seconds of rounds")
    budget = parser.parse_args().budget
    for batch, seq in SHAPES:
        print(f"batch {batch} x seq {seq}:")
        measure(batch, seq, budget / len(SHAPES))
    print(summary())


def measure(batch: int, seq: int, budget: float) -> None:
    rng = np.random.default_rng(0)
    rows = lambda n: rng.standard_normal((n, HIDDEN), dtype=np.float32) * 0.02  # noqa: E731
    token, segment, position = rows(VOCAB), rows(1), rows(seq + PAD + 1)
    absolute = bek.EmbeddingTables(token, segment, position)
    after_padding = bek.EmbeddingTables(
        token, segment, position, position_rule="after_padding", padding_idx=PAD
    )
    dense = rng.integers(PAD + 1, VOCAB, (batch, seq))
    padded = dense.copy()
    padded[::2, 3 * seq // 4 :] = PAD  # half the sequences (the one, at batch 1) end in padding
    out = np.empty((batch, seq, HIDDEN), np.float32)
    calls = {}
    for label, ids in (("no padding", dense), ("padding", padded)):
        for rule, tables in (("bert", absolute), ("roberta", after_padding)):
            calls[f"{rule}, {label}"] = lambda t=tables, i=ids: bek.embed(
                t, i, out=out, layer_norm=False
            )
    timings = interleave(calls, budget=budget, target=0.01)
    for name in calls:
        estimate = timings.estimate(name)
        print(f"  {name}: {estimate.median * 1e6:.1f} us +-{estimate.half_width:.1%}")
    for label in ("no padding", "padding"):
        ratio = timings.ratio(f"roberta, {label}", f"bert, {label}")
        print(f"  roberta / bert, {label}: {ratio.median:.3f} [{ratio.low:.3f}, {ratio.high:.3f}]")
    print(f"  {timings.rounds} rounds in {timings.seconds:.1f} s")


if __name__ == "__main__":
    main()
