"""method="auto": a cost model fitted from measurements, checked against them."""

import json
from pathlib import Path

import numpy as np
import pytest

import bert_embedding_kernels as bek
from bert_embedding_kernels import auto
from bert_embedding_kernels.bench.report import calibrate

RESULTS = Path(__file__).parents[1] / "docs" / "report" / "results.json"


def _point(method, vocab, seq, seconds, batch=4, hidden=32):
    shape = {
        "batch": batch,
        "seq": seq,
        "hidden": hidden,
        "vocab": vocab,
        "max_positions": 512,
        "type_vocab": 2,
        "dtype": "float32",
    }
    # results.json schema 2 (docs/RESULTS.md): one point per shape, its contenders by name.
    return {"shape": shape, "contenders": {method: {"status": "measured", "median_s": seconds}}}


def test_fit_recovers_known_coefficients():
    truth = {"fused": (5e-6, 2e-10, 0.0), "onehot": (1e-4, 0.0, 3e-13)}
    points = []
    for method, (a, b, c) in truth.items():
        for vocab in (100, 1000, 10000):
            for seq in (8, 64, 512):
                rows = vocab + 2 + 512 if method == "onehot" else 0
                nbytes = 4 * seq * 32 * 4
                points.append(_point(method, vocab, seq, a + b * nbytes + c * nbytes * rows))
    fitted = calibrate.fit(points, source="test", machine={})["coefficients"]
    for method, coefficients in truth.items():
        np.testing.assert_allclose(fitted[method], coefficients, rtol=1e-6, atol=1e-18)


def test_fit_never_returns_negative_coefficients():
    # times that fall with size would need a negative slope; NNLS refuses it
    points = [_point("gather", 1000, seq, 1e-3 / seq) for seq in (8, 64, 512)]
    assert min(calibrate.fit(points, "test", {})["coefficients"]["gather"]) >= 0


@pytest.mark.parametrize("shape", [(1, 5), (3, 40), (0, 4)])
def test_auto_gives_a_correct_result(shape):
    tables = bek.EmbeddingTables.random(500, 16, max_positions=64)
    ids = np.random.default_rng(0).integers(0, 500, shape)
    np.testing.assert_array_equal(
        bek.embed(tables, ids, method="auto"), bek.embed(tables, ids, method="gather")
    )


def test_auto_validates_like_every_method():
    tables = bek.EmbeddingTables.random(10, 4, max_positions=8)
    with pytest.raises(IndexError, match=r"input_ids\[0, 1\]"):
        bek.embed(tables, [[1, 10]], method="auto")
    assert "auto" not in bek.METHODS


def test_shipped_rule_is_within_10_percent_of_the_fastest_on_the_measured_points():
    """On every point the shipped report measured, auto's pick is within 10% of the best.

    Or tied with it: their 95% intervals overlap (results.json schema 2).
    """
    results = json.loads(RESULTS.read_text())
    assert results["schema"] == 2 and results["points"]
    for point in results["points"]:
        shape = point["shape"]
        choice = auto.choose(
            shape["batch"] * shape["seq"],
            shape["hidden"],
            np.dtype(shape["dtype"]).itemsize,
            shape["vocab"],
            shape["type_vocab"],
            shape["max_positions"],
        )
        ours = {
            name: entry
            for name, entry in point["contenders"].items()
            if name in bek.METHODS and entry["status"] == "measured"
        }
        key = (point["sweep"], point["size"])
        assert choice in ours, (key, choice, "was not measured there")
        best = min(ours.values(), key=lambda entry: entry["median_s"])
        chosen = ours[choice]
        tied = chosen["ci95_s"][0] <= best["ci95_s"][1]
        assert chosen["median_s"] <= 1.1 * best["median_s"] or tied, (key, choice)
