"""embench report / check / choose / compare end to end, at tiny sizes; results.json schema 2."""

import dataclasses
import importlib.util
import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest

import bert_embedding_kernels as bek
from bert_embedding_kernels import registry
from bert_embedding_kernels.bench import cli
from bert_embedding_kernels.bench.engine import timing
from bert_embedding_kernels.bench.engine.cases import Shape
from bert_embedding_kernels.bench.report import compare
from bert_embedding_kernels.bench.report import measure as report

# A run recorded by `embench report --out docs/report`: data for tests whose verdict must
# not depend on how busy this machine is while the tests run.
RECORDED = Path(__file__).resolve().parents[1] / "docs" / "report" / "results.json"
TINY = [
    "--vocab-sizes",
    "50,400",
    "--seq-lens",
    "4,16",
    "--small-seq-lens",
    "2,8",
    "--family-vocab-sizes",
    "60,500",
    "--batch-size",
    "2",
    "--hidden-size",
    "8",
    "--budget",
    "0.05",
    "--quick",
]


@pytest.fixture(scope="module")
def tiny_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    assert cli.main(["report", *TINY, "--out", str(out)]) == 0
    return out, json.loads((out / "results.json").read_text())


def test_report_writes_every_artifact(tiny_report):
    out, _ = tiny_report
    for name in ("report.md", "results.json", "calibration.json"):
        assert (out / name).stat().st_size > 0, name
    plots = importlib.util.find_spec("matplotlib") is not None  # the report extra
    assert (out / "time_vs_vocab.png").exists() == plots
    if plots:
        assert (out / "time_vs_seq.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = (out / "report.md").read_text()
    assert "numba threading layer" in text
    assert "## Recommendation" in text and "95% CI" in text
    assert "how noisy this run was" in text
    assert "agree with the naive reference" in text


def test_every_series_of_a_plot_has_its_own_colour_and_marker(tmp_path, monkeypatch):
    """The recorded report draws 13 series; matplotlib's cycle has 10 colours (onehot and
    torch-eager-layernorm were both blue). Contenders not named in the palette yet get
    spare colours of their own."""
    from bert_embedding_kernels.bench.engine import contenders, peers
    from bert_embedding_kernels.bench.report import plots

    every = [contenders.COPY, *bek.METHODS, contenders.FUSED_ALLOCATING, contenders.FUSED_NORM]
    every += [*peers.PEERS, *peers.LAYER_NORM_PEERS, "a new peer", "another", "and more"]
    styles = plots.series_styles(every)
    assert len({colour for colour, _ in styles.values()}) == len(every)
    pytest.importorskip("matplotlib")
    from matplotlib.axes import Axes

    drawn: dict = {}  # axes -> [(label, colour, marker)], the axes kept alive
    errorbar = Axes.errorbar

    def recorded(self, *args, **kwargs):
        drawn.setdefault(self, []).append((kwargs["label"], kwargs["color"], kwargs["marker"]))
        return errorbar(self, *args, **kwargs)

    monkeypatch.setattr(Axes, "errorbar", recorded)
    assert plots.plot(json.loads(RECORDED.read_text()), tmp_path)
    assert max(len(series) for series in drawn.values()) >= 13
    for series in drawn.values():
        assert len({colour for _, colour, _ in series}) == len(series), series


def test_the_family_axis_is_measured_and_shown(tiny_report):
    out, results = tiny_report
    assert [p["vocab"] for p in results["families"]] == [60, 500]
    for point in results["families"]:
        assert set(point["medians_s"]) == {"copy", "bert", "roberta", "distilbert"}
        for low_median_high in (*point["over_bert"].values(), point["bert_fraction_of_copy"]):
            median, low, high = low_median_high
            assert 0 < low <= median <= high
    text = (out / "report.md").read_text()
    assert "## The BERT family's layouts (fused, into out=)" in text
    assert "| 500 |" in text


def test_the_family_axis_can_be_left_out(tmp_path):
    arguments = [a for a in TINY if a not in ("--family-vocab-sizes", "60,500")]
    assert (
        cli.main(["report", *arguments, "--family-vocab-sizes", "none", "--out", str(tmp_path)])
        == 0
    )
    assert json.loads((tmp_path / "results.json").read_text())["families"] == []
    assert "BERT family's layouts" not in (tmp_path / "report.md").read_text()


def test_results_json_schema_2(tiny_report):
    _, results = tiny_report
    assert results["schema"] == 2
    assert {"command", "machine", "settings", "points", "recommendations"} <= set(results)
    # how busy the machine was (bench/engine/noise.py), what compare judges two runs' noise by
    assert len(results["noise"]["load"]) == 2 and results["noise"]["cores"] >= 1
    assert results["noise"]["median_half_width"] >= 0 and results["seconds"] > 0
    sweeps = {(p["sweep"], p["size"]) for p in results["points"]}
    assert sweeps == {
        ("vocab", 50),
        ("vocab", 400),
        ("seq", 4),
        ("seq", 16),
        ("small", 2),
        ("small", 8),
    }
    for point in results["points"]:
        assert point["shape"]["hidden"] == 8
        names = set(point["contenders"])
        assert set(bek.METHODS) | {"copy", "fused (allocating)"} <= names
        for name, entry in point["contenders"].items():
            assert entry["status"] in ("measured", "skipped", "failed"), name
            if entry["status"] == "measured":
                low, high = entry["ci95_s"]
                assert low <= entry["median_s"] <= high
                assert entry["rounds"] >= 7
                assert entry["agrees"] in (True, None)  # None: the copy, which has no answer
        assert "fused/copy" in point["ratios"]


def test_peers_appear_when_installed(tiny_report):
    _, results = tiny_report
    pytest.importorskip("torch")
    names = set(results["points"][0]["contenders"])
    assert any("torch" in name for name in names)
    assert "torch-compile" in names  # compiled once per process, with dynamic shapes


def test_peers_means_the_peers_named(tmp_path, capsys):
    """--peers with no names times no peer at all, LayerNorm ones included; a named
    LayerNorm peer is found; an unknown name is called unknown, with the known ones."""
    pytest.importorskip("torch")
    out = tmp_path / "none"
    assert cli.main(["report", *TINY, "--peers", "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["settings"]["peers"] == []
    origins = {c["origin"] for p in results["points"] for c in p["contenders"].values()}
    assert "peer" not in origins
    one = tmp_path / "one"
    assert cli.main(["report", *TINY, "--peers", "torch-eager-layernorm", "--out", str(one)]) == 0
    results = json.loads((one / "results.json").read_text())
    timed = {
        n for p in results["points"] for n, c in p["contenders"].items() if c["origin"] == "peer"
    }
    assert timed == {"torch-eager-layernorm"} and results["settings"]["peers"] == [*timed]
    capsys.readouterr()
    with pytest.raises(SystemExit) as error:
        cli.main(["report", *TINY, "--peers", "foo", "--out", str(tmp_path / "x")])
    assert error.value.code == 2  # as its docstring says, before anything is measured
    assert "argument --peers: unknown peer 'foo'; known: numpy-indexing" in capsys.readouterr().err


def test_a_disagreeing_method_fails_and_is_never_timed(tmp_path, monkeypatch, capsys):
    gather = registry.REGISTRY["gather"]

    def wrong_gather(tables, batch, out):
        gather.forward(tables, batch, out)
        out += 1e-3  # a bug far beyond the rounding bound
        return out

    monkeypatch.setitem(
        registry.REGISTRY, "gather", dataclasses.replace(gather, forward=wrong_gather)
    )
    assert cli.main(["report", *TINY, "--peers", "--out", str(tmp_path)]) == 1
    assert "FAILED" in capsys.readouterr().err
    results = json.loads((tmp_path / "results.json").read_text())
    for point in results["points"]:
        entry = point["contenders"]["gather"]
        assert entry["status"] == "failed" and "median_s" not in entry
        assert "disagrees with the reference" in entry["reason"]
    assert "**FAILED**" in (tmp_path / "report.md").read_text()


def test_slow_calls_are_skipped_with_an_estimate():
    settings = report.Settings(
        base=Shape(batch=2, seq=8, hidden=8, vocab=100),
        vocab_sizes=(100, 5000),
        seq_lens=(),
        small_seq_lens=(),
        methods=("onehot", "fused"),
        peers=(),
        layer_norm=False,
        budget=0.01,
        skip_above=1e-12,
    )
    results = report.run(settings)
    first, second = results["points"]
    assert first["contenders"]["onehot"]["status"] == "measured"  # nothing to predict from
    skipped = second["contenders"]["onehot"]
    assert skipped["status"] == "skipped" and skipped["reason"].startswith("estimated")


def test_the_median_interval_brackets_the_median():
    estimate = timing.median_interval([float(v) for v in range(1, 101)])
    assert estimate.median == 50.5
    assert estimate.low < 50.5 < estimate.high
    # 95% distribution-free interval of a median of 100: ranks 40 and 61 (1-based)
    assert (estimate.low, estimate.high) == (40.0, 61.0)
    assert timing.median_interval([3.0]).half_width == 0


def test_paired_ratios_cancel_a_shared_slowdown():
    timings = timing.Timings(
        {"a": [1.0, 2.0, 4.0, 1.0, 2.0, 4.0, 8.0], "b": [2.0, 4.0, 8.0, 2.0, 4.0, 8.0, 16.0]}
    )
    ratio = timings.ratio("b", "a")
    assert ratio.median == ratio.low == ratio.high == 2.0
    assert not ratio.includes(1.0)


def test_interleave_stops_at_the_target():
    calls = {"fast": lambda: None, "also": lambda: sum(range(10))}
    timings = timing.interleave(calls, budget=5.0, target=0.5, sample_seconds=1e-4)
    assert timings.rounds >= 7
    assert set(timings.samples) == {"fast", "also"}


def test_samples_time_each_contender_in_its_own_steady_state(monkeypatch):
    # A fake clock that only the calls advance: a call costs 2 ms right after the other
    # contender ran (its caches gone) and 0.2 ms after itself. Each sample must time
    # the 0.2 ms calls, whatever number of calls the calibration chose; before, one cold
    # calibration call fixed one call per sample, and every sample timed a cold call.
    clock, last = [0.0], [None]
    monkeypatch.setattr(timing, "time", SimpleNamespace(perf_counter=lambda: clock[0]))

    def contender(name):
        def call():
            clock[0] += 2e-4 if last[0] == name else 2e-3
            last[0] = name

        return call

    timings = timing.interleave({"a": contender("a"), "b": contender("b")}, budget=0.5)
    for name in ("a", "b"):
        assert timings.estimate(name).median == pytest.approx(2e-4)


def test_check_prints_every_method_with_an_interval(capsys, fast_settling):
    argv = ["check", "--batch-size", "2", "--seq-len", "8", "--vocab-size", "300"]
    assert cli.main([*argv, "--hidden-size", "16", "--budget", "0.05"]) == 0
    out = capsys.readouterr().out
    for method in bek.METHODS:
        assert f"\n{method} " in out
    assert "copy" in out and "95% CI" in out and "KiB" in out
    rows = {}  # the first row of each name ("fused", not "fused (allocating)")
    for line in out.splitlines():
        rows.setdefault(line.split(" ")[0], line)
    timed = [n for n in bek.METHODS if "SKIPPED" not in rows[n]]
    assert {"gather", "fused"} <= set(timed)  # microseconds a call: the budget holds them
    # each median's interval as the report writes it (+-2.0%), never a signed change (+2.0%)
    for name in ["copy", *timed]:
        assert re.search(r" \+-\d+\.\d%", rows[name]), rows[name]
    for name in set(bek.METHODS) - set(timed):
        assert "SKIPPED: predicted" in rows[name] and "raise --budget" in rows[name]
    # the verdict by the one rule (bench/engine/verdict.py): a winner, and a ratio of at least 1
    fastest = [line for line in out.splitlines() if line.startswith("fastest (our methods")]
    assert len(fastest) == 1 and re.search(r"(\d+\.\d\d)x slower|tie \(", fastest[0])


def test_choose_prints_a_method_and_why(capsys, monkeypatch):
    monkeypatch.delenv("EMBENCH_CALIBRATION", raising=False)
    argv = ["choose", "--vocab-size", "30522", "--seq-len", "128", "--batch-size", "8"]
    assert cli.main(argv) == 0
    first, why = capsys.readouterr().out.splitlines()[:2]
    assert first in bek.METHODS
    assert why.startswith("why: predicted") and "set EMBENCH_CALIBRATION" in why


def test_choose_with_a_broken_calibration_says_so_in_one_line(tmp_path, capsys, monkeypatch):
    from bert_embedding_kernels import auto

    broken = tmp_path / "calibration.json"
    broken.write_text("{not json")
    monkeypatch.setenv("EMBENCH_CALIBRATION", str(broken))
    auto.calibration.cache_clear()
    try:
        assert cli.main(["choose"]) == 2
    finally:
        auto.calibration.cache_clear()
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(broken) in err


def test_check_skips_what_its_budget_cannot_time(monkeypatch, capsys):
    """A method predicted (by method="auto"'s cost model) to take more than the budget allows
    for the rounds is skipped with the reason, not run; the others are timed."""
    from bert_embedding_kernels import auto

    predict = auto.predict
    monkeypatch.setattr(
        auto, "predict", lambda method, *a: 60.0 if method == "onehot" else predict(method, *a)
    )
    arguments = ["check", "--batch-size", "2", "--seq-len", "8", "--vocab-size", "50"]
    assert cli.main([*arguments, "--hidden-size", "16", "--budget", "0.5"]) == 0
    printed = capsys.readouterr().out
    assert f"{'onehot':<28} SKIPPED: predicted 60.00 s per call" in printed
    assert "raise --budget" in printed and "fused " in printed


def test_bad_tables_and_files_are_one_line_naming_the_argument(tmp_path, capsys):
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "pytorch_model.bin").write_bytes(b"")
    (tmp_path / "empty").mkdir()
    cases = {
        str(tmp_path / "nosuch"): "does not exist; give 'minilm', a model directory",
        str(tmp_path / "empty"): "holds no model.safetensors",
        str(tmp_path / "bin"): "pytorch_model.bin and sharded checkpoints are not read",
    }
    for source, message in cases.items():
        assert cli.main(["report", "--tables", source, "--out", str(tmp_path / "x")]) == 2
        error = capsys.readouterr().err
        assert f"--tables {source}: " in error and message in error
        assert len(error.strip().splitlines()) == 1, error
    wrong = tmp_path / "w.json"
    wrong.write_text('{"a": 1}')
    assert cli.main(["bench-table", str(wrong)]) == 2
    assert "not a pytest-benchmark JSON" in capsys.readouterr().err


def test_calibration_may_name_the_report_directory(tmp_path, monkeypatch):
    from bert_embedding_kernels import auto

    shipped = Path(auto.CALIBRATION_FILE).read_text()
    (tmp_path / "calibration.json").write_text(shipped)
    monkeypatch.setenv("EMBENCH_CALIBRATION", str(tmp_path))
    auto.calibration.cache_clear()
    try:
        assert set(auto.calibration()["coefficients"]) >= {"fused"}
    finally:
        auto.calibration.cache_clear()  # the next reader gets the shipped file again


def test_help_shows_defaults_and_version(capsys):
    with pytest.raises(SystemExit):
        cli.main(["check", "--help"])
    assert "(default: 2.0)" in capsys.readouterr().out
    for command, shown in (("choose", "(default: 32)"), ("report", "without it 8")):
        with pytest.raises(SystemExit):
            cli.main([command, "--help"])
        assert shown in capsys.readouterr().out
    for command in ("check", "choose", "report", "perf", "scaling", "compare"):
        with pytest.raises(SystemExit):
            cli.main([command, "--help"])
        assert "(default: None)" not in capsys.readouterr().out, command
    with pytest.raises(SystemExit):
        cli.main(["--version"])
    assert bek.__version__ in capsys.readouterr().out


def _with_fused(results: dict, scale: float) -> dict:
    """``results`` with fused's time and its ratio to the copy multiplied by ``scale``."""
    changed = json.loads(json.dumps(results))
    for point in changed["points"]:
        ratio = point["ratios"].get("fused/copy")
        if ratio:
            ratio["median"] *= scale
            ratio["ci95"] = [v * scale for v in ratio["ci95"]]
    return changed


def test_compare_same_run_is_the_same_and_a_slowdown_fails(tmp_path, capsys):
    """Judged on a recorded run and a copy of it with fused planted 3x slower, never on a
    fresh measurement: a tiny run measured on a busy machine had intervals too wide for the
    planted slowdown to show, and the test failed (issue 37)."""
    same = RECORDED
    results = json.loads(same.read_text())
    assert cli.main(["compare", str(same), str(same), "--fail-above", "0.1"]) == 0
    rows = compare.compare(results, results)
    assert rows and all(r["verdict"] == "same" and r["change"] == 1 for r in rows)
    slower = tmp_path / "slower.json"
    slower.write_text(json.dumps(_with_fused(results, 3.0)))
    assert cli.main(["compare", str(same), str(slower), "--fail-above", "0.25"]) == 1
    assert "fused" in capsys.readouterr().err


@pytest.mark.parametrize(
    "change, named",
    [
        (
            lambda r: [p["shape"].update(batch=p["shape"]["batch"] * 8) for p in r["points"]],
            "batch",
        ),
        (lambda r: [p["shape"].update(hidden=384) for p in r["points"]], "hidden"),
        (lambda r: r["settings"].update(tables="minilm"), "tables"),
        (lambda r: r["settings"].update(peers=["torch-eager"]), "peers"),
        (lambda r: r["settings"].update(device="cuda"), "device"),
    ],
)
def test_compare_refuses_runs_of_different_experiments(
    tiny_report, tmp_path, capsys, change, named
):
    """Shared (sweep, size, dtype) alone does not make two points comparable: a quick run
    at batch 4 against the gate's batch 32 measured another experiment."""
    out, results = tiny_report
    other = json.loads(json.dumps(results))
    change(other)
    unlike = tmp_path / "unlike.json"
    unlike.write_text(json.dumps(other))
    arguments = ["compare", str(out / "results.json"), str(unlike)]
    assert cli.main(arguments) == 2
    error = capsys.readouterr().err
    assert "different experiments" in error and named in error and len(error.splitlines()) == 1
    assert cli.main([*arguments, "--allow-different"]) == 0
    printed = capsys.readouterr().out
    assert "DIFFERENT" in printed and named in printed
    rows = compare.compare(results, other, allow_different=True)
    assert rows and all(named in r["different"] for r in rows)


def test_compare_prints_what_it_compares(tiny_report, capsys):
    out, results = tiny_report
    assert cli.main(["compare", str(out / "results.json"), str(out / "results.json")]) == 0
    printed = capsys.readouterr().out
    assert printed.count("bert_embedding_kernels ") >= 2 and "commit" in printed
    assert results["machine"]["source"] and results["machine"]["commit"]


def test_compare_refuses_other_files(tmp_path, capsys):
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"points": []}))
    assert cli.main(["compare", str(old), str(old)]) == 2
    assert "schema 2" in capsys.readouterr().err


def test_bench_table_reports_unreadable_files(tmp_path, capsys):
    assert cli.main(["bench-table", str(tmp_path / "missing.json")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_report_rejects_bad_sizes():
    with pytest.raises(SystemExit):
        cli.main(["report", "--vocab-sizes", "0,5"])
