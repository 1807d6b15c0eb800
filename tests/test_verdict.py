"""The verdict's fastest agrees with the ratio it quotes (no "runner-up 0.94x slower")."""

from types import SimpleNamespace

from bert_embedding_kernels.bench import verdict


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
    assert "slower" in verdict._phrase(entry) and "1.06x slower" in verdict._phrase(entry)


def test_a_clear_order_is_kept():
    point = {"contenders": {"a": _contender(1.0), "b": _contender(2.0)}}
    timings = _Timings({("b", "a"): (2.0, 1.9, 2.1)})
    verdict.point_ratios(point, timings)
    assert point["verdict"]["sum"]["fastest"] == "a"
