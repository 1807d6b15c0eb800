"""BERT's summed input embeddings, computed four mathematically equivalent ways.

>>> import numpy as np, kernels
>>> tables = kernels.EmbeddingTables.random(vocab_size=100, hidden_size=8)
>>> kernels.embed(tables, np.array([[1, 2, 3]]), method="fused").shape
(1, 3, 8)
"""

from . import _threading  # noqa: F401  (first: picks numba's threading layer before any kernel)
from .api import METHODS, concat, embed, fused, gather, onehot
from .backward import BACKWARD_METHODS, EmbeddingGradients, embed_backward
from .onehot import DEFAULT_MEMORY_BUDGET
from .tables import EmbeddingTables

__all__ = [
    "BACKWARD_METHODS",
    "DEFAULT_MEMORY_BUDGET",
    "METHODS",
    "EmbeddingGradients",
    "EmbeddingTables",
    "concat",
    "embed",
    "embed_backward",
    "fused",
    "gather",
    "onehot",
]
__version__ = "0.1.0"
