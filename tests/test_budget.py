"""Budgets kept (issue 37 item 3): the calls a measurement makes are counted before it runs,
and what a budget cannot time is skipped with the reason. Every time here comes from a fake
clock that only the calls advance: nothing is measured, so no verdict depends on the machine."""

from types import SimpleNamespace

import pytest

from bert_embedding_kernels.bench import cli
from bert_embedding_kernels.bench.engine import plan, timing
from bert_embedding_kernels.bench.engine.contenders import Contender


@pytest.fixture
def clock(monkeypatch):
    """A clock that only calls advance; ``clock.call(seconds)`` makes such a call."""
    now = [0.0]
    fake = SimpleNamespace(perf_counter=lambda: now[0])
    monkeypatch.setattr(timing, "time", fake)
    monkeypatch.setattr(plan, "time", fake)
    calls: dict[str, int] = {}

    def call(name: str, seconds: float):
        def run():
            now[0] += seconds
            calls[name] = calls.get(name, 0) + 1

        return run

    return SimpleNamespace(now=now, call=call, calls=calls)


# powers of two, so that the fake clock's sums are exact and the calibration sees them as is
@pytest.mark.parametrize("per_call", [2.0**-20, 2.0**-12, 2.0**-10, 2.0**-9, 2.0**-8, 1.0, 16.0])
def test_the_planned_calls_are_the_calls_interleave_makes(clock, per_call):
    """The issue's check allowed for 7 calls a method and made about 17."""
    calls = {"a": clock.call("a", per_call), "b": clock.call("b", per_call / 4)}
    timings = timing.interleave(calls, budget=0.0)  # the fewest rounds only
    assert timings.rounds == timing.MIN_ROUNDS
    assert clock.calls["a"] == timing.planned_calls(per_call)
    assert clock.calls["b"] == timing.planned_calls(per_call / 4)
    expected = timing.planned_seconds(per_call) + timing.planned_seconds(per_call / 4)
    assert clock.now[0] == pytest.approx(expected)


def test_a_call_of_a_second_takes_17_calls():
    assert timing.planned_calls(1.0) == 1 + 2 + 7 * 2


def test_no_round_starts_that_would_end_past_the_budget(clock):
    calls = {"a": clock.call("a", 0.01), "b": clock.call("b", 0.02)}
    timings = timing.interleave(calls, budget=2.0, target=0.0)
    assert timings.rounds > timing.MIN_ROUNDS
    assert timings.seconds <= 2.0


def test_the_budget_admits_in_order_what_fits():
    """The issue's command: onehot and concat, 1.9 s a call each, --budget 60."""
    predictions = {"onehot": 1.86, "concat": 1.81, "fused": 1e-3}
    budget = plan.Budget(60.0, predictions.get)
    assert budget.skip("onehot") == ""
    reason = budget.skip("concat")
    assert reason.startswith("predicted 1.81 s per call x 17 calls") and "raise --budget" in reason
    assert budget.skip("fused") == "" and budget.skip("a peer") == ""
    assert budget.seconds <= 60.0
    assert set(budget.planned) == {"onehot", "fused"}


def test_settling_skips_what_its_timed_call_shows_will_not_fit(clock):
    """A prediction may be wrong (a busy machine: 12 s calls predicted at 1.9 s): one timed
    call after the check decides, and the copy is always timed."""
    built = {
        "copy": Contender("copy", "roofline", "roofline", False, clock.call("copy", 1e-3)),
        "onehot": Contender("onehot", "sum", "kernels", False, clock.call("onehot", 12.0)),
        "fused": Contender("fused", "sum", "kernels", False, clock.call("fused", 1e-3)),
        "bad": Contender("bad", "sum", "peer", True, status="failed"),
    }
    budget = plan.Budget(60.0, {"onehot": 1.86}.get)
    assert budget.skip("onehot") == ""
    budget.settle(built)
    assert built["onehot"].status == "skipped"
    assert built["onehot"].reason.startswith("timed 12.00 s per call x 17 calls")
    assert built["fused"].status == "measured" and built["bad"].status == "failed"
    assert "bad" not in clock.calls and set(budget.planned) == {"copy", "fused"}


def test_settling_times_a_short_slow_call_again_and_keeps_the_faster(clock):
    """One call that waited for a thread on a busy machine does not drop its contender; a
    call slow every time is skipped after its second call, and a long one is not run twice."""
    now = clock.now

    def first_slow(seconds_each):
        def run():
            now[0] += seconds_each.pop(0) if len(seconds_each) > 1 else seconds_each[0]

        return run

    blip = [0.03, 2.0**-14]  # the first call waited 30 ms, then calls take 61 us
    copy_blip = [0.03, 2.0**-16]  # the copy's too: timed alone it would leave no room
    built = {
        "copy": Contender("copy", "roofline", "roofline", False, first_slow(copy_blip)),
        "fused": Contender("fused", "sum", "kernels", False, first_slow(blip)),
        "slow": Contender("slow", "sum", "kernels", False, clock.call("slow", 0.03)),
        "long": Contender("long", "sum", "kernels", False, clock.call("long", 1.0)),
    }
    budget = plan.Budget(0.05, lambda name: None)
    budget.settle(built)
    assert built["fused"].status == "measured"
    assert budget.planned == {"copy": 2.0**-16, "fused": 2.0**-14}
    assert built["slow"].status == "skipped" and clock.calls["slow"] == 2
    assert built["slow"].reason.startswith("timed 30.00 ms per call")
    assert built["long"].status == "skipped" and clock.calls["long"] == 1


def test_check_says_up_front_how_long_it_will_take_and_shows_what_it_took(capsys):
    argv = ["check", "--batch-size", "2", "--seq-len", "8", "--vocab-size", "50"]
    assert cli.main([*argv, "--hidden-size", "16", "--budget", "0.2"]) == 0
    err = capsys.readouterr().err.splitlines()
    announced = [line for line in err if "in all" in line]
    assert announced and "then at most 0.2 s of timing" in announced[0]
    assert any(line.startswith("embench check: checked in ") for line in err)
    assert err[-1].startswith("embench check: took ") and "of --budget 0.2" in err[-1]
