"""embench perf end to end: every figure of docs/PERFORMANCE.md is measured and judged.

One short run at BERT-base (a fraction of a second of rounds, torch.compile left
out): the command exits 0, writes the Markdown to the path named, and every row
of the figures table carries a value with its interval and, where the issue set
a target, a verdict. Timings are not checked (tests check behaviour).
"""

import json
import re

import pytest

from bert_embedding_kernels.bench import cli
from bert_embedding_kernels.bench.engine import verdict
from bert_embedding_kernels.bench.perf import figures as perf
from bert_embedding_kernels.bench.perf import markdown as perf_markdown


@pytest.fixture(scope="module")
def written_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("perf") / "perf.md"
    assert (
        cli.main(
            ["perf", "--budget", "0.5", "--no-compile", "--no-whole-model", "--write", str(path)]
        )
        == 0
    )
    return path


@pytest.fixture(scope="module")
def written(written_path):
    return written_path.read_text()


@pytest.fixture(scope="module")
def written_json(written_path):
    return json.loads(written_path.with_suffix(".json").read_text())


def test_the_markdown_is_rendered_from_the_json_beside_it(written, written_json):
    # one source: the README's figures are rendered from this JSON (scripts/doc_figures.py)
    assert perf_markdown.render(written_json) == written
    names = [row["figure"] for row in written_json["figures"]]
    figures = (*perf.FORWARD_FIGURES, *perf.BACKWARD_FIGURES, *perf.TRAINING_FIGURES)
    assert names == [f.name for f in figures] + [perf.SMALL_CALL_FIGURE]


def _row(markdown: str, name: str) -> list[str]:
    rows = [line for line in markdown.splitlines() if line.startswith(f"| {name} |")]
    assert len(rows) == 1, (name, rows)
    return [cell.strip() for cell in rows[0].strip("|").split("|")]


def test_every_figure_of_ours_is_measured_with_an_interval(written, written_json):
    figures = (*perf.FORWARD_FIGURES, *perf.BACKWARD_FIGURES, *perf.TRAINING_FIGURES)
    peers = ("torch", "onnxruntime", "numpy", "transformers", "drop-in")  # installed or not
    ours = [f for f in figures if not any(p in f.name for p in peers)]
    assert ours
    rows = {row["figure"]: row for row in written_json["figures"]}
    for figure in ours:
        _, measured, judged, _ = _row(written, figure.name)
        assert re.fullmatch(r"(\d+\.\d+) \[\d+\.\d+, \d+\.\d+\]( ~)?", measured), measured
        if figure.target:
            # judged on the interval by the one rule (bench/engine/verdict.py), never on the median
            op, bound = figure.target.split()
            word = verdict.target(*rows[figure.name]["ci95"], op, float(bound))
            assert judged.startswith(f"{figure.target}: {word} ("), judged
        else:
            assert judged == ""


def test_peers_are_measured_when_installed(written):
    pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    pytest.importorskip("transformers")
    names = ["torch-eager / fused", "onnxruntime EmbedLayerNorm / fused+LN"]
    names += [f.name for f in perf.TRAINING_FIGURES if "compiled" not in f.name]
    for name in names:
        _, measured, _, _ = _row(written, name)
        assert "not measured" not in measured, name


def test_the_small_call_and_the_first_call_are_reported(written):
    _, small, verdict, _ = _row(written, "small call, median us")
    assert re.fullmatch(r"\d+\.\d \[\d+\.\d, \d+\.\d\]", small), small
    assert verdict.startswith("<= 15: ")
    _, first, _, _ = _row(written, "first call in a fresh process, s")
    assert float(first) > 0
