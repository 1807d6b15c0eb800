"""BERT's embedding LayerNorm for the numpy paths (onehot, concat, gather).

``y = (x - mean) / sqrt(var + eps) * weight + bias`` over the hidden axis.
Statistics are computed in float64 and in two passes (mean, then the mean of
squared deviations), never as E[x^2] - E[x]^2, whose cancellation loses every
digit of a small variance next to a large mean.
"""

from __future__ import annotations

import numpy as np

from .tables import EmbeddingTables


def layer_norm(tables: EmbeddingTables, sums: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Normalise ``sums`` (batch, seq, hidden) into ``out``; ``out`` may be ``sums``."""
    centred = sums.astype(np.float64)
    centred -= centred.mean(axis=-1, keepdims=True)
    variance = np.mean(np.square(centred), axis=-1, keepdims=True)
    centred *= 1.0 / np.sqrt(variance + tables.norm_eps)
    # float64 throughout (16-bit weights widened exactly), then one rounding into
    # out's dtype; "unsafe" admits bfloat16, which numpy does not call a float kind.
    np.multiply(centred, tables.norm_weight.astype(np.float64), out=centred)
    np.add(centred, tables.norm_bias.astype(np.float64), out=out, casting="unsafe")
    return out
