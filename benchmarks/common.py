"""What the suites share: the benchmark shapes, warmed-up calls, guards for old commits.

asv runs today's suite against every commit it benchmarks, so each optional part of
the package is imported under a guard:

- ``kernels.cases`` (shapes, inputs), ``kernels.roofline`` (the copy reference) and
  ``kernels.equivalence`` landed in c9a97b2. Before it, shapes and inputs fall back
  to a copy of c9a97b2's definitions (the same values and the same random inputs,
  so results line up across that commit); the copy reference and the equivalence
  numbers are skipped there.

asv files every result under its parameter's position in the grid it discovered,
while each commit's run imports that commit's ``kernels.cases``. Changing a sweep in
``kernels/cases.py`` (other than by appending to it) would therefore file old
commits' results under the wrong parameter values: extend sweeps, never reorder them.
"""

from __future__ import annotations

import functools

import numpy as np

import kernels

try:
    from kernels.cases import SEQ_LENS, SWEEP_BASE, VOCAB_SIZES, make_inputs
except ImportError:  # before c9a97b2
    from dataclasses import dataclass, replace

    @dataclass(frozen=True)
    class _Shape:
        batch: int
        seq: int
        hidden: int
        vocab: int
        max_positions: int = 512
        type_vocab: int = 2
        dtype: str = "float32"

        def with_seq(self, seq):
            return replace(self, seq=seq, max_positions=max(self.max_positions, seq))

        def with_vocab(self, vocab):
            return replace(self, vocab=vocab)

    VOCAB_SIZES = (1000, 8000, 30522, 100_000, 250_000)
    SEQ_LENS = (32, 64, 128, 256, 512, 1024, 2048)
    SWEEP_BASE = _Shape(batch=8, seq=128, hidden=768, vocab=30522)

    def make_inputs(shape, seed=0):
        tables = kernels.EmbeddingTables.random(
            shape.vocab,
            shape.hidden,
            max_positions=shape.max_positions,
            type_vocab_size=shape.type_vocab,
            dtype=shape.dtype,
        )
        rng = np.random.default_rng(seed)
        input_ids = rng.integers(0, shape.vocab, size=(shape.batch, shape.seq), dtype=np.int64)
        token_type_ids = np.zeros((shape.batch, shape.seq), dtype=np.int64)
        token_type_ids[:, shape.seq // 2 :] = min(1, shape.type_vocab - 1)
        return tables, input_ids, token_type_ids


try:
    from kernels.roofline import CopyReference
except ImportError:  # before c9a97b2
    CopyReference = None

# The forward classes time the memory roofline as one more "method": asv then draws
# it in the same graph as the four methods, at every parameter value.
COPY = "copy"
FORWARD_METHODS = (*kernels.METHODS, COPY)

# onehot and concat cost tokens x vocab x hidden multiply-adds. Measured here (2
# cores, hidden 768, float32, a full asv run): 0.4 s per call at 1024 tokens x vocab
# 30522, 3 to 4.5 s at 1024 x 100k, 1.7 to 2.2 s at 4096 x 30522. A combination
# costs three calls or more per round (setup's warm-up, at least two samples), so
# above this many one-hot cells (tokens x vocab) they are skipped: vocab 250k in
# the vocab sweep (about 10 s a call), seq 1024 and 2048 in the sequence sweep
# (about 4 and 9 s a call).
ONE_HOT_MAX_CELLS = 2**27


def output_shape(shape) -> tuple[int, int, int]:
    return (shape.batch, shape.seq, shape.hidden)


@functools.lru_cache(maxsize=1)
def forward_call(method: str, shape):
    """A zero-argument call of ``method`` at ``shape``, already run once.

    The first run compiles every numba kernel it needs for exactly these dtypes
    and layouts and faults in ``out``'s pages, so neither lands in a timing.
    asv re-runs ``setup`` before every timed sample; the cache hands back the
    same warmed-up call (its inputs are never modified and ``out`` is rewritten
    whole), so setup stays cheap.

    Raises NotImplementedError (asv: skipped) for a combination the suite does
    not run at this commit.
    """
    if method == COPY:
        if CopyReference is None:
            raise NotImplementedError("kernels.roofline.CopyReference is missing (before c9a97b2)")
        return CopyReference(output_shape(shape), shape.dtype)  # runs itself once
    if method in ("onehot", "concat") and shape.batch * shape.seq * shape.vocab > ONE_HOT_MAX_CELLS:
        raise NotImplementedError(f"{method} at {shape} takes longer than the suite allows")
    tables, input_ids, token_type_ids = make_inputs(shape)
    out = np.empty(output_shape(shape), dtype=tables.dtype)
    call = functools.partial(
        kernels.embed, tables, input_ids, token_type_ids, method=method, out=out
    )
    call()
    return call
