"""The one grid of benchmark shapes and the id generators, shared by every suite.

Every suite builds its inputs through :func:`make_inputs`, so the three always
measure the same thing: uniform random ids (seeded), token types alternating
between the two halves of each sequence (so segment 1 is really read), default
positions.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache

import numpy as np

from ...tables import EmbeddingTables


@dataclass(frozen=True)
class Shape:
    """One benchmark point: the batch and the tables it runs on."""

    batch: int
    seq: int
    hidden: int
    vocab: int
    max_positions: int = 512
    type_vocab: int = 2
    dtype: str = "float32"

    @property
    def name(self) -> str:
        return f"b{self.batch}-s{self.seq}-h{self.hidden}-v{self.vocab}-{self.dtype}"

    @property
    def tokens(self) -> int:
        return self.batch * self.seq

    @property
    def output_nbytes(self) -> int:
        return self.tokens * self.hidden * np.dtype(self.dtype).itemsize

    def with_seq(self, seq: int) -> Shape:
        """The same shape at another sequence length, with a position table that fits."""
        return replace(self, seq=seq, max_positions=max(self.max_positions, seq))

    def with_vocab(self, vocab: int) -> Shape:
        return replace(self, vocab=vocab)


BERT_BASE = Shape(batch=32, seq=512, hidden=768, vocab=30522)

# The sweeps the asv suite and the full report measure: O(V) cost for the
# one-hot paths shows up over vocab; the gathers stay flat.
VOCAB_SIZES = (1000, 8000, 30522, 100_000, 250_000)
SEQ_LENS = (32, 64, 128, 256, 512, 1024, 2048)
SWEEP_BASE = Shape(batch=8, seq=128, hidden=768, vocab=30522)

# Table dtypes the asv suite and pytest-benchmark time side by side (the dtype axis).
BENCH_DTYPES = ("float32", "bfloat16")

# `embench report --quick`: the same sweeps, fewer points, a smaller batch.
QUICK_BASE = Shape(batch=4, seq=128, hidden=768, vocab=30522)
# Seconds of timing per report point, all contenders together (report.Settings.defaults).
SWEEP_BUDGET = 6.0
QUICK_BUDGET = 2.5
# `embench perf`: seconds of forward rounds at BERT-base (the backward gets half).
PERF_BUDGET = 30.0
QUICK_VOCAB_SIZES = (1000, 8000, 30522)
QUICK_SEQ_LENS = (32, 128, 512)

# One short sequence, as a server sees it: what a small call costs.
SMALL_CALL = Shape(batch=1, seq=128, hidden=768, vocab=30522)
# The report's small-call sweep (batch 1 at the base hidden size and vocabulary):
# where per-call overheads decide, and where method="auto" must still be right.
SMALL_SEQ_LENS = (8, 16, 32, 64, 128)

# CI sizes (pytest-benchmark on every submission): small enough that all four
# methods, one-hot paths included, finish in seconds on 2 cores.
CI_BASE = Shape(batch=4, seq=128, hidden=256, vocab=8000)
CI_VOCAB_SIZES = (1000, 8000, 30522)
CI_SEQ_LENS = (32, 128, 512)


def vocab_sweep(base: Shape = SWEEP_BASE, sizes=VOCAB_SIZES) -> list[Shape]:
    return [base.with_vocab(v) for v in sizes]


def seq_sweep(base: Shape = SWEEP_BASE, lens=SEQ_LENS) -> list[Shape]:
    return [base.with_seq(s) for s in lens]


@lru_cache(maxsize=4)
def make_tables(vocab: int, hidden: int, max_positions: int, type_vocab: int, dtype: str):
    return EmbeddingTables.random(
        vocab, hidden, max_positions=max_positions, type_vocab_size=type_vocab, dtype=dtype
    )


def make_inputs(shape: Shape, seed: int = 0):
    """Tables and ids for ``shape``: ``(tables, input_ids, token_type_ids)``."""
    tables = make_tables(
        shape.vocab, shape.hidden, shape.max_positions, shape.type_vocab, shape.dtype
    )
    rng = np.random.default_rng(seed)
    input_ids = rng.integers(0, shape.vocab, size=(shape.batch, shape.seq), dtype=np.int64)
    token_type_ids = np.zeros((shape.batch, shape.seq), dtype=np.int64)
    token_type_ids[:, shape.seq // 2 :] = min(1, shape.type_vocab - 1)
    return tables, input_ids, token_type_ids


# RoBERTa's padding id: the after_padding families' (families.py) padding_idx here.
FAMILY_PAD = 1


def position_rule(family) -> tuple[str | None, bool]:
    """``family``'s position rule (a record of bert_embedding_kernels.position_rules) as
    (its name, whether it numbers after the padding); (None, False) without positions."""
    rule = family.positions
    return getattr(rule, "name", None), bool(getattr(rule, "padding", False))


def family_shape(shape: Shape, family) -> Shape:
    """``shape`` with a position table that holds ``family``'s positions: RoBERTa's rule
    numbers them from ``padding_idx + 1`` (its checkpoints have 514 rows for 512 tokens), a
    rule with an offset from that offset."""
    rule = family.positions
    extra = FAMILY_PAD + 1 if getattr(rule, "padding", False) else getattr(rule, "offset", 0)
    if not extra:
        return shape
    return replace(shape, max_positions=max(shape.max_positions, shape.seq) + extra)


def make_family_inputs(shape: Shape, family, seed: int = 0):
    """:func:`make_inputs` with the layout of ``family`` (a
    :class:`bert_embedding_kernels.families.Family`): the tables it has (no segment table:
    token types omitted), its position rule (one numbered after the padding, RoBERTa's:
    padding id :data:`FAMILY_PAD`, the last quarter of every other sequence padded, so the rule has
    padding to number) and its LayerNorm (none: no LayerNorm parameters), as
    ``EmbeddingTables.from_safetensors`` reads a checkpoint of that family."""
    shape = family_shape(shape, family)
    random, input_ids, token_type_ids = make_inputs(shape, seed)
    parts = {
        "segment": random.segment if family.segment else None,
        "position": random.position if family.positions else None,
        "masks_output": family.deberta,
        "family": family.name,
    }
    name, padded = position_rule(family)
    if name is not None:
        parts["position_rule"] = name
    if padded:
        parts["padding_idx"] = FAMILY_PAD
        input_ids = input_ids.copy()
        input_ids[1::2, shape.seq - shape.seq // 4 :] = FAMILY_PAD
    if family.layer_norm:
        parts |= {"norm_weight": random.norm_weight, "norm_bias": random.norm_bias}
    tables = EmbeddingTables(random.token, **parts)
    return tables, input_ids, token_type_ids if family.segment else None


def zipf_ids(vocab_size: int, shape, *, exponent: float = 1.0, seed: int = 0) -> np.ndarray:
    """Token ids whose frequencies follow Zipf's law, as in natural language.

    The id of frequency rank ``r`` (1-based) is drawn with probability
    proportional to ``r ** -exponent``; ranks are shuffled over the vocabulary
    (seeded), so frequent ids are scattered like a real tokenizer's. At BERT-base
    (vocab 30522, 16384 tokens, exponent 1) about 5200 distinct rows are used and
    the most frequent id takes about 9% of the tokens.

    Returns
    -------
    ndarray of int64, shape ``shape``
    """
    rng = np.random.default_rng(seed)
    weights = np.arange(1, vocab_size + 1, dtype=np.float64) ** -float(exponent)
    ranks = rng.choice(vocab_size, size=shape, p=weights / weights.sum())
    return rng.permutation(vocab_size)[ranks].astype(np.int64)
