"""embench report / choose / check end to end, at tiny sizes."""

import dataclasses
import json

import numpy as np
import pytest

import kernels
from kernels import registry
from kernels.bench import cli, report
from kernels.bench.cases import Shape

TINY = [
    "--vocab-sizes",
    "50,400",
    "--seq-lens",
    "4,16",
    "--batch-size",
    "2",
    "--hidden-size",
    "8",
    "--quick",
]


def test_report_writes_every_artifact(tmp_path, capsys):
    assert cli.main(["report", *TINY, "--out", str(tmp_path)]) == 0
    for name in (
        "report.md",
        "results.json",
        "calibration.json",
        "time_vs_vocab.png",
        "time_vs_seq.png",
    ):
        assert (tmp_path / name).stat().st_size > 0, name
    assert (tmp_path / "time_vs_vocab.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    results = json.loads((tmp_path / "results.json").read_text())
    assert len(results["points"]) == 4 * 4  # 2 vocab + 2 seq points, 4 methods each
    assert all(p["agrees"] for p in results["points"])
    assert set(results["slopes"]["vocab"]) == set(kernels.METHODS)
    text = (tmp_path / "report.md").read_text()
    assert "numba threading layer" in text
    assert "## Recommendation" in text and "use **" in text
    assert "agree with the reference" in text
    assert "use **" in capsys.readouterr().out


def test_a_disagreeing_method_is_reported_loudly(tmp_path, monkeypatch, capsys):
    gather = registry.REGISTRY["gather"]

    def wrong_gather(tables, batch, out):
        gather.forward(tables, batch, out)
        out += 1e-3  # a bug far beyond the rounding bound
        return out

    wrong = dataclasses.replace(gather, forward=wrong_gather)
    monkeypatch.setitem(registry.REGISTRY, "gather", wrong)
    assert cli.main(["report", *TINY, "--out", str(tmp_path)]) == 1
    assert "DISAGREE" in capsys.readouterr().err
    text = (tmp_path / "report.md").read_text()
    assert "DISAGREE" in text
    results = json.loads((tmp_path / "results.json").read_text())
    assert {p["method"] for p in results["points"] if not p["agrees"]} == {"gather"}


def test_slow_calls_are_skipped_with_an_estimate():
    settings = report.Settings(
        base=Shape(batch=2, seq=8, hidden=8, vocab=100),
        vocab_sizes=(100, 5000),
        seq_lens=(8,),
        methods=("onehot", "fused"),
        budget=0.01,
        skip_above=1e-12,
    )
    results = report.run(settings)
    skipped = [p for p in results.points if p.status == "skipped"]
    # the first point of a sweep has nothing to predict from, so it is measured;
    # after it every call is predicted above the (absurdly low) limit
    assert {(p.sweep, p.size, p.method) for p in skipped} == {
        ("vocab", 5000, "onehot"),
        ("vocab", 5000, "fused"),
    }
    onehot = next(p for p in skipped if p.method == "onehot")
    first = next(p for p in results.points if p.method == "onehot" and p.size == 100)
    # onehot's cost model scales with rows = vocab + types + positions
    assert onehot.estimated_s == pytest.approx(first.median_s * (5000 + 2 + 512) / (100 + 2 + 512))
    assert "skipped (estimated" in report.render_markdown(results, "test", [])


def test_slope_is_the_log_log_fit():
    points = [
        report.Point("vocab", v, Shape(1, 1, 1, v), "onehot", median_s=3e-6 * v)
        for v in (10, 100, 1000)
    ]
    assert report.slope(points) == pytest.approx(1.0)
    assert report.slope(points[:1]) is None


def test_check_prints_every_method(capsys):
    argv = [
        "check",
        "--batch-size",
        "2",
        "--seq-len",
        "8",
        "--vocab-size",
        "300",
        "--hidden-size",
        "16",
        "--budget",
        "0.01",
    ]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    for method in kernels.METHODS:
        assert f"\n{method} " in out
    assert "copy" in out


def test_choose_prints_a_method_and_why(capsys):
    assert (
        cli.main(
            [
                "choose",
                "--vocab-size",
                "30522",
                "--seq-len",
                "128",
                "--batch-size",
                "8",
                "--hidden-size",
                "768",
            ]
        )
        == 0
    )
    first, why = capsys.readouterr().out.splitlines()[:2]
    assert first in kernels.METHODS
    assert why.startswith("why: predicted")


def test_bench_table_reports_unreadable_files(tmp_path, capsys):
    assert cli.main(["bench-table", str(tmp_path / "missing.json")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_report_rejects_bad_sizes():
    with pytest.raises(SystemExit):
        cli.main(["report", "--vocab-sizes", "0,5"])


def test_results_points_carry_shapes():
    point = report.Point("seq", 4, Shape(1, 4, 2, 10), "fused", median_s=1.0)
    assert point.as_json()["shape"]["seq"] == 4
    assert np.isclose(point.as_json()["median_s"], 1.0)
