"""The report's second pass (issue 37 item 5): unstable points re-timed, the widest first,
while the run's budget lasts. Every timing here is synthetic, so no outcome depends on how
busy the machine is."""

from types import SimpleNamespace

from bert_embedding_kernels.bench.engine.cases import Shape
from bert_embedding_kernels.bench.engine.timing import Timings
from bert_embedding_kernels.bench.report import measure as report
from bert_embedding_kernels.bench.report import retime

SHAPE = Shape(batch=2, seq=4, hidden=8, vocab=50)
ROUNDS = 7


def _contender(name, kind, origin):
    return SimpleNamespace(
        name=name, kind=kind, origin=origin, allocates=False, status="measured", reason="",
        agrees=True,
    )  # fmt: skip


BUILT = {
    "copy": _contender("copy", "roofline", "roofline"),
    "fused": _contender("fused", "sum", "kernels"),
    "gather": _contender("gather", "sum", "kernels"),
}


def _timings(spread: float, rounds: int = ROUNDS, seconds: float = 0.1) -> Timings:
    """Rounds whose samples alternate 1 -+ spread around 1 ms (fused), 2 ms (gather)."""
    wobble = [1 + spread * (-1) ** r for r in range(rounds)]
    samples = {
        "copy": [1e-3 * w for w in wobble],
        "fused": [1e-3 * w for w in wobble],
        "gather": [2e-3 * w for w in reversed(wobble)],
    }
    return Timings(samples, dict.fromkeys(samples, 1), seconds)


def _point(size, spread):
    timings = _timings(spread)
    return report.point_of("vocab", size, SHAPE.with_vocab(size), BUILT, timings), timings


def _rebuild(point, built, timings):
    return report.point_of(point["sweep"], point["size"], Shape(**point["shape"]), built, timings)


def _run(points, timings, seconds_left, per_point=1.0, seconds=0.1):
    asked, said = [], []

    def time_point(point, budget):
        asked.append((point["size"], budget))
        return BUILT, _timings(0.0, rounds=20, seconds=min(seconds, budget)), 0.01

    record = retime.retime(
        points, timings, seconds_left, per_point, time_point, _rebuild, said.append
    )
    return record, asked, said


def test_unstable_points_are_retimed_widest_first_and_their_rounds_joined():
    made = [_point(50, 0.05), _point(400, 0.4), _point(800, 0.2)]  # stable, widest, wide
    points, timings = [p for p, _ in made], [t for _, t in made]
    assert retime.unstable_order(points) == [1, 2]
    record, asked, said = _run(points, timings, seconds_left=5.0)
    assert [size for size, _ in asked] == [400, 800]
    assert record | {"timing_seconds": 0} == {
        "unstable_before": 2, "retimed": 2, "unstable_after": 0, "seconds_left": 5.0,
        "timing_seconds": 0, "checking_seconds": 0.02,
    }  # fmt: skip
    assert abs(record["timing_seconds"] - 0.2) < 1e-9
    for index in (1, 2):
        entry = points[index]["contenders"]["fused"]
        assert entry["rounds"] == ROUNDS + 20 and retime.widest(points[index]) <= 0.10
        assert len(timings[index].samples["gather"]) == ROUNDS + 20
    assert points[0]["contenders"]["fused"]["rounds"] == ROUNDS  # stable: left alone
    assert said[0].startswith("2 of 3 points unstable") and "widest first" in said[0]
    assert said[1].startswith("re-timed vocab 400: +-")
    assert said[-1] == "re-timed 2 of 2 unstable points; 0 stay unstable"


def test_the_second_pass_keeps_the_budget():
    made = [_point(size, 0.3) for size in (50, 400, 800)]
    points, timings = [p for p, _ in made], [t for _, t in made]
    least = retime.least_seconds(points[0])
    left = least * 1.5  # room for one point's fewest rounds, not two
    record, asked, said = _run(points, timings, seconds_left=left, seconds=least)
    assert len(asked) == 1 and asked[0][1] <= left
    assert record["retimed"] == 1 and record["unstable_after"] == 2
    assert record["timing_seconds"] <= left
    assert sum("not re-timed" in line for line in said) == 2


def test_nothing_unstable_nothing_said():
    made = [_point(50, 0.01)]
    record, asked, said = _run([made[0][0]], [made[0][1]], seconds_left=5.0)
    assert record["unstable_before"] == 0 and record["retimed"] == 0 and not asked and not said


def test_the_report_retimes_its_unstable_points_within_its_budget(monkeypatch, capsys):
    """The whole run, with the engine's timings replaced: the first pass wide, the second
    tight; the contenders are built and checked for real at a tiny shape."""
    calls = []

    def fake_interleave(timed, *, budget, **_):
        calls.append(budget)
        spread, rounds = (0.4, ROUNDS) if len(calls) <= 2 else (0.0, 40)
        wobble = [1e-3 * (1 + spread * (-1) ** r) for r in range(rounds)]
        samples = {name: list(wobble) for name in timed}
        return Timings(samples, dict.fromkeys(timed, 1), min(0.05, budget))

    monkeypatch.setattr(report, "interleave", fake_interleave)
    settings = report.Settings(
        base=SHAPE, vocab_sizes=(50, 400), seq_lens=(), small_seq_lens=(),
        methods=("gather", "fused"), peers=(), layer_norm=False, budget=0.5, skip_above=1.0,
    )  # fmt: skip
    results = report.run(settings)
    record = results["retimed"]
    assert record["unstable_before"] == 2 and record["retimed"] == 2
    assert record["unstable_after"] == 0
    assert abs(record["seconds_left"] - 0.9) < 1e-9  # 2 points x 0.5 s, 0.05 s spent in each
    assert all(budget <= 0.5 for budget in calls[2:]) and len(calls) == 4
    assert record["timing_seconds"] <= record["seconds_left"]
    for point in results["points"]:
        assert point["contenders"]["fused"]["rounds"] == ROUNDS + 40
    err = capsys.readouterr().err
    assert "re-times the unstable ones" in err and "re-timing them, the widest first" in err
    assert "re-timed 2 of 2 unstable points; 0 stay unstable" in err
