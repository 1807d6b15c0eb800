"""The public surface: ``embed``, ``embed_backward`` and one function per method.

Each call validates every argument (:mod:`bert_embedding_kernels.validate`), looks the method
up in :mod:`bert_embedding_kernels.registry` and runs it; nothing here knows a method by name.
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np

from . import auto, devices
from .dtypes import accumulator, float_dtype
from .gradients import EmbeddingGradients
from .layernorm import layer_norm as numpy_layer_norm
from .methods.onehot import DEFAULT_MEMORY_BUDGET
from .pool import OUTPUTS
from .registry import BACKWARD_METHODS, METHODS, REGISTRY, implementation
from .tables import EmbeddingTables
from .validate.calls import check_backward, check_forward
from .validate.options import check_memory_budget, check_method  # the device road

# Which table dtypes each method takes, for the one validation a call goes through.
FORWARD_DTYPES = {name: implementation(name).dtypes for name in METHODS}
BACKWARD_DTYPES = {name: implementation(name).dtypes for name in BACKWARD_METHODS}


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
    layer_norm: bool | None = None,
    return_sum: bool = False,
    out_dtype=None,
    attention_mask=None,
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
    method : str
        One of :data:`bert_embedding_kernels.METHODS` (the registry's names:
        ``bert_embedding_kernels.registry``) or ``"auto"``: which implementation
        computes the sum; all return the same values within the bound stated in
        the README ("Equivalence"). ``"auto"`` picks
        the one a measured cost model predicts fastest for this shape
        (:mod:`bert_embedding_kernels.auto`).
    past_length : int, default 0
        Tokens already processed (for incremental decoding); shifts default positions.
    out : ndarray, shape (batch, seq, hidden), optional
        C-contiguous, writable array of the output dtype to write into, sharing
        no memory with anything the call reads (the tables, their LayerNorm
        parameters, the ids, a mask the tables multiply by): ValueError otherwise.
    memory_budget : int, default 256 MiB
        Bytes of extra memory the ``onehot`` and ``concat`` methods may use; they
        process tokens in chunks to stay within it. Ignored by the other methods.
    layer_norm : bool, optional
        By default the tables' ``norm_by_default``: True for tables read from a
        module or checkpoint whose embeddings end in LayerNorm (``from_torch``,
        ``from_safetensors``), so that the default call reproduces the module; False
        for tables built from arrays or ``random``.
        True: return BERT's ``LayerNorm(sum)`` with the tables' ``norm_weight``,
        ``norm_bias`` and ``norm_eps`` (statistics in float64). The
        fused method normalises each row inside the kernel while it is in L1;
        the others normalise in numpy after the sum.
    return_sum : bool, default False
        With ``layer_norm=True``, also return the pre-norm sum (like
        onnxruntime's ``embedding_sum`` output) as a second, new array.
    out_dtype : dtype, optional
        The output's dtype: the tables' by default. With float16 or bfloat16
        tables, ``np.float32`` returns the float32 sum before its rounding.
        Every method adds 16-bit tables in float32 and rounds once, so the
        result is within 1 ulp of the exact sum, and gather and fused agree bit
        for bit.
    attention_mask : array_like, shape (batch, seq), optional
        Accepted so that a tokenizer's output can be passed whole
        (``embed(tables, **tokenizer(a, b, return_tensors="np"))``). As in
        transformers, it does not change BERT's embeddings (padded positions are
        embedded like any other; attention ignores them); tables of a family that
        multiplies its output by the mask (DeBERTa-v2, ``masks_output``) do so.

    Ids, tables' arrays and ``out`` may be numpy arrays or CPU torch tensors
    (shared, not copied; tensors that require grad included).

    Returns
    -------
    ndarray, shape (batch, seq, hidden), of ``out_dtype`` (the tables' dtype by default)
        ``out`` when given, else a new array; ``(normalised, sum)`` with
        ``return_sum=True``.

    Raises
    ------
    TypeError, ValueError, IndexError
        The same for every method; see :func:`bert_embedding_kernels.validate.prepare.prepare`.
    """
    if getattr(tables, "device", None) == "cuda":
        if layer_norm is None:  # the host tables' default, carried to the device
            layer_norm = getattr(tables, "norm_by_default", False)
        run = _on_device(tables, method, out_dtype, memory_budget)
        arguments = (input_ids, token_type_ids, position_ids, past_length, out)
        return run(tables, *arguments, layer_norm=layer_norm, return_sum=return_sum)
    call = check_forward(
        tables,
        (input_ids, token_type_ids, position_ids, past_length),
        method=method,
        method_dtypes=FORWARD_DTYPES,
        out=out,
        out_dtype=out_dtype,
        layer_norm=layer_norm,
        return_sum=return_sum,
        attention_mask=attention_mask,
    )
    result = _forward(tables, call, memory_budget)
    if call.mask is not None:  # after LayerNorm, in the output's dtype, as DeBERTa-v2 multiplies
        output = result[0] if call.return_sum else result
        output *= call.mask.astype(output.dtype)[..., None]
    return result


def _forward(tables, call, memory_budget):
    batch, out_dtype, return_sum = call.batch, call.out_dtype, call.return_sum
    method = call.method
    if method == "auto":  # among the methods that take the tables' dtype
        method = auto.choose(
            batch.num_tokens,
            tables.hidden_size,
            tables.dtype.itemsize,
            tables.vocab_size,
            tables.type_vocab_size,
            tables.max_positions,
            dtype=tables.dtype.name,
        )
    record = implementation(method)
    options = {"memory_budget": memory_budget} if record.budgeted else {}
    shape = (*batch.shape, tables.hidden_size)
    result = OUTPUTS.empty(shape, out_dtype) if batch.out is None else batch.out
    if not call.layer_norm:
        return record.forward(tables, batch, result, **options)
    if record.forward_norm is not None:
        sums = OUTPUTS.empty(shape, out_dtype) if return_sum else result
        record.forward_norm(tables, batch, sums, result)
        return (result, sums) if return_sum else result
    # Sum, then LayerNorm in numpy. A 16-bit output must not round the sum before
    # it is normalised: the sum is kept in float32 and rounded once, at the end.
    wide = accumulator(tables.dtype)
    sums = result if out_dtype == wide and not return_sum else np.empty(shape, wide)
    numpy_layer_norm(tables, record.forward(tables, batch, sums, **options), result)
    if return_sum:
        return result, sums.astype(out_dtype, copy=False)  # rounded once if 16-bit
    return result


def embed_backward(
    tables: EmbeddingTables,
    grad_output,
    input_ids,
    token_type_ids=None,
    position_ids=None,
    *,
    method: str = "fused",
    past_length: int = 0,
    padding_idx: int | None = None,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    grad_dtype=None,
    accumulate_into=None,
    order: str = "cpu",
) -> EmbeddingGradients:
    """Gradients of ``embed``'s output with respect to the three tables.

    Row ``r`` of each table's gradient is the sum of ``grad_output[b, s]`` over
    the tokens whose id for that table is ``r`` (zero for rows no token used).

    Parameters
    ----------
    tables : EmbeddingTables
        The tables of the forward pass; only their shapes and dtype are used.
    grad_output : array_like, shape (batch, seq, hidden)
        Gradient of the loss with respect to ``embed``'s output, in the tables'
        dtype (or float32 for 16-bit tables). Any memory layout; strided input is
        copied once.
    input_ids, token_type_ids, position_ids, past_length
        Exactly as for :func:`bert_embedding_kernels.embed`, and validated by the same code.
    method : str
        One of :data:`bert_embedding_kernels.BACKWARD_METHODS` (the registry's
        methods with a backward). ``fused`` (default) is a parallel numba kernel,
        bitwise deterministic whatever the number of threads; ``gather`` uses ``np.add.at``;
        ``onehot`` and ``concat`` compute ``onehot.T @ grad_output`` with BLAS.
    padding_idx : int, optional
        A token-table row whose gradient stays zero, as ``torch.nn.Embedding``'s
        ``padding_idx``: ``0 <= padding_idx < vocab_size``.
    memory_budget : int, default 256 MiB
        Bytes of extra memory ``onehot`` and ``concat`` may use for one-hot codes
        and buffers (they work in tiles to stay within it). Ignored by the others.
    grad_dtype : dtype, optional
        The gradients' dtype. Gradients are accumulated in the tables' dtype, or
        in float32 for float16 and bfloat16 tables; by default they are returned
        in that accumulation dtype (float32 for 16-bit tables, as mixed-precision
        training keeps its gradients). ``grad_dtype=tables.dtype`` rounds each
        accumulated gradient once to the 16-bit format.
    accumulate_into : EmbeddingGradients or tuple of three arrays, optional
        Add the gradients into these arrays (shaped like the tables, of the
        accumulation dtype, C-contiguous, writable) instead of returning new
        ones, as torch accumulates into ``.grad``: a training loop then pays no
        fresh-page cost. ``fused`` adds into them in its single pass (each
        element still in token order, after the value already there); the other
        methods add a fresh result. The ``padding_idx`` row is left as it was.
        None of them may share memory with another, nor with anything the call
        reads (the tables' arrays, the ids, ``grad_output``): ValueError.
    order : {"cpu", "tree"}, default "cpu"
        How each gradient element's terms are added. "cpu": in token order (the
        methods above). "tree": in a fixed binary tree, the same bits for any GPU
        launch shape (docs/GPU.md); device tables only, host tables refuse it.

    Returns
    -------
    EmbeddingGradients
        A named tuple ``(token, segment, position)`` of new C-contiguous arrays
        shaped like the tables, of ``grad_dtype``; with ``accumulate_into``, those
        arrays, the gradients added into them.

    Raises
    ------
    TypeError
        As :func:`bert_embedding_kernels.embed`; also ``grad_output`` of another dtype than the
        tables', a ``padding_idx`` or ``memory_budget`` that is not an int, a
        ``grad_dtype`` that is not a float dtype these tables' gradients come in.
    ValueError
        As :func:`bert_embedding_kernels.embed`; also ``grad_output`` whose shape is not
        ``(batch, seq, hidden)`` (both shapes are named), a ``padding_idx``
        outside ``[0, vocab_size)``, an unknown ``method``, a ``memory_budget``
        too small for one token, ``accumulate_into`` arrays that overlap an input.
    IndexError
        As :func:`bert_embedding_kernels.embed`: an id outside its table.

    Notes
    -----
    ``fused`` and ``gather`` sum each row in token order in the tables' dtype,
    so they agree bit for bit with each other and with a naive loop;
    ``onehot`` and ``concat`` let BLAS choose the order. For a row used by
    ``n`` tokens every order lies within ``n * eps * sum(|g|)`` of the exact sum.
    """
    if getattr(tables, "device", None) == "cuda":  # the device checks order itself
        function = _on_device(tables, method, grad_dtype, memory_budget, backward=True)
        return function(
            tables,
            grad_output,
            input_ids,
            token_type_ids,
            position_ids,
            past_length,
            padding_idx,
            accumulate_into=accumulate_into,
            order=order,
        )
    call = check_backward(
        tables,
        grad_output,
        (input_ids, token_type_ids, position_ids, past_length),
        method=method,
        method_dtypes=BACKWARD_DTYPES,
        padding_idx=padding_idx,
        memory_budget=memory_budget,
        grad_dtype=grad_dtype,
        accumulate_into=accumulate_into,
        order=order,
    )
    batch, grad, padding_idx, into = call.batch, call.grad, call.padding_idx, call.into
    record = implementation(call.method)
    options = {"memory_budget": call.memory_budget} if record.budgeted else {}
    if into is not None:
        with _position_padding_row_kept(tables, into.position):
            if record.accumulates:
                return record.backward(tables, batch, grad, padding_idx, into=into, **options)
            fresh = record.backward(tables, batch, grad, padding_idx, **options)
            for target, gradient in zip(into, fresh, strict=True):
                np.add(target, gradient, out=target)
        return into
    gradients = record.backward(tables, batch, grad, padding_idx, **options)
    if tables.rule.padding:
        gradients.position[tables.padding_idx] = 0
    if call.grad_dtype == grad.dtype:
        return gradients
    return EmbeddingGradients(*(g.astype(call.grad_dtype) for g in gradients))  # one rounding


@contextmanager
def _position_padding_row_kept(tables: EmbeddingTables, position_gradient: np.ndarray):
    """A rule with padding (RoBERTa's) pads the position table at ``padding_idx``: that row
    gets no gradient (as torch's ``nn.Embedding(padding_idx=...)``), so an accumulated
    gradient keeps it as it was."""
    if not tables.rule.padding:
        yield
        return
    kept = position_gradient[tables.padding_idx].copy()
    try:
        yield
    finally:
        position_gradient[tables.padding_idx] = kept


def _on_device(tables, method, dtype, memory_budget, backward: bool = False):
    """The ``cuda`` backend's function that runs ``method`` on device tables, or a clear error."""
    on_gpu = tuple(n for n, r in REGISTRY.items() if "cuda" in r.devices)
    if method == "auto":
        method = on_gpu[0]
    if method not in on_gpu:
        known = METHODS if not backward else BACKWARD_METHODS
        check_method(method, known, auto=not backward)  # an unknown name: the usual error
        raise ValueError(
            f"method is {method!r}, which has no CUDA implementation; with device tables "
            f"(EmbeddingTables.to_device()) it must be one of {on_gpu}, or use host tables."
        )
    # Device gradients come in the tables' grad_dtype: float32 for 16-bit tables, as the CPU's.
    returned = getattr(tables, "grad_dtype", tables.dtype) if backward else tables.dtype
    if dtype is not None:
        chosen = float_dtype(dtype)  # None for no float dtype at all: never equal to returned
        if chosen is None or chosen != returned:
            name = "grad_dtype" if backward else "out_dtype"
            raise TypeError(f"{name} is {dtype!r}; device tables return {returned} here.")
    memory_budget = check_memory_budget(memory_budget)  # validated, though no GPU method uses it
    device = devices.backend(tables.device)  # loaded already: it made the tables
    return device.embed_backward if backward else device.embed


def _method_function(method: str):
    def run(tables, input_ids, token_type_ids=None, position_ids=None, **options):
        return embed(tables, input_ids, token_type_ids, position_ids, method=method, **options)

    run.__name__ = run.__qualname__ = method
    run.__doc__ = (
        f"``embed(..., method={method!r})``: the same arguments, errors and result as "
        ":func:`bert_embedding_kernels.embed`."
    )
    return run


# bert_embedding_kernels.onehot, .gather, ...: one function per registered method.
METHOD_FUNCTIONS = {name: _method_function(name) for name in METHODS}
