"""onnxruntime's peers: the Gather+Add graph for the sum, EmbedLayerNormalization for LayerNorm.

Each builds its ONNX model from the tables (weights as initializers, as an
exported model has them) and a CPU session that does not spin after a run.
:mod:`bert_embedding_kernels.bench.engine.peers` registers them beside the numpy and torch peers.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ...tables import EmbeddingTables

Peer = Callable[[np.ndarray, np.ndarray], object]


def layer_norm_parameters(tables: EmbeddingTables, peer: str) -> None:
    if not tables.has_layer_norm:
        raise ValueError(
            f"peer {peer!r} normalises, but the tables have no norm_weight and norm_bias; "
            "build them with EmbeddingTables(..., norm_weight=..., norm_bias=...)."
        )


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

    layer_norm_parameters(tables, "onnxruntime-embedlayernorm")
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
    # cores: ORT/fused+LN 0.82x with spinning, 1.05x without, in one script).
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


def onnxruntime_embed_layer_norm_bound(tables: EmbeddingTables, input_ids, token_type_ids):
    """EmbedLayerNormalization through IOBinding: inputs bound once, output into a fixed buffer.

    What an onnxruntime user does to avoid allocating per call (the peer of
    ``embed(..., out=)``). Returns a zero-argument call that returns the bound
    output array.
    """
    session = _onnxruntime_session(embed_layer_norm_model(tables))
    out = np.empty((*np.shape(input_ids), tables.hidden_size), np.float32)
    return bound_call(session, input_ids, token_type_ids, out)


def bound_call(session, input_ids, token_type_ids, out: np.ndarray) -> Callable[[], np.ndarray]:
    """A zero-argument call running an EmbedLayerNormalization ``session`` with its ids bound
    once and its output written into ``out`` (float32, C-contiguous); returns ``out``."""
    ids = np.ascontiguousarray(input_ids, dtype=np.int32)
    types = np.ascontiguousarray(token_type_ids, dtype=np.int32)
    binding = session.io_binding()
    binding.bind_cpu_input("input_ids", ids)  # the arrays must outlive the binding: they do
    binding.bind_cpu_input("segment_ids", types)
    binding.bind_output("output", "cpu", 0, np.float32, list(out.shape), out.ctypes.data)

    def onnxruntime_embedlayernorm_bound():
        session.run_with_iobinding(binding)
        return out

    return onnxruntime_embedlayernorm_bound
