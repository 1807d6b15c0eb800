"""A deliberately naive reference, independent of every method under test.

It walks the tokens one at a time in Python, reads rows by plain integer
indexing and adds them in a fixed order; no fancy indexing, no BLAS, no numba.
The tests, the benchmarks and ``embench`` check every method against it.
"""

import numpy as np


def position_rows(position_ids, past_length, batch, seq):
    """The (batch, seq) position ids the API promises, built by hand."""
    if position_ids is None:
        return [[past_length + s for s in range(seq)] for _ in range(batch)]
    position_ids = np.asarray(position_ids)
    if position_ids.ndim == 1:
        return [[int(position_ids[s]) for s in range(seq)] for _ in range(batch)]
    return [
        [int(position_ids[b if position_ids.shape[0] > 1 else 0, s]) for s in range(seq)]
        for b in range(batch)
    ]


def _rows(tables, input_ids, token_type_ids, position_ids, past_length):
    input_ids = np.asarray(input_ids)
    batch, seq = input_ids.shape
    types = np.zeros((batch, seq), int) if token_type_ids is None else np.asarray(token_type_ids)
    positions = position_rows(position_ids, past_length, batch, seq)
    for b in range(batch):
        for s in range(seq):
            yield (
                b,
                s,
                tables.token[int(input_ids[b, s])],
                tables.segment[int(types[b, s])],
                tables.position[positions[b][s]],
            )


def naive_embed(tables, input_ids, token_type_ids=None, position_ids=None, past_length=0):
    """(token + segment) + position, row by row, in the tables' dtype."""
    batch, seq = np.shape(input_ids)
    out = np.zeros((batch, seq, tables.hidden_size), dtype=tables.dtype)
    for b, s, t, g, p in _rows(tables, input_ids, token_type_ids, position_ids, past_length):
        out[b, s] = (t + g) + p
    return out


def exact_embed(tables, input_ids, token_type_ids=None, position_ids=None, past_length=0):
    """The sum in extended precision, and the sum of magnitudes |a| + |b| + |c|.

    long double carries at least 11 more mantissa bits than float64, so its own
    rounding is far below the bound the tests check.
    """
    batch, seq = np.shape(input_ids)
    total = np.zeros((batch, seq, tables.hidden_size), dtype=np.longdouble)
    magnitude = np.zeros_like(total)
    for b, s, t, g, p in _rows(tables, input_ids, token_type_ids, position_ids, past_length):
        rows = [r.astype(np.longdouble) for r in (t, g, p)]
        total[b, s] = rows[0] + rows[1] + rows[2]
        magnitude[b, s] = np.abs(rows[0]) + np.abs(rows[1]) + np.abs(rows[2])
    return total, magnitude


def naive_layer_norm(sums, weight, bias, eps):
    """LayerNorm row by row with exactly rounded float64 statistics (math.fsum)."""
    import math

    sums = np.asarray(sums, dtype=np.float64)
    out = np.zeros_like(sums)
    rows = sums.reshape(-1, sums.shape[-1])
    flat = out.reshape(rows.shape)
    for index, row in enumerate(rows):
        mean = math.fsum(row) / row.size
        variance = math.fsum((row - mean) ** 2) / row.size
        flat[index] = (row - mean) / math.sqrt(variance + eps) * weight + bias
    return out
