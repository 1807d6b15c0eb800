"""Outside implementations people reach for instead, each import-guarded.

Every peer is built once per tables (weights converted, functions compiled
outside any timing) and then called as ``peer(input_ids, token_type_ids)``
with default positions ``0 .. seq-1``; it allocates its output, as these
libraries do. Install the optional ones with ``pip install
'bert-embedding-kernels[peers]'``.
"""

from __future__ import annotations

import importlib.util
import warnings
from collections.abc import Callable

import numpy as np

from .tables import EmbeddingTables

Peer = Callable[[np.ndarray, np.ndarray], object]


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


def _torch_compile(tables: EmbeddingTables) -> Peer:
    torch, embeddings = _torch_function(tables)
    compiled = torch.compile(embeddings, dynamic=False)

    def torch_compile(input_ids, token_type_ids):
        positions = torch.arange(input_ids.shape[1])
        with torch.inference_mode():
            return compiled(
                torch.from_numpy(input_ids), torch.from_numpy(token_type_ids), positions
            )

    return torch_compile


# name -> (module it needs, or None; factory)
PEERS: dict[str, tuple[str | None, Callable[[EmbeddingTables], Peer]]] = {
    "numpy-indexing": (None, _numpy_indexing),
    "torch-eager": ("torch", _torch_eager),
    "torch-compile": ("torch", _torch_compile),
}


def available_peers() -> list[str]:
    """The peers whose libraries are installed here."""
    return [
        name
        for name, (module, _) in PEERS.items()
        if module is None or importlib.util.find_spec(module) is not None
    ]


def make_peer(name: str, tables: EmbeddingTables) -> Peer:
    """Build peer ``name`` for ``tables``; ImportError names the extra to install."""
    if name not in PEERS:
        raise ValueError(f"peer is {name!r}; it must be one of {tuple(PEERS)}.")
    module, factory = PEERS[name]
    if module is not None and importlib.util.find_spec(module) is None:
        raise ImportError(
            f"peer {name!r} needs {module}: pip install 'bert-embedding-kernels[peers]'"
        )
    return factory(tables)


def as_numpy(result) -> np.ndarray:
    """A peer's output as a numpy array (torch tensors share their memory)."""
    return result.numpy() if hasattr(result, "numpy") else np.asarray(result)
