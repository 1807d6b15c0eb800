"""One rule for every verdict (issue 37): an interval decides, never a median alone; the named
winner's quoted ratio is at least 1. All on synthetic data: nothing here is timed."""

from types import SimpleNamespace

import pytest

from bert_embedding_kernels.bench.engine import verdict
from bert_embedding_kernels.bench.perf import markdown as perf_markdown
from bert_embedding_kernels.bench.report import compare


class _Ratio(SimpleNamespace):
    def includes(self, value):
        return self.low <= value <= self.high


class _Timings:
    """Paired ratios that disagree with the ratio of medians, as noisy rounds can."""

    def __init__(self, ratios):
        self.ratios = ratios

    def ratio(self, a, b):
        if b == "copy":
            median = low = high = 1.0
        elif (a, b) in self.ratios:
            median, low, high = self.ratios[(a, b)]
        else:  # the inverse pair: the same rounds, each ratio inverted
            median, low, high = self.ratios[(b, a)]
            median, low, high = 1 / median, 1 / high, 1 / low
        return _Ratio(median=median, low=low, high=high, unstable=False)


def _contender(median_s):
    return {"status": "measured", "origin": "peer", "kind": "sum", "allocates": True,
            "median_s": median_s}  # fmt: skip


def test_the_paired_rounds_decide_the_fastest():
    point = {"contenders": {"copy": {"status": "measured", "kind": "roofline",
                                     "origin": "roofline", "allocates": False, "median_s": 1.0},
                            "a": _contender(1.00), "b": _contender(1.01)}}  # fmt: skip
    # by medians a is fastest; paired, b / a = 0.94 [0.90, 0.99]: b is faster
    timings = _Timings({("b", "a"): (0.94, 0.90, 0.99)})
    verdict.point_ratios(point, timings)
    entry = point["verdict"]["sum"]
    assert entry["fastest"] == "b" and entry["runner_up"] == "a"
    assert entry["median"] > 1 and not entry["tie"]
    assert "slower" in verdict.phrase(entry) and "1.06x slower" in verdict.phrase(entry)


def test_a_clear_order_is_kept():
    point = {"contenders": {"a": _contender(1.0), "b": _contender(2.0)}}
    timings = _Timings({("b", "a"): (2.0, 1.9, 2.1)})
    verdict.point_ratios(point, timings)
    assert point["verdict"]["sum"]["fastest"] == "a"


@pytest.mark.parametrize(
    "low, high, op, bound, expected",
    [
        (0.36, 1.69, ">=", 0.90, "undecided"),  # perf --budget 5 had judged this MISSED
        (0.55, 1.84, "<=", 1.15, "undecided"),  # ... and this met, on the medians alone
        (0.91, 0.95, ">=", 0.90, "met"),
        (0.80, 0.89, ">=", 0.90, "MISSED"),
        (1.00, 1.10, "<=", 1.15, "met"),
        (1.16, 1.30, "<=", 1.15, "MISSED"),
        (0.90, 0.95, ">=", 0.90, "undecided"),  # touching the line cannot tell
    ],
)
def test_a_target_is_judged_on_its_interval(low, high, op, bound, expected):
    assert verdict.target(low, high, op, bound) == expected
    row = {"figure": "f", "target": f"{op} {bound}", "value": (low + high) / 2,
           "ci95": [low, high], "unstable": False}  # fmt: skip
    assert perf_markdown.verdict_cell(row).startswith(f"{op} {bound}: {expected} (")


def test_the_printed_interval_agrees_with_the_verdict():
    row = {"figure": "f", "target": ">= 0.90", "value": 0.95, "ci95": [0.9004, 0.99]}
    cell = perf_markdown.verdict_cell(row)
    assert cell == ">= 0.90: met ([0.9004, 0.9900] above 0.90)", cell


def test_a_change_is_judged_on_its_interval():
    assert [verdict.change(*i) for i in ((1.1, 1.3), (0.7, 0.9), (0.9, 1.2))] == [
        "slower",
        "faster",
        "same",
    ]


def test_compare_fails_only_a_slowdown_whose_interval_is_above_1():
    row = {"contender": "fused", "change": 1.5}
    straddling = [row | {"ci95": [0.8, 2.8]}] * 3  # the median far above, the interval not
    assert compare.failures(straddling, 0.2) == []
    clear = [row | {"ci95": [1.3, 1.7]}] * 3
    assert [f["contender"] for f in compare.failures(clear, 0.2)] == ["fused"]


def test_a_tie_names_the_winner_the_quoted_ratio_favours():
    """The report had written 'fused (allocating) and numpy-indexing tie (ratio 0.95 ...)':
    a tie's named winner is the one the paired ratio favours, quoted at least 1."""
    point = {"contenders": {"a": _contender(1.00), "b": _contender(1.01)}}
    timings = _Timings({("b", "a"): (0.95, 0.85, 1.04)})  # medians: a; paired: b, a tie
    verdict.point_ratios(point, timings)
    entry = point["verdict"]["sum"]
    assert entry["tie"] and entry["fastest"] == "b" and entry["median"] >= 1
    text = verdict.phrase(entry)
    assert text.startswith("**b** and a tie (a / b 1.05,"), text
    assert "0.95" not in text


@pytest.mark.parametrize("paired", [(0.5, 0.4, 0.6), (0.99, 0.9, 1.1), (1.0, 0.9, 1.1), (3, 2, 4)])
def test_the_named_winner_s_ratio_is_never_below_1(paired):
    winner, runner, ratio = verdict.ranked(_Timings({("b", "a"): paired}).ratio, "a", "b")
    assert {winner, runner} == {"a", "b"} and ratio.median >= 1
    assert verdict.tie(ratio) == (ratio.low <= 1 <= ratio.high)


def test_a_ratio_relative_to_another_is_divided_round_by_round():
    """embench perf's "bfloat16's gain / the copy's gain": (a / b) / (c / d) per round, so the
    rounds' shared noise cancels in each, then the median and its interval."""
    from bert_embedding_kernels.bench.engine.timing import Timings

    rounds = Timings(
        samples={
            "a": [2.0, 4.0, 3.0],
            "b": [1.0, 1.0, 1.0],
            "c": [2.0, 2.0, 3.0],
            "d": [1.0, 2.0, 1.0],
        }
    )
    assert rounds.ratio("a", "b").median == 3.0
    # per round: 2 / 2, 4 / 1, 3 / 3
    assert rounds.ratio("a", "b", relative_to=("c", "d")).median == 1.0
