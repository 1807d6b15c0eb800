"""``method="auto"``: pick the method a measured cost model predicts to be fastest.

The model, per method, is

    seconds = a + b * bytes + c * bytes * rows

with ``bytes = tokens * hidden * itemsize`` (what every method writes) and
``rows = vocab + types + positions`` (what a one-hot code spans). ``a`` is the
per-call overhead, ``b`` the streaming cost, ``c`` the one-hot matmul cost; all
three are fitted, non-negative, by ``embench report`` from its own measurements
(:mod:`bert_embedding_kernels.bench.report.calibrate`) and stored in ``calibration.json``. The
package ships the calibration of the run in docs/report; set
``EMBENCH_CALIBRATION=path/to/calibration.json`` to use your own machine's.
Evaluating the rule costs four dot products of three numbers, cached per shape.
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path

import numpy as np

from .registry import REGISTRY

CALIBRATION_FILE = Path(__file__).with_name("calibration.json")
MODEL = "seconds = a + b * bytes + c * bytes * rows"


def code_rows(method: str, vocab: int, type_vocab: int, max_positions: int) -> int:
    """The rows a one-hot code spans for ``method`` (0 for methods that gather)."""
    return vocab + type_vocab + max_positions if REGISTRY[method].one_hot else 0


def features(method: str, tokens: int, hidden: int, itemsize: int, rows: int) -> np.ndarray:
    nbytes = float(tokens * hidden * itemsize)
    return np.array([1.0, nbytes, nbytes * rows])


@lru_cache(maxsize=1)
def calibration() -> dict:
    path = Path(os.environ.get("EMBENCH_CALIBRATION", CALIBRATION_FILE))
    if path.is_dir():  # the directory `embench report --out DIR` wrote
        path = path / "calibration.json"
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
    rows = code_rows(method, vocab, type_vocab, max_positions)
    return float(features(method, tokens, hidden, itemsize, rows) @ coefficients)


@lru_cache(maxsize=256)
def choose(
    tokens: int,
    hidden: int,
    itemsize: int,
    vocab: int,
    type_vocab: int,
    max_positions: int,
    *,
    dtype: str | None = None,
) -> str:
    """The method with the lowest predicted time for this shape, among those that take
    tables of ``dtype`` (a dtype's name; None: any)."""
    predictions = {
        method: predict(method, tokens, hidden, itemsize, vocab, type_vocab, max_positions)
        for method in calibration()["coefficients"]
        # a calibration may name methods this version lacks
        if method in REGISTRY and (dtype is None or dtype in REGISTRY[method].dtypes)
    }
    return min(predictions, key=predictions.get)
