"""Deliberately naive host references for the CUDA tests: Python loops, no kernels.

Independent of kernels/bert_embedding_kernels/ (no ``prepare``, no fancy indexing shortcuts that the
kernels share): each output element is computed in the order the contract
states, in the tables' dtype where the contract is bitwise.
"""

import numpy as np


def tables(vocab=50, hidden=33, positions=16, types=2, dtype=np.float32, seed=0):
    """Token, segment, position tables and LayerNorm weight and bias, N(0, 1) (not BERT's 0.02:
    larger values make rounding differences visible)."""
    rng = np.random.default_rng(seed)
    shapes = [(vocab, hidden), (types, hidden), (positions, hidden), (hidden,), (hidden,)]
    return [rng.standard_normal(shape).astype(dtype) for shape in shapes]


def row(ids, b):
    """Row of a (1 | batch, seq) id array that sequence ``b`` reads."""
    ids = np.asarray(ids)
    if ids.ndim == 1:
        return ids
    return ids[0] if ids.shape[0] == 1 else ids[b]


def summed(token, segment, position, input_ids, token_type_ids, position_ids):
    """out[b, s, h] = (token[i, h] + segment[j, h]) + position[k, h], element by element."""
    batch, seq = np.shape(input_ids)
    hidden = token.shape[1]
    out = np.empty((batch, seq, hidden), token.dtype)
    for b in range(batch):
        types, positions = row(token_type_ids, b), row(position_ids, b)
        for s in range(seq):
            i, j, k = int(input_ids[b][s]), int(types[s]), int(positions[s])
            for h in range(hidden):
                out[b, s, h] = (token[i, h] + segment[j, h]) + position[k, h]
    return out


def layer_norm(sums, weight, bias, eps):
    """LayerNorm row by row: float64 two-pass statistics, rounded once, affine in the dtype."""
    out = np.empty_like(sums)
    for index in np.ndindex(sums.shape[:-1]):
        x = sums[index].astype(np.float64)
        mean = sum(x) / x.size
        variance = sum((value - mean) ** 2 for value in x) / x.size
        centred = ((x - mean) / np.sqrt(variance + eps)).astype(sums.dtype)
        out[index] = centred * weight + bias
    return out


def gradients(
    shapes, grad_output, input_ids, token_type_ids, position_ids, padding_idx, dtype, start=None
):
    """Table gradients: each row summed in token order from zero (or ``start``), in ``dtype``."""
    grads = [np.zeros(shape, dtype) for shape in shapes]
    if start is not None:
        grads = [np.array(s, dtype) for s in start]
    batch, seq = np.shape(input_ids)
    for b in range(batch):
        types, positions = row(token_type_ids, b), row(position_ids, b)
        for s in range(seq):
            g = grad_output[b, s].astype(dtype)
            rows = (int(input_ids[b][s]), int(types[s]), int(positions[s]))
            for table, r in enumerate(rows):
                if table == 0 and r == padding_idx:
                    continue
                grads[table][r] = grads[table][r] + g
    return grads
