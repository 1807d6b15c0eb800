"""A wrong answer is never timed: every benchmark checks before it measures, and fails.

A method is broken on purpose (its registry record's forward, LayerNorm forward
or backward wrapped to return a slightly wrong result) and each kind of benchmark
is run with a stand-in for pytest-benchmark's fixture that fails if anything is
timed: the check must raise AssertionError first. The asv suite (benchmarks/)
must refuse the same way, in setup (asv: failed, not skipped), and its track_
benchmarks must fail rather than report a number.
"""

from __future__ import annotations

import importlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import test_backward_bench
import test_forward_bench

from bert_embedding_kernels import registry
from bert_embedding_kernels.bench.engine import cases

ROOT = Path(__file__).resolve().parents[2]


class Timed(Exception):
    """Raised by the stand-in fixture: something was about to be timed."""


class NeverTime:
    group = None

    def __init__(self):
        self.extra_info = {}

    def __call__(self, *arguments, **options):
        raise Timed

    def pedantic(self, *arguments, **options):
        raise Timed


def one_ulp_up(array: np.ndarray) -> None:
    flat = array.reshape(-1)
    flat[-1] = np.nextafter(flat[-1], np.inf)


@pytest.fixture
def broken_fused(monkeypatch):
    """fused, off by one ulp in its last element (sum, LayerNorm and gradient)."""
    record = registry.REGISTRY["fused"]

    def forward(*arguments, **options):
        out = record.forward(*arguments, **options)
        one_ulp_up(out)
        return out

    def forward_norm(tables, batch, sums, out):
        record.forward_norm(tables, batch, sums, out)
        out.reshape(-1)[-1] += 1e-3

    def backward(*arguments, **options):
        grads = record.backward(*arguments, **options)
        grads.position[0, -1] += 1.0
        return grads

    broken = replace(record, forward=forward, forward_norm=forward_norm, backward=backward)
    monkeypatch.setitem(registry.REGISTRY, "fused", broken)


SHAPE = cases.CI_BASE.with_seq(32)


def test_pytest_benchmark_refuses_to_time_a_wrong_sum(broken_fused):
    with pytest.raises(AssertionError):
        test_forward_bench.test_forward(NeverTime(), "fused", SHAPE)


def test_pytest_benchmark_refuses_to_time_a_wrong_layer_norm(broken_fused):
    with pytest.raises(AssertionError):
        test_forward_bench.test_forward_layer_norm(NeverTime(), "fused", SHAPE)


def test_pytest_benchmark_refuses_to_time_wrong_gradients(broken_fused):
    with pytest.raises(AssertionError):
        test_backward_bench.test_backward(NeverTime(), "fused", (SHAPE, "uniform"))


@pytest.fixture
def asv(monkeypatch):
    """The asv suite's modules, imported from this checkout's benchmarks/ package."""
    monkeypatch.syspath_prepend(str(ROOT))
    common = importlib.import_module("benchmarks.common")
    common.forward_call.cache_clear()
    yield common, importlib.import_module("benchmarks.equivalence")
    common.forward_call.cache_clear()


@pytest.mark.parametrize("layer_norm", [False, True])
def test_asv_setup_fails_on_a_wrong_answer(asv, broken_fused, layer_norm):
    common, _ = asv
    with pytest.raises(AssertionError, match="refusing to time it"):
        common.forward_call("fused", SHAPE, layer_norm)


def test_asv_track_benchmarks_fail_on_a_wrong_answer(asv, broken_fused):
    _, equivalence = asv
    benchmark = equivalence.Equivalence()
    benchmark.setup("fused", "float32")
    with pytest.raises(AssertionError, match="breaks the guaranteed agreement"):
        benchmark.track_max_abs_diff("fused", "float32")
    with pytest.raises(AssertionError, match="breaks the guaranteed agreement"):
        benchmark.track_bound_ratio("fused", "float32")


def test_asv_accepts_the_right_answer(asv):
    common, equivalence = asv
    common.forward_call("fused", SHAPE, True)()
    benchmark = equivalence.Equivalence()
    benchmark.setup("fused", "float32")
    assert benchmark.track_max_abs_diff("fused", "float32") == 0
