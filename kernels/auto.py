"""``method="auto"``: pick the method a measured cost model predicts to be fastest.

The model, per method, is

    seconds = a + b * bytes + c * bytes * rows

with ``bytes = tokens * hidden * itemsize`` (what every method writes) and
``rows = vocab + types + positions`` (what a one-hot code spans). ``a`` is the
per-call overhead, ``b`` the streaming cost, ``c`` the one-hot matmul cost; all
three are fitted, non-negative, by ``embench report`` from its own measurements
and stored in ``calibration.json``. The package ships the calibration of the
run in docs/report; set ``EMBENCH_CALIBRATION=path/to/calibration.json`` to
use your own machine's. Evaluating the rule costs four dot products of three
numbers, cached per shape.
"""

from __future__ import annotations

import itertools
import json
import os
from functools import lru_cache
from pathlib import Path

import numpy as np

from .api import METHODS
from .cases import Shape

ONE_HOT_METHODS = ("onehot", "concat")
CALIBRATION_FILE = Path(__file__).with_name("calibration.json")
MODEL = "seconds = a + b * bytes + c * bytes * rows"


def _rows(method: str, vocab: int, type_vocab: int, max_positions: int) -> int:
    return vocab + type_vocab + max_positions if method in ONE_HOT_METHODS else 0


def features(method: str, tokens: int, hidden: int, itemsize: int, rows: int) -> np.ndarray:
    nbytes = float(tokens * hidden * itemsize)
    return np.array([1.0, nbytes, nbytes * rows])


def work(method: str, shape: Shape) -> float:
    """What one call costs in the model's units, up to constants: for predicting skips."""
    itemsize = np.dtype(shape.dtype).itemsize
    rows = _rows(method, shape.vocab, shape.type_vocab, shape.max_positions)
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
    """Fit the model per method from ``results.json``-style points (relative error)."""
    coefficients = {}
    for method in METHODS:
        measured = [p for p in points if p["method"] == method and p["status"] == "measured"]
        if not measured:
            continue
        rows = []
        for p in measured:
            shape = p["shape"]
            r = _rows(method, shape["vocab"], shape["type_vocab"], shape["max_positions"])
            rows.append(
                features(
                    method,
                    shape["batch"] * shape["seq"],
                    shape["hidden"],
                    np.dtype(shape["dtype"]).itemsize,
                    r,
                )
            )
        seconds = np.array([p["median_s"] for p in measured])
        # Dividing each row by its time fits relative error: a 20 us call
        # matters as much as a 2 s one.
        a = np.array(rows) / seconds[:, None]
        coefficients[method] = _nonnegative_least_squares(a, np.ones(len(measured))).tolist()
    return {"model": MODEL, "source": source, "machine": machine, "coefficients": coefficients}


@lru_cache(maxsize=1)
def calibration() -> dict:
    path = Path(os.environ.get("EMBENCH_CALIBRATION", CALIBRATION_FILE))
    try:
        data = json.loads(path.read_text())
        data["coefficients"] = {m: np.array(c) for m, c in data["coefficients"].items()}
    except (OSError, ValueError, KeyError) as error:
        raise RuntimeError(
            f"method='auto' needs a calibration file; {path} could not be read ({error}). "
            "Run `embench report --out DIR` and set EMBENCH_CALIBRATION=DIR/calibration.json."
        ) from error
    return data


def predict(
    method: str,
    tokens: int,
    hidden: int,
    itemsize: int,
    vocab: int,
    type_vocab: int,
    max_positions: int,
) -> float:
    """Predicted seconds of one call of ``method``."""
    coefficients = calibration()["coefficients"][method]
    rows = _rows(method, vocab, type_vocab, max_positions)
    return float(features(method, tokens, hidden, itemsize, rows) @ coefficients)


@lru_cache(maxsize=256)
def choose(
    tokens: int, hidden: int, itemsize: int, vocab: int, type_vocab: int, max_positions: int
) -> str:
    """The method with the lowest predicted time for this shape."""
    predictions = {
        method: predict(method, tokens, hidden, itemsize, vocab, type_vocab, max_positions)
        for method in calibration()["coefficients"]
    }
    return min(predictions, key=predictions.get)
