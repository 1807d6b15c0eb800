"""pytest-benchmark: the BERT family's axis, where it changes the cost of the fused sum.

Beside BERT's layout at the same shape: RoBERTa's positions (numbered from the ids by the
tables' rule), a family without a segment table (DistilBERT's layout), and the
vocabularies of RoBERTa (50265 rows) and XLM-R (250002 rows), where the token rows a batch
reads start to miss the caches. Every call is checked first against plain numpy indexing
with positions computed here independently of the package.
"""

import numpy as np
import pytest
from poison import nan_array

import bert_embedding_kernels as bek

BATCH, SEQ, HIDDEN, PAD = 4, 128, 256, 1
LAYOUTS = ("bert", "roberta", "distilbert")
VOCABS = (30522, 50265, 250002)


def _tables(layout: str, vocab: int) -> bek.EmbeddingTables:
    rng = np.random.default_rng(0)
    table = lambda rows: rng.standard_normal((rows, HIDDEN), dtype=np.float32)  # noqa: E731
    return bek.EmbeddingTables(
        table(vocab),
        None if layout == "distilbert" else table(2),
        table(SEQ + PAD + 1),
        **({"position_rule": "after_padding", "padding_idx": PAD} if layout == "roberta" else {}),
    )


def _expected(tables, ids, layout):
    if layout == "roberta":  # numbered after the padding tokens, each row on its own
        positions = np.empty_like(ids)
        for b, row in enumerate(ids):
            count = 0
            for s, token in enumerate(row):
                count += token != PAD
                positions[b, s] = PAD + count if token != PAD else PAD
    else:
        positions = np.broadcast_to(np.arange(SEQ), ids.shape)
    return (tables.token[ids] + tables.segment[0]) + tables.position[positions]


@pytest.mark.parametrize("vocab", VOCABS)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_fused_by_family(benchmark, layout, vocab):
    tables = _tables(layout, vocab)
    ids = np.random.default_rng(1).integers(2, vocab, (BATCH, SEQ))
    ids[1, 100:] = PAD  # padding at the end of one sequence
    out = nan_array((BATCH, SEQ, HIDDEN), np.float32)

    def forward():
        return bek.embed(tables, ids, out=out, layer_norm=False)

    np.testing.assert_array_equal(forward(), _expected(tables, ids, layout))
    benchmark.group = f"family b{BATCH}-s{SEQ}-h{HIDDEN}-v{vocab}"
    benchmark.extra_info.update(layout=layout, vocab=vocab)
    benchmark(forward)
