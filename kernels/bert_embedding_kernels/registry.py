"""One record per implementation: everything the rest of the code needs to know about it.

The API's dispatch, ``method="auto"``, the tests, the asv and pytest-benchmark
suites and the report all iterate over :data:`REGISTRY`; none keeps a list of
its own. Adding a method is one :class:`Implementation` here plus its module in
:mod:`bert_embedding_kernels.methods`. Outside implementations (torch, onnxruntime) are records
of the same class in :mod:`bert_embedding_kernels.bench.engine.peers`, so the bench treats ours and
theirs alike.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .dtypes import FLOAT_DTYPES, is_half
from .methods import concat, gather, onehot
from .methods.fused import backward as fused_backward
from .methods.fused import forward as fused
from .methods.fused import half as fused_half

# Where an implementation's result may differ from the naive reference:
BITWISE = "bitwise"  # adds (token + segment) + position in the tables' dtype: identical bits
BOUNDED = "bounded"  # BLAS may order the terms: within 2u(|a| + |b| + |c|), u = eps / 2


@dataclass(frozen=True)
class Implementation:
    """One way to compute BERT's summed embeddings (and, where it has one, its backward).

    ``forward(tables, batch, out[, memory_budget])`` writes the sum into ``out``;
    ``forward_norm(tables, batch, sums, out)``, where the implementation fuses
    LayerNorm, writes LayerNorm(sum) into ``out`` (and the sum into ``sums``
    unless it is ``out``); without it, LayerNorm runs in numpy after the sum.
    ``backward(tables, batch, grad, padding_idx[, memory_budget])`` returns
    :class:`bert_embedding_kernels.EmbeddingGradients`. ``memory_budget`` is passed only where
    ``budgeted``. For peers (``origin="peer"``) ``forward``/``forward_norm``
    build a call ``(input_ids, token_type_ids) -> output`` from the tables and
    ``requires`` names the modules they import.
    """

    name: str
    summary: str
    forward: Callable | None
    backward: Callable | None = None
    forward_norm: Callable | None = None
    budgeted: bool = False  # extra memory bounded by memory_budget (chunked)
    # backward(..., into=gradients) adds into the caller's arrays itself (else the
    # API adds a fresh result into them).
    accumulates: bool = False
    agreement: str = BITWISE
    # Expected log-log slope of time against the vocabulary size and the tokens.
    vocab_growth: float = 0.0
    token_growth: float = 1.0
    # "cuda": the kernels in kernels/bert_embedding_kernels/cuda run it for device tables
    # (EmbeddingTables.to_device()).
    devices: tuple[str, ...] = ("cpu",)
    dtypes: tuple[str, ...] = tuple(d.name for d in FLOAT_DTYPES)
    origin: str = "kernels"  # or "peer"
    requires: tuple[str, ...] = ()

    @property
    def one_hot(self) -> bool:
        """Whether its cost grows with the rows of a one-hot code (vocabulary and all)."""
        return self.vocab_growth > 0


def _by_dtype(float_kernel: Callable, half_kernel: Callable) -> Callable:
    """One entry point whose kernel is chosen by the tables' dtype (16-bit or not)."""

    def run(tables, *arguments):
        return (half_kernel if is_half(tables.dtype) else float_kernel)(tables, *arguments)

    run.__name__ = float_kernel.__name__
    return run


REGISTRY: dict[str, Implementation] = {
    record.name: record
    for record in (
        Implementation(
            name="onehot",
            summary="three one-hot matmuls, onehot(t) @ Wt + onehot(s) @ Ws + onehot(p) @ Wp",
            forward=onehot.onehot_sum,
            backward=onehot.onehot_backward,
            budgeted=True,
            agreement=BOUNDED,
            vocab_growth=1.0,
        ),
        Implementation(
            name="concat",
            summary="one concatenated one-hot code times the stacked table",
            forward=concat.concat_sum,
            backward=concat.concat_backward,
            budgeted=True,
            agreement=BOUNDED,
            vocab_growth=1.0,
        ),
        Implementation(
            name="gather",
            summary="numpy fancy indexing, token[ids] + segment[tt] + position[pos]",
            forward=gather.gather_sum,
            backward=gather.gather_backward,
        ),
        Implementation(
            name="fused",
            summary="one parallel numba pass: three rows read, one written",
            forward=_by_dtype(fused.fused_sum, fused_half.fused_sum_half),
            forward_norm=_by_dtype(fused.fused_sum_norm, fused_half.fused_sum_norm_half),
            backward=fused_backward.fused_backward,
            accumulates=True,
            devices=("cpu", "cuda"),
        ),
    )
}

METHODS: tuple[str, ...] = tuple(REGISTRY)
BACKWARD_METHODS: tuple[str, ...] = tuple(n for n, r in REGISTRY.items() if r.backward)


def implementation(name: str) -> Implementation:
    """The record of ``name`` (the caller has validated it)."""
    return REGISTRY[name]
