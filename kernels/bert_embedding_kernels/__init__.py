"""BERT's summed input embeddings, computed four mathematically equivalent ways.

>>> import numpy as np, bert_embedding_kernels as bek
>>> tables = bek.EmbeddingTables.random(vocab_size=100, hidden_size=8)
>>> bek.embed(tables, np.array([[1, 2, 3]]), method="fused").shape
(1, 3, 8)

The core (this package without :mod:`bert_embedding_kernels.bench`) computes; ``bench``
measures and presents, and the core never imports it.
"""

from . import (
    _threading,  # noqa: F401  (first: picks numba's threading layer before any kernel)
    hugepages,
    pool,
)
from .api import METHOD_FUNCTIONS, embed, embed_backward
from .gradients import EmbeddingGradients
from .methods.onehot import DEFAULT_MEMORY_BUDGET
from .registry import BACKWARD_METHODS, METHODS
from .tables import EmbeddingTables

# bert_embedding_kernels.onehot, .concat, .gather, .fused, ...: one per method.
globals().update(METHOD_FUNCTIONS)

__all__ = [
    "BACKWARD_METHODS",
    "DEFAULT_MEMORY_BUDGET",
    "METHODS",
    "EmbeddingGradients",
    "EmbeddingTables",
    "embed",
    "embed_backward",
    "hugepages",
    "pool",
    *METHOD_FUNCTIONS,
]
__version__ = "0.1.0"
