"""How far each method is from the naive reference, against the bound we guarantee.

The guarantee (README, "Equivalence"):
- ``gather`` and ``fused`` add ``(token + segment) + position`` in the tables'
  dtype, as the naive reference does, so they agree with it bit for bit;
- ``onehot`` and ``concat`` go through BLAS, which may order the three terms
  (and the exact zeros of the one-hot codes) any way, with or without FMA;
  every order lies within ``2u (|a| + |b| + |c|)`` of the exact sum, u = eps/2.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .reference import exact_embed, naive_embed

BITWISE_METHODS = ("gather", "fused")


@dataclass(frozen=True)
class Agreement:
    """One method's output compared with the reference."""

    method: str
    max_abs_diff: float  # against the naive reference in the tables' dtype
    bound_ratio: float  # max |y - exact| / (eps (|a|+|b|+|c|)); <= 1 is within the bound
    bitwise: bool  # identical bits to the naive reference

    @property
    def ok(self) -> bool:
        if self.method in BITWISE_METHODS:
            return self.bitwise
        return self.bound_ratio <= 1.0


class Reference:
    """The naive and the extended-precision reference for one set of inputs."""

    def __init__(self, tables, input_ids, token_type_ids=None, position_ids=None, past_length=0):
        arguments = (tables, input_ids, token_type_ids, position_ids, past_length)
        self.naive = naive_embed(*arguments)
        self.exact, magnitude = exact_embed(*arguments)
        self.bound = np.finfo(tables.dtype).eps * magnitude

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
