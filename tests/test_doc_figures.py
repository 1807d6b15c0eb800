"""The README quotes each measured figure once, from the generated results it comes from.

Its measured figures sit in blocks that scripts/doc_figures.py renders from
docs/PERFORMANCE.json (``embench perf --write``) and docs/report/results.json
(``embench report``): a block that differs from what those files render is stale, and
a ratio, an interval or a time written by hand outside the blocks would be a second,
drifting copy of a figure that lives in docs/ (hand-written pages there keep their
experiments' figures, each with its command).
"""

import json
import re
from pathlib import Path

import pytest
import scripts_loader

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
# A ratio ("1.15x"), an interval ("[0.89, 0.94]") or a time in us / ms.
FIGURE = re.compile(r"\b\d+(?:\.\d+)?x\b|\[\d+\.\d+, \d+\.\d+\]|\b\d+(?:\.\d+)? (?:us|ms)\b")


@pytest.fixture(scope="module")
def doc_figures():
    return scripts_loader.load("scripts/doc_figures.py", "doc_figures")


def test_the_readme_figures_are_rendered_from_their_sources(doc_figures):
    text = README.read_text()
    sources = [m["source"] for m in doc_figures.BLOCK.finditer(text)]
    assert sorted(sources) == sorted(doc_figures.RENDERERS), sources
    assert doc_figures.rendered(text) == text, "stale: run python scripts/doc_figures.py"


def test_a_changed_source_makes_the_block_stale(doc_figures, tmp_path):
    run = json.loads((ROOT / "docs/PERFORMANCE.json").read_text())
    run["figures"][0]["value"] *= 1.5
    (tmp_path / "docs/report").mkdir(parents=True)
    (tmp_path / "docs/PERFORMANCE.json").write_text(json.dumps(run))
    (tmp_path / "docs/report/results.json").write_text(
        (ROOT / "docs/report/results.json").read_text()
    )
    text = README.read_text()
    assert doc_figures.rendered(text, root=tmp_path) != text


def test_no_figure_is_written_by_hand_outside_the_blocks(doc_figures):
    outside = doc_figures.BLOCK.sub("", README.read_text())
    found = [
        f"line {outside.count(chr(10), 0, m.start()) + 1}: {m.group(0)}"
        for m in FIGURE.finditer(outside)
    ]
    assert not found, found


def test_the_blocks_hold_every_figure_of_the_run(doc_figures):
    text = README.read_text()
    run = json.loads((ROOT / "docs/PERFORMANCE.json").read_text())
    for row in run["figures"]:
        assert f"| {row['figure']} |" in text, row["figure"]
    results = json.loads((ROOT / "docs/report/results.json").read_text())
    for advice in results["recommendations"]:
        assert advice["text"] in text
