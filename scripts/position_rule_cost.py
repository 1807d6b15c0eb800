"""What RoBERTa's position rule costs the fused sum: the same call with BERT's positions and
with positions numbered from the ids (tables' ``position_rule="after_padding"``), paired in
interleaved rounds, at BERT-base's batch 32 x seq 512, hidden 768, RoBERTa's vocabulary.

    .venv/bin/python scripts/position_rule_cost.py [--budget 20]
"""

import argparse

import numpy as np

import bert_embedding_kernels as bek
from bert_embedding_kernels.bench.machine import summary
from bert_embedding_kernels.bench.timing import interleave

BATCH, SEQ, HIDDEN, VOCAB, PAD = 32, 512, 768, 50265, 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", type=float, default=20.0, help="seconds of rounds")
    budget = parser.parse_args().budget
    rng = np.random.default_rng(0)
    rows = lambda n: rng.standard_normal((n, HIDDEN), dtype=np.float32) * 0.02  # noqa: E731
    token, segment, position = rows(VOCAB), rows(1), rows(SEQ + PAD + 1)
    absolute = bek.EmbeddingTables(token, segment, position)
    after_padding = bek.EmbeddingTables(
        token, segment, position, position_rule="after_padding", padding_idx=PAD
    )
    dense = rng.integers(PAD + 1, VOCAB, (BATCH, SEQ))
    padded = dense.copy()
    padded[::2, 3 * SEQ // 4 :] = PAD  # half the sequences end in padding
    out = np.empty((BATCH, SEQ, HIDDEN), np.float32)
    calls = {}
    for label, ids in (("no padding", dense), ("padding", padded)):
        for rule, tables in (("bert", absolute), ("roberta", after_padding)):
            calls[f"{rule}, {label}"] = lambda t=tables, i=ids: bek.embed(
                t, i, out=out, layer_norm=False
            )
    timings = interleave(calls, budget=budget, target=0.01)
    for name in calls:
        estimate = timings.estimate(name)
        print(f"{name}: {estimate.median * 1e3:.3f} ms +-{estimate.half_width:.1%}")
    for label in ("no padding", "padding"):
        ratio = timings.ratio(f"roberta, {label}", f"bert, {label}")
        print(f"roberta / bert, {label}: {ratio.median:.3f} [{ratio.low:.3f}, {ratio.high:.3f}]")
    print(f"{timings.rounds} rounds in {timings.seconds:.1f} s")
    print(summary())


if __name__ == "__main__":
    main()
