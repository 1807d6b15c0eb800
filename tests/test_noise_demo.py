"""scripts/noise_demo.py's comparison and rendering, on a recorded run (docs/report) and a
copy of it with planted changes: no timing is taken, so the outcome cannot depend on how
busy the machine is. The script's two real runs are made on a quiet machine."""

import copy
import json
from pathlib import Path

import pytest
import scripts_loader

ROOT = Path(__file__).resolve().parents[1]
RECORDED = ROOT / "docs" / "report" / "results.json"


@pytest.fixture(scope="module")
def demo():
    return scripts_loader.load("scripts/noise_demo.py", "noise_demo")


@pytest.fixture(scope="module")
def runs():
    """The recorded run as the quiet one; as the busy one, a copy where one decided winner
    flipped, one became a tie, and the noise is a busy machine's."""
    quiet = json.loads(RECORDED.read_text())
    quiet["noise"] = {"load": [0.3, 0.4], "cores": 2}
    busy = copy.deepcopy(quiet)
    busy["noise"] = {"load": [2.1, 2.3], "cores": 2}
    first, second = busy["points"][0]["verdict"]["methods"], busy["points"][1]["verdict"]["sum"]
    assert not first["tie"] and not second["tie"]  # both decided in the recorded run
    first["fastest"], first["runner_up"] = first["runner_up"], first["fastest"]
    second["tie"], second["ci95"] = True, [0.8, 1.4]
    busy["retimed"] = {"unstable_before": 9, "retimed": 4, "unstable_after": 6}
    return quiet, busy


def test_the_comparison_finds_the_flip_and_the_undecided(demo, runs):
    quiet, busy = runs
    rows = demo.compare(quiet, busy)
    by_relation = {}
    for row in rows:
        by_relation.setdefault(row["relation"], []).append(row)
    first, second = quiet["points"][0], quiet["points"][1]
    assert [(r["sweep"], r["size"], r["group"]) for r in by_relation["flip"]] == [
        (first["sweep"], first["size"], "methods")
    ]
    assert [(r["sweep"], r["size"], r["group"]) for r in by_relation["busy undecided"]] == [
        (second["sweep"], second["size"], "sum")
    ]
    assert "quiet undecided" not in by_relation
    verdicts = sum(len(p["verdict"]) for p in quiet["points"])
    assert len(rows) == verdicts


def test_the_same_run_twice_flips_nothing(demo, runs):
    quiet, _ = runs
    rows = demo.compare(quiet, quiet)
    assert {r["relation"] for r in rows} <= {"same", "neither decided"}
    text = demo.render(quiet, quiet, budget=3, quiet_load=0.2)
    assert "No named winner flipped." in text and "could not decide" in text


def test_the_document_shows_noise_flips_and_what_the_busy_run_could_not_decide(demo, runs):
    quiet, busy = runs
    text = demo.render(quiet, busy, budget=3, quiet_load=0.15, extra=("--quick",))
    assert text.startswith("# The report on a quiet machine and beside two busy processes")
    assert "`python scripts/noise_demo.py --budget 3 -- --quick`" in text
    assert "0.15 per core: quiet" in text
    assert "| quiet | 0.30 | 0.40 | 2 |" in text
    assert "| beside 2 busy processes | 2.10 | 2.30 | 2 |" in text
    assert "4 of 9 points, 6 stay unstable" in text
    assert "1 flipped" in text and "Winners that flipped:" in text
    assert "Where the busy run could not decide, it says so (a tie):" in text
    first = quiet["points"][0]["verdict"]["methods"]
    assert f"busy {first['runner_up']}, {first['fastest']} " in text  # the flipped winner
    assert "## The quiet run's recommendations" in text and "## The busy run's" in text


def test_a_loaded_first_run_is_not_called_quiet(demo, runs, monkeypatch, capsys, tmp_path):
    quiet, busy = runs
    text = demo.render(quiet, busy, budget=3, quiet_load=0.9)
    assert "0.90 per core: **not quiet**" in text and "| first (not quiet) |" in text
    monkeypatch.setattr(demo, "load_per_core", lambda: 0.9)
    monkeypatch.setattr(demo, "report", lambda *a: pytest.fail("ran on a loaded machine"))
    assert demo.main(["--doc", str(tmp_path / "NOISE.md")]) == 2
    assert "not a quiet machine" in capsys.readouterr().err
    assert not (tmp_path / "NOISE.md").exists()


def test_the_busy_processes_are_stopped_even_on_failure(demo):
    with pytest.raises(RuntimeError), demo.busy() as burners:
        assert all(b.poll() is None for b in burners)
        raise RuntimeError
    assert all(b.poll() is not None for b in burners)
