"""The BERT family's axis of the fused sum, where it changes the cost.

At the sweeps' base shape (batch 8 x seq 128, hidden 768, float32), BERT's layout beside
RoBERTa's (positions numbered from the ids after the padding tokens, the tables'
``position_rule="after_padding"``) and DistilBERT's (no segment table), at the
vocabularies of BERT (30522 rows), RoBERTa (50265) and XLM-R (250002), where the token
rows a batch reads start to miss the caches. Three sequences of eight end in padding.

The grid is pinned here (it must be the same at every commit asv runs); a layout a
commit cannot build (families arrived with issue 29) is skipped there (asv: n/a). Every
call is checked first, bit for bit, against plain indexing with positions numbered here,
independently of the package under test.
"""

import functools
import inspect

import numpy as np

from .common import SWEEP_BASE, bek
from .forward import _Forward

LAYOUTS = ("bert", "roberta", "distilbert")
VOCABS = (30522, 50265, 250002)
PAD = 1  # RoBERTa's padding token


def _positions(input_ids: np.ndarray, layout: str) -> np.ndarray:
    """Each token's position row, numbered here as transformers numbers them."""
    batch, seq = input_ids.shape
    if layout != "roberta":
        return np.broadcast_to(np.arange(seq), (batch, seq))
    positions = np.empty_like(input_ids)
    for b in range(batch):
        count = 0
        for s in range(seq):
            count += int(input_ids[b, s] != PAD)
            positions[b, s] = PAD + count if input_ids[b, s] != PAD else PAD
    return positions


@functools.lru_cache(maxsize=1)
def _token_table(vocab: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.standard_normal((vocab, SWEEP_BASE.hidden), dtype=np.float32)


def family_call(layout: str, vocab: int):
    """A zero-argument, checked, warmed-up ``embed(..., out=out)`` of ``layout``'s tables."""
    rng = np.random.default_rng(1)
    hidden, batch, seq = SWEEP_BASE.hidden, SWEEP_BASE.batch, SWEEP_BASE.seq
    segment = None if layout == "distilbert" else rng.standard_normal((2, hidden), np.float32)
    position = rng.standard_normal((seq + PAD + 1, hidden), np.float32)
    rules = {"position_rule": "after_padding", "padding_idx": PAD} if layout == "roberta" else {}
    try:
        tables = bek.EmbeddingTables(_token_table(vocab), segment, position, **rules)
    except (TypeError, ValueError) as error:  # a commit before the family rules
        raise NotImplementedError(f"{layout} tables: {error}") from None
    input_ids = rng.integers(PAD + 1, vocab, (batch, seq))
    for b, start in ((1, 100), (4, 64), (6, 3)):
        input_ids[b, start:] = PAD
    out = np.full((batch, seq, hidden), np.nan, np.float32)
    options = (
        {"layer_norm": False} if "layer_norm" in inspect.signature(bek.embed).parameters else {}
    )
    call = functools.partial(bek.embed, tables, input_ids, out=out, **options)
    call()
    segment_row = 0.0 if segment is None else segment[0]
    expected = (tables.token[input_ids] + segment_row) + position[_positions(input_ids, layout)]
    if not np.array_equal(out, expected):
        raise AssertionError(f"fused disagrees with plain indexing for {layout}; not timed")
    return call


class Families(_Forward):
    """The fused sum (into ``out=``) by family layout and vocabulary, batch 8 x seq 128."""

    params = (LAYOUTS, VOCABS)
    param_names = ("layout", "vocab")

    def setup(self, layout, vocab):
        self.call = family_call(layout, vocab)

    def time_forward(self, layout, vocab):
        self.call()
