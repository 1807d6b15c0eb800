"""Fitting the cost model behind ``method="auto"`` from measured points.

:mod:`bert_embedding_kernels.auto` evaluates the model; this module fits it (``embench
report`` writes the result to ``calibration.json``) and estimates the work of
one call, which the report uses to skip calls predicted to take too long.
"""

from __future__ import annotations

import itertools

import numpy as np

from ...auto import MODEL, code_rows, features
from ...dtypes import parse
from ...registry import METHODS
from ..engine.cases import Shape


def work(method: str, shape: Shape) -> float:
    """What one call costs in the model's units, up to constants: for predicting skips."""
    itemsize = parse(shape.dtype).itemsize
    rows = code_rows(method, shape.vocab, shape.type_vocab, shape.max_positions)
    return float(shape.tokens * shape.hidden * itemsize * max(rows, 1))


def _nonnegative_least_squares(a: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Exact NNLS for a handful of columns: best least-squares fit over column subsets."""
    best, best_residual = np.zeros(a.shape[1]), float(np.sum(y**2))
    for size in range(1, a.shape[1] + 1):
        for columns in itertools.combinations(range(a.shape[1]), size):
            coefficients, *_ = np.linalg.lstsq(a[:, columns], y, rcond=None)
            if np.any(coefficients < 0):
                continue
            residual = float(np.sum((a[:, columns] @ coefficients - y) ** 2))
            if residual < best_residual:
                best = np.zeros(a.shape[1])
                best[list(columns)] = coefficients
                best_residual = residual
    return best


def fit(points: list[dict], source: str, machine: dict) -> dict:
    """Fit the model per method from results.json (schema 2) points, in relative error."""
    coefficients = {}
    for method in METHODS:
        measured = [
            (p["shape"], p["contenders"][method]["median_s"])
            for p in points
            if p["contenders"].get(method, {}).get("status") == "measured"
        ]
        if not measured:
            continue
        rows = []
        for shape, _ in measured:
            r = code_rows(method, shape["vocab"], shape["type_vocab"], shape["max_positions"])
            tokens = shape["batch"] * shape["seq"]
            itemsize = parse(shape["dtype"]).itemsize
            rows.append(features(method, tokens, shape["hidden"], itemsize, r))
        seconds = np.array([median for _, median in measured])
        # Dividing each row by its time fits relative error: a 20 us call
        # matters as much as a 2 s one.
        a = np.array(rows) / seconds[:, None]
        coefficients[method] = _nonnegative_least_squares(a, np.ones(len(measured))).tolist()
    return {"model": MODEL, "source": source, "machine": machine, "coefficients": coefficients}
