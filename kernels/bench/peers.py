"""Outside implementations people reach for instead, each import-guarded.

Every peer is built once per tables (weights converted, functions compiled
outside any timing) and then called as ``peer(input_ids, token_type_ids)``
with default positions ``0 .. seq-1``; it allocates its output, as these
libraries do. Install the optional ones with ``pip install
'bert-embedding-kernels[peers]'``.

Each peer is a :class:`kernels.registry.Implementation` record, as our methods
are (``origin="peer"``; ``forward``/``forward_norm`` build the call from the
tables). :data:`PEERS` compute the plain sum (compare them with
``embed(...)``); :data:`LAYER_NORM_PEERS` always normalise, as BERT's
embedding layer does (compare them with ``embed(..., layer_norm=True)``).
"""

from __future__ import annotations

import functools
import importlib.util
import os
import warnings
from collections.abc import Callable

import numpy as np

from ..registry import BITWISE, BOUNDED, Implementation
from ..tables import EmbeddingTables

Peer = Callable[[np.ndarray, np.ndarray], object]

# Fair interleaving: torch's OpenMP threads spin after each call by default and,
# interleaved on few cores, steal the next contender's CPU (measured: fused
# backward 26 ms after torch calls against 11.4 ms with OMP_WAIT_POLICY=PASSIVE;
# torch's own times did not change). Set before torch starts its pool, in the
# bench only, and only where the user has not chosen; onnxruntime's spinning is
# switched off per session below for the same reason.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def _numpy_indexing(tables: EmbeddingTables) -> Peer:
    token, segment, position = tables.token, tables.segment, tables.position

    def numpy_indexing(input_ids, token_type_ids):
        positions = np.arange(input_ids.shape[1])
        return token[input_ids] + segment[token_type_ids] + position[positions]

    return numpy_indexing


def _torch_function(tables: EmbeddingTables):
    import torch
    import torch.nn.functional as F

    with warnings.catch_warnings():
        # Our tables are read-only views; torch warns that it cannot mark the
        # tensors read-only. These weights are only ever read.
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        weights = [torch.from_numpy(t) for t in (tables.token, tables.segment, tables.position)]

    def embeddings(input_ids, token_type_ids, positions):
        return (
            F.embedding(input_ids, weights[0])
            + F.embedding(token_type_ids, weights[1])
            + F.embedding(positions, weights[2])
        )

    return torch, embeddings


def _torch_eager(tables: EmbeddingTables) -> Peer:
    torch, embeddings = _torch_function(tables)

    def torch_eager(input_ids, token_type_ids):
        positions = torch.arange(input_ids.shape[1])
        with torch.inference_mode():
            return embeddings(
                torch.from_numpy(input_ids), torch.from_numpy(token_type_ids), positions
            )

    return torch_eager


def _three_embeddings(ids, types, positions, token, segment, position):
    import torch.nn.functional as F

    return F.embedding(ids, token) + F.embedding(types, segment) + F.embedding(positions, position)


@functools.cache
def _compiled_embeddings():
    """One ``torch.compile`` of the sum for every shape and every set of tables.

    The weights are arguments, not constants, and shapes are dynamic: compiled
    once per process (about 3 s here, and 1 s more the first time batch is 1),
    where a compile per shape and table (``dynamic=False`` around a closure) took
    about 20 s each and kept torch.compile out of the sweeps.
    """
    import torch

    return torch.compile(_three_embeddings, dynamic=True)


def _torch_compile(tables: EmbeddingTables) -> Peer:
    torch, _ = _torch_function(tables)
    compiled = _compiled_embeddings()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        weights = [torch.from_numpy(t) for t in (tables.token, tables.segment, tables.position)]

    def torch_compile(input_ids, token_type_ids):
        positions = torch.arange(input_ids.shape[1])
        with torch.inference_mode():
            ids, types = torch.from_numpy(input_ids), torch.from_numpy(token_type_ids)
            return compiled(ids, types, positions, *weights)

    return torch_compile


def _layer_norm_parameters(tables: EmbeddingTables, peer: str) -> None:
    if not tables.has_layer_norm:
        raise ValueError(
            f"peer {peer!r} normalises, but the tables have no norm_weight and norm_bias; "
            "build them with EmbeddingTables(..., norm_weight=..., norm_bias=...)."
        )


def _torch_eager_layer_norm(tables: EmbeddingTables) -> Peer:
    _layer_norm_parameters(tables, "torch-eager-layernorm")
    torch, embeddings = _torch_function(tables)
    import torch.nn.functional as F

    weight = torch.from_numpy(tables.norm_weight.copy())
    bias = torch.from_numpy(tables.norm_bias.copy())
    shape = (tables.hidden_size,)

    def torch_eager_layernorm(input_ids, token_type_ids):
        positions = torch.arange(input_ids.shape[1])
        with torch.inference_mode():
            summed = embeddings(
                torch.from_numpy(input_ids), torch.from_numpy(token_type_ids), positions
            )
            return F.layer_norm(summed, shape, weight, bias, tables.norm_eps)

    return torch_eager_layernorm


def embed_layer_norm_model(tables: EmbeddingTables, *, embedding_sum: bool = False):
    """An ONNX model of one ``com.microsoft.EmbedLayerNormalization`` node over ``tables``.

    onnxruntime's fused BERT embedding layer: inputs ``input_ids`` and
    ``segment_ids`` (int32, batch x seq); the five weights (word, position and
    segment tables, ``gamma``, ``beta``) are initializers, as in an exported
    model; positions default to ``0 .. seq-1``; attribute ``epsilon`` is the
    tables' ``norm_eps`` (stored as float32).

    Parameters
    ----------
    tables : EmbeddingTables
        float32 tables with LayerNorm parameters (onnxruntime's CPU kernel of
        this op is float32 only).
    embedding_sum : bool, default False
        Also output ``embedding_sum``, the pre-norm sum (``mask_index``, which
        needs a mask input, is never returned).

    Returns
    -------
    onnx.ModelProto
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    _layer_norm_parameters(tables, "onnxruntime-embedlayernorm")
    if tables.dtype != np.float32:
        raise TypeError(
            f"tables have dtype {tables.dtype}; onnxruntime's EmbedLayerNormalization runs "
            "in float32 only. Build float32 tables."
        )
    weights = {
        "word_embedding": tables.token,
        "position_embedding": tables.position,
        "segment_embedding": tables.segment,
        "gamma": tables.norm_weight,
        "beta": tables.norm_bias,
    }
    # The op's shape inference writes mask_index (output 1) whether or not a mask
    # is given, so the node names it; the graph does not return it.
    outputs = ["output", "mask_index", "embedding_sum"][: 3 if embedding_sum else 2]
    node = helper.make_node(
        "EmbedLayerNormalization",
        ["input_ids", "segment_ids", *weights],
        outputs,
        domain="com.microsoft",
        epsilon=tables.norm_eps,
    )
    ids = [
        helper.make_tensor_value_info(name, TensorProto.INT32, ["batch", "seq"])
        for name in ("input_ids", "segment_ids")
    ]
    results = [
        helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", "seq", tables.hidden_size])
        for name in outputs
        if name != "mask_index"
    ]
    graph = helper.make_graph(
        [node],
        "bert_embeddings",
        ids,
        results,
        initializer=[numpy_helper.from_array(np.asarray(a), name) for name, a in weights.items()],
    )
    return helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)],
        producer_name="bert-embedding-kernels",
        # An IR version old enough for any onnxruntime the extra may resolve to.
        ir_version=min(onnx.IR_VERSION, 9),
    )


def onnxruntime_embed_layer_norm(tables: EmbeddingTables, *, embedding_sum: bool = False) -> Peer:
    """onnxruntime's ``EmbedLayerNormalization`` as a peer, session built once.

    ``peer(input_ids, token_type_ids)`` returns the normalised output, or
    ``(output, embedding_sum)`` with ``embedding_sum=True``. Ids are converted
    to int32 inside the call (the op takes nothing else), a cost onnxruntime
    users with int64 ids pay too.
    """
    session = _onnxruntime_session(embed_layer_norm_model(tables, embedding_sum=embedding_sum))
    names = ["output", "embedding_sum"] if embedding_sum else ["output"]

    def onnxruntime_embedlayernorm(input_ids, token_type_ids):
        feeds = {
            "input_ids": np.asarray(input_ids, dtype=np.int32),
            "segment_ids": np.asarray(token_type_ids, dtype=np.int32),
        }
        results = session.run(names, feeds)
        return tuple(results) if embedding_sum else results[0]

    return onnxruntime_embedlayernorm


# name -> (modules it needs; factory)
def onnxruntime_gather_add_model(tables: EmbeddingTables):
    """An ONNX model of BERT's sum as exporters write it: three Gather nodes and two Adds.

    Inputs ``input_ids`` and ``segment_ids`` (int64, batch x seq); positions
    ``0 .. seq-1`` are built in the graph (Shape, Gather, Range); the tables
    are initializers.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    if tables.dtype != np.float32:
        raise TypeError(f"tables have dtype {tables.dtype}; this graph is built in float32.")
    h = helper
    nodes = [
        h.make_node("Shape", ["input_ids"], ["shape"]),
        h.make_node("Gather", ["shape", "one"], ["seq"], axis=0),
        h.make_node("Range", ["zero", "seq", "one"], ["positions"]),
        h.make_node("Gather", ["word_embedding", "input_ids"], ["token_rows"]),
        h.make_node("Gather", ["segment_embedding", "segment_ids"], ["segment_rows"]),
        h.make_node("Gather", ["position_embedding", "positions"], ["position_rows"]),
        h.make_node("Add", ["token_rows", "segment_rows"], ["partial"]),
        h.make_node("Add", ["partial", "position_rows"], ["output"]),
    ]
    constants = {
        "word_embedding": np.asarray(tables.token),
        "segment_embedding": np.asarray(tables.segment),
        "position_embedding": np.asarray(tables.position),
        "zero": np.array(0, np.int64),
        "one": np.array(1, np.int64),
    }
    graph = h.make_graph(
        nodes,
        "bert_embedding_sum",
        [
            h.make_tensor_value_info(n, TensorProto.INT64, ["batch", "seq"])
            for n in ("input_ids", "segment_ids")
        ],
        [
            h.make_tensor_value_info(
                "output", TensorProto.FLOAT, ["batch", "seq", tables.hidden_size]
            )
        ],
        initializer=[numpy_helper.from_array(a, n) for n, a in constants.items()],
    )
    return h.make_model(
        graph,
        opset_imports=[h.make_opsetid("", 17)],
        producer_name="bert-embedding-kernels",
        ir_version=min(onnx.IR_VERSION, 9),
    )


def _onnxruntime_session(model):
    """A CPU session that does not spin after each run (fair to whoever runs next)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # errors only: no warnings about unused initializers
    # onnxruntime's pool spins after a run by default; interleaved with other
    # contenders on a few cores the spinning steals their CPU (measured on 2
    # cores: ORT/fused+LN 0.82x with spinning, 1.05x without; DESIGN.md).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return onnxruntime.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )


def onnxruntime_gather_add(tables: EmbeddingTables) -> Peer:
    """onnxruntime running the Gather+Add graph; allocates its output."""
    session = _onnxruntime_session(onnxruntime_gather_add_model(tables))

    def onnxruntime_gather_add(input_ids, token_type_ids):
        feeds = {"input_ids": input_ids, "segment_ids": token_type_ids}
        return session.run(["output"], feeds)[0]

    return onnxruntime_gather_add


def _peer(name, summary, requires, *, forward=None, forward_norm=None, agreement=BITWISE):
    return Implementation(
        name=name,
        summary=summary,
        forward=forward,
        forward_norm=forward_norm,
        agreement=agreement,
        dtypes=("float32",),
        origin="peer",
        requires=requires,
    )


# Peers that compute the plain sum: compare them with embed(...). They add the
# three rows in the same order as the naive reference, so they agree bit for bit.
PEERS: dict[str, Implementation] = {
    peer.name: peer
    for peer in (
        _peer("numpy-indexing", "numpy, no out=", (), forward=_numpy_indexing),
        _peer("torch-eager", "three F.embedding and two adds", ("torch",), forward=_torch_eager),
        _peer(
            "torch-compile",
            "torch.compile of torch-eager",
            ("torch",),
            forward=_torch_compile,
            agreement=BOUNDED,  # a compiler may fuse and reorder the adds
        ),
        _peer(
            "onnxruntime",
            "onnxruntime running a Gather+Add graph (int64 ids)",
            ("onnx", "onnxruntime"),
            forward=onnxruntime_gather_add,
            agreement=BOUNDED,
        ),
    )
}
# Peers that return LayerNorm(sum): compare with embed(..., layer_norm=True).
LAYER_NORM_PEERS: dict[str, Implementation] = {
    peer.name: peer
    for peer in (
        _peer(
            "torch-eager-layernorm",
            "torch-eager, then F.layer_norm",
            ("torch",),
            forward_norm=_torch_eager_layer_norm,
        ),
        _peer(
            "onnxruntime-embedlayernorm",
            "onnxruntime's fused com.microsoft.EmbedLayerNormalization op",
            ("onnx", "onnxruntime"),
            forward_norm=onnxruntime_embed_layer_norm,
        ),
    )
}


def _missing(modules: tuple[str, ...]) -> list[str]:
    return [m for m in modules if importlib.util.find_spec(m) is None]


def available_peers(layer_norm: bool = False) -> list[str]:
    """The peers whose libraries are installed here.

    Parameters
    ----------
    layer_norm : bool, default False
        List the layer-norm peers (:data:`LAYER_NORM_PEERS`) instead of the
        plain-sum ones (:data:`PEERS`).
    """
    registry = LAYER_NORM_PEERS if layer_norm else PEERS
    return [name for name, peer in registry.items() if not _missing(peer.requires)]


def make_peer(name: str, tables: EmbeddingTables) -> Peer:
    """Build peer ``name`` (from either registry) for ``tables``.

    Raises
    ------
    ValueError
        An unknown name.
    ImportError
        A library the peer needs is missing; the message names the extra.
    """
    registry = {**PEERS, **LAYER_NORM_PEERS}
    if name not in registry:
        raise ValueError(f"peer is {name!r}; it must be one of {tuple(registry)}.")
    peer = registry[name]
    missing = _missing(peer.requires)
    if missing:
        raise ImportError(
            f"peer {name!r} needs {', '.join(missing)}: pip install 'bert-embedding-kernels[peers]'"
        )
    return (peer.forward or peer.forward_norm)(tables)


def as_numpy(result) -> np.ndarray:
    """A peer's output as a numpy array (torch tensors share their memory)."""
    return result.numpy() if hasattr(result, "numpy") else np.asarray(result)


def onnxruntime_embed_layer_norm_bound(tables: EmbeddingTables, input_ids, token_type_ids):
    """EmbedLayerNormalization through IOBinding: inputs bound once, output into a fixed buffer.

    What an onnxruntime user does to avoid allocating per call (the peer of
    ``embed(..., out=)``). Returns a zero-argument call that returns the bound
    output array.
    """
    session = _onnxruntime_session(embed_layer_norm_model(tables))
    ids = np.ascontiguousarray(input_ids, dtype=np.int32)
    types = np.ascontiguousarray(token_type_ids, dtype=np.int32)
    out = np.empty((*ids.shape, tables.hidden_size), np.float32)
    binding = session.io_binding()
    binding.bind_cpu_input("input_ids", ids)  # the arrays must outlive the binding: they do
    binding.bind_cpu_input("segment_ids", types)
    binding.bind_output("output", "cpu", 0, np.float32, list(out.shape), out.ctypes.data)

    def onnxruntime_embedlayernorm_bound():
        session.run_with_iobinding(binding)
        return out

    return onnxruntime_embedlayernorm_bound


def torch_embedding_backward(tables: EmbeddingTables, grad, input_ids, token_type_ids):
    """torch's CPU kernel behind ``nn.Embedding``'s backward, once per table; None without torch.

    ``torch.ops.aten.embedding_dense_backward`` for the token, segment and
    default position ids: what torch runs for BERT's three embeddings.
    """
    if _missing(("torch",)):
        return None
    import torch

    grad_t = torch.from_numpy(grad)
    batch, seq = input_ids.shape
    ids = [
        (torch.from_numpy(input_ids), tables.vocab_size),
        (torch.from_numpy(token_type_ids), tables.type_vocab_size),
        (torch.arange(seq).expand(batch, seq).contiguous(), tables.max_positions),
    ]
    backward = torch.ops.aten.embedding_dense_backward

    def torch_embedding_dense_backward():
        return tuple(backward(grad_t, i, n, -1, False).numpy() for i, n in ids)

    return torch_embedding_dense_backward
