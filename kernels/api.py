"""The public surface: ``embed`` and one function per method."""

from __future__ import annotations

import numpy as np

from .fused import fused_sum, fused_sum_norm
from .gather import gather_sum
from .layernorm import layer_norm as numpy_layer_norm
from .onehot import DEFAULT_MEMORY_BUDGET, concat_sum, onehot_sum
from .tables import EmbeddingTables
from .validate import prepare

METHODS = ("onehot", "concat", "gather", "fused")

# Methods whose extra memory is bounded by ``memory_budget`` (the others ignore it).
_BUDGETED = {"onehot": onehot_sum, "concat": concat_sum}
_UNBUDGETED = {"gather": gather_sum, "fused": fused_sum}


def embed(
    tables: EmbeddingTables,
    input_ids,
    token_type_ids=None,
    position_ids=None,
    *,
    method: str = "fused",
    past_length: int = 0,
    out: np.ndarray | None = None,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    layer_norm: bool = False,
    return_sum: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """BERT's summed input embeddings, ``Wt[input_ids] + Ws[token_type_ids] + Wp[position_ids]``.

    Parameters
    ----------
    tables : EmbeddingTables
    input_ids : array_like of int, shape (batch, seq)
        Any integer dtype; int32 and int64 reach the fused kernel without a copy.
    token_type_ids : array_like of int, shape (batch, seq), optional
        Segment ids; all zeros when omitted.
    position_ids : array_like of int, shape (seq,), (1, seq) or (batch, seq), optional
        When omitted, ``past_length .. past_length + seq - 1`` for every sequence.
        When given, ``past_length`` is ignored (as in Hugging Face's BertEmbeddings).
    method : {"onehot", "concat", "gather", "fused", "auto"}
        Which implementation computes the sum; all four return the same values
        within the bound stated in the README ("Equivalence"). ``"auto"`` picks
        the one a measured cost model predicts fastest for this shape
        (:mod:`kernels.auto`).
    past_length : int, default 0
        Tokens already processed (for incremental decoding); shifts default positions.
    out : ndarray, shape (batch, seq, hidden), optional
        C-contiguous, writable array of the tables' dtype to write into.
    memory_budget : int, default 256 MiB
        Bytes of extra memory the ``onehot`` and ``concat`` methods may use; they
        process tokens in chunks to stay within it. Ignored by the other methods.
    layer_norm : bool, default False
        Return BERT's ``LayerNorm(sum)`` with the tables' ``norm_weight``,
        ``norm_bias`` and ``norm_eps`` (statistics in float64, two-pass). The
        fused method normalises each row inside the kernel while it is in L1;
        the others normalise in numpy after the sum.
    return_sum : bool, default False
        With ``layer_norm=True``, also return the pre-norm sum (like
        onnxruntime's ``embedding_sum`` output) as a second, new array.

    Returns
    -------
    ndarray, shape (batch, seq, hidden), the tables' dtype
        ``out`` when given, else a new array; ``(normalised, sum)`` with
        ``return_sum=True``.

    Raises
    ------
    TypeError, ValueError, IndexError
        The same for every method; see :func:`kernels.validate.prepare`.
    """
    known = isinstance(method, str) and (method in _BUDGETED or method in _UNBUDGETED)
    if not known and method != "auto":
        raise ValueError(f"method is {method!r}; it must be one of {METHODS} or 'auto'.")
    batch = prepare(tables, input_ids, token_type_ids, position_ids, past_length, out)
    _check_norm_options(tables, layer_norm, return_sum)
    if method == "auto":
        from .auto import choose  # imported here: auto's cost model imports this module

        method = choose(
            batch.num_tokens,
            tables.hidden_size,
            tables.dtype.itemsize,
            tables.vocab_size,
            tables.type_vocab_size,
            tables.max_positions,
        )
    if method in _BUDGETED:
        compute = _BUDGETED[method]
        options = {"memory_budget": memory_budget}
    else:
        compute = _UNBUDGETED[method]
        options = {}
    shape = (*batch.shape, tables.hidden_size)
    result = np.empty(shape, dtype=tables.dtype) if batch.out is None else batch.out
    if not layer_norm:
        return compute(tables, batch, result, **options)
    sums = np.empty(shape, dtype=tables.dtype) if return_sum else result
    if method == "fused":
        fused_sum_norm(tables, batch, sums, result)
    else:
        numpy_layer_norm(tables, compute(tables, batch, sums, **options), result)
    return (result, sums) if return_sum else result


def _check_norm_options(tables: EmbeddingTables, layer_norm, return_sum) -> None:
    for name, value in (("layer_norm", layer_norm), ("return_sum", return_sum)):
        if not isinstance(value, (bool, np.bool_)):
            raise TypeError(f"{name} is {type(value).__name__}; it must be True or False.")
    if layer_norm and not tables.has_layer_norm:
        raise ValueError(
            "layer_norm=True needs the LayerNorm parameters, but the tables have no "
            "norm_weight and norm_bias; build them with EmbeddingTables(..., norm_weight=..., "
            "norm_bias=..., norm_eps=...)."
        )
    if return_sum and not layer_norm:
        raise ValueError("return_sum=True needs layer_norm=True: without it the result is the sum.")


def _method_function(method: str):
    def run(tables, input_ids, token_type_ids=None, position_ids=None, **options):
        return embed(tables, input_ids, token_type_ids, position_ids, method=method, **options)

    run.__name__ = run.__qualname__ = method
    run.__doc__ = (
        f"``embed(..., method={method!r})``: the same arguments, errors and result as "
        ":func:`kernels.embed`."
    )
    return run


onehot = _method_function("onehot")
concat = _method_function("concat")
gather = _method_function("gather")
fused = _method_function("fused")
