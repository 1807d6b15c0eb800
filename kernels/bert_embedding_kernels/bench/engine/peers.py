"""Outside implementations people reach for instead, each import-guarded.

Every peer is built once per tables (weights converted, functions compiled
outside any timing) and then called as ``peer(input_ids, token_type_ids)``
with default positions ``0 .. seq-1``; it allocates its output, as these
libraries do. Install the optional ones with ``pip install
'bert-embedding-kernels[peers]'``.

Each peer is a :class:`bert_embedding_kernels.registry.Implementation` record, as our methods
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

from ...registry import BITWISE, BOUNDED, Implementation
from ...tables import EmbeddingTables
from .onnx_peers import (
    embed_layer_norm_model,
    layer_norm_parameters,
    onnxruntime_embed_layer_norm,
    onnxruntime_embed_layer_norm_bound,
    onnxruntime_gather_add,
)

__all__ = [
    "LAYER_NORM_PEERS",
    "PEERS",
    "as_numpy",
    "available_peers",
    "embed_layer_norm_model",
    "make_peer",
    "onnxruntime_embed_layer_norm",
    "onnxruntime_embed_layer_norm_bound",
    "torch_embedding_backward",
]

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


def _torch_eager_layer_norm(tables: EmbeddingTables) -> Peer:
    layer_norm_parameters(tables, "torch-eager-layernorm")
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
