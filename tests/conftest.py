import sys
from pathlib import Path

# The shared test helpers (rules.py: the pinned pass/fail rules; poison.py: NaN-filled
# outputs) are imported by name from every test folder, tests/benchmarks included.
_TESTS = str(Path(__file__).resolve().parent)
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)


def pytest_addoption(parser):
    parser.addoption(
        "--bench-full",
        action="store_true",
        help="benchmark the full sweeps (bench.cases.VOCAB_SIZES / SEQ_LENS at SWEEP_BASE) "
        "instead of the CI sizes",
    )
