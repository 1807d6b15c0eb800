"""A deliberately naive reference, independent of every method under test, and the rules.

It walks the tokens one at a time in Python, reads rows by plain integer
indexing and adds them in a fixed order; no fancy indexing, no BLAS, no numba.
The benchmarks and ``embench`` check every method against it (the tests pin the
same rules with their own copies, so that weakening a rule here fails a test).

The guarantee (README, "Equivalence"):
- methods whose registry record says ``bitwise`` (``gather``, ``fused``) add
  ``(token + segment) + position`` in the tables' dtype, as the naive
  reference does, so they agree with it bit for bit;
- ``bounded`` methods (``onehot``, ``concat``) go through BLAS, which may order
  the three terms (and the exact zeros of the one-hot codes) any way, with or
  without FMA; every order lies within ``2u (|a| + |b| + |c|)`` of the exact
  sum, u = eps/2.
"""

import math
from dataclasses import dataclass

import ml_dtypes
import numpy as np

from ...gradients import EmbeddingGradients
from ...registry import BITWISE, REGISTRY, Implementation
from .peers import LAYER_NORM_PEERS, PEERS


def contender(name: str) -> Implementation:
    """The record of one of our methods or of a peer."""
    return {**REGISTRY, **PEERS, **LAYER_NORM_PEERS}[name]


def position_rows(position_ids, past_length, batch, seq):
    """The (batch, seq) position ids the API promises, built by hand."""
    if position_ids is None:  # a Python int: numpy 1.x turns uint64 + int into a float
        return [[int(past_length) + s for s in range(seq)] for _ in range(batch)]
    position_ids = np.asarray(position_ids)
    if position_ids.ndim == 1:
        return [[int(position_ids[s]) for s in range(seq)] for _ in range(batch)]
    return [
        [int(position_ids[b if position_ids.shape[0] > 1 else 0, s]) for s in range(seq)]
        for b in range(batch)
    ]


def after_padding_rows(input_ids, padding_idx, past_length):
    """RoBERTa's default positions, counted by hand: a token's is ``padding_idx +
    past_length +`` the non-padding tokens up to and including it, a padding token's is
    ``padding_idx`` (the tables' ``position_rule="after_padding"``)."""
    rows = []
    for sequence in np.asarray(input_ids).tolist():
        kept, row = 0, []
        for token in sequence:
            kept += token != padding_idx
            row.append(padding_idx if token == padding_idx else padding_idx + past_length + kept)
        rows.append(row)
    return rows


def _rows(tables, input_ids, token_type_ids, position_ids, past_length):
    input_ids = np.asarray(input_ids)
    batch, seq = input_ids.shape
    types = np.zeros((batch, seq), int) if token_type_ids is None else np.asarray(token_type_ids)
    # How default positions are numbered: the tables' rule record (position_rules.py).
    rule = getattr(tables, "rule", None)
    if position_ids is None and getattr(rule, "padding", False):
        positions = after_padding_rows(input_ids, tables.padding_idx, int(past_length))
    else:
        offset = getattr(rule, "offset", 0) if position_ids is None else 0
        start = int(past_length) + offset if offset else past_length
        positions = position_rows(position_ids, start, batch, seq)
    if not getattr(tables, "has_position", True):  # no position table: its stand-in zero row
        positions = [[0] * seq for _ in range(batch)]
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
    """(token + segment) + position, row by row, in the tables' dtype.

    16-bit tables: each row widened to float32, added there, the sum rounded
    once to the tables' dtype (what the API promises; ml_dtypes' own bfloat16
    arithmetic would round after every add).
    """
    batch, seq = np.shape(input_ids)
    wide = np.float32 if tables.dtype.itemsize == 2 else tables.dtype
    out = np.zeros((batch, seq, tables.hidden_size), dtype=wide)
    for b, s, t, g, p in _rows(tables, input_ids, token_type_ids, position_ids, past_length):
        out[b, s] = (t.astype(wide) + g.astype(wide)) + p.astype(wide)
    return out.astype(tables.dtype, copy=False)


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
    sums = np.asarray(sums, dtype=np.float64)
    out = np.zeros_like(sums)
    rows = sums.reshape(-1, sums.shape[-1])
    flat = out.reshape(rows.shape)
    for index, row in enumerate(rows):
        mean = math.fsum(row) / row.size
        variance = math.fsum((row - mean) ** 2) / row.size
        flat[index] = (row - mean) / math.sqrt(variance + eps) * weight + bias
    return out


def naive_layer_norm_backward(sums, grad, weight, eps):
    """(d sums, d weight, d bias) of LayerNorm in float64, from the textbook formulas, with
    exactly rounded statistics (math.fsum), as :func:`naive_layer_norm`."""
    hidden = sums.shape[-1]
    x = np.asarray(sums, np.float64).reshape(-1, hidden)
    dy = np.asarray(grad, np.float64).reshape(-1, hidden)
    mean = np.array([[math.fsum(row) / hidden] for row in x]).reshape(-1, 1)
    variance = np.array([math.fsum(row) / hidden for row in (x - mean) ** 2]).reshape(-1, 1)
    inverse_std = 1.0 / np.sqrt(variance + eps)
    xhat = (x - mean) * inverse_std
    g = dy * np.asarray(weight, np.float64)
    dx = inverse_std * (
        g - g.mean(axis=1, keepdims=True) - xhat * (g * xhat).mean(axis=1, keepdims=True)
    )
    return dx.reshape(np.shape(sums)), (dy * xhat).sum(axis=0), dy.sum(axis=0)


def naive_embed_backward(
    tables,
    grad_output,
    input_ids,
    token_type_ids=None,
    position_ids=None,
    past_length=0,
    padding_idx=None,
    dtype=np.float64,
):
    """A deliberately naive reference: a Python loop over tokens, one row at a time.

    Independent of every method above (no fancy indexing, no ``np.add.at``, no
    BLAS, no numba, no :func:`bert_embedding_kernels.validate.prepare`). Each row is summed in
    token order starting from zero, in ``dtype``: float64 for the tolerance
    checks, the tables' dtype for the bitwise checks of ``fused``/``gather``.

    Returns
    -------
    gradients : EmbeddingGradients
        In ``dtype``.
    magnitudes : EmbeddingGradients
        ``sum(|g|)`` per element, in float64.
    counts : EmbeddingGradients
        How many tokens added into each row, shape (rows,), int64.
    """
    grad_output = np.asarray(grad_output)
    input_ids = np.asarray(input_ids)
    batch, seq = input_ids.shape
    types = np.zeros((batch, seq), int) if token_type_ids is None else np.asarray(token_type_ids)
    if position_ids is None:
        positions = [[past_length + s for s in range(seq)] for _ in range(batch)]
    else:
        position_ids = np.asarray(position_ids).reshape(-1, seq)
        positions = [
            [int(position_ids[min(b, len(position_ids) - 1), s]) for s in range(seq)]
            for b in range(batch)
        ]
    shapes = [t.shape for t in (tables.token, tables.segment, tables.position)]
    sums = [np.zeros(shape, dtype) for shape in shapes]
    magnitudes = [np.zeros(shape, np.float64) for shape in shapes]
    counts = [np.zeros(shape[0], np.int64) for shape in shapes]
    for b in range(batch):
        for s in range(seq):
            g = grad_output[b, s]
            rows = (int(input_ids[b, s]), int(types[b, s]), positions[b][s])
            for table, row in enumerate(rows):
                if table == 0 and row == padding_idx:
                    continue
                sums[table][row] = sums[table][row] + g.astype(dtype)
                magnitudes[table][row] += np.abs(g.astype(np.float64))
                counts[table][row] += 1
    return EmbeddingGradients(*sums), EmbeddingGradients(*magnitudes), EmbeddingGradients(*counts)


@dataclass(frozen=True)
class Agreement:
    """One method's output compared with the reference."""

    method: str
    max_abs_diff: float  # against the naive reference in the tables' dtype
    bound_ratio: float  # max |y - exact| / (eps (|a|+|b|+|c|)); <= 1 is within the bound
    bitwise: bool  # identical bits to the naive reference

    @property
    def ok(self) -> bool:
        if contender(self.method).agreement == BITWISE:
            return self.bitwise
        return self.bound_ratio <= 1.0


class Reference:
    """The naive and the extended-precision reference for one set of inputs."""

    def __init__(self, tables, input_ids, token_type_ids=None, position_ids=None, past_length=0):
        arguments = (tables, input_ids, token_type_ids, position_ids, past_length)
        self.naive = naive_embed(*arguments)
        self.exact, magnitude = exact_embed(*arguments)
        # One rounding into the output dtype (ml_dtypes' finfo knows bfloat16 too).
        self.bound = float(ml_dtypes.finfo(tables.dtype).eps) * magnitude
        self.tables = tables
        self._layer_norm = None

    def layer_norm(self) -> np.ndarray:
        """The naive float64 LayerNorm of the naive sum (computed on first use)."""
        if self._layer_norm is None:
            t = self.tables
            weight, bias = (v.astype(np.float64) for v in (t.norm_weight, t.norm_bias))
            sums = self.naive.astype(np.float64)
            self._layer_norm = naive_layer_norm(sums, weight, bias, t.norm_eps)
        return self._layer_norm

    def compare(self, method: str, y: np.ndarray) -> Agreement:
        if y.size == 0:
            return Agreement(method, 0.0, 0.0, True)
        with np.errstate(invalid="ignore", divide="ignore"):
            error = np.abs(y.astype(np.longdouble) - self.exact)
            # An exact zero bound (all three rows zero) leaves no room at all.
            ratio = np.where(self.bound > 0, error / self.bound, np.where(error > 0, np.inf, 0))
        return Agreement(
            method=method,
            max_abs_diff=float(np.max(np.abs(y - self.naive))),
            bound_ratio=float(np.max(ratio)),
            bitwise=bool(np.array_equal(y, self.naive)),
        )
