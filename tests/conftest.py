import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

# A busy machine must not fail a property test: no per-example deadline, no "too slow"
# health check (issue 37: make test passes beside two CPU-bound processes, .ci/run).
settings.register_profile(
    "busy-machine", deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("busy-machine")

# The shared test helpers (rules.py: the pinned pass/fail rules; poison.py: NaN-filled
# outputs) are imported by name from every test folder, tests/benchmarks included.
_TESTS = str(Path(__file__).resolve().parent)
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)


@pytest.fixture
def fast_settling(monkeypatch):
    """Every timed settling call of a budget takes 10 us: what ``--budget`` skips is then
    what the cost model predicts, not how busy the machine is (one slow call on a busy CI
    machine skipped every method; tests/test_budget.py tests that rule on a fake clock)."""
    from bert_embedding_kernels.bench.engine import plan

    monkeypatch.setattr(plan, "_seconds", lambda call: 1e-5)


def pytest_addoption(parser):
    parser.addoption(
        "--bench-full",
        action="store_true",
        help="benchmark the full sweeps (bench.engine.cases.VOCAB_SIZES / SEQ_LENS at SWEEP_BASE) "
        "instead of the CI sizes",
    )


# A plain `pytest` runs every benchmark once, untimed (a smoke test that each checks its
# answer); pytest-benchmark's own options time them as its documentation says:
# `pytest tests/benchmarks --benchmark-only`, `--benchmark-json=b.json`,
# `--benchmark-compare`. (An addopts `--benchmark-disable` would refuse --benchmark-only.)
TIMING_OPTIONS = (
    "benchmark_only",
    "benchmark_enable",
    "benchmark_json",
    "benchmark_autosave",
    "benchmark_save",
    "benchmark_compare",
    "benchmark_histogram",
)


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    options = config.option
    if hasattr(options, "benchmark_disable") and not any(
        getattr(options, name, None) for name in TIMING_OPTIONS
    ):
        options.benchmark_disable = True
